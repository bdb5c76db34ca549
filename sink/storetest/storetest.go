// Package storetest is the conformance suite every sink.Store passes
// (TestStore), as stream/streamtest.TestPubSub is for publishers: what the
// sink relies on from a store, checked the same way for PostgreSQL, the
// object store and any later one. It is for tests only: no package the
// residency binary links imports it.
//
// The suite is a list of checks (see checks in this file), then the
// erasure conformance suite (erasure/erasuretest): every store the sinks
// write must also let `residency erase` and `residency residue` reach its
// rows (erasure.RowStore), so TestStore runs that suite on it too.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/erasure/erasuretest"
	"github.com/residency-router/residency/sink"
)

// Harness connects the suite to one store implementation.
type Harness struct {
	// Open returns a new, empty store unique to the test. The suite closes
	// it (closing is under test too); Open may also register a cleanup.
	Open func(t *testing.T) sink.Store
	// Read returns every record the store of Open holds, in any order, read
	// back from where the store keeps them (the database, the bucket), not
	// from memory, so it works after the store was closed. Stores do not
	// keep Record.Time (the pinned-topic timestamp, which the object store
	// uses to lay records out): the suite does not compare it.
	Read func(t *testing.T, s sink.Store) []sink.Record
	// Timeout bounds each check. Default 60s.
	Timeout time.Duration
}

// check is one conformance check. It returns an error describing how the
// store breaks the contract, or nil; t is for the harness (and fails the
// test only when the harness itself fails).
type check struct {
	name string
	run  func(ctx context.Context, t *testing.T, h Harness) error
}

// checks is the suite, in order. To test a new store method, add its
// checks here: every store runs them through TestStore.
var checks = []check{
	{"RoundTrip", checkRoundTrip},
	{"SameEventTwice", checkSameEventTwice},
	{"SameBatchTwice", checkSameBatchTwice},
	{"RedeliveryShorterAndLonger", checkRedelivery},
	{"CancelledWriteLeavesNothingHalfVisible", checkCancelledWrite},
	{"CloseKeepsWhatWasWritten", checkClose},
	{"WriteAfterCloseFails", checkWriteAfterClose},
}

// TestStore runs the conformance suite against the store of h: the checks
// of the sink's contract, then the erasure suite (erasuretest.TestStore)
// on stores of h written as the sink writes them.
func TestStore(t *testing.T, h Harness) {
	if h.Timeout == 0 {
		h.Timeout = 60 * time.Second
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
			defer cancel()
			if err := c.run(ctx, t, h); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("Erasure", func(t *testing.T) { erasuretest.TestStore(t, erasureHarness(h)) })
}

// erasureHarness is the erasure suite's harness over h: each store opened
// by h (and closed by the suite), written through sink.Store.Write with
// the records the sink would make of the suite's events.
func erasureHarness(h Harness) erasuretest.Harness {
	return erasuretest.Harness{New: func(t *testing.T) (erasure.RowStore, func(*testing.T, []erasuretest.Event)) {
		s := open(t, h)
		rs, ok := s.(erasure.RowStore)
		if !ok {
			t.Fatalf("%T does not implement erasure.RowStore (Erase, Count, Scan, HasEvents, EraseEvents): `residency erase` and `residency residue` could not reach its rows", s)
		}
		return rs, func(t *testing.T, evs []erasuretest.Event) {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
			defer cancel()
			if err := s.Write(ctx, ErasureRecords(evs)); err != nil {
				t.Fatalf("writing %d valid records: %v", len(evs), err)
			}
		}
	}}
}

// ErasureRecords returns the sink records of the erasure suite's events,
// as the sink builds them (the JSON document erasuretest.Doc, the event id
// as the raw value, ruleset version 7).
func ErasureRecords(evs []erasuretest.Event) []sink.Record {
	out := make([]sink.Record, len(evs))
	for i, e := range evs {
		out[i] = sink.Record{EventID: e.EventID, UserID: e.UserID, Jurisdiction: e.Jurisdiction, Region: e.Region,
			OccurredAt: e.OccurredAt, RulesetVersion: "7", SourceTopic: e.SourceTopic, SourcePartition: e.SourcePartition,
			SourceOffset: e.SourceOffset, Topic: e.Topic, Partition: e.Partition, Offset: e.Offset, Time: e.OccurredAt,
			Event: erasuretest.Doc(e), Raw: []byte(e.EventID)}
	}
	return out
}

// Records returns sink records for events from..to-1 of one pinned-topic
// partition, offsets equal to the event numbers, as the sink builds them:
// every field set, in the variety a store must keep exactly (unicode, an
// event JSON with nested values, raw bytes with every byte value, records
// without source coordinates, and records of two hours).
func Records(topic string, partition, from, to int) []sink.Record {
	out := make([]sink.Record, 0, to-from)
	base := time.Date(2026, 11, 23, 2, 59, 58, 0, time.UTC)
	for i := from; i < to; i++ {
		at := base.Add(time.Duration(i) * 250 * time.Millisecond) // some in the next hour
		raw := make([]byte, 64+i%7)
		for j := range raw {
			raw[j] = byte(i*31 + j)
		}
		doc, _ := json.Marshal(map[string]any{
			"event_id": eventID(i), "user_id": userID(i), "n": i, "ratio": 0.5 + float64(i),
			"device": map[string]any{"os": "ANDROID", "app_version": "34.1.0"},
			"tags":   []any{"a", "ü", i}, "note": "Grüße, 東京 \"quoted\"",
		})
		r := sink.Record{
			EventID: eventID(i), UserID: userID(i), Jurisdiction: "US", Region: "us",
			OccurredAt: at.Add(-time.Hour), RulesetVersion: fmt.Sprint(7 + i%2), SourceTopic: "events.ingest",
			SourcePartition: int32(i % 3), SourceOffset: int64(10_000 + i),
			Topic: topic, Partition: partition, Offset: int64(i), Time: at, Event: doc, Raw: raw,
		}
		if i%5 == 4 { // an event whose source coordinates are not known
			r.SourceTopic, r.SourcePartition, r.SourceOffset = "", -1, -1
		}
		out = append(out, r)
	}
	return out
}

func eventID(i int) string { return fmt.Sprintf("5e7c1d2a-0000-4000-8000-%012d", i) }
func userID(i int) string  { return fmt.Sprintf("user-%d-ü", i) }

const topic = "residency.us"

// write writes batch, failing the test (not the check) if the store
// refuses a valid batch.
func write(ctx context.Context, s sink.Store, batch []sink.Record) error {
	if err := s.Write(ctx, batch); err != nil {
		return fmt.Errorf("writing %d valid records: %w", len(batch), err)
	}
	return nil
}

// open opens a store; the suite closes it when the test ends (a second
// Close after a check's own is not checked).
func open(t *testing.T, h Harness) sink.Store {
	t.Helper()
	s := h.Open(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

// checkRoundTrip: every field of every record comes back as written.
func checkRoundTrip(ctx context.Context, t *testing.T, h Harness) error {
	s := open(t, h)
	want := Records(topic, 0, 0, 20)
	want = append(want, Records(topic, 1, 100, 105)...)
	if err := write(ctx, s, want); err != nil {
		return err
	}
	return Same(h.Read(t, s), want)
}

// checkSameEventTwice: one record written in two Write calls (a
// redelivery after a crash) is stored once.
func checkSameEventTwice(ctx context.Context, t *testing.T, h Harness) error {
	s := open(t, h)
	rec := Records(topic, 0, 7, 8)
	for range 2 {
		if err := write(ctx, s, rec); err != nil {
			return err
		}
	}
	return Same(h.Read(t, s), rec)
}

// checkSameBatchTwice: a whole batch written again is stored once.
func checkSameBatchTwice(ctx context.Context, t *testing.T, h Harness) error {
	s := open(t, h)
	batch := Records(topic, 0, 0, 30)
	for range 2 {
		if err := write(ctx, s, batch); err != nil {
			return err
		}
	}
	return Same(h.Read(t, s), batch)
}

// checkRedelivery: a batch redelivered shorter, then longer, than the
// first delivery adds only what is missing.
func checkRedelivery(ctx context.Context, t *testing.T, h Harness) error {
	s := open(t, h)
	all := Records(topic, 0, 0, 15)
	for _, n := range []int{10, 5, 15} {
		if err := write(ctx, s, all[:n]); err != nil {
			return err
		}
	}
	return Same(h.Read(t, s), all)
}

// checkCancelledWrite: a Write whose context has ended fails, and what it
// may have stored (the contract allows any subset) is whole records of the
// batch; the batch written again is then stored exactly once.
func checkCancelledWrite(ctx context.Context, t *testing.T, h Harness) error {
	s := open(t, h)
	batch := Records(topic, 0, 0, 40)
	dead, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Write(dead, batch); err == nil {
		return errors.New("a Write with an ended context returned nil: it must give up when its context ends")
	}
	if err := Subset(h.Read(t, s), batch); err != nil {
		return fmt.Errorf("after a Write with an ended context: %w", err)
	}
	if err := write(ctx, s, batch); err != nil {
		return err
	}
	return Same(h.Read(t, s), batch)
}

// checkClose: Close returns within its context, and what was written
// before stays stored; a Close while a Write runs leaves whole records.
func checkClose(ctx context.Context, t *testing.T, h Harness) error {
	s := open(t, h)
	first := Records(topic, 0, 0, 10)
	if err := write(ctx, s, first); err != nil {
		return err
	}
	more := Records(topic, 0, 10, 200)
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Write(ctx, more) }) // may fail: the store is closing
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	err := s.Close(cctx)
	if err != nil && cctx.Err() == nil {
		return fmt.Errorf("close = %v", err)
	}
	if took := time.Since(start); took > 25*time.Second {
		return fmt.Errorf("closing took %s with a context of 20s", took)
	}
	wg.Wait()
	got := h.Read(t, s)
	if err := Subset(got, append(slices.Clone(first), more...)); err != nil {
		return fmt.Errorf("after Close during a Write: %w", err)
	}
	have := map[int64]bool{}
	for _, r := range got {
		have[r.Offset] = true
	}
	for _, r := range first {
		if !have[r.Offset] {
			return fmt.Errorf("offset %d, written before Close, is gone after it", r.Offset)
		}
	}
	return nil
}

// checkWriteAfterClose: a closed store refuses writes.
func checkWriteAfterClose(ctx context.Context, t *testing.T, h Harness) error {
	s := open(t, h)
	if err := write(ctx, s, Records(topic, 0, 0, 3)); err != nil {
		return err
	}
	if err := s.Close(ctx); err != nil {
		return fmt.Errorf("close = %v", err)
	}
	if err := s.Write(ctx, Records(topic, 0, 3, 6)); err == nil {
		return errors.New("a Write after Close returned nil")
	}
	return Same(h.Read(t, s), Records(topic, 0, 0, 3))
}

// Same returns an error naming the first difference between got (records
// read back, any order) and want: a record missing, one too many (a
// duplicate), or a field that differs. Records are matched by
// topic/partition/offset; Time is not compared (no store keeps it); Event
// is compared as JSON (a store may normalise it).
func Same(got, want []sink.Record) error {
	if err := Subset(got, want); err != nil {
		return err
	}
	if len(got) != len(want) {
		return fmt.Errorf("%d records stored, want %d", len(got), len(want))
	}
	return nil
}

// Subset returns an error unless every record of got is, whole and once,
// one of want's.
func Subset(got, want []sink.Record) error {
	byCoord := map[string]*sink.Record{}
	for i := range want {
		byCoord[coord(&want[i])] = &want[i]
	}
	seen := map[string]bool{}
	for i := range got {
		g := &got[i]
		k := coord(g)
		w, ok := byCoord[k]
		switch {
		case !ok:
			return fmt.Errorf("record %s (event %s) was never written", k, g.EventID)
		case seen[k]:
			return fmt.Errorf("record %s (event %s) is stored twice", k, g.EventID)
		}
		seen[k] = true
		if err := sameRecord(g, w); err != nil {
			return fmt.Errorf("record %s: %w", k, err)
		}
	}
	return nil
}

func coord(r *sink.Record) string { return fmt.Sprintf("%s/%d@%d", r.Topic, r.Partition, r.Offset) }

// sameRecord compares every field a store keeps.
func sameRecord(got, want *sink.Record) error {
	var diffs []string
	str := func(name, g, w string) {
		if g != w {
			diffs = append(diffs, fmt.Sprintf("%s %q, want %q", name, g, w))
		}
	}
	num := func(name string, g, w int64) {
		if g != w {
			diffs = append(diffs, fmt.Sprintf("%s %d, want %d", name, g, w))
		}
	}
	str("event_id", got.EventID, want.EventID)
	str("user_id", got.UserID, want.UserID)
	str("jurisdiction", got.Jurisdiction, want.Jurisdiction)
	str("region", got.Region, want.Region)
	str("ruleset_version", got.RulesetVersion, want.RulesetVersion)
	str("source_topic", got.SourceTopic, want.SourceTopic)
	num("source_partition", int64(got.SourcePartition), int64(want.SourcePartition))
	num("source_offset", got.SourceOffset, want.SourceOffset)
	if !got.OccurredAt.Equal(want.OccurredAt) {
		diffs = append(diffs, fmt.Sprintf("occurred_at %s, want %s", got.OccurredAt, want.OccurredAt))
	}
	if !bytes.Equal(got.Raw, want.Raw) {
		diffs = append(diffs, fmt.Sprintf("raw %d bytes %x, want %d bytes %x", len(got.Raw), head(got.Raw), len(want.Raw), head(want.Raw)))
	}
	var gd, wd any
	if err := json.Unmarshal(got.Event, &gd); err != nil {
		diffs = append(diffs, fmt.Sprintf("event is not JSON: %v", err))
	} else if _ = json.Unmarshal(want.Event, &wd); !reflect.DeepEqual(gd, wd) {
		diffs = append(diffs, fmt.Sprintf("event %s, want %s", got.Event, want.Event))
	}
	if len(diffs) > 0 {
		return errors.New(strings.Join(diffs, "; "))
	}
	return nil
}

func head(b []byte) []byte { return b[:min(len(b), 8)] }
