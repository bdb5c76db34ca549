// Package erasuretest is the conformance suite of the erasure side of a
// store: every store (connectors/postgres, connectors/objectstore, and any
// later one) passes TestStore, whatever its layout. The stores' own
// conformance suite (idempotence, approval, close) calls it too.
package erasuretest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/residency-router/residency/erasure"
)

// Event is one event as the suite writes it into a store; the harness
// turns it into what the store's sink writes (its JSON document must hold
// event_id, user_id and country at the top level).
type Event struct {
	// EventID, UserID and Country are the event's fields.
	EventID, UserID, Country string
	// Jurisdiction and Region are its placement.
	Jurisdiction, Region string
	// SourceTopic, SourcePartition and SourceOffset are its ingest
	// coordinates.
	SourceTopic     string
	SourcePartition int32
	SourceOffset    int64
	// Topic, Partition and Offset are its pinned-topic coordinates.
	Topic     string
	Partition int
	Offset    int64
	// OccurredAt is its occurred_at.
	OccurredAt time.Time
}

// Harness makes the stores the suite tests.
type Harness struct {
	// New returns an empty store and a function that writes events into it
	// as its sink would (durably, in one batch).
	New func(t *testing.T) (store erasure.RowStore, write func(t *testing.T, events []Event))
}

// Events returns n events of users u0..u(users-1) in turn, on pinned
// partition 0 from offset 0, an event a second.
func Events(n, users int) []Event {
	out := make([]Event, n)
	at := time.Date(2026, 11, 23, 2, 10, 0, 0, time.UTC)
	for i := range out {
		out[i] = Event{EventID: fmt.Sprintf("ev-%04d", i), UserID: fmt.Sprintf("u%d", i%users), Country: "US",
			Jurisdiction: "US", Region: "us", SourceTopic: "events", SourcePartition: int32(i % 3), SourceOffset: int64(1000 + i),
			Topic: "residency.us", Partition: 0, Offset: int64(i), OccurredAt: at.Add(time.Duration(i) * time.Second)}
	}
	return out
}

// Doc is the JSON document of e, as the sinks store events.
func Doc(e Event) []byte {
	b, _ := json.Marshal(map[string]any{"event_id": e.EventID, "user_id": e.UserID, "country": e.Country})
	return b
}

func scanAll(t *testing.T, s erasure.Store) map[string]erasure.Row {
	t.Helper()
	out := map[string]erasure.Row{}
	if err := s.Scan(context.Background(), func(r erasure.Row) error {
		if _, dup := out[r.EventID]; dup {
			t.Errorf("Scan handed over %s twice", r.EventID)
		}
		out[r.EventID] = r
		return nil
	}); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return out
}

// TestStore runs the suite.
func TestStore(t *testing.T, h Harness) {
	ctx := context.Background()
	t.Run("ScanHandsOverEveryRow", func(t *testing.T) {
		s, write := h.New(t)
		evs := Events(7, 3)
		write(t, evs)
		got := scanAll(t, s)
		if len(got) != len(evs) {
			t.Fatalf("Scan: %d rows, want %d", len(got), len(evs))
		}
		for _, e := range evs {
			r := got[e.EventID]
			if r.UserID != e.UserID || r.Jurisdiction != e.Jurisdiction || r.Region != e.Region || r.SourceTopic != e.SourceTopic ||
				r.SourcePartition != e.SourcePartition || r.SourceOffset != e.SourceOffset || r.Topic != e.Topic ||
				r.Partition != e.Partition || r.Offset != e.Offset || !r.OccurredAt.Equal(e.OccurredAt) {
				t.Errorf("row %s = %+v, want %+v", e.EventID, r, e)
			}
			var doc map[string]any
			if err := json.Unmarshal(r.Event, &doc); err != nil || doc["country"] != e.Country {
				t.Errorf("row %s: document %s (%v)", e.EventID, r.Event, err)
			}
		}
		stop := errors.New("stop")
		n := 0
		if err := s.Scan(ctx, func(erasure.Row) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
			t.Errorf("Scan after fn failed: %v, %d calls", err, n)
		}
	})
	t.Run("EraseRemovesOnlyTheUser", func(t *testing.T) {
		s, write := h.New(t)
		evs := Events(12, 3)
		write(t, evs)
		before := scanAll(t, s)
		if n, err := s.Count(ctx, "u1"); err != nil || n != 4 {
			t.Fatalf("Count(u1) = %d, %v", n, err)
		}
		if n, err := s.Erase(ctx, "u1"); err != nil || n != 4 {
			t.Fatalf("Erase(u1) = %d, %v", n, err)
		}
		after := scanAll(t, s)
		for id, r := range before {
			a, ok := after[id]
			switch {
			case r.UserID == "u1" && ok:
				t.Errorf("%s of the erased user is still there", id)
			case r.UserID != "u1" && !ok:
				t.Errorf("%s of %s is gone", id, r.UserID)
			case r.UserID != "u1":
				a.Object, r.Object = "", "" // an object store may name the rewritten object alike or not
				if fmt.Sprint(a) != fmt.Sprint(r) {
					t.Errorf("%s changed:\n%+v\n%+v", id, r, a)
				}
			}
		}
		if n, err := s.Count(ctx, "u1"); err != nil || n != 0 {
			t.Errorf("Count(u1) after = %d, %v", n, err)
		}
		if n, err := s.Erase(ctx, "u1"); err != nil || n != 0 {
			t.Errorf("Erase(u1) again = %d, %v", n, err)
		}
		if n, err := s.Erase(ctx, "nobody"); err != nil || n != 0 {
			t.Errorf("Erase(nobody) = %d, %v", n, err)
		}
	})
	t.Run("EmptyUserRefused", func(t *testing.T) {
		s, write := h.New(t)
		evs := Events(3, 1)
		evs[1].UserID = "" // an event without a user id
		write(t, evs)
		if _, err := s.Erase(ctx, ""); !errors.Is(err, erasure.ErrEmptyUser) {
			t.Errorf("Erase(\"\") = %v", err)
		}
		if _, err := s.Count(ctx, ""); !errors.Is(err, erasure.ErrEmptyUser) {
			t.Errorf("Count(\"\") = %v", err)
		}
		if got := scanAll(t, s); len(got) != 3 {
			t.Errorf("%d rows left, want 3", len(got))
		}
	})
	t.Run("EventsFoundAndRemoved", func(t *testing.T) {
		s, write := h.New(t)
		evs := Events(6, 2)
		write(t, evs)
		ids := []string{evs[1].EventID, evs[4].EventID, "no-such-event"}
		has, err := s.HasEvents(ctx, ids)
		if err != nil || len(has) != 2 || !has[ids[0]] || !has[ids[1]] {
			t.Fatalf("HasEvents = %v, %v", has, err)
		}
		if n, err := s.EraseEvents(ctx, ids); err != nil || n != 2 {
			t.Fatalf("EraseEvents = %d, %v", n, err)
		}
		got := scanAll(t, s)
		var left []string
		for id := range got {
			left = append(left, id)
		}
		slices.Sort(left)
		if fmt.Sprint(left) != fmt.Sprint([]string{evs[0].EventID, evs[2].EventID, evs[3].EventID, evs[5].EventID}) {
			t.Errorf("left %v", left)
		}
	})
}
