package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
)

func ids(s ...string) [][]byte {
	out := make([][]byte, len(s))
	for i, x := range s {
		out[i] = []byte(x)
	}
	return out
}

func lookup1(t *testing.T, p *rules.Pins, user string) string {
	t.Helper()
	got, err := p.Lookup(context.Background(), ids(user))
	if err != nil {
		t.Fatal(err)
	}
	return got[0]
}

func TestPinsFollowPinAndUnpin(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	s := newStore(t)
	if _, err := s.Apply(ctx, []byte(small), rules.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	// Two routers' caches; TTL an hour, so only invalidations can change
	// what they answer.
	wa, wb := watch(s), watch(s)
	a := rules.NewPins(wa, rules.PinsOptions{TTL: time.Hour})
	b := rules.NewPins(wb, rules.PinsOptions{TTL: time.Hour})
	runInBackground(t, "Pins.Run", a.Run)
	runInBackground(t, "Pins.Run", b.Run)

	// Once their subscriptions are up (which clears a cache), cache the
	// negative answer in both.
	testenv.Eventually(t, 5*time.Second, "subscriptions", func() bool { return wa.subscribed() && wb.subscribed() })
	if lookup1(t, a, "user-1") != "" || lookup1(t, b, "user-1") != "" || a.Len() != 1 || b.Len() != 1 {
		t.Fatal("user-1 should be cached as not pinned")
	}

	if err := s.Pin(ctx, "user-1", "EU"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "both to see the pin", func() bool {
		return lookup1(t, a, "user-1") == "EU" && lookup1(t, b, "user-1") == "EU"
	})
	if err := s.Unpin(ctx, "user-1"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "both to see the unpin", func() bool {
		return lookup1(t, a, "user-1") == "" && lookup1(t, b, "user-1") == ""
	})
}

// watched is a PinSource whose Pins has processed the start of its
// subscription (which clears its cache) once subscribed returns true. It
// passes the changes through an unbuffered channel and, after the first
// reset, a change for a user no test uses: once the Pins' Run loop has
// taken that one, it is done with the reset.
type watched struct {
	rules.PinSource
	done atomic.Bool
}

func watch(src rules.PinSource) *watched { return &watched{PinSource: src} }

func (w *watched) WatchPins(ctx context.Context) <-chan rules.PinChange {
	in := w.PinSource.WatchPins(ctx)
	out := make(chan rules.PinChange)
	go func() {
		defer close(out)
		for c := range in {
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
			if c.All && !w.done.Load() {
				select {
				case out <- rules.PinChange{UserID: "\x00probe"}:
					w.done.Store(true)
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// subscribed reports whether the Pins reading w has processed its
// subscription's start.
func (w *watched) subscribed() bool { return w.done.Load() }

// countingSource counts round trips to a PinSource.
type countingSource struct {
	rules.PinSource
	mu    sync.Mutex
	calls [][]string
	err   error
}

func (c *countingSource) LookupPins(ctx context.Context, userIDs [][]byte) ([]string, error) {
	c.mu.Lock()
	var s []string
	for _, id := range userIDs {
		s = append(s, string(id))
	}
	c.calls = append(c.calls, s)
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return c.PinSource.LookupPins(ctx, userIDs)
}

func TestPinsOneRoundTripAndBound(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	s := newStore(t)
	if _, err := s.Apply(ctx, []byte(small), rules.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(ctx, "u2", "US"); err != nil {
		t.Fatal(err)
	}
	src := &countingSource{PinSource: s}
	p := rules.NewPins(src, rules.PinsOptions{Size: 3})

	got, err := p.Lookup(ctx, ids("u1", "u2", "u1", "u3", "u2"))
	if err != nil || strings.Join(got, ",") != ",US,,,US" {
		t.Fatalf("Lookup = %q, %v", got, err)
	}
	if len(src.calls) != 1 || strings.Join(src.calls[0], ",") != "u1,u2,u3" {
		t.Fatalf("round trips = %v, want one asking u1,u2,u3", src.calls)
	}
	// All cached now, the negatives too.
	if got, err := p.Lookup(ctx, ids("u3", "u2", "u1")); err != nil || strings.Join(got, ",") != ",US," || len(src.calls) != 1 {
		t.Fatalf("cached Lookup = %q, %v after %d round trips", got, err, len(src.calls))
	}
	// The cache holds at most Size ids.
	if _, err := p.Lookup(ctx, ids("u4", "u5", "u6", "u7")); err != nil {
		t.Fatal(err)
	}
	if p.Len() != 3 {
		t.Fatalf("cache holds %d ids, want the bound 3", p.Len())
	}
	// The most recently used stay: u1 was evicted, u7 was not.
	n := len(src.calls)
	_, _ = p.Lookup(ctx, ids("u7"))
	if len(src.calls) != n {
		t.Fatal("u7 should be cached")
	}
	_, _ = p.Lookup(ctx, ids("u1"))
	if len(src.calls) != n+1 {
		t.Fatal("u1 should have been evicted")
	}

	// A source failure is an error, not a guess.
	src.err = fmt.Errorf("boom: %w", rules.ErrUnavailable)
	if got, err := p.Lookup(ctx, ids("u7", "u9")); !errors.Is(err, rules.ErrUnavailable) || got != nil {
		t.Fatalf("Lookup with the source down = %q, %v", got, err)
	}
}

func TestPinsOutage(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	r := testenv.NewRedis(t)
	direct := NewRules(r.Client(t), r.Prefix)
	if _, err := direct.Apply(ctx, []byte(small), rules.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, r.Addr)
	client := goredis.NewClient(&goredis.Options{Addr: proxy.Addr, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	w := watch(NewRules(client, r.Prefix))
	p := rules.NewPins(w, rules.PinsOptions{TTL: time.Hour})
	runInBackground(t, "Pins.Run", p.Run)
	testenv.Eventually(t, 5*time.Second, "subscription", func() bool { return w.subscribed() })
	if lookup1(t, p, "u1") != "" || p.Len() != 1 {
		t.Fatal("u1 should be cached as not pinned")
	}

	proxy.Cut()
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := p.Lookup(lctx, ids("u1", "u2")); !errors.Is(err, rules.ErrUnavailable) {
		t.Fatalf("Lookup of an uncached id during the outage = %v, want rules.ErrUnavailable", err)
	}
	// Changes made meanwhile are not announced to p...
	if err := direct.Pin(ctx, "u1", "US"); err != nil {
		t.Fatal(err)
	}
	proxy.Restore()
	// ...but the resubscription clears its cache.
	testenv.Eventually(t, 10*time.Second, "u1's pin after the outage", func() bool {
		got, err := p.Lookup(ctx, ids("u1"))
		return err == nil && got[0] == "US"
	})
}
