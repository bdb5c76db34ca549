package sink_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
)

// memErasures is an erasure check over users erased at a time, as
// erasure.Guard answers it over the markers: an event is covered when it
// occurred at or before its user's erasure.
type memErasures struct {
	mu      sync.Mutex
	erased  map[string]time.Time
	failN   int // fail this many lookups first
	lookups int
}

func (m *memErasures) Erased(_ context.Context, users [][]byte, occurred []time.Time) ([]bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	if m.failN > 0 {
		m.failN--
		return nil, errors.New("markers out of reach")
	}
	out := make([]bool, len(users))
	for i, u := range users {
		at, ok := m.erased[string(u)]
		out[i] = ok && (occurred[i].IsZero() || !occurred[i].After(at))
	}
	return out, nil
}

// TestErasedUsersAreNeverStored: events of a user erased after they
// occurred (a redelivery, a replay) are neither written nor quarantined
// (a quarantine copy would keep the user's data): they are committed with
// their batch and counted under their own reason. An event of the user
// that occurred after the erasure is new data and is stored.
func TestErasedUsersAreNeverStored(t *testing.T) {
	h := newHarness(t, "us")
	er := &memErasures{erased: map[string]time.Time{sinktest.UserID(3): sinktest.OccurredAt(3)}, failN: 2}
	h.cfg.Erasures = er
	var msgs []stream.Message
	for i := range 8 {
		msgs = append(msgs, sinktest.Message(usTopic, i, "US", "us", "US"))
	}
	// Two more of user 3 (the test events' user is UserID(i)): a
	// redelivery of event 3, and a forged-header event of user 3 that
	// would otherwise be quarantined.
	msgs = append(msgs, sinktest.Message(usTopic, 3, "US", "us", "US"), sinktest.Message(usTopic, 3, "EU", "eu", "US"))
	h.publish(t, msgs...)
	s := h.newSink(t)
	start(t, s)
	testenv.Eventually(t, waitWithin, "all offsets committed", func() bool { return committed(h) == int64(len(msgs)) })
	if n := h.store.count(); n != 7 {
		t.Fatalf("store holds %d events, want 7 (all but user 3's)", n)
	}
	h.store.mu.Lock()
	for _, r := range h.store.rows {
		if r.UserID == sinktest.UserID(3) {
			t.Errorf("the erased user's event %s was stored", r.EventID)
		}
	}
	h.store.mu.Unlock()
	if q := h.broker.Records(quarTopic); len(q) != 0 {
		t.Fatalf("quarantine holds %d events, want none (the erased user's data is not copied)", len(q))
	}
	if v := metric(t, h.reg, "residency_sink_erased_events_total", "store", storeName); v != 3 {
		t.Errorf("erased counter = %v, want 3", v)
	}
	if er.lookups < 3 {
		t.Errorf("%d marker lookups: the failed ones were not retried", er.lookups)
	}

	// After the erasure the user is new: an event that occurred later is
	// stored.
	er.mu.Lock()
	er.erased[sinktest.UserID(9)] = sinktest.OccurredAt(9).Add(-time.Second)
	er.mu.Unlock()
	h.publish(t, sinktest.Message(usTopic, 9, "US", "us", "US"))
	testenv.Eventually(t, waitWithin, "event 9 stored", func() bool { return h.store.count() == 8 })
}

// TestErasureMarkersOutOfReachStopWriting: while the markers cannot be
// read the batch is neither written nor committed (fail closed).
func TestErasureMarkersOutOfReachStopWriting(t *testing.T) {
	h := newHarness(t, "us")
	er := &memErasures{erased: map[string]time.Time{}, failN: 1 << 30}
	h.cfg.Erasures = er
	h.publish(t, sinktest.Message(usTopic, 1, "US", "us", "US"))
	s := h.newSink(t)
	start(t, s)
	testenv.Eventually(t, waitWithin, "lookups retried", func() bool {
		er.mu.Lock()
		defer er.mu.Unlock()
		return er.lookups >= 3
	})
	if h.store.count() != 0 || committed(h) != 0 {
		t.Fatalf("written %d, committed %d while the markers were out of reach", h.store.count(), committed(h))
	}
	er.mu.Lock()
	er.failN = 0
	er.mu.Unlock()
	testenv.Eventually(t, waitWithin, "written once the markers answer", func() bool { return committed(h) == 1 && h.store.count() == 1 })
}
