package sink_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
)

// TestRealRouterToSinkEveryFraming (issue 12, observation 4, end to end):
// events written to three ingest topics in the three framings are routed by
// the router pipeline on real Kafka into one us pinned topic, and both
// stores hold every one of them, decoded right. The router's
// residency-schema header is what lets the sink read them.
func TestRealRouterToSinkEveryFraming(t *testing.T) {
	r := newRig(t)
	k := testenv.KafkaA(t)
	reg := sinktest.NewRegistry(t)
	id := reg.Register(schemas.UserEventSchema)
	so, raw, cf := k.Topic(t, "ingest-so", 1), k.Topic(t, "ingest-raw", 1), k.Topic(t, "ingest-cf", 1)
	eu, quar, dl := k.Topic(t, "eu", 1), k.Topic(t, "quar", 1), k.Topic(t, "dl", 1)
	fields, err := schemas.NewExtractor(schemas.ExtractorConfig{
		Framings:   map[string]schemas.Framing{raw: schemas.FramingRaw, cf: schemas.FramingConfluent},
		RawSchemas: map[string]string{raw: "io.residency.events.UserEvent"},
		Registry:   schemas.RegistryConfig{URL: reg.URL},
	})
	if err != nil {
		t.Fatal(err)
	}
	rs := sinktest.NewRules(sinktest.Ruleset(7, r.topic, eu, rigStore, "us"))
	rd, err := kafka.NewReader(kafka.ReaderConfig{Cluster: r.cluster, GroupID: testenv.Name(t, "router"), Topics: []string{so, raw, cf},
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Close() })
	rt, err := router.New(router.Config{Subscriber: rd, Publishers: map[string]stream.Publisher{"ingest": r.w}, IngestCluster: "ingest",
		QuarantineTopic: quar, DeadLetterTopic: dl, IngestTopics: []string{so, raw, cf}, Fields: fields, Rules: rs,
		Instance: "router-0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var in []stream.Message
	const n = 12
	for i := range n {
		topic, ref := so, sinktest.SingleObject()
		switch i % 3 {
		case 1:
			topic, ref = raw, sinktest.Raw()
		case 2:
			topic, ref = cf, sinktest.Confluent(id)
		}
		country := "US"
		if i >= n-3 {
			country = "DE" // routed to eu, never to the us stores
		}
		in = append(in, stream.Message{Topic: topic, Key: []byte(sinktest.UserID(i)), Value: sinktest.Framed(ref, i, country)})
	}
	if err := r.w.Publish(testenv.Context(t, 30*time.Second), in...); err != nil {
		t.Fatal(err)
	}
	stop := testenv.Start(t, 30*time.Second, rt.Run)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("router: %v", err)
		}
	})
	dec, err := schemas.NewExtractor(schemas.ExtractorConfig{Registry: schemas.RegistryConfig{URL: reg.URL}})
	if err != nil {
		t.Fatal(err)
	}
	r.run(t, sink.Config{}, r.pg, rs, dec)
	r.run(t, sink.Config{}, r.objects, rs, dec)
	r.await(t, n-3, 0)
	for name, got := range map[string]map[string]stored{"postgres": r.pgEvents(t), "objectstore": r.objectEvents(t)} {
		if len(got) != n-3 {
			t.Errorf("%s holds %d events, want %d", name, len(got), n-3)
		}
		for i, m := range in[:n-3] {
			s, ok := got[sinktest.EventID(i)]
			if !ok {
				t.Errorf("%s: event %d from %s not stored", name, i, m.Topic)
				continue
			}
			if s.doc["event_id"] != sinktest.EventID(i) || s.doc["country"] != "US" || string(s.raw) != string(m.Value) {
				t.Errorf("%s: event %d from %s stored as %v", name, i, m.Topic, s.doc)
			}
		}
	}
	if q := r.quarantined(t); len(q) != 0 {
		for key, ms := range q {
			t.Errorf("%s quarantined as %s: %s", key, header(ms[0], router.HeaderReason), header(ms[0], router.HeaderError))
		}
	}
}
