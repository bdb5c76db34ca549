package sink_test

// Issue 12, observations 4 and 5, on real Kafka, PostgreSQL and Redis, into
// both stores: the sink reads each event the way its residency-schema
// header says, and re-derives its placement from its content.

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/redis"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
)

// rig is a pinned topic and a sink-quarantine topic on the real Kafka
// cluster A, with sinks into a real PostgreSQL and a file:// bucket.
type rig struct {
	cluster     kafka.Cluster
	topic, quar string
	w           *kafka.Writer
	admin       *kafka.Admin
	pg          *postgres.Store
	objects     *objectstore.Store
	dir         string
}

const rigStore = "us-store"

func newRig(t *testing.T) *rig {
	t.Helper()
	k := testenv.KafkaA(t)
	r := &rig{cluster: kafka.Cluster{Name: "ingest", Brokers: k.Brokers}, topic: k.Topic(t, "sink-us", 2), quar: k.Topic(t, "sink-quar", 1)}
	var err error
	if r.w, err = kafka.NewWriter(kafka.WriterConfig{Cluster: r.cluster}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.w.Close() })
	if r.admin, err = kafka.NewAdmin(r.cluster); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 30*time.Second)
	if r.pg, err = postgres.Open(ctx, postgres.Config{DSN: testenv.NewPostgres(t).DSN}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.pg.Close(context.Background()) })
	r.dir = t.TempDir()
	if r.objects, err = objectstore.Open(ctx, objectstore.Config{URL: "file://" + r.dir}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.objects.Close(context.Background()) })
	return r
}

func (r *rig) publish(t *testing.T, msgs ...stream.Message) {
	t.Helper()
	for i := range msgs {
		msgs[i].Topic = r.topic
	}
	if err := r.w.Publish(testenv.Context(t, 30*time.Second), msgs...); err != nil {
		t.Fatal(err)
	}
}

// run runs a sink of rigStore into store until the test ends, in a
// consumer group of its own.
func (r *rig) run(t *testing.T, cfg sink.Config, store sink.Store, rs sink.RulesSource, dec sink.Decoder) {
	t.Helper()
	rd, err := kafka.NewReader(kafka.ReaderConfig{Cluster: r.cluster, GroupID: testenv.Name(t, "sink"), Topics: []string{r.topic},
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Close() })
	cfg.Store, cfg.Region, cfg.Topic, cfg.QuarantineTopic = rigStore, "us", r.topic, r.quar
	cfg.BatchSize, cfg.BatchTimeout, cfg.RetryBackoff, cfg.DrainTimeout = 10, 50*time.Millisecond, 10*time.Millisecond, 2*time.Second
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := sink.New(cfg, rd, store, r.w, rs, dec)
	if err != nil {
		t.Fatal(err)
	}
	stop := testenv.Start(t, 30*time.Second, s.Run)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("sink: %v", err)
		}
	})
}

// stored is one event as a store holds it.
type stored struct {
	doc map[string]any
	raw []byte
}

// pgEvents returns the PostgreSQL store's events by event id.
func (r *rig) pgEvents(t *testing.T) map[string]stored {
	t.Helper()
	rows, err := r.pg.Pool().Query(context.Background(), `SELECT event_id, event, raw FROM `+r.pg.Table())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]stored{}
	for rows.Next() {
		var id string
		var doc, raw []byte
		if err := rows.Scan(&id, &doc, &raw); err != nil {
			t.Fatal(err)
		}
		s := stored{raw: raw}
		if err := json.Unmarshal(doc, &s.doc); err != nil {
			t.Fatalf("event %s: %v", id, err)
		}
		out[id] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// objectEvents returns the bucket's events by event id.
func (r *rig) objectEvents(t *testing.T) map[string]stored {
	t.Helper()
	out := map[string]stored{}
	err := filepath.WalkDir(r.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".avro") {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		ocf, err := goavro.NewOCFReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for ocf.Scan() {
			v, err := ocf.Read()
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			n := v.(map[string]any)
			s := stored{raw: n["raw"].([]byte)}
			if err := json.Unmarshal([]byte(n["event"].(string)), &s.doc); err != nil {
				return err
			}
			out[n["event_id"].(string)] = s
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// quarantined returns the records of the sink-quarantine topic by key.
func (r *rig) quarantined(t *testing.T) map[string][]stream.Message {
	t.Helper()
	ms, err := r.admin.ReadAll(testenv.Context(t, 30*time.Second), r.quar)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]stream.Message{}
	for _, m := range ms {
		out[string(m.Key)] = append(out[string(m.Key)], m)
	}
	return out
}

// await waits until both stores hold n events and the quarantine topic q
// records (one per sink), then a little longer for a faulty sink to write
// more.
func (r *rig) await(t *testing.T, n, q int) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("%d events in each store, %d quarantined", n, q), func() bool {
		if len(r.pgEvents(t)) < n || len(r.objectEvents(t)) < n {
			return false
		}
		end, err := r.admin.EndOffsets(testenv.Context(t, 10*time.Second), r.quar)
		if err != nil {
			t.Fatal(err)
		}
		var got int64
		for _, e := range end {
			got += e
		}
		return got >= int64(q)
	})
	time.Sleep(300 * time.Millisecond)
}

// extractorFor returns an extractor reading every topic in framing f, as
// a router configured that way would.
func extractorFor(t *testing.T, f schemas.Framing, registry string) *schemas.Extractor {
	t.Helper()
	cfg := schemas.ExtractorConfig{DefaultFraming: f, Registry: schemas.RegistryConfig{URL: registry}}
	if f == schemas.FramingRaw {
		cfg.RawSchemas = map[string]string{schemas.DefaultTopic: "io.residency.events.UserEvent"}
	}
	x, err := schemas.NewExtractor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// routed returns test event i in framing ref as the router writes it, its
// residency-schema header the one the router's extractor gives.
func routed(t *testing.T, x *schemas.Extractor, ref schemas.WriterRef, i int, jur, region, country string) stream.Message {
	t.Helper()
	m := sinktest.MessageAs(ref, "", i, jur, region, country)
	f, err := x.Extract(context.Background(), "events", m.Value)
	if err != nil {
		t.Fatal(err)
	}
	if f.Writer != ref {
		t.Fatalf("the router's extractor read event %d as %v, not %v", i, f.Writer, ref)
	}
	return sinktest.WithHeader(m, router.HeaderSchema, f.Writer.String())
}

// TestRealSinkStoresEveryFraming (observation 4): raw- and
// Confluent-framed events the router placed in the us pinned topic, next
// to single-object ones, are stored by both stores and decoded right,
// although the pinned topic's own framing is single-object.
func TestRealSinkStoresEveryFraming(t *testing.T) {
	r := newRig(t)
	reg := sinktest.NewRegistry(t)
	id := reg.Register(schemas.UserEventSchema)
	var msgs []stream.Message
	for i := range 12 {
		ref, x := sinktest.SingleObject(), extractorFor(t, schemas.FramingSingleObject, "")
		switch i % 3 {
		case 1:
			ref, x = sinktest.Raw(), extractorFor(t, schemas.FramingRaw, "")
		case 2:
			ref, x = sinktest.Confluent(id), extractorFor(t, schemas.FramingConfluent, reg.URL)
		}
		msgs = append(msgs, routed(t, x, ref, i, "US", "us", "US"))
	}
	r.publish(t, msgs...)
	rs := sinktest.NewRules(sinktest.Ruleset(7, r.topic, "residency.eu", rigStore, "us"))
	// The sinks' deployment: the pinned topic is single-object, a registry is configured.
	dec := extractorFor(t, schemas.FramingSingleObject, reg.URL)
	r.run(t, sink.Config{}, r.pg, rs, dec)
	r.run(t, sink.Config{}, r.objects, rs, dec)
	r.await(t, len(msgs), 0)

	for name, got := range map[string]map[string]stored{"postgres": r.pgEvents(t), "objectstore": r.objectEvents(t)} {
		if len(got) != len(msgs) {
			t.Errorf("%s holds %d events, want %d", name, len(got), len(msgs))
		}
		for i, m := range msgs {
			s, ok := got[sinktest.EventID(i)]
			if !ok {
				t.Errorf("%s: event %d (%s) not stored", name, i, header(m, router.HeaderSchema))
				continue
			}
			if s.doc["event_id"] != sinktest.EventID(i) || s.doc["user_id"] != sinktest.UserID(i) || s.doc["country"] != "US" ||
				s.doc["event_type"] != "VIDEO_VIEW" || string(s.raw) != string(m.Value) {
				t.Errorf("%s: event %d (%s) stored as %v", name, i, header(m, router.HeaderSchema), s.doc)
			}
		}
	}
	if q := r.quarantined(t); len(q) != 0 {
		for k, ms := range q {
			t.Errorf("%s quarantined as %s: %s", k, header(ms[0], router.HeaderReason), header(ms[0], router.HeaderError))
		}
	}
}

// TestRealSinkRefusesWhatItCannotVerify (observation 5 and the schema
// header): an EU user's event written straight to the us pinned topic with
// forged us/US headers is not stored; nor are events without a
// residency-schema header, with one that is not a writer schema reference,
// or naming a schema the sink does not know. Each quarantine record says
// why, and the genuine events are stored.
func TestRealSinkRefusesWhatItCannotVerify(t *testing.T) {
	r := newRig(t)
	x := extractorFor(t, schemas.FramingSingleObject, "")
	genuine := []stream.Message{routed(t, x, sinktest.SingleObject(), 1, "US", "us", "US"), routed(t, x, sinktest.SingleObject(), 2, "US", "us", "US")}
	forged := routed(t, x, sinktest.SingleObject(), 50, "US", "us", "DE") // an EU user, headers saying us/US
	refused := map[string]struct{ reason, err string }{
		sinktest.UserID(50): {sink.ReasonContentMismatch, `jurisdiction "EU", region "eu"`},
		sinktest.UserID(51): {sink.ReasonNoSchemaHeader, "no residency-schema header"},
		sinktest.UserID(52): {sink.ReasonNoSchemaHeader, "not one of"},
		sinktest.UserID(53): {sink.ReasonUnknownSchema, "fingerprint 00000000000000aa"},
	}
	msgs := append(genuine, forged,
		sinktest.WithoutHeader(routed(t, x, sinktest.SingleObject(), 51, "US", "us", "US"), router.HeaderSchema),
		sinktest.WithHeader(routed(t, x, sinktest.SingleObject(), 52, "US", "us", "US"), router.HeaderSchema, "avro:1"),
		sinktest.WithHeader(routed(t, x, sinktest.SingleObject(), 53, "US", "us", "US"), router.HeaderSchema, "raw:00000000000000aa"))
	r.publish(t, msgs...)
	rs := sinktest.NewRules(sinktest.Ruleset(7, r.topic, "residency.eu", rigStore, "us"))
	r.run(t, sink.Config{}, r.pg, rs, x)
	r.run(t, sink.Config{}, r.objects, rs, x)
	r.await(t, len(genuine), 2*len(refused))

	for name, got := range map[string]map[string]stored{"postgres": r.pgEvents(t), "objectstore": r.objectEvents(t)} {
		if len(got) != len(genuine) {
			t.Errorf("%s holds %d events, want the %d genuine ones", name, len(got), len(genuine))
		}
		if _, ok := got[sinktest.EventID(50)]; ok {
			t.Errorf("%s stored the EU user's event with forged us headers", name)
		}
	}
	q := r.quarantined(t)
	for key, want := range refused {
		if len(q[key]) != 2 {
			t.Errorf("%s: %d quarantine records, want one per sink", key, len(q[key]))
		}
		for _, m := range q[key] {
			if got, e := header(m, router.HeaderReason), header(m, router.HeaderError); got != want.reason || !strings.Contains(e, want.err) {
				t.Errorf("%s quarantined as %q (%s), want %q (%s)", key, got, e, want.reason, want.err)
			}
			if header(m, sink.HeaderStore) != rigStore {
				t.Errorf("%s: residency-sink-store %q", key, header(m, sink.HeaderStore))
			}
		}
	}
}

// rulesV returns a ruleset whose jurisdiction CA maps to caRegion ("us" or
// "ca"); the store is approved for us only.
func rulesV(usTopic, caRegion string) string {
	return fmt.Sprintf(`
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: CA, region: %s, countries: [CA]}
  - {name: EU, region: eu, countries: [DE]}
regions:
  - {name: us, cluster: ingest, topic: %q}
  - {name: ca, cluster: ingest, topic: residency.ca}
  - {name: eu, cluster: ingest, topic: residency.eu}
stores:
  - {name: %s, regions: [us]}
`, caRegion, usTopic, rigStore)
}

// TestRealSinkPinsAndRulesetVersions: with the rules and pins in real
// Redis, as `residency sink` wires them: an event placed by a pin is stored
// while the pin is there and refused as a content mismatch once it is
// removed; an event placed under version 1, whose jurisdiction version 2
// moved to another region, is refused as moved, while one claiming that
// placement under version 2 is a content mismatch; and an event of version
// 1 that still belongs to us is stored under version 2.
func TestRealSinkPinsAndRulesetVersions(t *testing.T) {
	r := newRig(t)
	red := testenv.NewRedis(t)
	store := redis.NewRules(red.Client(t), red.Prefix)
	ctx := testenv.Context(t, 90*time.Second)
	if _, err := store.Apply(ctx, []byte(rulesV(r.topic, "us")), rules.ApplyOptions{Base: 0}); err != nil {
		t.Fatal(err)
	}
	if err := store.Pin(ctx, sinktest.UserID(10), "US"); err != nil { // a DE user pinned to US
		t.Fatal(err)
	}
	if err := store.Pin(ctx, sinktest.UserID(11), "US"); err != nil {
		t.Fatal(err)
	}
	x := extractorFor(t, schemas.FramingSingleObject, "")
	byPin := func(i int) stream.Message {
		return sinktest.WithHeader(routedAt(t, x, i, "US", "us", "DE", "1"), router.HeaderDecidedBy, "pin")
	}
	first := []stream.Message{
		byPin(10), byPin(11),
		routedAt(t, x, 20, "CA", "us", "CA", "1"), // placed under v1; v2 moves CA to region ca
		routedAt(t, x, 21, "US", "us", "US", "1"), // placed under v1, still us under v2
	}
	r.publish(t, first...)
	// Unpinned before the sinks see it: the pin decision cannot be confirmed.
	if err := store.Unpin(ctx, sinktest.UserID(11)); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Apply(ctx, []byte(rulesV(r.topic, "ca")), rules.ApplyOptions{Base: 1}); err != nil {
		t.Fatal(err)
	}
	r.publish(t, routedAt(t, x, 22, "CA", "us", "CA", "2")) // no router placed this under v2

	cache := rules.NewCache(store, rules.CacheOptions{PollInterval: 50 * time.Millisecond})
	pins := rules.NewPins(store, rules.PinsOptions{})
	bg, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = cache.Run(bg) }()
	go func() { _ = pins.Run(bg) }()
	<-cache.Loaded()
	if rs, _ := cache.Current(); rs == nil || rs.Version() != 2 {
		t.Fatalf("ruleset in force: %v, want version 2", rs)
	}
	cfg := sink.Config{Rulesets: sink.NewVersions(store, 0), Pins: pins}
	r.run(t, cfg, r.pg, cache, x)
	r.run(t, cfg, r.objects, cache, x)
	r.await(t, 2, 2*3)

	for name, got := range map[string]map[string]stored{"postgres": r.pgEvents(t), "objectstore": r.objectEvents(t)} {
		if len(got) != 2 {
			t.Errorf("%s holds %d events, want 2", name, len(got))
		}
		for _, i := range []int{10, 21} {
			if _, ok := got[sinktest.EventID(i)]; !ok {
				t.Errorf("%s: event %d not stored", name, i)
			}
		}
	}
	q := r.quarantined(t)
	for key, want := range map[string]struct{ reason, err string }{
		sinktest.UserID(11): {sink.ReasonContentMismatch, "has no pin"},
		sinktest.UserID(20): {sink.ReasonRegionMoved, `region "ca"`},
		sinktest.UserID(22): {sink.ReasonContentMismatch, `jurisdiction "CA", region "ca"`},
	} {
		if len(q[key]) != 2 {
			t.Errorf("%s: %d quarantine records, want one per sink", key, len(q[key]))
		}
		for _, m := range q[key] {
			if got, e := header(m, router.HeaderReason), header(m, router.HeaderError); got != want.reason || !strings.Contains(e, want.err) {
				t.Errorf("%s quarantined as %q (%s), want %q (%s)", key, got, e, want.reason, want.err)
			}
		}
	}
}

// routedAt is routed (single-object) with the given ruleset version.
func routedAt(t *testing.T, x *schemas.Extractor, i int, jur, region, country, version string) stream.Message {
	t.Helper()
	return sinktest.WithHeader(routed(t, x, sinktest.SingleObject(), i, jur, region, country), router.HeaderRulesetVersion, version)
}
