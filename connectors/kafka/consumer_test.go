package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

// consumerHarness runs the conformance suite with the batch Consumer (one
// record per Fetch through ConsumerSubscriber) and the idempotent Producer.
func consumerHarness(k *testenv.Kafka) streamtest.Harness {
	cluster := kafka.Cluster{Name: k.Name, Brokers: k.Brokers}
	h := harness(k)
	h.NewPublisher = func(t *testing.T) stream.Publisher {
		p, err := kafka.NewProducer(kafka.ProducerConfig{Cluster: cluster})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	h.NewSubscriber = func(t *testing.T, group string, topics ...string) (stream.Subscriber, func()) {
		c := newConsumer(t, kafka.ConsumerConfig{Cluster: cluster, GroupID: group, Topics: topics})
		var once sync.Once
		closeFn := func() { once.Do(func() { closeConsumer(t, c) }) }
		t.Cleanup(closeFn)
		return c.Subscriber(), closeFn
	}
	return h
}

func TestConsumerConformanceClusterA(t *testing.T) {
	streamtest.TestPubSub(t, consumerHarness(testenv.KafkaA(t)))
}

func TestConsumerConformanceClusterB(t *testing.T) {
	streamtest.TestPubSub(t, consumerHarness(testenv.KafkaB(t)))
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
func pollN(t *testing.T, ctx context.Context, c *kafka.Consumer, n int) []stream.Message {
	t.Helper()
	var out []stream.Message
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
func fidelityRecords(topic string) []stream.Message {
	return []stream.Message{
		{Topic: topic, Key: nil, Value: []byte("null key")},
		{Topic: topic, Key: []byte{}, Value: []byte("empty key")},
		{Topic: topic, Key: []byte("k"), Value: nil},
		{Topic: topic, Key: []byte("k"), Value: []byte{}, Headers: []stream.Header{
			{Key: "n", Value: nil}, {Key: "e", Value: []byte{}}, {Key: "n", Value: []byte{0, 1}},
			{Key: "", Value: []byte("empty name")}, {Key: "n", Value: nil},
		}},
		{Topic: topic, Key: []byte{0, 0xff}, Value: bytes.Repeat([]byte{0, 1, 0xff}, 1000)},
	}
}

func checkFidelity(t *testing.T, got, want []stream.Message) {
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

func toKgo(msgs []stream.Message) []*kgo.Record {
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

// TestConsumerRecordsOutliveRecycledFrames: the frame a fetch response is
// read into is recycled once parsed (the records are copied out of it), so
// a record held while many later responses are read into recycled frames
// must still read back byte for byte: tiny fetch sizes make hundreds of
// fetches, every record is kept until the end, then each is checked
// against what was written (its key, value and header name the record).
func TestConsumerRecordsOutliveRecycledFrames(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 90*time.Second)
	topic := k.Topic(t, "recycle", 3)
	const n = 3000
	want := map[string]stream.Message{}
	var msgs []stream.Message
	for i := range n {
		key := fmt.Sprintf("user-%05d", i)
		m := stream.Message{Topic: topic, Key: []byte(key),
			Value:   bytes.Repeat([]byte{byte(i), byte(i >> 8), 'v'}, 10+i%200),
			Headers: []stream.Header{{Key: "h-" + key, Value: []byte(key)}}}
		want[key] = m
		msgs = append(msgs, m)
	}
	cl := kgoClient(t, k, kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerLinger(0))
	if err := cl.ProduceSync(ctx, toKgo(msgs)...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	c := newConsumer(t, kafka.ConsumerConfig{Cluster: kafka.Cluster{Name: "a", Brokers: k.Brokers},
		GroupID: testenv.Name(t, "g"), Topics: []string{topic}, FetchMaxBytes: 16 << 10, PartitionMaxBytes: 4 << 10})
	got := pollN(t, ctx, c, n)
	seen := map[string]bool{}
	for i := range got {
		g := &got[i]
		w, ok := want[string(g.Key)]
		if !ok || seen[string(g.Key)] {
			t.Fatalf("record %d (%s[%d]@%d): key %q unknown or seen twice", i, g.Topic, g.Partition, g.Offset, g.Key)
		}
		seen[string(g.Key)] = true
		if !bytes.Equal(g.Value, w.Value) || len(g.Headers) != 1 || g.Headers[0].Key != w.Headers[0].Key ||
			!bytes.Equal(g.Headers[0].Value, w.Headers[0].Value) {
			t.Fatalf("record %d (%s[%d]@%d, key %q): value or header changed after later fetches", i, g.Topic, g.Partition, g.Offset, g.Key)
		}
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

// member is a consumer-group member of the rebalance test: it processes
// what Poll returns (records every value it sees), commits every second,
// and, with hook, commits what it processed when its partitions are
// revoked.
type member struct {
	c          *kafka.Consumer
	pending    []kafka.Offset
	revokes    int
	commitErrs int
}

func startMember(t *testing.T, ctx context.Context, cluster kafka.Cluster, group, topic string, hook bool, seen func(stream.Message)) (*member, func()) {
	m := &member{}
	cfg := kafka.ConsumerConfig{Cluster: cluster, GroupID: group, Topics: []string{topic}, HeartbeatInterval: 300 * time.Millisecond}
	if hook {
		cfg.OnRevoke = func(ctx context.Context, _ []kafka.TopicPartition) {
			m.revokes++ // runs in Poll, in the member's goroutine: no lock needed
			if err := m.c.Commit(ctx, m.pending...); err != nil {
				m.commitErrs++
				t.Logf("commit in OnRevoke: %v", err)
			}
			m.pending = nil
		}
	}
	m.c = newConsumer(t, cfg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf []stream.Message
		lastCommit := time.Now()
		for ctx.Err() == nil {
			var err error
			buf, err = m.c.Poll(ctx, buf[:0], 40)
			if err != nil {
				return
			}
			for _, msg := range buf {
				seen(msg)
			}
			m.pending = mergeOffsets(m.pending, kafka.OffsetsAfter(buf...))
			time.Sleep(5 * time.Millisecond) // processing takes time
			if time.Since(lastCommit) > time.Second {
				if err := m.c.Commit(ctx, m.pending...); err == nil {
					m.pending = nil
				}
				lastCommit = time.Now()
			}
		}
	}()
	return m, func() { <-done }
}

func mergeOffsets(a, b []kafka.Offset) []kafka.Offset {
	for _, o := range b {
		found := false
		for i := range a {
			if a[i].Topic == o.Topic && a[i].Partition == o.Partition {
				a[i].Next = max(a[i].Next, o.Next)
				found = true
			}
		}
		if !found {
			a = append(a, o)
		}
	}
	return a
}

// TestConsumerRebalanceHandover: a second member joins while the first
// is reading. With OnRevoke committing what was processed, no record
// reaches the caller twice across the handover (and none is lost);
// without it, the new owner reads the processed but uncommitted tail
// again (logged: the duplicates a rebalance causes without the hook).
func TestConsumerRebalanceHandover(t *testing.T) {
	k := testenv.KafkaA(t)
	cluster := kafka.Cluster{Name: "a", Brokers: k.Brokers}
	for _, hook := range []bool{true, false} {
		t.Run(fmt.Sprintf("hook=%v", hook), func(t *testing.T) {
			ctx := testenv.Context(t, 120*time.Second)
			topic := k.Topic(t, "rebal", 6)
			const n = 8000
			var sent []stream.Message
			for i := range n {
				sent = append(sent, stream.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i%97), Value: fmt.Appendf(nil, "v%06d", i)})
			}
			p := newProducer(t, kafka.ProducerConfig{Cluster: cluster})
			// Half now, half once member b is in the group: b must have
			// records to read however long the rebalance takes (on a loaded
			// host a could otherwise read all 8000 first).
			if err := p.Publish(ctx, sent[:n/2]...); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			count := map[string]int{}
			by := map[string]int{}
			seen := func(who string) func(stream.Message) {
				return func(m stream.Message) {
					mu.Lock()
					count[string(m.Value)]++
					by[who]++
					mu.Unlock()
				}
			}
			distinct := func() int {
				mu.Lock()
				defer mu.Unlock()
				return len(count)
			}
			group := testenv.Name(t, "g")
			runCtx, stop := context.WithCancel(ctx)
			a, waitA := startMember(t, runCtx, cluster, group, topic, hook, seen("a"))
			testenv.Eventually(t, 60*time.Second, "member a reads", func() bool { return distinct() > n/5 })
			b, waitB := startMember(t, runCtx, cluster, group, topic, hook, seen("b"))
			testenv.Eventually(t, 60*time.Second, "member b in the group", b.c.Joined)
			if err := p.Publish(ctx, sent[n/2:]...); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 90*time.Second, "every record read", func() bool { return distinct() == n })
			time.Sleep(time.Second) // let a late duplicate show
			stop()
			waitA()
			waitB()
			dups := 0
			for _, c := range count {
				dups += c - 1
			}
			mu.Lock()
			t.Logf("hook=%v: member a read %d, b %d; a revoked %d times, b %d; %d duplicates", hook, by["a"], by["b"], a.revokes, b.revokes, dups)
			mu.Unlock()
			if by["b"] == 0 {
				t.Fatal("member b read nothing: no handover happened")
			}
			if hook {
				if a.revokes == 0 {
					t.Error("OnRevoke was not called for member a")
				}
				if dups != 0 {
					t.Errorf("%d records reached the caller twice across the handover", dups)
				}
			}
		})
	}
}

// TestConsumerOffsetOutOfRange: a committed offset the partition no
// longer has (records deleted below it) restarts the partition at the
// earliest offset it has, per start_offset.
func TestConsumerOffsetOutOfRange(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 60*time.Second)
	topic := k.Topic(t, "oor", 1)
	cluster := kafka.Cluster{Name: "a", Brokers: k.Brokers}
	p := newProducer(t, kafka.ProducerConfig{Cluster: cluster})
	var sent []stream.Message
	for i := range 10 {
		sent = append(sent, stream.Message{Topic: topic, Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := p.Publish(ctx, sent...); err != nil {
		t.Fatal(err)
	}
	group := testenv.Name(t, "g")
	// The group committed offset 2; then records below 6 are deleted.
	kc := &kafkago.Client{Addr: kafkago.TCP(k.Brokers...), Timeout: 10 * time.Second}
	// A broker just started may not coordinate the group yet: retry that.
	var resp *kafkago.OffsetCommitResponse
	var err error
	for try := 0; ; try++ {
		resp, err = kc.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: group, GenerationID: -1,
			Topics: map[string][]kafkago.OffsetCommit{topic: {{Partition: 0, Offset: 2}}}})
		if err != nil || resp.Topics[topic][0].Error == nil || try == 20 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil || resp.Topics[topic][0].Error != nil {
		t.Fatalf("commit offset 2: %v %+v", err, resp)
	}
	cl := kgoClient(t, k)
	del := kmsg.NewPtrDeleteRecordsRequest()
	dt := kmsg.NewDeleteRecordsRequestTopic()
	dt.Topic = topic
	dp := kmsg.NewDeleteRecordsRequestTopicPartition()
	dp.Partition, dp.Offset = 0, 6
	dt.Partitions = append(dt.Partitions, dp)
	del.Topics = append(del.Topics, dt)
	del.TimeoutMillis = 10000
	if resp, err := del.RequestWith(ctx, cl); err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("delete records below 6: %v %+v", err, resp)
	}
	c := newConsumer(t, kafka.ConsumerConfig{Cluster: cluster, GroupID: group, Topics: []string{topic}})
	got := pollN(t, ctx, c, 4)
	for i, m := range got {
		if m.Offset != int64(6+i) || string(m.Value) != fmt.Sprintf("v%d", 6+i) {
			t.Errorf("record %d: offset %d %q, want offset %d", i, m.Offset, m.Value, 6+i)
		}
	}
}

// TestConsumerBrokerOutage: the connections to the broker are cut (the
// outage proxy) while the consumer reads: Err reports it during the
// outage, and once the broker is back every record arrives, each
// partition in order.
func TestConsumerBrokerOutage(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 120*time.Second)
	topic := k.Topic(t, "cout", 3)
	cluster := kafka.Cluster{Name: "a", Brokers: k.Brokers}
	p := newProducer(t, kafka.ProducerConfig{Cluster: cluster})
	var sent []stream.Message
	for i := range 3000 {
		sent = append(sent, stream.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i%17), Value: fmt.Appendf(nil, "v%06d", i)})
	}
	if err := p.Publish(ctx, sent[:1000]...); err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, k.Brokers[0])
	cfg := kafka.ConsumerConfig{Cluster: kafka.Cluster{Name: "a", Brokers: []string{proxy.Addr}, DialTimeout: time.Second},
		GroupID: testenv.Name(t, "g"), Topics: []string{topic}, RequestTimeout: 2 * time.Second, MaxWait: 200 * time.Millisecond}
	kafka.DialVia(&cfg, proxy.Addr)
	c := newConsumer(t, cfg)
	got := pollN(t, ctx, c, 1000)
	proxy.Cut()
	if err := p.Publish(ctx, sent[1000:]...); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "Err reports the outage", func() bool { return c.Err() != nil })
	t.Logf("during the outage: %v", c.Err())
	time.Sleep(time.Second)
	proxy.Restore()
	seen := map[string]bool{}
	last := map[int]int64{}
	check := func(ms []stream.Message) {
		for _, m := range ms {
			if l, ok := last[m.Partition]; ok && m.Offset <= l && !seen[string(m.Value)] {
				t.Errorf("partition %d: offset %d after %d", m.Partition, m.Offset, l)
			}
			last[m.Partition] = max(last[m.Partition], m.Offset)
			seen[string(m.Value)] = true
		}
	}
	check(got)
	for len(seen) < len(sent) {
		more, err := c.Poll(ctx, nil, 500)
		if err != nil {
			t.Fatalf("poll after the outage, %d of %d records: %v", len(seen), len(sent), err)
		}
		check(more)
	}
	testenv.Eventually(t, 30*time.Second, "Err clears", func() bool { return c.Err() == nil })
}
