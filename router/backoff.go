package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/residency-router/residency/stream"
)

// Backoff retries transient failures with exponential backoff. The router
// and replay (router/replay) both retry publishes, commits, checkpoints, pin
// lookups and schema registry reads with it.
type Backoff struct {
	// Min is the first backoff after a failure.
	Min time.Duration
	// Max is the longest backoff between attempts.
	Max time.Duration
	// GiveUp is how long an operation is retried before Do fails with
	// GaveUp.
	GiveUp time.Duration
	// GaveUp is the error wrapped when Do gives up; nil means ErrGaveUp.
	GaveUp error
	// Component prefixes the error returned when ctx ends while retrying,
	// e.g. "router". Empty means "router".
	Component string
	// Logger receives a warning per retry; nil means slog.Default().
	Logger *slog.Logger
	// OnRetry, if set, is called with the operation's name before each
	// retry (for a metric).
	OnRetry func(op string)
}

// Do calls fn until it succeeds, backing off between attempts from Min,
// doubling up to Max. It gives up with an error wrapping GaveUp (and fn's
// last error) once GiveUp has passed since the first attempt, and returns
// an error wrapping ctx's error (and fn's last error) when ctx ends.
func (b Backoff) Do(ctx context.Context, op string, fn func(context.Context) error) error {
	start := time.Now()
	backoff := b.Min
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return b.stopped(ctx, op, err)
		}
		if time.Since(start) >= b.GiveUp {
			gaveUp := b.GaveUp
			if gaveUp == nil {
				gaveUp = ErrGaveUp
			}
			return fmt.Errorf("%w: %s failed for %s (%d attempts): %w", gaveUp, op, b.GiveUp, attempt, err)
		}
		log := b.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Warn("transient failure, retrying", "op", op, "attempt", attempt, "backoff", backoff, "error", err)
		if b.OnRetry != nil {
			b.OnRetry(op)
		}
		select {
		case <-ctx.Done():
			return b.stopped(ctx, op, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, b.Max)
	}
}

func (b Backoff) stopped(ctx context.Context, op string, err error) error {
	component := b.Component
	if component == "" {
		component = "router"
	}
	return fmt.Errorf("%s: %s: stopped while retrying: %w", component, op, errors.Join(ctx.Err(), err))
}

// PublishByCluster writes each cluster's messages with that cluster's
// publisher, the clusters in parallel, each retried with b until it is
// acknowledged. Every cluster in byCluster must have a publisher. The
// errors of all clusters that failed are joined.
//
// The messages are passed unchanged to every attempt. Under the Publisher
// memory contract a caller may reuse their memory only when no attempt
// failed, not merely when PublishByCluster returned nil: a failed attempt's
// publisher may still be reading them. PublishByCluster does not say which,
// so its callers must not reuse that memory; replay builds fresh messages
// for every batch. The router, which reuses its header memory, calls
// publishByCluster, which does say.
func PublishByCluster(ctx context.Context, publishers map[string]stream.Publisher, byCluster map[string][]stream.Message, b Backoff) error {
	_, err := publishByCluster(ctx, publishers, byCluster, b)
	return err
}

// publishByCluster is PublishByCluster that also reports whether any call
// to Publish returned an error, including calls that a retry made good.
// When anyFailed is false (and err is nil), every Publish given the
// messages returned nil, so no publisher refers to them any more and their
// memory may be reused.
func publishByCluster(ctx context.Context, publishers map[string]stream.Publisher, byCluster map[string][]stream.Message, b Backoff) (anyFailed bool, err error) {
	names := make([]string, 0, len(byCluster))
	for n := range byCluster {
		names = append(names, n)
	}
	sort.Strings(names)
	errs := make([]error, len(names))
	var failed atomic.Bool
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			p := publishers[n]
			errs[i] = b.Do(ctx, "publish", func(ctx context.Context) error {
				if err := p.Publish(ctx, byCluster[n]...); err != nil {
					failed.Store(true)
					return fmt.Errorf("publish to cluster %s: %w", n, err)
				}
				return nil
			})
		})
	}
	wg.Wait()
	return failed.Load(), errors.Join(errs...)
}

// LookupPins looks up the pins of ids in one call to pins, retried with b.
// The result is indexed like ids. A lookup returning a different number of
// results than ids is a (retried) failure.
func LookupPins(ctx context.Context, pins PinLookup, ids [][]byte, b Backoff) ([]string, error) {
	var got []string
	err := b.Do(ctx, "pins", func(ctx context.Context) error {
		var err error
		got, err = pins.Lookup(ctx, ids)
		if err == nil && len(got) != len(ids) {
			err = fmt.Errorf("pin lookup returned %d results for %d users", len(got), len(ids))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return got, nil
}
