package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/storetest"
)

// TestStoreConformance runs the store conformance suite (sink/storetest) on
// the real PostgreSQL, each check in a schema of its own.
func TestStoreConformance(t *testing.T) {
	dsns := map[sink.Store]string{}
	storetest.TestStore(t, storetest.Harness{
		Open: func(t *testing.T) sink.Store {
			pg := testenv.NewPostgres(t)
			s, err := postgres.Open(testenv.Context(t, 30*time.Second), postgres.Config{DSN: pg.DSN})
			if err != nil {
				t.Fatal(err)
			}
			dsns[s] = pg.DSN
			return s
		},
		// Read reads the table over a connection of its own, so it works
		// after the store was closed.
		Read: func(t *testing.T, st sink.Store) []sink.Record {
			t.Helper()
			ctx := testenv.Context(t, 30*time.Second)
			conn, err := pgx.Connect(ctx, dsns[st])
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			rows, err := conn.Query(ctx, `SELECT event_id, user_id, jurisdiction, region, occurred_at, ruleset_version,
				source_topic, source_partition, source_offset, topic, partition, kafka_offset, event::text, raw
				FROM `+st.(*postgres.Store).Table())
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var out []sink.Record
			for rows.Next() {
				var r sink.Record
				var event string
				var part int32
				if err := rows.Scan(&r.EventID, &r.UserID, &r.Jurisdiction, &r.Region, &r.OccurredAt, &r.RulesetVersion,
					&r.SourceTopic, &r.SourcePartition, &r.SourceOffset, &r.Topic, &part, &r.Offset, &event, &r.Raw); err != nil {
					t.Fatal(err)
				}
				r.Partition, r.Event = int(part), []byte(event)
				out = append(out, r)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			return out
		},
	})
}
