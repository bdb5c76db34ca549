package postgres_test

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/postgres"

	"github.com/jackc/pgx/v5"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

// BenchmarkSinkVsCopy measures, in one run, the PostgreSQL sink (fetch from
// an in-memory pinned topic, decode, approval checks, batched writes,
// commits) against a plain COPY of the same rows into the same table, and
// reports both rates and their ratio (docs/performance.md):
//
//	go test -run '^$' -bench SinkVsCopy -benchtime 5x ./connectors/postgres
func BenchmarkSinkVsCopy(b *testing.B) {
	const rows = 20_000
	pg := testenv.NewPostgres(b)
	store := open(b, pg.DSN)
	ctx := context.Background()

	msgs := make([]stream.Message, rows)
	for i := range msgs {
		msgs[i] = sinktest.Message(usTopic, i, "US", "us", "US")
	}
	// The rows a plain COPY writes: exactly what the sink produces.
	recs := decodeAll(b, msgs)
	cols := []string{"event_id", "user_id", "jurisdiction", "region", "occurred_at", "ruleset_version",
		"source_topic", "source_partition", "source_offset", "topic", "partition", "kafka_offset", "event", "raw"}
	vals := make([][]any, len(recs))
	for i, r := range recs {
		vals[i] = []any{r.EventID, r.UserID, r.Jurisdiction, r.Region, r.OccurredAt, r.RulesetVersion,
			r.SourceTopic, r.SourcePartition, r.SourceOffset, r.Topic, int32(r.Partition), r.Offset,
			// jsonb cannot hold U+0000: the same rewrite the store does.
			bytes.ReplaceAll(r.Event, []byte(`\u0000`), []byte(`\ufffd`)), r.Raw}
	}
	truncate := func() {
		if _, err := store.Pool().Exec(ctx, `TRUNCATE `+store.Table()); err != nil {
			b.Fatal(err)
		}
		if _, err := store.Pool().Exec(ctx, `VACUUM ANALYZE `+store.Table()); err != nil {
			b.Fatal(err)
		}
	}
	rs := sinktest.NewRules(sinktest.Ruleset(7, usTopic, euTopic, storeName, "us"))
	dec := decoder(b)

	var copyDur, sinkDur time.Duration
	timed := &timedStore{Store: store}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		truncate()
		b.StartTimer()
		t0 := time.Now()
		n, err := store.Pool().CopyFrom(ctx, pgx.Identifier{postgres.DefaultTable}, cols, pgx.CopyFromRows(vals))
		copyDur += time.Since(t0)
		if err != nil || n != rows {
			b.Fatalf("copy: %d rows, %v", n, err)
		}

		b.StopTimer()
		truncate()
		broker := streamtest.NewBroker()
		broker.CreateTopic(usTopic, 3)
		broker.CreateTopic(quarTopic, 1)
		if err := broker.Publisher().Publish(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
		cfg := sinkConfig(usTopic)
		cfg.BatchSize, cfg.BatchTimeout = 0, 0 // the defaults
		s, err := sink.New(cfg, broker.Subscriber("g", usTopic), timed, broker.Publisher(), rs, dec)
		if err != nil {
			b.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		b.StartTimer()
		t0 = time.Now()
		go func() { done <- s.Run(rctx) }()
		for broker.Committed("g", usTopic, 0)+broker.Committed("g", usTopic, 1)+broker.Committed("g", usTopic, 2) < rows {
			time.Sleep(200 * time.Microsecond)
		}
		sinkDur += time.Since(t0)
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		if got, _ := count(b, store); got != rows {
			b.Fatalf("sink wrote %d rows, want %d", got, rows)
		}
		b.StartTimer()
	}
	b.StopTimer()
	copyRate := float64(rows*b.N) / copyDur.Seconds()
	sinkRate := float64(rows*b.N) / sinkDur.Seconds()
	b.ReportMetric(copyRate, "copy_rows/s")
	b.ReportMetric(sinkRate, "sink_rows/s")
	b.ReportMetric(sinkRate/copyRate, "ratio")
	b.ReportMetric(timed.d.Seconds()/sinkDur.Seconds(), "write_share")
	b.ReportMetric(float64(rows*b.N)/float64(timed.n), "rows/batch")
	b.ReportMetric(0, "ns/op")
}

// decodeAll turns messages into the records the sink would write, by
// running them through a sink into a capturing store.
func decodeAll(b *testing.B, msgs []stream.Message) []sink.Record {
	b.Helper()
	broker := streamtest.NewBroker()
	broker.CreateTopic(usTopic, 1)
	broker.CreateTopic(quarTopic, 1)
	if err := broker.Publisher().Publish(context.Background(), msgs...); err != nil {
		b.Fatal(err)
	}
	cs := &captureStore{}
	cfg := sinkConfig(usTopic)
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := sink.New(cfg, broker.Subscriber("g", usTopic), cs, broker.Publisher(),
		sinktest.NewRules(sinktest.Ruleset(7, usTopic, euTopic, storeName, "us")), decoder(b))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	for broker.Committed("g", usTopic, 0) < int64(len(msgs)) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return cs.recs
}

type captureStore struct{ recs []sink.Record }

func (c *captureStore) Write(_ context.Context, batch []sink.Record) error {
	c.recs = append(c.recs, batch...)
	return nil
}

func (c *captureStore) Close(context.Context) error { return nil }

// timedStore measures the time spent in the store's Write.
type timedStore struct {
	sink.Store
	d time.Duration
	n int
}

func (t *timedStore) Write(ctx context.Context, batch []sink.Record) error {
	t0 := time.Now()
	err := t.Store.Write(ctx, batch)
	t.d += time.Since(t0)
	t.n++
	return err
}
