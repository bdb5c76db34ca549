package objectstore_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
)

// TestAuditRows: every stored record comes out once with its coordinates,
// region, jurisdiction, ruleset version and the SHA-256 of its raw value,
// on both buckets, without a decoder decoding nothing.
func TestAuditRows(t *testing.T) {
	eraseBuckets(t, func(t *testing.T, s *objectstore.Store) {
		ctx := context.Background()
		recs := append(records(0, 5, 0), records(5, 8, 1)...)
		if err := s.Write(ctx, recs[:5]); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(ctx, recs[5:]); err != nil {
			t.Fatal(err)
		}
		got := map[int64]audit.Row{}
		if err := s.AuditRows(ctx, "a", nil, func(r *audit.Row) error { got[r.Offset] = *r; return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(recs) {
			t.Fatalf("%d rows, want %d", len(got), len(recs))
		}
		for _, r := range recs {
			g := got[r.Offset]
			if g.Cluster != "a" || g.Topic != r.Topic || g.Partition != int32(r.Partition) || g.Region != "us" || g.Jurisdiction != "US" ||
				g.RulesetVersion != "4" || g.Value != audit.Sum(r.Raw) || g.Decoded != audit.RowNotDecoded ||
				g.Stored != audit.StoredColumns(r.EventID, r.UserID, r.Event) {
				t.Fatalf("row %d = %+v", r.Offset, g)
			}
		}
	})
}

// auditDecoder is `audit verify`'s decoder over the embedded schemas.
func auditDecoder(t *testing.T) audit.EventDecoder {
	t.Helper()
	x, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context, topic string, raw []byte) (string, string, []byte, error) {
		doc, keys, err := x.DecodeJSONFast(ctx, topic, raw)
		if err != nil {
			return "", "", nil, fmt.Errorf("%w: %w", audit.ErrUndecodable, err)
		}
		return keys.EventID, keys.UserID, doc, nil
	}
}

// decodedRecords are sink records of real events, as the sink builds them.
func decodedRecords(t *testing.T, dec audit.EventDecoder, from, to int) []sink.Record {
	t.Helper()
	var out []sink.Record
	for i := from; i < to; i++ {
		raw := sinktest.Event(i, "US")
		id, user, doc, err := dec(context.Background(), "events", raw)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sink.Record{EventID: id, UserID: user, Jurisdiction: "US", Region: "us", OccurredAt: sinktest.OccurredAt(i),
			RulesetVersion: "4", SourceTopic: "events", SourcePartition: 0, SourceOffset: int64(i), Topic: usTopic, Partition: 0,
			Offset: int64(i), Time: time.Date(2026, 11, 23, 2, 30, 0, 0, time.UTC), Event: doc, Raw: raw})
	}
	return out
}

// TestAuditRowsDecoded (D6, D3): with a decoder, a record's event
// columns as stored equal its raw value decoded again, and a record
// whose columns are not what the sink derives from its value comes out
// with the differing digests; a record held by two overlapping objects (a
// redelivered batch written as another object after a crash) comes out
// twice, identical in every column.
func TestAuditRowsDecoded(t *testing.T) {
	s, dir := openStore(t)
	ctx := context.Background()
	dec := auditDecoder(t)
	recs := decodedRecords(t, dec, 0, 6)
	forged := recs[1]
	forged.EventID, forged.UserID, forged.Event = "renamed", "someone-else", []byte(`{"country":"DE"}`)
	first := append([]sink.Record{recs[0], forged}, recs[2:4]...)
	if err := s.Write(ctx, first); err != nil {
		t.Fatal(err)
	}
	// Another member wrote 2..5 at the same moment: its object overlaps.
	other, otherDir := openStore(t)
	if err := other.Write(ctx, recs[2:6]); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(otherDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(otherDir, p)
		to := filepath.Join(dir, rel)
		if _, err := os.Stat(to); err == nil {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	byOffset := map[int64][]audit.Row{}
	if err := s.AuditRows(ctx, "a", dec, func(r *audit.Row) error { byOffset[r.Offset] = append(byOffset[r.Offset], *r); return nil }); err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		rows := byOffset[int64(i)]
		want := 1
		if i == 2 || i == 3 {
			want = 2
		}
		if len(rows) != want {
			t.Fatalf("offset %d: %d rows, want %d", i, len(rows), want)
		}
		sink := audit.StoredColumns(r.EventID, r.UserID, r.Event)
		for _, g := range rows {
			if g.Decoded != audit.RowDecoded || g.Derived != sink {
				t.Fatalf("offset %d: decoded %v, derived %+v, want the sink's %+v", i, g.Decoded, g.Derived, sink)
			}
			if i == 1 {
				if g.Stored.EventID == sink.EventID || g.Stored.UserID == sink.UserID || g.Stored.Event == sink.Event {
					t.Fatalf("forged row: stored %+v equals the sink's somewhere", g.Stored)
				}
			} else if g.Stored != sink {
				t.Fatalf("offset %d: stored %+v, want the sink's %+v", i, g.Stored, sink)
			}
		}
		if want == 2 && rows[0] != rows[1] {
			t.Fatalf("offset %d: the two copies differ: %+v", i, rows)
		}
	}
}
