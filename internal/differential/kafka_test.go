package differential

import (
	"flag"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
)

var kafkaEventsFlag = flag.Int("differential.kafka-events", 200, "random events per deployment in TestDifferentialRealKafka")

// TestDifferentialRealKafka is TestDifferential on the dev stack: the
// events of both deployments (one per reason, and random ones; corrupted
// ones leave a confluent value's registry id alone, as the registry is
// shared) are produced with franz-go, a client that is not ours, to
// ingest topics on the real cluster A, in every framing, the confluent
// one with schemas registered in the real schema registry (Apicurio,
// Confluent API). A router (router.Router with the Kafka adapters) routes
// them to the pinned topics on clusters A and B, quarantine and
// dead-letter; every record is read back with franz-go and must be the
// one record of its event, in the place and with the headers the
// reference reading calls for, holding its key, value and producer
// headers byte for byte; explain's decision and the sink's re-derivation
// of the record as read back must agree.
func TestDifferentialRealKafka(t *testing.T) {
	a, b := testenv.KafkaA(t), testenv.KafkaB(t)
	reg := testenv.NewSchemaRegistry(t)
	w := where{
		topic: func(prefix, cluster string) string {
			if cluster == "b" {
				return b.Topic(t, prefix, 2)
			}
			return a.Topic(t, prefix, 2)
		},
		register:    func(label, schema string) uint32 { return reg.Register(t, reg.Subject(label), schema) },
		registryURL: reg.URL,
		dir:         t.TempDir(),
		ids:         map[uint32]*writerSchema{},
	}
	deps := deployments(t, w)
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-differential.seed); Kafka %s", seed, a.Version)
	r := rand.New(rand.NewPCG(seed, 99))
	for i, d := range deps {
		ins := everyReason(t, i, d)
		for range *kafkaEventsFlag {
			ins = append(ins, randomInput(r, i, d, true))
		}
		t.Run(d.name, func(t *testing.T) { routeOnKafka(t, a, b, d, ins) })
	}
}

// routeOnKafka produces ins to d's ingest topics, routes them with a
// router on the real clusters, reads every destination back and compares.
func routeOnKafka(t *testing.T, a, b *testenv.Kafka, d *deployment, ins []input) {
	ctx := testenv.Context(t, 3*time.Minute)
	log := slog.New(slog.DiscardHandler)
	l, err := newLegs(ctx, d, t.Errorf)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := kafka.NewReader(kafka.ReaderConfig{Cluster: kafka.Cluster{Name: "a", Brokers: a.Brokers},
		GroupID: testenv.Name(t, "diff-router"), Topics: d.ingestTopics(),
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 5 * time.Second, HeartbeatInterval: 500 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Close() })
	pubs := map[string]stream.Publisher{}
	for _, k := range []*testenv.Kafka{a, b} {
		wr, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: k.Name, Brokers: k.Brokers}, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = wr.Close() })
		pubs[k.Name] = wr
	}
	fields, err := schemas.NewExtractor(d.xcfg)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := router.New(router.Config{Subscriber: rd, Publishers: pubs, IngestCluster: d.ingest,
		QuarantineTopic: d.quarantine, DeadLetterTopic: d.deadLetter, IngestTopics: d.ingestTopics(),
		Fields: fields, Rules: sinktest.NewRules(d.rs), Pins: l.pins, Instance: routerInstance, Logger: log,
		MaxValueBytes: d.maxValueBytes, BatchSize: 100, RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond, GiveUp: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	stop := testenv.Start(t, 30*time.Second, rt.Run)

	recs := make([]*kgo.Record, len(ins))
	for i, in := range ins {
		rec := &kgo.Record{Topic: in.topic.name, Key: in.key, Value: in.value}
		for _, h := range in.headers {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		recs[i] = rec
	}
	producer := a.Franz(t, kgo.ProducerBatchMaxBytes(1<<20), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce with franz-go: %v", err)
	}

	// Every event is written once: wait for as many records as events.
	type dest struct {
		k     *testenv.Kafka
		topic string
	}
	dests := []dest{{a, d.quarantine}, {a, d.deadLetter}, {a, d.pinned["us"]}, {b, d.pinned["eu"]}}
	var outs []*kgo.Record
	for deadline := time.Now().Add(2 * time.Minute); ; {
		outs = outs[:0]
		for _, ds := range dests {
			outs = append(outs, ds.k.ReadTopic(t, ctx, ds.topic)...)
		}
		if len(outs) >= len(ins) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Errorf("router: %v", err)
	}
	// The records, by the ingest coordinates they name.
	bySource := map[string][]stream.Message{}
	for _, o := range outs {
		m := stream.Message{Topic: o.Topic, Partition: int(o.Partition), Offset: o.Offset, Key: o.Key, Value: o.Value}
		for _, h := range o.Headers {
			m.Headers = append(m.Headers, stream.Header{Key: h.Key, Value: h.Value})
		}
		src := func(k string) string { v, _ := router.HeaderValue(m.Headers, k); return string(v) }
		key := src(router.HeaderSourceTopic) + "/" + src(router.HeaderSourcePartition) + "/" + src(router.HeaderSourceOffset)
		bySource[key] = append(bySource[key], m)
	}
	for i, in := range ins {
		rec := recs[i]
		msg := stream.Message{Topic: rec.Topic, Partition: int(rec.Partition), Offset: rec.Offset, Key: in.key, Value: in.value, Headers: in.headers}
		got := bySource[rec.Topic+"/"+strconv.Itoa(int(rec.Partition))+"/"+strconv.FormatInt(rec.Offset, 10)]
		if len(got) != 1 {
			t.Errorf("%s (%s): %d records written for it, want 1", d.name, in.what, len(got))
			continue
		}
		l.compare(in.what, msg, nil, got[0])
	}
	if len(outs) != len(ins) {
		t.Errorf("%s: %d records written for %d events", d.name, len(outs), len(ins))
	}
	t.Logf("%s: %d events, decisions %v", d.name, len(ins), l.done)
}
