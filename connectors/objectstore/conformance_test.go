package objectstore_test

import (
	"path/filepath"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/storetest"
)

// conformance runs the store conformance suite (sink/storetest) on the
// buckets newURL makes, one per check.
func conformance(t *testing.T, newURL func(t *testing.T) string) {
	urls := map[sink.Store]string{}
	storetest.TestStore(t, storetest.Harness{
		Open: func(t *testing.T) sink.Store {
			u := newURL(t)
			s, err := objectstore.Open(testenv.Context(t, 30*time.Second), objectstore.Config{URL: u})
			if err != nil {
				t.Fatal(err)
			}
			urls[s] = u
			return s
		},
		// Read opens the bucket again, so it works after the store was
		// closed, and reads every object as OCF.
		Read: func(t *testing.T, st sink.Store) []sink.Record {
			t.Helper()
			b, err := blob.OpenBucket(testenv.Context(t, 30*time.Second), urls[st])
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			var out []sink.Record
			for _, s := range readAll(t, b) {
				n := s.native
				out = append(out, sink.Record{
					EventID: n["event_id"].(string), UserID: n["user_id"].(string), Jurisdiction: n["jurisdiction"].(string),
					Region: n["region"].(string), OccurredAt: n["occurred_at"].(time.Time), RulesetVersion: n["ruleset_version"].(string),
					SourceTopic: n["source_topic"].(string), SourcePartition: n["source_partition"].(int32),
					SourceOffset: n["source_offset"].(int64), Topic: n["topic"].(string), Partition: int(n["partition"].(int32)),
					Offset: n["offset"].(int64), Event: []byte(n["event"].(string)), Raw: n["raw"].([]byte),
				})
			}
			return out
		},
	})
}

// TestStoreConformance runs the suite on file buckets.
func TestStoreConformance(t *testing.T) {
	conformance(t, func(t *testing.T) string {
		return "file://" + filepath.ToSlash(t.TempDir()) + "?no_tmp_dir=true"
	})
}

// TestS3StoreConformance runs the suite on the dev stack's S3-compatible
// server (s3blob), a bucket per check.
func TestS3StoreConformance(t *testing.T) {
	conformance(t, func(t *testing.T) string { return testenv.NewS3(t).URL() })
}
