package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// ErrGaveUp is what Retry.Do wraps when it gives up, unless Retry.GaveUp
// names another sentinel.
var ErrGaveUp = errors.New("gave up retrying")

// Retry is the one retry policy of residency: a transient failure is tried
// again after a wait that starts at Min and doubles up to Max, until it
// succeeds, the context ends, or (when set) GiveUp has passed or Attempts
// were made. The router, replay, the sink and the Kafka producer retry with
// it; they differ only in its settings (docs/architecture.md lists them).
// There is no jitter: each component retries its own operations, one at a
// time, so there is no herd to spread.
//
// The zero value retries at once, forever, without logging: set at least
// Min and Max.
type Retry struct {
	// Min is the wait after the first failed attempt.
	Min time.Duration
	// Max is the longest wait between attempts.
	Max time.Duration
	// GiveUp is how long an operation is retried, from its first attempt,
	// before Do fails wrapping GaveUp; 0: never give up (until the
	// context ends).
	GiveUp time.Duration
	// Attempts is the most attempts Do makes before it fails wrapping
	// GaveUp; 0: no bound.
	Attempts int
	// GaveUp is the sentinel Do's error wraps when it gives up; nil:
	// ErrGaveUp.
	GaveUp error
	// Component prefixes Do's errors and log lines, e.g. "router".
	Component string
	// Logger receives a warning per retry (the operation, the attempt, the
	// wait and the error; never payloads). nil: no log.
	Logger *slog.Logger
	// OnRetry, if set, is called with the operation's name before each
	// retry (for a retries metric).
	OnRetry func(op string)
}

// Delay is the wait after attempt n (1 for the first) failed: Min doubled
// n-1 times, at most Max.
func (r Retry) Delay(n int) time.Duration {
	d := r.Min
	for i := 1; i < n && d < r.Max; i++ {
		d *= 2
	}
	return min(d, max(r.Max, r.Min))
}

// permanent marks an error Do returns without retrying.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying: Do returns it (unwrapped) at
// once. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// Do calls fn until it succeeds, waiting Delay between attempts. It
// returns nil on success; fn's error as it is when fn marks it Permanent;
// an error wrapping GaveUp (or ErrGaveUp) and fn's last error once GiveUp
// has passed or Attempts were made; and an error wrapping ctx's error and
// fn's last error when ctx ends first. op names the operation in errors,
// logs and OnRetry.
func (r Retry) Do(ctx context.Context, op string, fn func(context.Context) error) error {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return p.err
		}
		if ctx.Err() != nil {
			return r.stopped(ctx, op, err)
		}
		if (r.GiveUp > 0 && time.Since(start) >= r.GiveUp) || (r.Attempts > 0 && attempt >= r.Attempts) {
			gaveUp := r.GaveUp
			if gaveUp == nil {
				gaveUp = ErrGaveUp
			}
			return fmt.Errorf("%w: %s failed for %s (%d attempts): %w", gaveUp, op, time.Since(start).Round(time.Millisecond), attempt, err)
		}
		wait := r.Delay(attempt)
		if r.Logger != nil {
			r.Logger.Warn(r.prefix()+op+" failed; retrying", "op", op, "attempt", attempt, "backoff_ms", wait.Milliseconds(), "error", err)
		}
		if r.OnRetry != nil {
			r.OnRetry(op)
		}
		if !Sleep(ctx, wait) {
			return r.stopped(ctx, op, err)
		}
	}
}

func (r Retry) prefix() string {
	if r.Component == "" {
		return ""
	}
	return r.Component + ": "
}

func (r Retry) stopped(ctx context.Context, op string, err error) error {
	return fmt.Errorf("%s%s: stopped while retrying: %w", r.prefix(), op, errors.Join(ctx.Err(), err))
}

// Sleep waits d or until ctx ends; it reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
