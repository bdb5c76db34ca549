package main

import (
	"context"
	"fmt"
	"time"

	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/sink"
)

// erasures returns the sink's check of the erasure markers: the markers
// in Redis (next to the rules and pins) hashed with audit.subject_key_file.
// Without the key a sink cannot recognise an erased user, so it refuses to
// start while any erasure marker exists (exit 2, naming the field); with
// rules.file and no key, Redis is not consulted and nothing is checked.
func (w *sinkWiring) erasures(ctx context.Context, cfg *config.Config) (sink.Erasures, int, error) {
	subjects, err := cfg.Audit.Pseudonymizer()
	if err != nil {
		return nil, exitUsage, err
	}
	if subjects == nil && w.redis == nil {
		w.log.Warn("sink: erasure markers not checked (rules.file and no audit.subject_key_file): an erased user's redelivered events would be stored")
		return nil, exitOK, nil
	}
	if w.redis == nil {
		if w.redis, err = newRedis(cfg.Redis, 2*time.Second); err != nil {
			return nil, exitUsage, err
		}
	}
	markers := redis.NewMarkers(w.redis, cfg.Redis.Prefix)
	if subjects == nil {
		n, err := markers.Len(ctx)
		if err != nil {
			return nil, exitNotReady, err
		}
		if n > 0 {
			return nil, exitUsage, config.FieldError("audit.subject_key_file", fmt.Errorf(
				"required: %d users were erased (erasure markers under %s), and without the pseudonymisation key this sink could store their events again", n, markers.Key()))
		}
		w.log.Warn("sink: erasure markers not checked (no audit.subject_key_file); set it before running residency erase")
		return nil, exitOK, nil
	}
	return erasure.NewGuard(markers, subjects), exitOK, nil
}
