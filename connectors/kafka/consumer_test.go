package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/routertest"
)

// consumerHarness runs the conformance suite with the batch Consumer (one
// record per Fetch through ConsumerSubscriber) and the idempotent Producer.
func consumerHarness(k *testenv.Kafka) routertest.Harness {
	cluster := kafka.Cluster{Name: k.Name, Brokers: k.Brokers}
	h := harness(k)
	h.NewPublisher = func(t *testing.T) router.Publisher {
		p, err := kafka.NewProducer(kafka.ProducerConfig{Cluster: cluster})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	h.NewSubscriber = func(t *testing.T, group string, topics ...string) (router.Subscriber, func()) {
		c := newConsumer(t, kafka.ConsumerConfig{Cluster: cluster, GroupID: group, Topics: topics})
		var once sync.Once
		closeFn := func() { once.Do(func() { closeConsumer(t, c) }) }
		t.Cleanup(closeFn)
		return c.Subscriber(), closeFn
	}
	return h
}

func TestConsumerConformanceClusterA(t *testing.T) {
	routertest.TestPubSub(t, consumerHarness(testenv.KafkaA(t)))
}

func TestConsumerConformanceClusterB(t *testing.T) {
	routertest.TestPubSub(t, consumerHarness(testenv.KafkaB(t)))
}

// newConsumer starts a consumer with test timeouts; the test closes it.
func newConsumer(t *testing.T, cfg kafka.ConsumerConfig) *kafka.Consumer {
	t.Helper()
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 6 * time.Second
	}
	if cfg.RebalanceTimeout == 0 {
		cfg.RebalanceTimeout = 5 * time.Second
	}
	c, err := kafka.NewConsumer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeConsumer(t, c) })
	return c
}

func closeConsumer(t *testing.T, c *kafka.Consumer) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}

// pollN polls until n records arrived (failing the test at ctx's end).
func pollN(t *testing.T, ctx context.Context, c *kafka.Consumer, n int) []router.Message {
	t.Helper()
	var out []router.Message
	for len(out) < n {
		var err error
		out, err = c.Poll(ctx, out, n-len(out))
		if err != nil {
			t.Fatalf("poll after %d of %d records: %v", len(out), n, err)
		}
	}
	return out
}

// kgoClient returns a franz-go client of the cluster for producing test
// data the way other clients write it.
func kgoClient(t *testing.T, k *testenv.Kafka, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(k.Brokers...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// fidelityRecords: null and empty keys, values and header values, repeated
// header names, in an order that must survive.
func fidelityRecords(topic string) []router.Message {
	return []router.Message{
		{Topic: topic, Key: nil, Value: []byte("null key")},
		{Topic: topic, Key: []byte{}, Value: []byte("empty key")},
		{Topic: topic, Key: []byte("k"), Value: nil},
		{Topic: topic, Key: []byte("k"), Value: []byte{}, Headers: []router.Header{
			{Key: "n", Value: nil}, {Key: "e", Value: []byte{}}, {Key: "n", Value: []byte{0, 1}},
			{Key: "", Value: []byte("empty name")}, {Key: "n", Value: nil},
		}},
		{Topic: topic, Key: []byte{0, 0xff}, Value: bytes.Repeat([]byte{0, 1, 0xff}, 1000)},
	}
}

func checkFidelity(t *testing.T, got, want []router.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if (g.Key == nil) != (w.Key == nil) || !bytes.Equal(g.Key, w.Key) {
			t.Errorf("record %d: key %q (nil %v), want %q (nil %v)", i, g.Key, g.Key == nil, w.Key, w.Key == nil)
		}
		if (g.Value == nil) != (w.Value == nil) || !bytes.Equal(g.Value, w.Value) {
			t.Errorf("record %d: value nil %v len %d, want nil %v len %d", i, g.Value == nil, len(g.Value), w.Value == nil, len(w.Value))
		}
		if len(g.Headers) != len(w.Headers) {
			t.Errorf("record %d: headers %v, want %v", i, g.Headers, w.Headers)
			continue
		}
		for j := range w.Headers {
			gh, wh := g.Headers[j], w.Headers[j]
			if gh.Key != wh.Key || (gh.Value == nil) != (wh.Value == nil) || !bytes.Equal(gh.Value, wh.Value) {
				t.Errorf("record %d header %d: %q=%q (nil %v), want %q=%q (nil %v)", i, j, gh.Key, gh.Value, gh.Value == nil, wh.Key, wh.Value, wh.Value == nil)
			}
		}
	}
}

func toKgo(msgs []router.Message) []*kgo.Record {
	var out []*kgo.Record
	for _, m := range msgs {
		r := &kgo.Record{Topic: m.Topic, Key: m.Key, Value: m.Value}
		for _, h := range m.Headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		out = append(out, r)
	}
	return out
}

// TestConsumerFidelity: records written by another client (franz-go) are
// read back byte for byte, nil and empty kept apart, with every
// compression codec.
func TestConsumerFidelity(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 90*time.Second)
	codecs := map[string]kgo.CompressionCodec{"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(),
		"snappy": kgo.SnappyCompression(), "lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression()}
	for name, codec := range codecs {
		t.Run(name, func(t *testing.T) {
			topic := k.Topic(t, "fid", 1)
			want := fidelityRecords(topic)
			cl := kgoClient(t, k, kgo.ProducerBatchCompression(codec), kgo.DefaultProduceTopic(topic))
			if err := cl.ProduceSync(ctx, toKgo(want)...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			c := newConsumer(t, kafka.ConsumerConfig{Cluster: kafka.Cluster{Name: "a", Brokers: k.Brokers},
				GroupID: testenv.Name(t, "g"), Topics: []string{topic}})
			got := pollN(t, ctx, c, len(want))
			checkFidelity(t, got, want)
			for i, m := range got {
				if m.Offset != int64(i) || m.Topic != topic || m.Partition != 0 || m.HighWaterMark != int64(len(want)) || m.Time.IsZero() {
					t.Errorf("record %d: %s[%d]@%d hwm %d time %v", i, m.Topic, m.Partition, m.Offset, m.HighWaterMark, m.Time)
				}
			}
		})
	}
}

// TestConsumerReadCommitted: with read_committed, the records of an
// aborted transaction never reach the caller, those of a committed one
// do, and control records never do (read_uncommitted sees all data
// records, no control records).
func TestConsumerReadCommitted(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 90*time.Second)
	topic := k.Topic(t, "txn", 1)
	txn := kgoClient(t, k, kgo.TransactionalID(testenv.Name(t, "txn")), kgo.DefaultProduceTopic(topic))
	produceTxn := func(commit bool, values ...string) {
		t.Helper()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if err := txn.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	plain := kgoClient(t, k, kgo.DefaultProduceTopic(topic))
	if err := plain.ProduceSync(ctx, &kgo.Record{Value: []byte("p0")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	produceTxn(false, "a1", "a2")
	produceTxn(true, "c1", "c2")
	produceTxn(false, "a3")
	if err := plain.ProduceSync(ctx, &kgo.Record{Value: []byte("p1")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cluster := kafka.Cluster{Name: "a", Brokers: k.Brokers}
	for _, tc := range []struct {
		isolation string
		want      string
	}{
		{"read_committed", "[p0 c1 c2 p1]"},
		{"read_uncommitted", "[p0 a1 a2 c1 c2 a3 p1]"},
	} {
		c := newConsumer(t, kafka.ConsumerConfig{Cluster: cluster, GroupID: testenv.Name(t, "g"), Topics: []string{topic},
			IsolationLevel: tc.isolation})
		n := 4
		if tc.isolation == "read_uncommitted" {
			n = 7
		}
		got := pollN(t, ctx, c, n)
		var vals []string
		for _, m := range got {
			vals = append(vals, string(m.Value))
		}
		if fmt.Sprint(vals) != tc.want {
			t.Errorf("%s: %v, want %s", tc.isolation, vals, tc.want)
		}
		// Nothing else arrives: no control record, no aborted one.
		short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		more, err := c.Poll(short, nil, 10)
		cancel()
		if len(more) != 0 || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: after the last record, Poll = %d records, %v", tc.isolation, len(more), err)
		}
	}
}
