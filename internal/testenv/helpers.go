package testenv

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer safe for a logger (or a command's output)
// and a test to share. The zero value is ready to use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what has been written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Eventually polls cond every 5ms until it holds, and returns when it first
// held. It fails the test if cond does not hold within timeout; what names
// the awaited condition in that failure.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Start calls run in a goroutine with a context that stop cancels. stop
// then waits for run to return and returns its result, or an error if it
// did not return within timeout; later calls return the same result. stop
// is also called when the test ends (its result ignored: check it yourself,
// with a t.Cleanup registered after Start, if it matters).
func Start(t testing.TB, timeout time.Duration, run func(context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(timeout):
				err = fmt.Errorf("did not return within %s of being stopped", timeout)
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}
