package objectstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/residency-router/residency/sink"
)

// TestConcurrentWritersDuplicateNeverLose: two members that list before
// either object is visible both write. Their objects have different names
// unless they hold the same offsets, so the overlap is stored twice (readers
// dedupe on event_id) and nothing is lost.
func TestConcurrentWritersDuplicateNeverLose(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Config{URL: "file://" + filepath.ToSlash(t.TempDir()) + "?no_tmp_dir=true"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	rec := func(from, to int64) group {
		var g group
		for o := from; o < to; o++ {
			r := &sink.Record{EventID: "e" + string(rune('a'+o%26)), Region: "us", Topic: "residency.us", Offset: o,
				OccurredAt: time.Unix(0, 0), Time: time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)}
			g.records = append(g.records, r)
		}
		g.prefix = s.partitionPrefix(g.records[0])
		return g
	}
	// Both listed nothing; B's PUT lands, then A's (the write path past
	// the listing).
	for _, g := range []group{rec(100, 200), rec(100, 150), rec(100, 150)} {
		if err := s.put(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	spans, err := s.stored(ctx, "us/2026-11-23/02/residency.us-0-")
	if err != nil {
		t.Fatal(err)
	}
	if len(spans) != 2 || spans[0] != (span{100, 149}) || spans[1] != (span{100, 199}) {
		t.Fatalf("objects %v, want 100-149 and 100-199", spans)
	}
}

func TestParseSpan(t *testing.T) {
	for in, want := range map[string]bool{
		"00000000000000000100-00000000000000000199.avro":   true,
		"00000000000000000100.avro":                        false, // the older naming
		"2-00000000000000000100-00000000000000000199.avro": false, // topic "t-1", partition 2
		"00000000000000000199-00000000000000000100.avro":   false,
		"00000000000000000100-00000000000000000199.avro.x": false,
	} {
		if _, ok := parseSpan(in); ok != want {
			t.Errorf("parseSpan(%q) ok = %v, want %v", in, ok, want)
		}
	}
}
