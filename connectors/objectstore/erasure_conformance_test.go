package objectstore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/erasure/erasuretest"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/sink"
)

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

func erasureHarness(open func(t *testing.T) *objectstore.Store) erasuretest.Harness {
	return erasuretest.Harness{New: func(t *testing.T) (erasure.RowStore, func(*testing.T, []erasuretest.Event)) {
		s := open(t)
		return s, func(t *testing.T, evs []erasuretest.Event) {
			if err := s.Write(testenv.Context(t, 30*time.Second), sinkRecords(evs)); err != nil {
				t.Fatal(err)
			}
		}
	}}
}

// TestErasureConformance: the object store passes the erasure suite on
// file:// and on the dev stack's S3 server.
func TestErasureConformance(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		erasuretest.TestStore(t, erasureHarness(func(t *testing.T) *objectstore.Store {
			s, err := objectstore.Open(context.Background(), objectstore.Config{URL: "file://" + filepath.ToSlash(t.TempDir()) + "?no_tmp_dir=true"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close(context.Background()) })
			return s
		}))
	})
	t.Run("s3", func(t *testing.T) {
		erasuretest.TestStore(t, erasureHarness(func(t *testing.T) *objectstore.Store {
			s, err := objectstore.Open(context.Background(), objectstore.Config{URL: testenv.NewS3(t).URL()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close(context.Background()) })
			return s
		}))
	})
}
