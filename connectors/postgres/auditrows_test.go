package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
)

// auditDecoder is `audit verify`'s decoder over the embedded schemas: the
// value decoded as the sink does (schemas' DecodeJSONFast).
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

// decodedRecords are sink records as the sink builds them from real
// events: the document and ids decoded from the value.
func decodedRecords(t *testing.T, dec audit.EventDecoder, n int) []sink.Record {
	t.Helper()
	var out []sink.Record
	for i := 0; i < n; i++ {
		raw := sinktest.Event(i, "US")
		id, user, doc, err := dec(context.Background(), "events", raw)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sink.Record{EventID: id, UserID: user, Jurisdiction: "US", Region: "us", OccurredAt: sinktest.OccurredAt(i),
			RulesetVersion: "7", SourceTopic: "events", SourcePartition: 0, SourceOffset: int64(i), Topic: "residency.us",
			Partition: i % 2, Offset: int64(i), Time: sinktest.OccurredAt(i), Event: doc, Raw: raw})
	}
	return out
}

func auditRows(t *testing.T, s *postgres.Store, dec audit.EventDecoder) []audit.Row {
	t.Helper()
	var got []audit.Row
	if err := s.AuditRows(context.Background(), "b", dec, func(r *audit.Row) error { got = append(got, *r); return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestAuditRows: every row comes out with its coordinates, region,
// jurisdiction, ruleset version, the SHA-256 of raw computed by
// PostgreSQL, and the digests of event_id, user_id and event as stored
// (jsonb's rendering) equal to those of raw decoded again; without a
// decoder nothing is decoded.
func TestAuditRows(t *testing.T) {
	pg := testenv.NewPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, postgres.Config{DSN: pg.DSN, Table: "audit_rows"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	dec := auditDecoder(t)
	batch := decodedRecords(t, dec, 4)
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	got := auditRows(t, s, dec)
	if len(got) != 4 {
		t.Fatalf("%d rows, want 4", len(got))
	}
	for _, g := range got {
		want := batch[g.Offset]
		if g.Cluster != "b" || g.Topic != "residency.us" || g.Partition != int32(want.Partition) || g.Region != "us" || g.Jurisdiction != "US" ||
			g.RulesetVersion != "7" || g.Value != audit.Sum(want.Raw) {
			t.Fatalf("row %+v, want of %+v", g, want)
		}
		if g.Decoded != audit.RowDecoded || g.Stored != g.Derived || g.Stored != audit.StoredColumns(want.EventID, want.UserID, want.Event) {
			t.Fatalf("row %d: decoded %v, stored %+v, derived %+v", g.Offset, g.Decoded, g.Stored, g.Derived)
		}
	}
	for _, g := range auditRows(t, s, nil) {
		if g.Decoded != audit.RowNotDecoded || g.Stored != got[0].Stored && g.Offset == 0 {
			t.Fatalf("without a decoder: %+v", g)
		}
	}
	// A decoder's error other than ErrUndecodable stops the scan.
	err = s.AuditRows(ctx, "b", func(context.Context, string, []byte) (string, string, []byte, error) {
		return "", "", nil, errors.New("registry down")
	}, func(*audit.Row) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "registry down") {
		t.Fatalf("AuditRows: %v", err)
	}
}

// TestAuditRowsTampered (D6, D3): the columns `audit verify` found
// unchecked, changed in place as an operator with SQL access would, come
// out as stored columns that differ from raw decoded again, each in its
// own digest; a copy of a row under a new event id comes out as a second
// row at the same coordinates, differing in event_id.
func TestAuditRowsTampered(t *testing.T) {
	pg := testenv.NewPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, postgres.Config{DSN: pg.DSN, Table: "audit_tampered"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	dec := auditDecoder(t)
	batch := decodedRecords(t, dec, 6)
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		`UPDATE audit_tampered SET event_id = 'renamed' WHERE kafka_offset = 1`,
		`UPDATE audit_tampered SET user_id = 'someone-else' WHERE kafka_offset = 2`,
		`UPDATE audit_tampered SET event = jsonb_set(event, '{country}', '"DE"') WHERE kafka_offset = 3`,
		`UPDATE audit_tampered SET ruleset_version = '99' WHERE kafka_offset = 4`,
		`INSERT INTO audit_tampered (event_id, user_id, jurisdiction, region, occurred_at, ruleset_version, source_topic, source_partition, source_offset, topic, partition, kafka_offset, event, raw)
		 SELECT 'copied', user_id, jurisdiction, region, occurred_at, ruleset_version, source_topic, source_partition, source_offset, topic, partition, kafka_offset, event, raw
		 FROM audit_tampered WHERE kafka_offset = 5`,
	} {
		if tag, err := conn.Exec(ctx, q); err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("%s: %v (%v)", q, err, tag)
		}
	}
	got := auditRows(t, s, dec)
	if len(got) != 7 {
		t.Fatalf("%d rows, want 7", len(got))
	}
	var copies []audit.Row
	for _, g := range got {
		want := audit.StoredColumns(batch[g.Offset].EventID, batch[g.Offset].UserID, batch[g.Offset].Event)
		if g.Derived != want {
			t.Fatalf("row %d: derived %+v, want the sink's %+v", g.Offset, g.Derived, want)
		}
		s := g.Stored
		switch g.Offset {
		case 1:
			if s.EventID == want.EventID || s.UserID != want.UserID || s.Event != want.Event {
				t.Errorf("renamed event_id: stored %+v, sink's %+v", s, want)
			}
		case 2:
			if s.UserID == want.UserID || s.EventID != want.EventID || s.Event != want.Event {
				t.Errorf("changed user_id: stored %+v, sink's %+v", s, want)
			}
		case 3:
			if s.Event == want.Event || s.Event.IsZero() || s.EventID != want.EventID {
				t.Errorf("changed event: stored %+v, sink's %+v", s, want)
			}
		case 4:
			if g.RulesetVersion != "99" || s != want {
				t.Errorf("changed ruleset_version: %q, stored %+v", g.RulesetVersion, s)
			}
		case 5:
			copies = append(copies, g)
		default:
			if s != want {
				t.Errorf("row %d untouched: stored %+v, sink's %+v", g.Offset, s, want)
			}
		}
	}
	if len(copies) != 2 || copies[0].Stored.EventID == copies[1].Stored.EventID || copies[0].Value != copies[1].Value {
		t.Fatalf("the copy: %+v", copies)
	}
}
