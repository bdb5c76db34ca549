package sink

import (
	"context"
	"fmt"
	"time"
)

// This file is the sink's side of erasure (docs/erasure.md): before every
// write it asks whether an erasure covers any event of the batch, so that a
// redelivery or a replay never stores an erased user again.

// ReasonErased: the event's user was erased (`residency erase`) at or after
// the event occurred. The event is not written and not quarantined (a
// quarantine copy would keep the user's data); it is committed with its
// batch and counted in residency_sink_erased_events_total. It is not one
// of the quarantine reasons.
const ReasonErased = "sink_erased"

// Erasures answers, for a batch, whether an erasure covers each event: its
// user was erased at or after it occurred (an event without occurred_at is
// covered whenever its user was erased; one without a user id never is).
// erasure.Guard satisfies it, over the erasure markers in Redis
// (connectors/redis.Markers) and the audit pseudonymisation key.
type Erasures interface {
	// Erased returns, for each event i (its user id and occurred_at),
	// whether an erasure covers it; users and occurred have the same
	// length. An error means the sink cannot know: it writes nothing and
	// retries (fail closed).
	Erased(ctx context.Context, users [][]byte, occurred []time.Time) ([]bool, error)
}

// checkErasures marks the events of b an erasure covers (item.erased),
// with one lookup for the batch. It is called right before each write, so
// that a marker recorded meanwhile counts: an erasure waits longer than
// WriteTimeout before its second pass (erasure.settle).
func (s *Sink) checkErasures(ctx context.Context, b []item) error {
	if s.cfg.Erasures == nil {
		return nil
	}
	users := make([][]byte, len(b))
	occurred := make([]time.Time, len(b))
	for i := range b {
		b[i].erased = false
		users[i], occurred[i] = []byte(b[i].userID), b[i].occurredAt
	}
	covered, err := s.cfg.Erasures.Erased(ctx, users, occurred)
	if err == nil && len(covered) != len(b) {
		err = fmt.Errorf("%d answers for %d events", len(covered), len(b))
	}
	if err != nil {
		return fmt.Errorf("erasure markers: %w", err)
	}
	for i := range b {
		b[i].erased = covered[i]
	}
	return nil
}

// countErased counts and logs the events of b an erasure kept out of the
// store (never the user id).
func (s *Sink) countErased(b []item) {
	n := 0
	for i := range b {
		if b[i].erased {
			n++
		}
	}
	if n == 0 {
		return
	}
	s.m.erased.Add(float64(n))
	s.log.Info("sink: events of erased users not stored", "reason", ReasonErased, "events", n)
}
