package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
)

func pinOf(p *rules.Pins, user string) string {
	v, err := p.Pins()
	if err != nil {
		return "error: " + err.Error()
	}
	return v.Pin([]byte(user))
}

func loaded(t *testing.T, p *rules.Pins) {
	t.Helper()
	select {
	case <-p.Loaded():
	case <-time.After(10 * time.Second):
		_, err := p.Pins()
		t.Fatalf("pins not loaded within 10s: %v", err)
	}
}

// TestPinsFollowPinAndUnpin (real Redis): two routers' pin sets load what
// is there and see a pin within the documented bound (one second,
// docs/rules.md) and an unpin, without a restart and without a full read
// (the resync is 5 minutes away: only the announcement can bring them);
// probes of their subscriptions keep them confirmed past a short
// staleness bound while nothing changes. A loaded host can stall a process
// for longer than the bound now and then, so a miss is measured again
// with another user: a broken announcement path misses every time.
func TestPinsFollowPinAndUnpin(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	s := newStore(t)
	if _, err := s.Apply(ctx, []byte(small), rules.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if err := s.client.HSet(ctx, s.pinsKey(), fmt.Sprint("old-", i), "US").Err(); err != nil {
			t.Fatal(err)
		}
	}
	const bound = 2500 * time.Millisecond
	opts := rules.PinsOptions{StalenessBound: bound, PageSize: 100, ResyncInterval: rules.DefaultResyncInterval}
	a, b := rules.NewPins(s, opts), rules.NewPins(s, opts)
	runInBackground(t, "Pins.Run", a.Run)
	runInBackground(t, "Pins.Run", b.Run)
	loaded(t, a)
	loaded(t, b)
	if a.Len() != 300 || pinOf(a, "old-7") != "US" || pinOf(b, "old-299") != "US" || pinOf(a, "user-1") != "" {
		t.Fatalf("loaded %d pins; old-7 %q", a.Len(), pinOf(a, "old-7"))
	}

	const documented = time.Second
	var took []time.Duration
	for attempt := range 3 {
		user := fmt.Sprint("user-", attempt+1)
		pinned := time.Now()
		if err := s.Pin(ctx, user, "EU"); err != nil {
			t.Fatal(err)
		}
		seen := testenv.Eventually(t, 5*time.Second, "both to see the pin", func() bool {
			return pinOf(a, user) == "EU" && pinOf(b, user) == "EU"
		})
		took = append(took, seen.Sub(pinned))
		t.Logf("%s's pin was in force %s after it was made", user, took[attempt])
		if err := s.Unpin(ctx, user); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 5*time.Second, "both to see the unpin", func() bool {
			return pinOf(a, user) == "" && pinOf(b, user) == ""
		})
		if took[attempt] <= documented {
			break
		}
	}
	if took[len(took)-1] > documented {
		t.Fatalf("pins were in force %v after they were made, %d times in a row; the documented bound is %s", took, len(took), documented)
	}
	// Nothing changes for longer than the bound: the probes keep both
	// confirmed.
	time.Sleep(2 * bound)
	for _, p := range []*rules.Pins{a, b} {
		if _, err := p.Pins(); err != nil {
			t.Fatalf("after %s without changes: %v", 2*bound, err)
		}
	}
}

// TestPinsLostNotificationRepaired (real Redis): a pin written without its
// announcement (by hand, or the announcement lost) is in force after the
// next full read.
func TestPinsLostNotificationRepaired(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	s := newStore(t)
	p := rules.NewPins(s, rules.PinsOptions{ResyncInterval: 500 * time.Millisecond})
	runInBackground(t, "Pins.Run", p.Run)
	loaded(t, p)
	if err := s.client.HSet(ctx, s.pinsKey(), "quiet-user", "EU").Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the full read", func() bool { return pinOf(p, "quiet-user") == "EU" })
	if err := s.client.HDel(ctx, s.pinsKey(), "quiet-user").Err(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the removal", func() bool { return pinOf(p, "quiet-user") == "" })
}

// TestPinsRedisOutage (real Redis behind the outage proxy): the pin set
// stays in force until the staleness bound, then Pins fails with
// ErrPinsStale saying since when and why; when Redis is back the pin set
// recovers by itself, with the pins made during the outage.
func TestPinsRedisOutage(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	r := testenv.NewRedis(t)
	direct := NewRules(r.Client(t), r.Prefix)
	if _, err := direct.Apply(ctx, []byte(small), rules.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := direct.Pin(ctx, "user-1", "EU"); err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, r.Addr)
	client := goredis.NewClient(&goredis.Options{Addr: proxy.Addr, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	const bound = 2 * time.Second
	var logs testenv.SyncBuffer
	p := rules.NewPins(NewRules(client, r.Prefix), rules.PinsOptions{StalenessBound: bound,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	runInBackground(t, "Pins.Run", p.Run)
	loaded(t, p)
	time.Sleep(2 * ProbeInterval) // confirmed by probes

	proxy.Cut()
	cut := time.Now()
	var err error
	staleAt := testenv.Eventually(t, 10*time.Second, "stale", func() bool {
		v, e := p.Pins()
		if e == nil && v.Pin([]byte("user-1")) != "EU" {
			t.Fatal("the pin changed during the outage")
		}
		err = e
		return e != nil
	})
	if !errors.Is(err, rules.ErrPinsStale) || !strings.Contains(err.Error(), "pins are stale since ") {
		t.Fatalf("Pins = %v, want ErrPinsStale", err)
	}
	if d := staleAt.Sub(cut); d > bound+2*ProbeInterval {
		t.Fatalf("stale %s after the cut, bound %s", d, bound)
	} else {
		t.Logf("stale %s after the cut (bound %s): %v", d, bound, err)
	}
	if err := direct.Pin(ctx, "user-2", "US"); err != nil { // during the outage
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if _, err := p.Pins(); !errors.Is(err, rules.ErrPinsStale) {
		t.Fatalf("later in the outage: %v", err)
	}

	proxy.Restore()
	testenv.Eventually(t, 15*time.Second, "recovery with the pin made during the outage", func() bool {
		return pinOf(p, "user-2") == "US" && pinOf(p, "user-1") == "EU"
	})
	for _, want := range []string{"the pin set is stale; routing must stop", "pins: confirmed again"} {
		if n := strings.Count(logs.String(), want); n != 1 {
			t.Fatalf("%q logged %d times, want once:\n%s", want, n, logs.String())
		}
	}
}

// TestScanPinsPages: ScanPins reads every pin through its cursor. Real
// Redis answers a hash of 1000 fields in pages of about the COUNT asked
// (at least five pages of 100); the embedded stand-in (miniredis, go test
// -short without services) ignores COUNT and answers in one page, so only
// the real one is held to the page count.
func TestScanPinsPages(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	r := testenv.NewRedis(t)
	s := NewRules(r.Client(t), r.Prefix)
	want := map[string]string{}
	for i := range 1000 {
		want[fmt.Sprint("u", i)] = []string{"US", "EU"}[i%2]
	}
	if err := s.client.HSet(ctx, s.pinsKey(), want).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CountPins(ctx); err != nil || n != 1000 {
		t.Fatalf("CountPins = %d, %v", n, err)
	}
	got := map[string]string{}
	pages := 0
	var cursor uint64
	for {
		page, next, err := s.ScanPins(ctx, cursor, 100)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, p := range page {
			got[p.UserID] = p.Jurisdiction
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	if len(got) != len(want) || (r.Real && pages < 5) {
		t.Fatalf("%d pins in %d pages", len(got), pages)
	}
	for u, j := range want {
		if got[u] != j {
			t.Fatalf("%s: %q, want %q", u, got[u], j)
		}
	}
	lk, err := s.LookupPins(ctx, [][]byte{[]byte("u1"), []byte("nobody"), []byte("u2")})
	if err != nil || strings.Join(lk, ",") != "EU,,US" {
		t.Fatalf("LookupPins = %q, %v", lk, err)
	}
	// The watch closes its channel when ctx ends.
	wctx, cancel := context.WithCancel(ctx)
	ch := s.WatchPins(wctx)
	cancel()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("WatchPins' channel not closed 5s after ctx ended")
		}
	}
}

// TestRestorePins (real Redis): pins from the history topic are set for
// users Redis has no pin for, announced (a running pin set takes them
// without a full read), and a pin Redis holds is left.
func TestRestorePins(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	s := newStore(t)
	if err := s.client.HSet(ctx, s.pinsKey(), "u2", "US").Err(); err != nil {
		t.Fatal(err)
	}
	p := rules.NewPins(s, rules.PinsOptions{ResyncInterval: time.Hour})
	runInBackground(t, "Pins.Run", p.Run)
	loaded(t, p)
	time.Sleep(200 * time.Millisecond) // subscribed
	n, err := s.RestorePins(ctx, []rules.Pin{{UserID: "u1", Jurisdiction: "EU"}, {UserID: "u2", Jurisdiction: "UK"}})
	if err != nil || n != 1 {
		t.Fatalf("RestorePins = %d, %v; want 1 set", n, err)
	}
	testenv.Eventually(t, 5*time.Second, "the restored pin announced", func() bool { return pinOf(p, "u1") == "EU" })
	if pinOf(p, "u2") != "US" {
		t.Fatalf("u2: %q, want the pin Redis held", pinOf(p, "u2"))
	}
}
