package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
)

// records returns sink records for test events from..to-1, as the sink
// builds them.
func records(from, to int) []sink.Record {
	out := make([]sink.Record, 0, to-from)
	for i := from; i < to; i++ {
		raw := sinktest.Event(i, "US")
		doc, _ := json.Marshal(map[string]any{"event_id": sinktest.EventID(i), "user_id": sinktest.UserID(i), "n": i})
		out = append(out, sink.Record{
			EventID: sinktest.EventID(i), UserID: sinktest.UserID(i), Jurisdiction: "US", Region: "us",
			OccurredAt: sinktest.OccurredAt(i), RulesetVersion: "7", SourceTopic: "events", SourcePartition: int32(i % 3),
			SourceOffset: int64(10_000 + i), Topic: "residency.us", Partition: i % 2, Offset: int64(i),
			Time: sinktest.OccurredAt(i), Event: doc, Raw: raw,
		})
	}
	return out
}

func open(t testing.TB, dsn string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(testenv.Context(t, 30*time.Second), postgres.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func count(t testing.TB, s *postgres.Store) (rows, distinct int) {
	t.Helper()
	err := s.Pool().QueryRow(context.Background(),
		`SELECT count(*), count(DISTINCT event_id) FROM `+s.Table()).Scan(&rows, &distinct)
	if err != nil {
		t.Fatal(err)
	}
	return rows, distinct
}

func TestWriteIsIdempotentOnEventID(t *testing.T) {
	pg := testenv.NewPostgres(t)
	s := open(t, pg.DSN)
	ctx := testenv.Context(t, 30*time.Second)
	all := records(0, 17)
	if err := s.Write(ctx, all[:10]); err != nil {
		t.Fatal(err)
	}
	// A redelivery overlapping the first batch, then the same again, then
	// a batch repeating an event within itself.
	if err := s.Write(ctx, all[5:15]); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, records(5, 15)); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, append(all[15:17:17], all[15])); err != nil {
		t.Fatal(err)
	}
	if n, d := count(t, s); n != 17 || d != 17 {
		t.Fatalf("rows = %d (distinct %d), want 17", n, d)
	}

	want := all[7]
	var (
		user, jur, region, ver, srcTopic, topic, eventID string
		srcPart, part                                    int32
		srcOff, off                                      int64
		occurred, written                                time.Time
		raw                                              []byte
	)
	err := s.Pool().QueryRow(ctx, `SELECT user_id, jurisdiction, region, ruleset_version, source_topic, source_partition,
		source_offset, topic, partition, kafka_offset, occurred_at, written_at, raw, event->>'event_id'
		FROM `+s.Table()+` WHERE event_id = $1`, want.EventID).Scan(
		&user, &jur, &region, &ver, &srcTopic, &srcPart, &srcOff, &topic, &part, &off, &occurred, &written, &raw, &eventID)
	if err != nil {
		t.Fatal(err)
	}
	if user != want.UserID || jur != "US" || region != "us" || ver != "7" || srcTopic != "events" ||
		srcPart != want.SourcePartition || srcOff != want.SourceOffset || topic != want.Topic ||
		part != int32(want.Partition) || off != want.Offset || !occurred.Equal(want.OccurredAt) ||
		string(raw) != string(want.Raw) || eventID != want.EventID || time.Since(written) > time.Minute {
		t.Errorf("row of event 7 does not match its record")
	}
}

func TestOpenMigratesAnOlderTable(t *testing.T) {
	pg := testenv.NewPostgres(t)
	ctx := testenv.Context(t, 30*time.Second)
	conn, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE residency_events (event_id text PRIMARY KEY, user_id text NOT NULL, region text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO residency_events VALUES ('old-1', 'u-1', 'us')`); err != nil {
		t.Fatal(err)
	}
	s := open(t, pg.DSN)
	if err := s.Write(ctx, records(0, 3)); err != nil {
		t.Fatal(err)
	}
	if n, _ := count(t, s); n != 4 {
		t.Fatalf("rows = %d, want 4 (the old row kept)", n)
	}
	// Opening again is a no-op.
	open(t, pg.DSN)

	if _, err := conn.Exec(ctx, `CREATE TABLE nokey (event_id text, user_id text)`); err != nil {
		t.Fatal(err)
	}
	_, err = postgres.Open(ctx, postgres.Config{DSN: pg.DSN, Table: "nokey"})
	if !errors.Is(err, postgres.ErrSchema) {
		t.Fatalf("Open on a table without a key on event_id = %v, want ErrSchema", err)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []postgres.Config{
		{},
		{DSN: "postgres://x@127.0.0.1:1/x", Table: "events; DROP TABLE x"},
		{DSN: "postgres://x@127.0.0.1:1/x", MaxConns: -1},
	} {
		if _, err := postgres.Open(ctx, cfg); !errors.Is(err, postgres.ErrConfig) {
			t.Errorf("Open(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
}

func TestWriteInSchemaQualifiedTable(t *testing.T) {
	pg := testenv.NewPostgres(t)
	ctx := testenv.Context(t, 30*time.Second)
	s, err := postgres.Open(ctx, postgres.Config{DSN: pg.DSN, Table: pg.Schema + ".us_events"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	if err := s.Write(ctx, records(0, 2)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.Table(), "us_events") {
		t.Errorf("Table() = %s", s.Table())
	}
	if n, _ := count(t, s); n != 2 {
		t.Fatalf("rows = %d", n)
	}
}
