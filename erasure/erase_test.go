package erasure_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/erasure"
)

const alice = "user-alice-7f3a"

func eraseFixture() (us, eu *memStore) {
	us, eu = &memStore{}, &memStore{}
	us.add(row("e1", alice, "US", "us"))
	us.add(row("e2", "bob", "US", "us"))
	us.add(row("e3", alice, "US", "us"))
	eu.add(row("e4", alice, "DE", "eu"))
	eu.add(row("e5", "carol", "DE", "eu"))
	return us, eu
}

type fakeLocker struct {
	held    bool
	busy    bool
	release int
}

func (l *fakeLocker) Lock(ctx context.Context, name string) (context.Context, func(), error) {
	if l.busy {
		return nil, nil, fmt.Errorf("%w: %s", erasure.ErrLocked, name)
	}
	l.held = true
	return ctx, func() { l.held = false; l.release++ }, nil
}

// TestEraseEverywhere: the user's rows go from every store, other users'
// stay; the marker is recorded before anything is removed; a row a sink
// wrote between the passes is removed by the second; the receipt's counts
// match; a leaf per store and pass, with the user only as its keyed hash.
func TestEraseEverywhere(t *testing.T) {
	us, eu := eraseFixture()
	markers := newMemMarkers()
	subjects := pseudonymizer(t)
	subject := subjects.Subject([]byte(alice))
	// A sink that checked the markers before the erasure writes a late
	// copy of alice's event into us right after pass 1; and the marker must
	// already be there when pass 1 runs.
	late := true
	us.afterErase = func(s *memStore) {
		at, _ := markers.Lookup(context.Background(), []audit.Digest{subject})
		if at[0].IsZero() {
			t.Error("a store was erased before the marker was recorded")
		}
		if late {
			late = false
			s.add(row("e6", alice, "US", "us"))
		}
	}
	ledger := &memLedger{}
	locker := &fakeLocker{}
	now := t0
	e, err := erasure.NewEraser(erasure.EraseConfig{
		Stores:   []erasure.StoreRef{{Name: "us-postgres", Region: "us", Store: us}, {Name: "eu-objectstore", Region: "eu", Store: eu}},
		Subjects: subjects, Markers: markers, Locker: locker, Ledger: ledger, Settle: time.Millisecond,
		Now: func() time.Time { now = now.Add(time.Second); return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.Erase(context.Background(), alice, erasure.EraseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(us.users(), eu.users()); got != "[bob:e2] [carol:e5]" {
		t.Fatalf("left after erasure: %s", got)
	}
	if !r.Complete || r.Removed != 4 || r.Subject != subject.String() || r.MarkedAt.IsZero() {
		t.Fatalf("receipt %+v", r)
	}
	if got := fmt.Sprint(r.Stores); got != "[{us-postgres us 3 [2 1] 0 } {eu-objectstore eu 1 [1 0] 0 }]" {
		t.Fatalf("stores %s", got)
	}
	if locker.held || locker.release != 1 {
		t.Fatalf("lock held %v, released %d times", locker.held, locker.release)
	}
	at, _ := markers.Lookup(context.Background(), []audit.Digest{subject})
	if !at[0].Equal(r.MarkedAt) {
		t.Fatalf("marker at %v, receipt says %v", at[0], r.MarkedAt)
	}
	var leaves []string
	for _, l := range ledger.all() {
		if l.Kind != audit.KindErasure || l.Subject != subject || l.Decision != audit.Erased {
			t.Fatalf("leaf %+v", l)
		}
		leaves = append(leaves, fmt.Sprintf("%s:%d", l.Dest.Store, l.Count))
	}
	if fmt.Sprint(leaves) != "[us-postgres:2 eu-objectstore:1 us-postgres:1 eu-objectstore:0]" || r.Leaves != 4 {
		t.Fatalf("leaves %v (%d)", leaves, r.Leaves)
	}
	// No raw user id anywhere in the receipt.
	var js, txt bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	r.WriteText(&txt)
	if strings.Contains(js.String()+txt.String(), alice) {
		t.Fatalf("the receipt holds the user id:\n%s\n%s", js.String(), txt.String())
	}
	// Again: nothing left, still complete.
	r, err = e.Erase(context.Background(), alice, erasure.EraseOptions{})
	if err != nil || r.Removed != 0 || !r.Complete {
		t.Fatalf("second erasure: %+v, %v", r, err)
	}
}

// TestEraseDryRun counts and changes nothing.
func TestEraseDryRun(t *testing.T) {
	us, eu := eraseFixture()
	markers := newMemMarkers()
	ledger := &memLedger{}
	e, err := erasure.NewEraser(erasure.EraseConfig{
		Stores:   []erasure.StoreRef{{Name: "us-postgres", Region: "us", Store: us}, {Name: "eu-objectstore", Region: "eu", Store: eu}},
		Subjects: pseudonymizer(t), Markers: markers, Ledger: ledger, Locker: &fakeLocker{busy: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.Erase(context.Background(), alice, erasure.EraseOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !r.DryRun || r.Removed != 3 || !r.MarkedAt.IsZero() || r.Complete {
		t.Fatalf("dry run receipt %+v", r)
	}
	at, _ := markers.Lookup(context.Background(), []audit.Digest{pseudonymizer(t).Subject([]byte(alice))})
	if len(us.rows) != 3 || len(eu.rows) != 2 || len(ledger.all()) != 0 || !at[0].IsZero() {
		t.Fatalf("dry run changed something: %v %v, %d leaves, marker %v", us.users(), eu.users(), len(ledger.all()), at[0])
	}
}

// TestEraseRefusals: empty user, unknown store, a lock held, missing config.
func TestEraseRefusals(t *testing.T) {
	us, _ := eraseFixture()
	cfg := erasure.EraseConfig{Stores: []erasure.StoreRef{{Name: "us-postgres", Region: "us", Store: us}}, Subjects: pseudonymizer(t),
		Markers: newMemMarkers(), Locker: &fakeLocker{busy: true}, Settle: time.Millisecond}
	e, err := erasure.NewEraser(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.Erase(ctx, "", erasure.EraseOptions{}); !errors.Is(err, erasure.ErrEmptyUser) {
		t.Errorf("empty user: %v", err)
	}
	if _, err := e.Erase(ctx, alice, erasure.EraseOptions{Stores: []string{"us-mysql"}}); !errors.Is(err, erasure.ErrUnknownStore) || !strings.Contains(err.Error(), "us-postgres") {
		t.Errorf("unknown store: %v", err)
	}
	if _, err := e.Erase(ctx, alice, erasure.EraseOptions{}); !errors.Is(err, erasure.ErrLocked) {
		t.Errorf("lock held: %v", err)
	}
	if len(us.rows) != 3 {
		t.Errorf("a refused erasure removed rows: %v", us.users())
	}
	for _, bad := range []erasure.EraseConfig{
		{Markers: cfg.Markers},
		{Subjects: cfg.Subjects},
		{Subjects: cfg.Subjects, Markers: cfg.Markers, Stores: []erasure.StoreRef{{Name: "x"}}},
		{Subjects: cfg.Subjects, Markers: cfg.Markers, Stores: []erasure.StoreRef{{Name: "x", Store: us}, {Name: "x", Store: us}}},
	} {
		if _, err := erasure.NewEraser(bad); !errors.Is(err, erasure.ErrConfig) {
			t.Errorf("NewEraser(%+v) = %v", bad, err)
		}
	}
}

// TestEraseStoreFails: one store failing does not stop the others; the
// receipt names it and the error is ErrIncomplete.
func TestEraseStoreFails(t *testing.T) {
	us, eu := eraseFixture()
	us.fail = errors.New("connection refused")
	e, err := erasure.NewEraser(erasure.EraseConfig{
		Stores:   []erasure.StoreRef{{Name: "us-postgres", Region: "us", Store: us}, {Name: "eu-objectstore", Region: "eu", Store: eu}},
		Subjects: pseudonymizer(t), Markers: newMemMarkers(), Settle: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.Erase(context.Background(), alice, erasure.EraseOptions{})
	if !errors.Is(err, erasure.ErrIncomplete) || r.Complete || !strings.Contains(r.Stores[0].Error, "connection refused") || r.Stores[1].Removed != 1 {
		t.Fatalf("receipt %+v, %v", r, err)
	}
	if fmt.Sprint(eu.users()) != "[carol:e5]" {
		t.Fatalf("eu left %v", eu.users())
	}
	// The marker failing stops everything before any removal.
	us.fail = nil
	e, _ = erasure.NewEraser(erasure.EraseConfig{Stores: []erasure.StoreRef{{Name: "us-postgres", Store: us}}, Subjects: pseudonymizer(t), Markers: failingMarkers{}})
	if _, err := e.Erase(context.Background(), alice, erasure.EraseOptions{}); err == nil || len(us.rows) != 3 {
		t.Fatalf("marker down: %v, rows %v", err, us.users())
	}
}

type failingMarkers struct{}

func (failingMarkers) Mark(context.Context, audit.Digest, time.Time) error {
	return errors.New("redis down")
}
func (failingMarkers) Lookup(context.Context, []audit.Digest) ([]time.Time, error) {
	return nil, errors.New("redis down")
}

// TestGuard: an erasure covers the user's events that occurred up to it,
// not later ones; no user, no cover; markers out of reach fail closed.
func TestGuard(t *testing.T) {
	ctx := context.Background()
	subjects := pseudonymizer(t)
	m := newMemMarkers()
	erasedAt := t0.Add(time.Hour)
	if err := m.Mark(ctx, subjects.Subject([]byte(alice)), erasedAt); err != nil {
		t.Fatal(err)
	}
	_ = m.Mark(ctx, subjects.Subject([]byte(alice)), t0) // an earlier time changes nothing
	g := erasure.NewGuard(m, subjects)
	users := [][]byte{[]byte(alice), []byte(alice), []byte(alice), []byte(alice), []byte("bob"), nil}
	when := []time.Time{t0, erasedAt, erasedAt.Add(time.Millisecond), {}, t0, t0}
	got, err := g.Erased(ctx, users, when)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[true true false true false false]" {
		t.Fatalf("Erased = %v", got)
	}
	if _, err := erasure.NewGuard(failingMarkers{}, subjects).Erased(ctx, users, when); err == nil {
		t.Fatal("markers out of reach: no error")
	}
	if _, err := g.Erased(ctx, users, when[:2]); err == nil {
		t.Fatal("mismatched lengths: no error")
	}
}
