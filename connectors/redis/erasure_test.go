package redis_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/testenv"
)

func pseudonymizer(t *testing.T) *audit.Pseudonymizer {
	t.Helper()
	p, err := audit.NewPseudonymizer(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMarkers records erasure markers in Redis as keyed hashes, keeps the
// later of two times, answers many users in one call, and is what the
// sinks' Guard reads.
func TestMarkers(t *testing.T) {
	r := testenv.NewRedis(t)
	c := r.Client(t)
	ctx := testenv.Context(t, 30*time.Second)
	m := redis.NewMarkers(c, r.Prefix)
	p := pseudonymizer(t)
	alice, bob := p.Subject([]byte("user-alice-7f3a")), p.Subject([]byte("bob"))
	at := time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)
	if err := m.Mark(ctx, alice, at); err != nil {
		t.Fatal(err)
	}
	if err := m.Mark(ctx, alice, at.Add(-time.Hour)); err != nil { // earlier: ignored
		t.Fatal(err)
	}
	got, err := m.Lookup(ctx, []audit.Digest{alice, bob})
	if err != nil || !got[0].Equal(at) || !got[1].IsZero() {
		t.Fatalf("Lookup = %v, %v", got, err)
	}
	if err := m.Mark(ctx, alice, at.Add(time.Hour)); err != nil { // later: kept
		t.Fatal(err)
	}
	if got, _ = m.Lookup(ctx, []audit.Digest{alice}); !got[0].Equal(at.Add(time.Hour)) {
		t.Fatalf("after a later erasure: %v", got)
	}
	if n, err := m.Len(ctx); err != nil || n != 1 {
		t.Fatalf("Len = %d, %v; want 1 erased user", n, err)
	}
	if n, err := redis.NewMarkers(c, r.Prefix+"other:").Len(ctx); err != nil || n != 0 {
		t.Fatalf("Len of no markers = %d, %v", n, err)
	}
	// No user id in Redis, only the keyed hash.
	fields, err := c.HKeys(ctx, m.Key()).Result()
	if err != nil || len(fields) != 1 || fields[0] != alice.String() || strings.Contains(m.Key(), "alice") {
		t.Fatalf("fields %v, %v", fields, err)
	}
	// Many users in one call (chunks).
	many := make([]audit.Digest, 2500)
	for i := range many {
		many[i] = p.Subject(fmt.Appendf(nil, "u%d", i))
	}
	many[2345] = alice
	if got, err = m.Lookup(ctx, many); err != nil || len(got) != 2500 || !got[2345].Equal(at.Add(time.Hour)) || !got[0].IsZero() {
		t.Fatalf("Lookup of 2500: %d, %v", len(got), err)
	}
	// The sinks' guard on real markers.
	g := erasure.NewGuard(m, p)
	cover, err := g.Erased(ctx, [][]byte{[]byte("user-alice-7f3a"), []byte("user-alice-7f3a"), []byte("bob")},
		[]time.Time{at, at.Add(2 * time.Hour), at})
	if err != nil || fmt.Sprint(cover) != "[true false false]" {
		t.Fatalf("Guard = %v, %v", cover, err)
	}
	// A corrupt marker is an error, not "not erased".
	if err := c.HSet(ctx, m.Key(), bob.String(), "yesterday").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Lookup(ctx, []audit.Digest{bob}); err == nil {
		t.Fatal("a corrupt marker was read as a time")
	}
	// Redis out of reach: an error (the sink fails closed).
	down := redis.NewMarkers(goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond}), r.Prefix)
	if _, err := down.Lookup(ctx, []audit.Digest{alice}); err == nil {
		t.Fatal("Lookup without Redis: no error")
	}
	if err := down.Mark(ctx, alice, at); err == nil {
		t.Fatal("Mark without Redis: no error")
	}
}

// TestLocker: one holder at a time; the lock is renewed while held,
// released by release, and a holder whose lock is taken over is told
// (held ends).
func TestLocker(t *testing.T) {
	r := testenv.NewRedis(t)
	c := r.Client(t)
	ctx := testenv.Context(t, 30*time.Second)
	l := redis.NewLocker(c, r.Prefix)
	l.TTL = 300 * time.Millisecond
	held, release, err := l.Lock(ctx, erasure.LockName)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Lock(ctx, erasure.LockName); !errors.Is(err, erasure.ErrLocked) {
		t.Fatalf("second Lock = %v", err)
	}
	time.Sleep(time.Second) // three TTLs: renewed meanwhile
	if held.Err() != nil {
		t.Fatalf("held ended while holding: %v", context.Cause(held))
	}
	if _, _, err := l.Lock(ctx, erasure.LockName); !errors.Is(err, erasure.ErrLocked) {
		t.Fatalf("Lock after three TTLs = %v; want still held (renewed)", err)
	}
	release()
	release() // twice is harmless
	if held.Err() == nil {
		t.Fatal("held did not end at release")
	}
	held2, release2, err := l.Lock(ctx, erasure.LockName)
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	defer release2()
	// Someone takes the key over: the holder is told within a renewal.
	if err := c.Set(ctx, r.Prefix+"lock:"+erasure.LockName, "other", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held2.Done():
		if !strings.Contains(context.Cause(held2).Error(), "lost") {
			t.Fatalf("cause %v", context.Cause(held2))
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a lost lock was not noticed")
	}
	release2()
	if v, _ := c.Get(ctx, r.Prefix+"lock:"+erasure.LockName).Result(); v != "other" {
		t.Fatalf("release removed another holder's lock: %q", v)
	}
}
