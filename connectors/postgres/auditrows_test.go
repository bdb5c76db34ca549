package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/sink"
)

// TestAuditRows: every row comes out with its coordinates, region,
// jurisdiction and the SHA-256 of raw, computed by PostgreSQL.
func TestAuditRows(t *testing.T) {
	pg := testenv.NewPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, postgres.Config{DSN: pg.DSN, Table: "audit_rows"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	var batch []sink.Record
	for i := 0; i < 4; i++ {
		batch = append(batch, sink.Record{EventID: string(rune('a' + i)), Jurisdiction: "EU", Region: "eu", Topic: "residency.eu",
			Partition: i % 2, Offset: int64(i), Event: []byte(`{}`), Raw: []byte{0, byte(i), 0}})
	}
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	var got []audit.Row
	if err := s.AuditRows(ctx, "b", func(r *audit.Row) error { got = append(got, *r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("%d rows, want 4", len(got))
	}
	for _, g := range got {
		want := batch[g.Offset]
		if g.Cluster != "b" || g.Topic != "residency.eu" || g.Partition != int32(want.Partition) || g.Region != "eu" || g.Jurisdiction != "EU" || g.Value != audit.Sum(want.Raw) {
			t.Fatalf("row %+v, want of %+v", g, want)
		}
	}
}
