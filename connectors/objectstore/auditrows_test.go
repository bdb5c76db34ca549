package objectstore_test

import (
	"context"
	"testing"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/objectstore"
)

// TestAuditRows: every stored record comes out once with its coordinates,
// region, jurisdiction and the SHA-256 of its raw value, on both buckets.
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
		if err := s.AuditRows(ctx, "a", func(r *audit.Row) error { got[r.Offset] = *r; return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(recs) {
			t.Fatalf("%d rows, want %d", len(got), len(recs))
		}
		for _, r := range recs {
			g := got[r.Offset]
			if g.Cluster != "a" || g.Topic != r.Topic || g.Partition != int32(r.Partition) || g.Region != "us" || g.Jurisdiction != "US" || g.Value != audit.Sum(r.Raw) {
				t.Fatalf("row %d = %+v", r.Offset, g)
			}
		}
	})
}
