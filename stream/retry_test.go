package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRetryDelay(t *testing.T) {
	r := Retry{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond}
	for attempt, want := range map[int]time.Duration{1: 20 * time.Millisecond, 2: 40 * time.Millisecond, 3: 80 * time.Millisecond, 10: 500 * time.Millisecond} {
		if got := r.Delay(attempt); got != want {
			t.Errorf("Delay(%d) = %v, want %v", attempt, got, want)
		}
	}
}

var errBoom = errors.New("boom")

// TestRetryDo: Do retries until success, gives up after GiveUp or
// Attempts (wrapping GaveUp and the last error), returns a Permanent error
// at once, and stops when its context ends (wrapping ctx's error).
func TestRetryDo(t *testing.T) {
	fast := Retry{Min: time.Millisecond, Max: 2 * time.Millisecond, Component: "test"}
	ctx := context.Background()

	var retried []string
	r := fast
	r.OnRetry = func(op string) { retried = append(retried, op) }
	n := 0
	if err := r.Do(ctx, "op", func(context.Context) error {
		if n++; n < 3 {
			return errBoom
		}
		return nil
	}); err != nil || n != 3 || len(retried) != 2 {
		t.Fatalf("Do = %v after %d calls and %d retries, want nil after 3 and 2", err, n, len(retried))
	}

	r = fast
	r.Attempts = 4
	n = 0
	err := r.Do(ctx, "op", func(context.Context) error { n++; return errBoom })
	if !errors.Is(err, ErrGaveUp) || !errors.Is(err, errBoom) || n != 4 || !strings.Contains(err.Error(), "4 attempts") {
		t.Fatalf("Attempts 4: Do = %v after %d calls", err, n)
	}

	gaveUp := errors.New("mine gave up")
	r = fast
	r.GiveUp, r.GaveUp = 20*time.Millisecond, gaveUp
	if err := r.Do(ctx, "op", func(context.Context) error { return errBoom }); !errors.Is(err, gaveUp) || !errors.Is(err, errBoom) {
		t.Fatalf("GiveUp: Do = %v", err)
	}

	n = 0
	if err := fast.Do(ctx, "op", func(context.Context) error { n++; return Permanent(errBoom) }); err != errBoom || n != 1 {
		t.Fatalf("Permanent: Do = %v after %d calls, want errBoom after 1", err, n)
	}

	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	err = fast.Do(cctx, "op", func(context.Context) error { return errBoom }) // no GiveUp: until ctx ends
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errBoom) || !strings.HasPrefix(err.Error(), "test: op: stopped while retrying") {
		t.Fatalf("ctx ended: Do = %v", err)
	}
}

// TestRetryLogsBackoffInMilliseconds: the retry warning's backoff is a
// number of milliseconds named so (a JSON log renders a time.Duration as
// bare nanoseconds).
func TestRetryLogsBackoffInMilliseconds(t *testing.T) {
	var buf bytes.Buffer
	r := Retry{Min: 30 * time.Millisecond, Max: 30 * time.Millisecond, Attempts: 2, Logger: slog.New(slog.NewJSONHandler(&buf, nil))}
	_ = r.Do(context.Background(), "probe", func(context.Context) error { return errors.New("down") })
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
		t.Fatalf("log %q: %v", buf.String(), err)
	}
	if ms, ok := line["backoff_ms"].(float64); !ok || ms < 15 || ms > 45 {
		t.Fatalf("backoff_ms = %v in %q, want about 30", line["backoff_ms"], buf.String())
	}
}
