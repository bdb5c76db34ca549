package storetest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/sink"
)

// memStore is an in-memory sink.Store that keeps the contract: one record
// per pinned-topic offset, nothing written once ctx has ended, nothing
// after Close. The broken stores below each break one part of it.
type memStore struct {
	mu     sync.Mutex
	recs   []sink.Record
	closed bool
	flaw   string // "" (none), "duplicates", "drops_user_id", "ignores_ctx", "writes_after_close", "half_records"
}

func (s *memStore) Write(ctx context.Context, batch []sink.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed && s.flaw != "writes_after_close" {
		return errors.New("memstore: closed")
	}
	if err := ctx.Err(); err != nil {
		switch s.flaw {
		case "ignores_ctx":
		case "half_records":
			r := batch[0]
			r.Event = r.Event[:len(r.Event)/2]
			r.Raw = nil
			s.recs = append(s.recs, r)
			return err
		default:
			return err
		}
	}
	for _, r := range batch {
		if s.flaw != "duplicates" && slices.ContainsFunc(s.recs, func(x sink.Record) bool {
			return x.Topic == r.Topic && x.Partition == r.Partition && x.Offset == r.Offset
		}) {
			continue
		}
		if s.flaw == "drops_user_id" {
			r.UserID = ""
		}
		r.Event, r.Raw = slices.Clone(r.Event), slices.Clone(r.Raw)
		s.recs = append(s.recs, r)
	}
	return nil
}

func (s *memStore) Close(context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// The erasure side (erasure.RowStore), for the erasure suite.

func (s *memStore) keep(drop func(*sink.Record) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.recs)
	s.recs = slices.DeleteFunc(s.recs, func(r sink.Record) bool { return drop(&r) })
	return n - len(s.recs)
}

func (s *memStore) Erase(_ context.Context, userID string) (int, error) {
	if userID == "" {
		return 0, erasure.ErrEmptyUser
	}
	return s.keep(func(r *sink.Record) bool { return r.UserID == userID }), nil
}

func (s *memStore) Count(_ context.Context, userID string) (int, error) {
	if userID == "" {
		return 0, erasure.ErrEmptyUser
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.recs {
		if r.UserID == userID {
			n++
		}
	}
	return n, nil
}

func (s *memStore) Scan(_ context.Context, fn func(erasure.Row) error) error {
	s.mu.Lock()
	recs := slices.Clone(s.recs)
	s.mu.Unlock()
	for _, r := range recs {
		if err := fn(erasure.Row{EventID: r.EventID, UserID: r.UserID, Jurisdiction: r.Jurisdiction, Region: r.Region,
			RulesetVersion: r.RulesetVersion, SourceTopic: r.SourceTopic, SourcePartition: r.SourcePartition, SourceOffset: r.SourceOffset,
			Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, OccurredAt: r.OccurredAt, Event: r.Event}); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) HasEvents(_ context.Context, ids []string) (map[string]bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]bool{}
	for _, r := range s.recs {
		if slices.Contains(ids, r.EventID) {
			out[r.EventID] = true
		}
	}
	return out, nil
}

func (s *memStore) EraseEvents(_ context.Context, ids []string) (int, error) {
	return s.keep(func(r *sink.Record) bool { return slices.Contains(ids, r.EventID) }), nil
}

func memHarness(flaw string) Harness {
	return Harness{
		Open: func(*testing.T) sink.Store { return &memStore{flaw: flaw} },
		Read: func(_ *testing.T, s sink.Store) []sink.Record {
			m := s.(*memStore)
			m.mu.Lock()
			defer m.mu.Unlock()
			return slices.Clone(m.recs)
		},
	}
}

// TestMemoryStoreConformance: a store that keeps the contract passes.
func TestMemoryStoreConformance(t *testing.T) {
	TestStore(t, memHarness(""))
}

// TestSuiteCatchesBrokenStores runs the checks against stores that each
// break one part of the contract: the check for that part must fail.
func TestSuiteCatchesBrokenStores(t *testing.T) {
	for _, c := range []struct {
		flaw  string
		check string // the check that must catch it
	}{
		{"duplicates", "SameEventTwice"},
		{"duplicates", "SameBatchTwice"},
		{"duplicates", "RedeliveryShorterAndLonger"},
		{"drops_user_id", "RoundTrip"},
		{"ignores_ctx", "CancelledWriteLeavesNothingHalfVisible"},
		{"half_records", "CancelledWriteLeavesNothingHalfVisible"},
		{"writes_after_close", "WriteAfterCloseFails"},
	} {
		t.Run(c.flaw+"/"+c.check, func(t *testing.T) {
			i := slices.IndexFunc(checks, func(ch check) bool { return ch.name == c.check })
			if i < 0 {
				t.Fatalf("no check %s", c.check)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := checks[i].run(ctx, t, memHarness(c.flaw))
			if err == nil {
				t.Fatalf("check %s passed a store that %s", c.check, strings.ReplaceAll(c.flaw, "_", " "))
			}
			t.Logf("check %s reports: %v", c.check, err)
		})
	}
}
