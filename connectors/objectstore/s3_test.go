package objectstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/sink"
)

// TestS3StoresEachOffsetOnce runs the store on a real S3 API (the dev
// stack's S3-compatible server, through s3blob): redelivered batches, shorter
// and longer, store each offset exactly once, in objects named by region,
// hour, partition and offsets, that read back as OCF.
func TestS3StoresEachOffsetOnce(t *testing.T) {
	t.Parallel()
	b := testenv.NewS3(t)
	ctx := testenv.Context(t, time.Minute)
	s, err := objectstore.Open(ctx, objectstore.Config{URL: b.URL()})
	if err != nil {
		t.Fatalf("open %s: %v", b.URL(), err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	for _, batch := range [][]sink.Record{
		records(0, 10, 0), records(0, 5, 0), records(5, 10, 0), // a shorter redelivery, then the rest
		records(20, 25, 1), records(20, 30, 1), records(20, 30, 1), // a longer one, then the same again
	} {
		if err := s.Write(ctx, batch); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	got := readAll(t, s.Bucket())
	if ids := eventIDs(got); len(got) != 20 || len(ids) != 20 {
		t.Fatalf("read %d records of %d events, want 20 each (exactly once)", len(got), len(ids))
	}
	checkObjects(t, got,
		"us/2026-11-23/02/residency.us-0-00000000000000000000-00000000000000000009.avro",
		"us/2026-11-23/02/residency.us-1-00000000000000000020-00000000000000000024.avro",
		"us/2026-11-23/02/residency.us-1-00000000000000000025-00000000000000000029.avro",
	)
}
