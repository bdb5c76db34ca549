package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/router/replay"
)

// Checkpoints keeps replay checkpoints in Redis under PREFIX + "replay:" +
// id, one JSON value each, replaced atomically on every Save. It implements
// replay.Checkpoints.
type Checkpoints struct {
	c      goredis.UniversalClient
	prefix string
	ttl    time.Duration
}

// NewCheckpoints keeps checkpoints in c under prefix (e.g.
// rules.DefaultPrefix). ttl bounds how long a checkpoint is kept after its
// last save; 0 keeps it for 30 days.
func NewCheckpoints(c goredis.UniversalClient, prefix string, ttl time.Duration) *Checkpoints {
	if ttl <= 0 {
		ttl = 30 * 24 * time.Hour
	}
	return &Checkpoints{c: c, prefix: prefix, ttl: ttl}
}

// Key returns the Redis key of replay id.
func (s *Checkpoints) Key(id string) string { return s.prefix + "replay:" + id }

// List implements replay.Checkpoints: every key PREFIX replay:* that
// reads as a checkpoint (SCAN, then GET in one pipeline).
func (s *Checkpoints) List(ctx context.Context) ([]*replay.Checkpoint, error) {
	var keys []string
	iter := s.c.Scan(ctx, 0, globEscape(s.prefix)+"replay:*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("replay: redis: list checkpoints: %w", err)
	}
	cmds := make([]*goredis.StringCmd, len(keys))
	if _, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, k)
		}
		return nil
	}); err != nil && !errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("replay: redis: list checkpoints: %w", err)
	}
	var out []*replay.Checkpoint
	for _, c := range cmds {
		b, err := c.Bytes()
		if err != nil {
			continue // expired meanwhile
		}
		var cp replay.Checkpoint
		if json.Unmarshal(b, &cp) == nil && cp.Plan.ID != "" {
			out = append(out, &cp)
		}
	}
	return out, nil
}

// globEscape escapes the characters a Redis MATCH pattern gives a meaning.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Load implements replay.Checkpoints.
func (s *Checkpoints) Load(ctx context.Context, id string) (*replay.Checkpoint, error) {
	b, err := s.c.Get(ctx, s.Key(id)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("%w: %s", replay.ErrNoCheckpoint, id)
	}
	if err != nil {
		return nil, fmt.Errorf("replay: redis: load checkpoint %s: %w", id, err)
	}
	var cp replay.Checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("replay: checkpoint %s is corrupt: %w", id, err)
	}
	return &cp, nil
}

// Save implements replay.Checkpoints.
func (s *Checkpoints) Save(ctx context.Context, cp *replay.Checkpoint) error {
	b, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("replay: encode checkpoint: %w", err)
	}
	if err := s.c.Set(ctx, s.Key(cp.Plan.ID), b, s.ttl).Err(); err != nil {
		return fmt.Errorf("replay: redis: save checkpoint %s: %w", cp.Plan.ID, err)
	}
	return nil
}
