package replay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/redis"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/replay"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
)

// rulesV1 knows US and EU but not Canada; rulesV2 assigns CA to US.
const rulesV1 = `
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE, FR]}
regions:
  - {name: us, cluster: a, topic: %s}
  - {name: eu, cluster: b, topic: %s}
stores:
  - {name: us-postgres, regions: [us]}
`

const rulesV2 = `
jurisdictions:
  - {name: US, region: us, countries: [US, CA]}
  - {name: EU, region: eu, countries: [DE, FR]}
regions:
  - {name: us, cluster: a, topic: %s}
  - {name: eu, cluster: b, topic: %s}
stores:
  - {name: us-postgres, regions: [us]}
`

// env is a routing set-up on the two test clusters: ingest, quarantine,
// dead-letter and the us pinned topic on A, the eu pinned topic on B, the
// rules in Redis.
type env struct {
	a, b                           *testenv.Kafka
	ingest, quarantine, deadLetter string
	us, eu                         string
	redis                          *testenv.Redis
	store                          *redis.Rules
	pins                           *rules.Pins // the pin set in memory, following the store
	enc                            *sample.Encoder
	pubs                           map[string]stream.Publisher
	admins                         map[string]*kafka.Admin
	reader                         *kafka.RangeReader
	log                            *slog.Logger
	logs                           *testenv.SyncBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{a: testenv.KafkaA(t), b: testenv.KafkaB(t), pubs: map[string]stream.Publisher{}, admins: map[string]*kafka.Admin{}, logs: &testenv.SyncBuffer{}}
	e.log = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e.ingest = e.a.Topic(t, "ingest", 2)
	e.quarantine = e.a.Topic(t, "quarantine", 2)
	e.deadLetter = e.a.Topic(t, "deadletter", 1)
	e.us = e.a.Topic(t, "us", 2)
	e.eu = e.b.Topic(t, "eu", 2)
	e.redis = testenv.NewRedis(t)
	e.store = redis.NewRules(e.redis.Client(t), e.redis.Prefix)
	e.pins = rules.NewPins(e.store, rules.PinsOptions{Logger: e.log})
	stopPins := testenv.Start(t, 30*time.Second, e.pins.Run)
	t.Cleanup(func() { _ = stopPins() })
	select {
	case <-e.pins.Loaded():
	case <-time.After(10 * time.Second):
		t.Fatal("pins not loaded within 10s")
	}
	var err error
	if e.enc, err = sample.NewEncoder(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []*testenv.Kafka{e.a, e.b} {
		cl := kafka.Cluster{Name: k.Name, Brokers: k.Brokers}
		w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: cl, Logger: e.log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Close() })
		e.pubs[k.Name] = w
		if e.admins[k.Name], err = kafka.NewAdmin(cl); err != nil {
			t.Fatal(err)
		}
	}
	if e.reader, err = kafka.NewRangeReader(kafka.Cluster{Name: "a", Brokers: e.a.Brokers}); err != nil {
		t.Fatal(err)
	}
	e.reader.IdleCheck = 500 * time.Millisecond
	return e
}

// apply makes src (a rules template) the current ruleset version in Redis.
func (e *env) apply(t *testing.T, src string) *rules.Ruleset {
	t.Helper()
	ctx := testenv.Context(t, 10*time.Second)
	cur, err := e.store.LatestVersion(ctx)
	if err != nil && !errors.Is(err, rules.ErrNoRuleset) {
		t.Fatal(err)
	}
	info, err := e.store.Apply(ctx, []byte(fmt.Sprintf(src, e.us, e.eu)), rules.ApplyOptions{Base: cur, Author: "test"})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := e.store.Load(ctx, info.Number)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func fields(t testing.TB, cfg schemas.ExtractorConfig) *schemas.Extractor {
	t.Helper()
	x, err := schemas.NewExtractor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func eventID(prefix string, i int) string {
	return fmt.Sprintf("6f1c2a4e-%s-4000-8000-%012d", prefix, i)
}

// produce writes events to the ingest topic.
func (e *env) produce(t *testing.T, values map[string][]byte) {
	t.Helper()
	var msgs []stream.Message
	for key, v := range values {
		msgs = append(msgs, stream.Message{Topic: e.ingest, Key: []byte(key), Value: v})
	}
	if err := e.pubs["a"].Publish(testenv.Context(t, 20*time.Second), msgs...); err != nil {
		t.Fatal(err)
	}
}

// event encodes one canonical user event.
func (e *env) event(t *testing.T, id, user, country string) []byte {
	t.Helper()
	v, err := e.enc.Encode(sample.Event{ID: id, UserID: user, Country: country})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// route runs the real router over the ingest topic with the current
// ruleset in Redis (and fx as its field reader) until every event is
// committed.
func (e *env) route(t *testing.T, fx router.FieldReader) {
	t.Helper()
	ctx := testenv.Context(t, 60*time.Second)
	group := testenv.Name(t, "routers")
	rd, err := kafka.NewReader(kafka.ReaderConfig{Cluster: kafka.Cluster{Name: "a", Brokers: e.a.Brokers}, GroupID: group,
		Topics: []string{e.ingest}, SessionTimeout: 6 * time.Second, RebalanceTimeout: 5 * time.Second,
		HeartbeatInterval: 500 * time.Millisecond, Logger: e.log})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	cache := rules.NewCache(e.store, rules.CacheOptions{PollInterval: 50 * time.Millisecond, Logger: e.log})
	cctx, stopCache := context.WithCancel(ctx)
	defer stopCache()
	go func() { _ = cache.Run(cctx) }()
	r, err := router.New(router.Config{Subscriber: rd, Publishers: e.pubs, IngestCluster: "a", QuarantineTopic: e.quarantine,
		DeadLetterTopic: e.deadLetter, Fields: fx, Rules: cache, Instance: "router-test", Logger: e.log,
		RulesPoll: 20 * time.Millisecond, RetryMin: 10 * time.Millisecond, GiveUp: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	for {
		lag, err := e.admins["a"].Lag(ctx, group, e.ingest)
		if err == nil && lag == 0 {
			if off, _ := e.admins["a"].EndOffsets(ctx, e.ingest); sum(off) > 0 {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatal("the router did not route the ingest topic in time")
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("router: %v", err)
	}
}

func sum(m map[int]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// ends returns the end offsets of every topic of the set-up.
func (e *env) ends(t *testing.T) map[string]int64 {
	t.Helper()
	ctx := testenv.Context(t, 20*time.Second)
	out := map[string]int64{}
	for _, tp := range []struct{ cluster, topic string }{{"a", e.ingest}, {"a", e.quarantine}, {"a", e.deadLetter}, {"a", e.us}, {"b", e.eu}} {
		off, err := e.admins[tp.cluster].EndOffsets(ctx, tp.topic)
		if err != nil {
			t.Fatal(err)
		}
		out[tp.topic] = sum(off)
	}
	return out
}

// plan covers all of topic.
func (e *env) plan(t *testing.T, id string, src replay.SourceKind, topic string) replay.Plan {
	t.Helper()
	bounds, err := e.admins["a"].Bounds(testenv.Context(t, 20*time.Second), topic)
	if err != nil {
		t.Fatal(err)
	}
	p := replay.Plan{ID: id, Source: src, Topic: topic}
	for _, b := range bounds {
		p.Ranges = append(p.Ranges, replay.Range{Partition: b.Partition, Start: b.Start, End: b.End})
	}
	return p
}

func (e *env) config(plan replay.Plan, rs *rules.Ruleset, fx *schemas.Extractor) replay.Config {
	return replay.Config{Plan: plan, Rules: rs, InForce: fixed(rs), Reader: e.reader, Publishers: e.pubs, IngestCluster: "a", IngestTopics: []string{e.ingest},
		QuarantineTopic: e.quarantine, DeadLetterTopic: e.deadLetter, Fields: fx, Decoder: fx, Pins: e.pins,
		BatchSize: 10, RetryMin: 10 * time.Millisecond, GiveUp: 20 * time.Second, Logger: e.log}
}

func run(t *testing.T, cfg replay.Config) replay.Report {
	t.Helper()
	r, err := replay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(testenv.Context(t, 60*time.Second)); err != nil {
		t.Fatalf("replay %s: %v", cfg.Plan.ID, err)
	}
	return r.Report()
}

// readAll returns every record of topic on cluster.
func (e *env) readAll(t *testing.T, cluster, topic string) []stream.Message {
	t.Helper()
	ms, err := e.admins[cluster].ReadAll(testenv.Context(t, 30*time.Second), topic)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func header(m stream.Message, key string) string {
	v, _ := router.HeaderValue(m.Headers, key)
	return string(v)
}

// usSink runs a sink of the us pinned topic into a fresh PostgreSQL store
// until the test ends.
func (e *env) usSink(t *testing.T, rs *rules.Ruleset) *postgres.Store {
	t.Helper()
	pg := testenv.NewPostgres(t)
	ctx := testenv.Context(t, 90*time.Second)
	store, err := postgres.Open(ctx, postgres.Config{DSN: pg.DSN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close(context.Background()) })
	rd, err := kafka.NewReader(kafka.ReaderConfig{Cluster: kafka.Cluster{Name: "a", Brokers: e.a.Brokers}, GroupID: testenv.Name(t, "sink"),
		Topics: []string{e.us}, SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond, Logger: e.log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Close() })
	sq := e.a.Topic(t, "sinkquar", 1)
	s, err := sink.New(sink.Config{Store: "us-postgres", Region: "us", Topic: e.us, QuarantineTopic: sq, BatchSize: 50,
		BatchTimeout: 50 * time.Millisecond, RetryBackoff: 10 * time.Millisecond, DrainTimeout: 2 * time.Second, Logger: e.log,
		Rulesets: sink.NewVersions(e.store, 0)},
		rd, store, e.pubs["a"], sinktest.NewRules(rs), fields(t, schemas.ExtractorConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(sctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sink: %v", err)
		}
	})
	return store
}

// rows counts the store's rows and distinct event ids.
func rows(t *testing.T, s *postgres.Store) (n, distinct int) {
	t.Helper()
	if err := s.Pool().QueryRow(context.Background(), `SELECT count(*), count(DISTINCT event_id) FROM `+s.Table()).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	return n, distinct
}

func waitRows(t *testing.T, s *postgres.Store, want int) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		if n, _ := rows(t, s); n >= want {
			break
		}
		if time.Now().After(deadline) {
			n, _ := rows(t, s)
			t.Fatalf("store holds %d rows, want %d", n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let a faulty set-up write more
	if n, d := rows(t, s); n != want || d != want {
		t.Fatalf("store holds %d rows (%d distinct event ids), want %d each", n, d, want)
	}
}

// comparable strips what legitimately differs between a dry run and the
// real run of the same plan.
func comparable(r replay.Report) string {
	r.ID, r.DryRun, r.Complete, r.Resumed = "", false, false, 0
	b, _ := json.Marshal(r)
	return string(b)
}

// variantSchema is a writer schema the default extractor does not know
// (another record name, one more field); the catalogue written by
// catalogue makes it known.
var variantSchema = strings.Replace(strings.Replace(schemas.UserEventSchema,
	`"name": "UserEvent"`, `"name": "UserEventV9"`, 1),
	`"fields": [`, `"fields": [{"name": "replay_test_note", "type": "string", "default": ""},`, 1)

func catalogue(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "variant.avsc"), []byte(variantSchema), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// variantEvent encodes an event with variantSchema.
func variantEvent(t *testing.T, id, user, country string) []byte {
	t.Helper()
	c, err := goavro.NewCodec(variantSchema)
	if err != nil {
		t.Fatal(err)
	}
	var ctry any
	if country != "" {
		ctry = goavro.Union("string", country)
	}
	body, err := c.BinaryFromNative(nil, map[string]any{
		"replay_test_note": "x", "event_id": id, "user_id": user, "occurred_at": time.UnixMilli(1_790_000_000_000).UTC(),
		"event_type": "LOGIN", "device": map[string]any{"device_id": "d", "os": "IOS", "app_version": "1"},
		"country": ctry,
	})
	if err != nil {
		t.Fatal(err)
	}
	return schemas.AppendSingleObject(nil, c.Rabin, body)
}
