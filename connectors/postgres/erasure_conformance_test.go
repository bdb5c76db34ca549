package postgres_test

import (
	"testing"
	"time"

	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/erasure/erasuretest"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/sink"
)

// sinkRecords turns the suite's events into what the sink writes.
func sinkRecords(evs []erasuretest.Event) []sink.Record {
	out := make([]sink.Record, len(evs))
	for i, e := range evs {
		out[i] = sink.Record{EventID: e.EventID, UserID: e.UserID, Jurisdiction: e.Jurisdiction, Region: e.Region,
			OccurredAt: e.OccurredAt, RulesetVersion: "7", SourceTopic: e.SourceTopic, SourcePartition: e.SourcePartition,
			SourceOffset: e.SourceOffset, Topic: e.Topic, Partition: e.Partition, Offset: e.Offset, Time: e.OccurredAt,
			Event: erasuretest.Doc(e), Raw: []byte(e.EventID)}
	}
	return out
}

// TestErasureConformance: the PostgreSQL store passes the erasure suite on
// real PostgreSQL.
func TestErasureConformance(t *testing.T) {
	erasuretest.TestStore(t, erasuretest.Harness{New: func(t *testing.T) (erasure.RowStore, func(*testing.T, []erasuretest.Event)) {
		s := open(t, testenv.NewPostgres(t).DSN)
		return s, func(t *testing.T, evs []erasuretest.Event) {
			if err := s.Write(testenv.Context(t, 30*time.Second), sinkRecords(evs)); err != nil {
				t.Fatal(err)
			}
		}
	}})
}
