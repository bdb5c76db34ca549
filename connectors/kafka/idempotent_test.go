package kafka

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

// These tests drive the producer's state machine against kfake, whose
// brokers check producer ids, epochs and sequence numbers as Kafka's do
// and let a test answer chosen requests with chosen errors. The same
// properties are checked on real Kafka, with real outages, in
// producer_test.go.

func fakeKafka(t *testing.T, brokers int, partitions int32, topics ...string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(brokers), kfake.SeedTopics(partitions, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func fakeProducer(t *testing.T, c *kfake.Cluster, cfg ProducerConfig) *Producer {
	t.Helper()
	cfg.Cluster = Cluster{Name: "fake", Brokers: c.ListenAddrs()}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 2 * time.Second
	}
	p, err := NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.CloseContext(context.Background()) })
	return p
}

// seqMessages returns n records to topic spread over keys, with values
// "prefix-key-i" where i counts the records of each key.
func seqMessages(topic, prefix string, keys, from, n int) []stream.Message {
	msgs := make([]stream.Message, 0, n)
	for i := from; i < from+n; i++ {
		k := i % keys
		msgs = append(msgs, stream.Message{Topic: topic, Key: fmt.Appendf(nil, "key-%d", k),
			Value: fmt.Appendf(nil, "%s-%d-%d", prefix, k, i/keys)})
	}
	return msgs
}

// readBack reads every record of topic (all partitions) until want
// records arrived and a little longer (to see duplicates).
func readBack(t *testing.T, brokers []string, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*kgo.Record
	quiet := time.Time{}
	for {
		fctx, fcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		fs := cl.PollFetches(fctx)
		fcancel()
		if ctx.Err() != nil {
			t.Fatalf("read %d records of %s, want %d", len(out), topic, want)
		}
		n := 0
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r); n++ })
		if len(out) >= want {
			if quiet.IsZero() {
				quiet = time.Now().Add(500 * time.Millisecond)
			}
			if n == 0 && time.Now().After(quiet) {
				return out
			}
		}
	}
}

// checkExactlyOnceInOrder checks that every value of sent is in got once,
// and that each key's values come in the order sent.
func checkExactlyOnceInOrder(t *testing.T, sent []stream.Message, got []*kgo.Record) {
	t.Helper()
	pos := map[string]int{}
	for i, m := range sent {
		pos[string(m.Value)] = i
	}
	seen := map[string]bool{}
	lastByKey := map[string]int{}
	partByKey := map[string]int32{}
	for _, r := range got {
		v := string(r.Value)
		i, ok := pos[v]
		if !ok {
			t.Fatalf("record %q was never sent", v)
		}
		if seen[v] {
			t.Errorf("record %q written twice", v)
			continue
		}
		seen[v] = true
		k := string(r.Key)
		if p, ok := partByKey[k]; ok && p != r.Partition {
			t.Errorf("key %s in partitions %d and %d", k, p, r.Partition)
		}
		partByKey[k] = r.Partition
		if last, ok := lastByKey[k]; ok && i < last {
			t.Errorf("key %s: %q after a later record", k, v)
		}
		lastByKey[k] = i
	}
	if len(seen) != len(sent) {
		t.Errorf("%d of %d records written", len(seen), len(sent))
	}
}

// produceAll produces calls of msgs asynchronously (pipelined, as a
// router would) and waits for every ack.
func produceAll(t *testing.T, p *Producer, calls [][]stream.Message) []Ack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	acks := make([]Ack, len(calls))
	var wg sync.WaitGroup
	for i, msgs := range calls {
		wg.Add(1)
		if err := p.Produce(ctx, msgs, func(a Ack) { acks[i] = a; wg.Done() }); err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("acks did not come")
	}
	return acks
}

func split(msgs []stream.Message, per int) [][]stream.Message {
	var out [][]stream.Message
	for len(msgs) > 0 {
		n := min(per, len(msgs))
		out = append(out, msgs[:n])
		msgs = msgs[n:]
	}
	return out
}

// TestProducerAcksOffsets: the ack of each call gives every record's
// partition and offset, and they are where the records are.
func TestProducerAcksOffsets(t *testing.T) {
	c := fakeKafka(t, 2, 3, "t")
	p := fakeProducer(t, c, ProducerConfig{BatchSize: 7})
	msgs := seqMessages("t", "v", 5, 0, 100)
	acks := produceAll(t, p, split(msgs, 30))
	got := readBack(t, c.ListenAddrs(), "t", len(msgs))
	checkExactlyOnceInOrder(t, msgs, got)
	where := map[string][2]int64{}
	for _, r := range got {
		where[string(r.Value)] = [2]int64{int64(r.Partition), r.Offset}
	}
	k := 0
	for _, a := range acks {
		if a.Err != nil {
			t.Fatal(a.Err)
		}
		for i := range a.Offsets {
			w := where[string(msgs[k].Value)]
			if int64(a.Partitions[i]) != w[0] || a.Offsets[i] != w[1] {
				t.Errorf("record %d acked at %d/%d, written at %d/%d", k, a.Partitions[i], a.Offsets[i], w[0], w[1])
			}
			k++
		}
	}
}

// TestProducerRetriesKeepOrderWithoutDuplicates: retriable errors (a
// moved leader, a write not fully replicated but appended, a dropped
// connection) on pipelined requests are resent in order; the brokers
// recognise what they wrote already.
func TestProducerRetriesKeepOrderWithoutDuplicates(t *testing.T) {
	c := fakeKafka(t, 1, 3, "t")
	c.Fault(
		kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Partitions: []int32{0}, Err: kerr.NotLeaderForPartition, Count: 3},
		kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Partitions: []int32{1}, Err: kerr.NotEnoughReplicasAfterAppend, Count: 3},
		kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Partitions: []int32{2}, Err: kerr.RequestTimedOut, Count: 2},
	)
	drops := 0
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		drops++
		if drops == 5 || drops == 9 {
			return nil, errors.New("dropped"), true // the connection is closed unanswered
		}
		return nil, nil, false
	})
	p := fakeProducer(t, c, ProducerConfig{BatchSize: 10})
	msgs := seqMessages("t", "v", 12, 0, 600)
	for _, a := range produceAll(t, p, split(msgs, 40)) {
		if a.Err != nil {
			t.Fatal(a.Err)
		}
	}
	checkExactlyOnceInOrder(t, msgs, readBack(t, c.ListenAddrs(), "t", len(msgs)))
	if retries, bumps := ProducerStats(p); retries == 0 || bumps != 0 {
		t.Errorf("%d retries, %d epoch bumps; want some retries and no bump", retries, bumps)
	}
}

// TestProducerBumpsEpochWhenTheBrokerForgets: UnknownProducerId (the
// broker lost our state) makes the producer bump its epoch and renumber
// what is not acknowledged; nothing is lost or reordered.
func TestProducerBumpsEpochWhenTheBrokerForgets(t *testing.T) {
	c := fakeKafka(t, 1, 2, "t")
	p := fakeProducer(t, c, ProducerConfig{BatchSize: 10})
	msgs := seqMessages("t", "v", 6, 0, 300)
	first := produceAll(t, p, split(msgs[:100], 50))
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Partitions: []int32{1}, Err: kerr.UnknownProducerID})
	rest := produceAll(t, p, split(msgs[100:], 50))
	for _, a := range append(first, rest...) {
		if a.Err != nil {
			t.Fatal(a.Err)
		}
	}
	checkExactlyOnceInOrder(t, msgs, readBack(t, c.ListenAddrs(), "t", len(msgs)))
	if _, bumps := ProducerStats(p); bumps != 1 {
		t.Errorf("%d epoch bumps, want 1", bumps)
	}
}

// TestProducerOutOfOrderAtHeadBumps: an out-of-order sequence for a
// partition's first unacknowledged batch means the broker lost records
// or state: bump the epoch, go on in order.
func TestProducerOutOfOrderAtHeadBumps(t *testing.T) {
	c := fakeKafka(t, 1, 1, "t")
	p := fakeProducer(t, c, ProducerConfig{})
	msgs := seqMessages("t", "v", 3, 0, 60)
	produceAll(t, p, split(msgs[:20], 20))
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.OutOfOrderSequenceNumber})
	for _, a := range produceAll(t, p, split(msgs[20:], 20)) {
		if a.Err != nil {
			t.Fatal(a.Err)
		}
	}
	checkExactlyOnceInOrder(t, msgs, readBack(t, c.ListenAddrs(), "t", len(msgs)))
	if _, bumps := ProducerStats(p); bumps != 1 {
		t.Errorf("%d epoch bumps, want 1", bumps)
	}
}

// TestProducerFailsWhatIsBehindAPermanentError: a batch the broker
// refuses for good fails, and so does every batch queued behind it for
// the same partition (so that resending the failed records cannot put
// them after later ones); other partitions and later calls are written.
func TestProducerFailsWhatIsBehindAPermanentError(t *testing.T) {
	c := fakeKafka(t, 1, 2, "t")
	p := fakeProducer(t, c, ProducerConfig{})
	// Hold the first produce request a moment, and produce the second
	// call once it is in flight, so the second call is queued (or in
	// flight) behind it in batches of its own (were it produced before
	// the first call's batches were sent, its records would join them).
	arrived := make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		once.Do(func() { close(arrived) })
		time.Sleep(100 * time.Millisecond)
		return nil, nil, false
	})
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Partitions: []int32{0}, Err: kerr.MessageTooLarge})
	key0, key1 := keyFor(t, 0, 2), keyFor(t, 1, 2)
	call := func(prefix string) []stream.Message {
		return []stream.Message{{Topic: "t", Key: key0, Value: []byte(prefix + "-p0")}, {Topic: "t", Key: key1, Value: []byte(prefix + "-p1")}}
	}
	acks := make([]Ack, 2)
	var wg sync.WaitGroup
	for i, msgs := range [][]stream.Message{call("a"), call("b")} {
		wg.Add(1)
		if err := p.Produce(context.Background(), msgs, func(a Ack) { acks[i] = a; wg.Done() }); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			<-arrived
		}
	}
	wg.Wait()
	if !errors.Is(acks[0].Err, kafka.MessageSizeTooLarge) || acks[0].Offsets[0] != -1 || acks[0].Offsets[1] < 0 {
		t.Errorf("first call: %v, offsets %v; want MessageTooLarge for partition 0 only", acks[0].Err, acks[0].Offsets)
	}
	if !errors.Is(acks[1].Err, ErrEarlierFailed) || acks[1].Offsets[0] != -1 || acks[1].Offsets[1] < 0 {
		t.Errorf("second call: %v, offsets %v; want ErrEarlierFailed for partition 0 only", acks[1].Err, acks[1].Offsets)
	}
	if strings.Contains(fmt.Sprint(acks[0].Err), "a-p0") {
		t.Errorf("error %v holds a record", acks[0].Err)
	}
	later := produceAll(t, p, [][]stream.Message{call("c")})
	if later[0].Err != nil {
		t.Fatalf("a later call: %v", later[0].Err)
	}
	var vals []string
	for _, r := range readBack(t, c.ListenAddrs(), "t", 4) {
		vals = append(vals, string(r.Value))
	}
	if got := strings.Join(sorted(vals), " "); got != "a-p1 b-p1 c-p0 c-p1" {
		t.Errorf("written: %s", got)
	}
	if _, bumps := ProducerStats(p); bumps != 0 {
		t.Errorf("%d epoch bumps after a definite failure, want 0", bumps)
	}
}

// TestProducerDeliveryTimeout: with DeliveryTimeout set, records that
// cannot be written in time fail with ErrDeliveryTimeout (naming the last
// error), and the producer goes on once the cause is gone.
func TestProducerDeliveryTimeout(t *testing.T) {
	c := fakeKafka(t, 1, 1, "t")
	p := fakeProducer(t, c, ProducerConfig{DeliveryTimeout: 700 * time.Millisecond})
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "t", Err: kerr.NotEnoughReplicas, Count: -1})
	acks := produceAll(t, p, [][]stream.Message{seqMessages("t", "a", 1, 0, 5)})
	if !errors.Is(acks[0].Err, ErrDeliveryTimeout) || !errors.Is(acks[0].Err, kafka.NotEnoughReplicas) {
		t.Fatalf("ack: %v; want a delivery timeout after NotEnoughReplicas", acks[0].Err)
	}
	h.Remove()
	msgs := seqMessages("t", "b", 1, 0, 5)
	if a := produceAll(t, p, [][]stream.Message{msgs}); a[0].Err != nil {
		t.Fatal(a[0].Err)
	}
	checkExactlyOnceInOrder(t, msgs, readBack(t, c.ListenAddrs(), "t", len(msgs)))
}

// TestProducerLeaderMoves: a partition moving to another broker is
// followed (metadata refreshed on NotLeader) without loss, duplicate or
// reordering.
func TestProducerLeaderMoves(t *testing.T) {
	c := fakeKafka(t, 3, 3, "t")
	p := fakeProducer(t, c, ProducerConfig{BatchSize: 5})
	msgs := seqMessages("t", "v", 9, 0, 900)
	calls := split(msgs, 30)
	var all []Ack
	for i := range calls {
		all = append(all, produceAll(t, p, calls[i:i+1])...)
		if i%5 == 2 {
			for part := int32(0); part < 3; part++ {
				_ = c.MoveTopicPartition("t", part, (c.LeaderFor("t", part)+1)%3)
			}
		}
	}
	for _, a := range all {
		if a.Err != nil {
			t.Fatal(a.Err)
		}
	}
	checkExactlyOnceInOrder(t, msgs, readBack(t, c.ListenAddrs(), "t", len(msgs)))
}

// TestProducerUnknownTopic: a topic the cluster does not have fails
// Produce at once; nothing is created.
func TestProducerUnknownTopic(t *testing.T) {
	c := fakeKafka(t, 1, 1, "t")
	p := fakeProducer(t, c, ProducerConfig{})
	err := p.Produce(context.Background(), []stream.Message{{Topic: "missing", Value: []byte("x")}}, func(Ack) { t.Error("done called") })
	if !errors.Is(err, kafka.UnknownTopicOrPartition) {
		t.Fatalf("produce to a missing topic: %v", err)
	}
}

func TestAddSeqWraps(t *testing.T) {
	if got := addSeq(math.MaxInt32-2, 5); got != 2 {
		t.Errorf("addSeq(max-2, 5) = %d, want 2", got)
	}
	if got := addSeq(10, 5); got != 15 {
		t.Errorf("addSeq(10, 5) = %d", got)
	}
}

// TestHashBalancerMatchesKafkaGo: the fnv1a balancer puts every key where
// kafka-go's Hash balancer does (residency's placement before murmur2).
func TestHashBalancerMatchesKafkaGo(t *testing.T) {
	var h HashBalancer
	var kh kafka.Hash
	for n := 1; n <= 13; n++ {
		parts := make([]int, n)
		for i := range parts {
			parts[i] = i
		}
		for i := range 2000 {
			key := []byte(strconv.Itoa(i * 7919))
			if i%50 == 0 {
				key = []byte{}
			}
			if got, want := h.Partition(key, n), kh.Balance(kafka.Message{Key: key}, parts...); got != want {
				t.Fatalf("key %q, %d partitions: %d, kafka-go %d", key, n, got, want)
			}
		}
	}
}

// keyFor returns a key the default balancer puts on partition part of n.
func keyFor(t *testing.T, part, n int) []byte {
	var h Murmur2Balancer
	for i := range 1000 {
		k := []byte(fmt.Sprintf("k%d", i))
		if h.Partition(k, n) == part {
			return k
		}
	}
	t.Fatal("no key")
	return nil
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestConsumerFollowsLeaderMoves: partitions moving between brokers while
// the Consumer reads (NotLeader, metadata refreshed, fetch from the new
// leader): every record arrives once, each partition in order.
func TestConsumerFollowsLeaderMoves(t *testing.T) {
	c := fakeKafka(t, 3, 4, "t")
	p := fakeProducer(t, c, ProducerConfig{})
	msgs := seqMessages("t", "v", 16, 0, 4000)
	for _, a := range produceAll(t, p, split(msgs, 500)) {
		if a.Err != nil {
			t.Fatal(a.Err)
		}
	}
	cons, err := NewConsumer(ConsumerConfig{Cluster: Cluster{Name: "fake", Brokers: c.ListenAddrs()}, GroupID: "g",
		Topics: []string{"t"}, PartitionMaxBytes: 4 << 10, FetchMaxBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seen := map[string]bool{}
	last := map[int]int64{}
	var buf []stream.Message
	for polls := 0; len(seen) < len(msgs); polls++ {
		if buf, err = cons.Poll(ctx, buf[:0], 100); err != nil {
			t.Fatalf("after %d records: %v", len(seen), err)
		}
		for _, m := range buf {
			if seen[string(m.Value)] {
				t.Fatalf("%q twice", m.Value)
			}
			seen[string(m.Value)] = true
			if l, ok := last[m.Partition]; ok && m.Offset != l+1 {
				t.Fatalf("partition %d: offset %d after %d", m.Partition, m.Offset, l)
			}
			last[m.Partition] = m.Offset
		}
		if polls%5 == 0 {
			for part := int32(0); part < 4; part++ {
				_ = c.MoveTopicPartition("t", part, (c.LeaderFor("t", part)+1)%3)
			}
		}
	}
}

// TestProducerJoinsQueuedCalls: the records of calls produced while their
// partition's batch waits for a request join that batch (one request for
// many calls, as a backlog drains), each call still acknowledged with its
// own records' offsets, in order; compressed as well (a batch is
// compressed when it is sealed, so compression does not keep calls from
// joining).
func TestProducerJoinsQueuedCalls(t *testing.T) {
	for _, codec := range []string{"none", "lz4", "snappy", "zstd"} {
		t.Run(codec, func(t *testing.T) { testProducerJoinsQueuedCalls(t, codec) })
	}
}

func testProducerJoinsQueuedCalls(t *testing.T, codec string) {
	c := fakeKafka(t, 1, 1, "t")
	var mu sync.Mutex
	requests := 0
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		requests++
		first := requests == 1
		mu.Unlock()
		if first {
			time.Sleep(300 * time.Millisecond) // the calls below queue up meanwhile
		}
		return nil, nil, false
	})
	p := fakeProducer(t, c, ProducerConfig{Compression: codec})
	msgs := seqMessages("t", "v", 3, 0, 200)
	acks := produceAll(t, p, split(msgs, 2))
	got := readBack(t, c.ListenAddrs(), "t", len(msgs))
	checkExactlyOnceInOrder(t, msgs, got)
	wantCodec := map[string]uint8{"none": 0, "snappy": 2, "lz4": 3, "zstd": 4}[codec]
	for _, r := range got {
		if c := r.Attrs.CompressionType(); c != wantCodec {
			t.Fatalf("record at offset %d written with compression %d, want %d (%s)", r.Offset, c, wantCodec, codec)
		}
	}
	where := map[string]int64{}
	for _, r := range got {
		where[string(r.Value)] = r.Offset
	}
	k := 0
	for _, a := range acks {
		if a.Err != nil {
			t.Fatal(a.Err)
		}
		for i := range a.Offsets {
			if w := where[string(msgs[k].Value)]; a.Offsets[i] != w {
				t.Errorf("record %d acked at offset %d, written at %d", k, a.Offsets[i], w)
			}
			k++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if requests > 10 {
		t.Errorf("%d produce requests for 100 calls queued behind one; want the queued calls joined into a few batches", requests)
	}
}

// TestProducerWaitsForBufferSpace: Produce waits while MaxBufferedBytes
// are unacknowledged and goes on once an ack frees room; Flush waits for
// the acks.
func TestProducerWaitsForBufferSpace(t *testing.T) {
	c := fakeKafka(t, 1, 1, "t")
	hold := make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		<-hold // the first produce request is answered once the test says so
		return nil, nil, false
	})
	p := fakeProducer(t, c, ProducerConfig{MaxBufferedBytes: 4096})
	big := func(v string) []stream.Message {
		return []stream.Message{{Topic: "t", Key: []byte("k"), Value: append([]byte(v), make([]byte, 3000)...)}}
	}
	acked := make(chan Ack, 2)
	if err := p.Produce(context.Background(), big("a"), func(a Ack) { acked <- a }); err != nil {
		t.Fatal(err)
	}
	returned := make(chan error, 1)
	go func() { returned <- p.Produce(context.Background(), big("b"), func(a Ack) { acked <- a }) }()
	select {
	case err := <-returned:
		t.Fatalf("second Produce returned (%v) while the first call's bytes fill the buffer", err)
	case <-time.After(300 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	if err := p.Produce(ctx, big("c"), func(Ack) {}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a third Produce with a short deadline: %v, want the deadline", err)
	}
	cancel()
	close(hold)
	select {
	case err := <-returned:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second Produce still waiting after the first call was acknowledged")
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if a := <-acked; a.Err != nil {
			t.Fatal(a.Err)
		}
	}
}

// TestRouterProducerCopiesRecords: the router's adapter says its Produce
// copies the records (router.RecordCopier), and it does: the records'
// keys, values and headers overwritten as soon as Produce returns, before
// anything is acknowledged (what the router does with that memory), what
// is written is what was given, with and without compression.
func TestRouterProducerCopiesRecords(t *testing.T) {
	for _, codec := range []string{"none", "lz4"} {
		t.Run(codec, func(t *testing.T) {
			c := fakeKafka(t, 1, 3, "copied")
			rp := fakeProducer(t, c, ProducerConfig{Compression: codec}).RouterProducer()
			var _ router.RecordCopier = rp
			if !rp.CopiesRecords() {
				t.Fatal("CopiesRecords = false")
			}
			ctx := context.Background()
			const calls, per = 20, 50
			var want []stream.Message
			acks := make(chan router.ProduceAck, calls)
			for k := range calls {
				msgs := seqMessages("copied", fmt.Sprint(k), 5, 0, per)
				for i := range msgs {
					msgs[i].Headers = []stream.Header{{Key: "h", Value: fmt.Appendf(nil, "h-%d-%d", k, i)}}
				}
				want = append(want, streamtest.CloneMessages(msgs)...)
				if err := rp.Produce(ctx, msgs, func(a router.ProduceAck) { acks <- a }); err != nil {
					t.Fatal(err)
				}
				for i := range msgs {
					for _, b := range [][]byte{msgs[i].Key, msgs[i].Value, msgs[i].Headers[0].Value} {
						for j := range b {
							b[j] = 'X'
						}
					}
				}
			}
			for range calls {
				if a := <-acks; a.Err != nil || a.Retained {
					t.Fatalf("ack %+v", a)
				}
			}
			got := map[string]string{}
			for _, r := range readBack(t, c.ListenAddrs(), "copied", len(want)) {
				if len(r.Headers) != 1 {
					t.Fatalf("record %q has %d headers", r.Value, len(r.Headers))
				}
				got[string(r.Value)] = string(r.Key) + "/" + string(r.Headers[0].Value)
			}
			for _, m := range want {
				if w := string(m.Key) + "/" + string(m.Headers[0].Value); got[string(m.Value)] != w {
					t.Errorf("record %q: key/header %q, want %q", m.Value, got[string(m.Value)], w)
				}
			}
			if len(got) != len(want) {
				t.Errorf("%d distinct records written, want %d", len(got), len(want))
			}
		})
	}
}
