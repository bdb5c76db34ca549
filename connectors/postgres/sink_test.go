package postgres_test

// Acceptance tests of issue 6 for the PostgreSQL store: the sink runtime
// against the real PostgreSQL of the dev stack, and for the crash test real
// Kafka.

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

const (
	usTopic   = "residency.us"
	euTopic   = "residency.eu"
	quarTopic = "residency.sink-quarantine"
	storeName = "us-postgres"
)

func decoder(t testing.TB) *schemas.Extractor {
	t.Helper()
	dec, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return dec
}

func sinkConfig(topic string) sink.Config {
	return sink.Config{Store: storeName, Region: "us", Topic: topic, QuarantineTopic: quarTopic,
		BatchSize: 10, BatchTimeout: 50 * time.Millisecond, RetryBackoff: 10 * time.Millisecond,
		RulesPoll: 10 * time.Millisecond, DrainTimeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)}
}

// runSink runs s; stop cancels it and returns Run's result (also called at
// cleanup).
func runSink(t *testing.T, s *sink.Sink) (stop func() error) {
	t.Helper()
	stop = testenv.Start(t, 30*time.Second, s.Run)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return stop
}

func usMessages(from, to int) []stream.Message {
	var out []stream.Message
	for i := from; i < to; i++ {
		out = append(out, sinktest.Message(usTopic, i, "US", "us", "US"))
	}
	return out
}

func TestSinkNotApprovedFailsAndWritesNothing(t *testing.T) {
	pg := testenv.NewPostgres(t)
	store := open(t, pg.DSN)
	b := streamtest.NewBroker()
	b.CreateTopic(usTopic, 1)
	b.CreateTopic(quarTopic, 1)
	if err := b.Publisher().Publish(context.Background(), usMessages(0, 5)...); err != nil {
		t.Fatal(err)
	}
	// us-postgres is approved for eu only in version 12.
	rs := sinktest.NewRules(sinktest.Ruleset(12, usTopic, euTopic, storeName, "eu"))
	s, err := sink.New(sinkConfig(usTopic), b.Subscriber("g", usTopic), store, b.Publisher(), rs, decoder(t))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(testenv.Context(t, 30*time.Second))
	if !errors.Is(err, sink.ErrNotApproved) {
		t.Fatalf("Run = %v, want ErrNotApproved", err)
	}
	for _, want := range []string{`store "us-postgres"`, `region "us"`, "ruleset version 12"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if n, _ := count(t, store); n != 0 {
		t.Errorf("%d rows written by a sink that is not approved", n)
	}
	if b.Committed("g", usTopic, 0) != 0 || len(b.Records(quarTopic)) != 0 {
		t.Error("a refused sink committed or quarantined")
	}
}

func TestSinkQuarantinesMismatchedRegion(t *testing.T) {
	pg := testenv.NewPostgres(t)
	store := open(t, pg.DSN)
	b := streamtest.NewBroker()
	b.CreateTopic(usTopic, 2)
	b.CreateTopic(quarTopic, 1)
	msgs := usMessages(0, 6)
	msgs = append(msgs, sinktest.Message(usTopic, 50, "EU", "eu", "DE")) // misplaced: eu event in the us topic
	if err := b.Publisher().Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	rs := sinktest.NewRules(sinktest.Ruleset(7, usTopic, euTopic, storeName, "us"))
	s, err := sink.New(sinkConfig(usTopic), b.Subscriber("g", usTopic), store, b.Publisher(), rs, decoder(t))
	if err != nil {
		t.Fatal(err)
	}
	runSink(t, s)
	testenv.Eventually(t, 20*time.Second, "all committed", func() bool {
		return b.Committed("g", usTopic, 0)+b.Committed("g", usTopic, 1) == int64(len(msgs))
	})
	if n, _ := count(t, store); n != 6 {
		t.Fatalf("rows = %d, want 6", n)
	}
	var eu int
	if err := store.Pool().QueryRow(context.Background(),
		`SELECT count(*) FROM `+store.Table()+` WHERE region <> 'us' OR event_id = $1`, sinktest.EventID(50)).Scan(&eu); err != nil {
		t.Fatal(err)
	}
	if eu != 0 {
		t.Fatalf("%d rows of another region in the us store", eu)
	}
	q := b.Records(quarTopic)
	if len(q) != 1 {
		t.Fatalf("quarantined %d events, want 1", len(q))
	}
	if r, _ := router.HeaderValue(q[0].Headers, router.HeaderReason); string(r) != sink.ReasonRegionNotApproved {
		t.Errorf("reason = %q", r)
	}
	if string(q[0].Value) != string(msgs[6].Value) {
		t.Error("the quarantined event is not byte for byte the original")
	}
}

// hookStore calls before ahead of each write of the store it wraps.
type hookStore struct {
	sink.Store
	mu     sync.Mutex
	writes int
	before func(ctx context.Context, n int, batch []sink.Record) error // n is 1-based
}

func (h *hookStore) Write(ctx context.Context, batch []sink.Record) error {
	h.mu.Lock()
	h.writes++
	n := h.writes
	h.mu.Unlock()
	if h.before != nil {
		if err := h.before(ctx, n, batch); err != nil {
			return err
		}
	}
	return h.Store.Write(ctx, batch)
}

func TestSinkStopsWithinOneBatchWhenApprovalRevoked(t *testing.T) {
	pg := testenv.NewPostgres(t)
	store := open(t, pg.DSN)
	b := streamtest.NewBroker()
	b.CreateTopic(usTopic, 1)
	b.CreateTopic(quarTopic, 1)
	rs := sinktest.NewRules(sinktest.Ruleset(7, usTopic, euTopic, storeName, "us"))
	revoked := sinktest.Ruleset(8, usTopic, euTopic, storeName, "eu")
	hs := &hookStore{Store: store, before: func(_ context.Context, n int, _ []sink.Record) error {
		if n == 2 {
			rs.Set(revoked) // `rules apply` lands while batch 2 is being written
		}
		return nil
	}}
	cfg := sinkConfig(usTopic)
	cfg.BatchTimeout = time.Hour // cut batches by size only
	s, err := sink.New(cfg, b.Subscriber("g", usTopic), hs, b.Publisher(), rs, decoder(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publisher().Publish(context.Background(), usMessages(0, 50)...); err != nil {
		t.Fatal(err)
	}
	runSink(t, s)
	testenv.Eventually(t, 20*time.Second, "not ready", func() bool { return errors.Is(s.Ready(), sink.ErrNotApproved) })
	// Batch 2 was in flight when the approval went: it completes (wait for
	// it: on a loaded host it may take longer than any fixed sleep);
	// nothing after it (give a faulty sink time to write more).
	testenv.Eventually(t, 20*time.Second, "batch 2 stored and committed", func() bool {
		n, _ := count(t, store)
		return n >= 20 && b.Committed("g", usTopic, 0) >= 20
	})
	time.Sleep(200 * time.Millisecond)
	if n, _ := count(t, store); n != 20 {
		t.Fatalf("rows = %d after the revocation, want 20 (two batches of 10)", n)
	}
	if c := b.Committed("g", usTopic, 0); c != 20 {
		t.Fatalf("committed %d, want 20", c)
	}
	if err := s.Ready(); !strings.Contains(err.Error(), "ruleset version 8") || !strings.Contains(err.Error(), storeName) {
		t.Errorf("Ready = %v", err)
	}
}

// TestSinkKilledMidBatchExactlyOnce runs the sink on real Kafka and
// PostgreSQL, kills it after it stored half of a batch (nothing committed),
// restarts it and checks every event is stored exactly once.
func TestSinkKilledMidBatchExactlyOnce(t *testing.T) {
	k := testenv.KafkaA(t)
	topic := k.Topic(t, "sink-us", 3)
	quar := k.Topic(t, "sink-quar", 1)
	pg := testenv.NewPostgres(t)
	store := open(t, pg.DSN)
	cluster := kafka.Cluster{Name: "ingest", Brokers: k.Brokers}
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const total = 60
	var msgs []stream.Message
	for i := range total {
		m := sinktest.Message(topic, i, "US", "us", "US")
		msgs = append(msgs, m)
	}
	ctx := testenv.Context(t, 90*time.Second)
	if err := w.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	rs := sinktest.NewRules(sinktest.Ruleset(7, topic, euTopic, storeName, "us"))
	group := testenv.Name(t, "sink")
	cfg := sinkConfig(topic)
	cfg.QuarantineTopic = quar
	cfg.DrainTimeout = 300 * time.Millisecond

	newReader := func() *kafka.Reader {
		r, err := kafka.NewReader(kafka.ReaderConfig{Cluster: cluster, GroupID: group, Topics: []string{topic},
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// First life: batch 3 is half stored, then the process "dies": every
	// later write hangs until the sink is killed.
	crashed := make(chan struct{})
	var once sync.Once
	var half int
	hs := &hookStore{Store: store, before: func(ctx context.Context, n int, batch []sink.Record) error {
		if n < 3 {
			return nil
		}
		once.Do(func() {
			half = len(batch) / 2
			if err := store.Write(ctx, batch[:half]); err != nil {
				t.Errorf("partial write: %v", err)
			}
			close(crashed)
		})
		<-ctx.Done()
		return ctx.Err()
	}}
	r1 := newReader()
	s1, err := sink.New(cfg, r1, hs, w, rs, decoder(t))
	if err != nil {
		t.Fatal(err)
	}
	kill := runSink(t, s1)
	select {
	case <-crashed:
	case <-ctx.Done():
		t.Fatal("the sink never reached its third batch")
	}
	if err := kill(); err != nil {
		t.Fatalf("Run after kill = %v", err)
	}
	_ = r1.Close()
	before, _ := count(t, store)
	if before >= total || before < half || half == 0 {
		t.Fatalf("%d rows before the restart: the crash did not land mid-run", before)
	}

	// Second life: a new member of the same group picks up from the last
	// commit, which is before the half-stored batch.
	r2 := newReader()
	defer r2.Close()
	s2, err := sink.New(cfg, r2, store, w, rs, decoder(t))
	if err != nil {
		t.Fatal(err)
	}
	runSink(t, s2)
	testenv.Eventually(t, 60*time.Second, "every event stored", func() bool { n, _ := count(t, store); return n >= total })
	time.Sleep(300 * time.Millisecond) // let a faulty sink write duplicates
	rows, distinct := count(t, store)
	if rows != total || distinct != total {
		t.Fatalf("rows = %d, distinct event ids = %d, want %d each", rows, distinct, total)
	}
	for i := range total {
		var ok bool
		if err := store.Pool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+store.Table()+` WHERE event_id = $1)`,
			sinktest.EventID(i)).Scan(&ok); err != nil || !ok {
			t.Fatalf("event %d missing (%v)", i, err)
		}
	}
	t.Logf("%d rows stored before the kill (half of batch 3: %d), %d after the restart", before, half, rows)
}
