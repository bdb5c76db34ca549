package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/stream"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"
	rawProduceAPI "github.com/segmentio/kafka-go/protocol/rawproduce"
)

// fakeCluster is a kafka.RoundTripper standing in for a cluster whose
// partitions have the given leaders. It answers metadata from leaders,
// checks that every produce request goes to one leader, records what each
// partition received, and answers with fail's error code when fail returns
// one.
type fakeCluster struct {
	mu        sync.Mutex
	leaders   map[string][]int32
	fail      func(call int, topic string, partition int32, values []string) kafka.Error
	sendErr   func(call int) error
	calls     int                           // produce requests
	perLeader map[int32]int                 // produce requests by leader
	got       map[topicPartition][]string   // acknowledged values, in order
	sent      map[topicPartition][][]string // every chunk sent, acknowledged or not
}

func newFakeCluster(leaders map[string][]int32) *fakeCluster {
	return &fakeCluster{leaders: leaders, perLeader: map[int32]int{},
		got: map[topicPartition][]string{}, sent: map[topicPartition][][]string{}}
}

func (f *fakeCluster) RoundTrip(ctx context.Context, _ net.Addr, req kafka.Request) (kafka.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r := req.(type) {
	case *metadataAPI.Request:
		resp := &metadataAPI.Response{}
		for _, name := range r.TopicNames {
			ls, ok := f.leaders[name]
			if !ok {
				resp.Topics = append(resp.Topics, metadataAPI.ResponseTopic{Name: name, ErrorCode: int16(kafka.UnknownTopicOrPartition)})
				continue
			}
			t := metadataAPI.ResponseTopic{Name: name}
			for i, l := range ls {
				t.Partitions = append(t.Partitions, metadataAPI.ResponsePartition{PartitionIndex: int32(i), LeaderID: l})
			}
			resp.Topics = append(resp.Topics, t)
		}
		return resp, nil
	case *rawProduceAPI.Request:
		f.calls++
		call := f.calls
		if f.sendErr != nil {
			if err := f.sendErr(call); err != nil {
				return nil, err
			}
		}
		leader := int32(-1)
		resp := &produceAPI.Response{}
		for _, t := range r.Topics {
			rt := produceAPI.ResponseTopic{Topic: t.Topic}
			for _, p := range t.Partitions {
				l := f.leaders[t.Topic][p.Partition]
				if leader >= 0 && l != leader {
					return nil, fmt.Errorf("mismatching leaders (%d!=%d)", l, leader)
				}
				leader = l
				values, err := decodeValues(p.RecordSet)
				if err != nil {
					return nil, err
				}
				k := topicPartition{t.Topic, p.Partition}
				f.sent[k] = append(f.sent[k], values)
				var code kafka.Error
				if f.fail != nil {
					code = f.fail(call, t.Topic, p.Partition, values)
				}
				base := int64(len(f.got[k]))
				if code == 0 {
					f.got[k] = append(f.got[k], values...)
				}
				rt.Partitions = append(rt.Partitions, produceAPI.ResponsePartition{Partition: p.Partition, ErrorCode: int16(code), BaseOffset: base})
			}
			resp.Topics = append(resp.Topics, rt)
		}
		f.perLeader[leader]++
		return resp, nil
	}
	return nil, fmt.Errorf("unexpected request %T", req)
}

// decodeValues decodes a raw record set as the broker would and returns
// its records' values.
func decodeValues(raw protocol.RawRecordSet) ([]string, error) {
	var rs protocol.RecordSet
	if _, err := rs.ReadFrom(raw.Reader); err != nil {
		return nil, err
	}
	var values []string
	for {
		rec, err := rs.Records.ReadRecord()
		if err == io.EOF {
			return values, nil
		}
		if err != nil {
			return nil, err
		}
		v, _ := io.ReadAll(rec.Value)
		values = append(values, string(v))
	}
}

func testProducer(rt kafka.RoundTripper) *producer {
	return &producer{bal: &HashBalancer{}, tr: rt, acks: -1, timeout: time.Second, batchSize: 500, batchBytes: 1 << 20,
		requestBytes: 16 << 20, retry: stream.Retry{Min: time.Millisecond, Max: 2 * time.Millisecond, Attempts: 3}}
}

// values returns n messages to topic with values prefix0, prefix1, ... and
// keys spreading them over partitions.
func values(topic, prefix string, n int) []stream.Message {
	var msgs []stream.Message
	for i := range n {
		msgs = append(msgs, stream.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "%s%d", prefix, i)})
	}
	return msgs
}

// expectOrder checks that every published value was acknowledged exactly
// once, and in each partition in the order published.
func expectOrder(t *testing.T, f *fakeCluster, msgs []stream.Message) {
	t.Helper()
	pos := map[string]int{}
	for i, m := range msgs {
		pos[string(m.Value)] = i
	}
	total := 0
	for k, vs := range f.got {
		last := -1
		for _, v := range vs {
			i, ok := pos[v]
			if !ok {
				t.Fatalf("%v: acknowledged %q twice or never published", k, v)
			}
			if i < last {
				t.Errorf("%v: %q after a later record", k, v)
			}
			last = i
			delete(pos, v)
			total++
		}
	}
	if len(pos) != 0 {
		t.Errorf("%d records never acknowledged", len(pos))
	}
}

// TestProduceOneRequestPerLeader: the records of all topics and partitions
// a broker leads go in one request.
func TestProduceOneRequestPerLeader(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {1, 2, 1, 2}, "b": {2, 1, 3}})
	msgs := append(values("a", "a", 40), values("b", "b", 30)...)
	if err := testProducer(f).publish(context.Background(), msgs, nil); err != nil {
		t.Fatal(err)
	}
	if f.calls != 3 || f.perLeader[1] != 1 || f.perLeader[2] != 1 || f.perLeader[3] != 1 {
		t.Fatalf("%d requests (by leader %v), want one to each of 3 leaders", f.calls, f.perLeader)
	}
	expectOrder(t, f, msgs)
}

// TestProducePlacement: with a placement, every record's partition and
// offset are the ones it was acknowledged at, across partitions, leaders
// and a retried partition.
func TestProducePlacement(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {1, 2, 1}, "b": {2, 2}})
	f.fail = func(call int, topic string, partition int32, _ []string) kafka.Error {
		if call <= 2 && topic == "a" && partition == 1 {
			return kafka.NotLeaderForPartition
		}
		return 0
	}
	// Something already in the partitions: offsets do not start at 0.
	if err := testProducer(f).publish(context.Background(), append(values("a", "old", 7), values("b", "old", 5)...), nil); err != nil {
		t.Fatal(err)
	}
	msgs := append(values("a", "new", 90), values("b", "new", 40)...)
	pl := &placement{parts: make([]int32, len(msgs)), offs: make([]int64, len(msgs))}
	if err := testProducer(f).publish(context.Background(), msgs, pl); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		got := f.got[topicPartition{m.Topic, pl.parts[i]}]
		if pl.offs[i] < 0 || pl.offs[i] >= int64(len(got)) || got[pl.offs[i]] != string(m.Value) {
			t.Fatalf("record %d (%s) placed at %s[%d]@%d, which holds something else", i, m.Value, m.Topic, pl.parts[i], pl.offs[i])
		}
	}
}

// TestProduceRetriesOnlyWhatFailed: a retriable error on one partition
// resends that partition's records, not the others'.
func TestProduceRetriesOnlyWhatFailed(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {1, 1, 1}})
	f.fail = func(call int, _ string, partition int32, _ []string) kafka.Error {
		if call == 1 && partition == 1 {
			return kafka.NotLeaderForPartition
		}
		return 0
	}
	msgs := values("a", "v", 60)
	if err := testProducer(f).publish(context.Background(), msgs, nil); err != nil {
		t.Fatal(err)
	}
	if f.calls != 2 {
		t.Fatalf("%d requests, want 2", f.calls)
	}
	for k, chunks := range f.sent {
		if want := map[int32]int{0: 1, 1: 2, 2: 1}[k.partition]; len(chunks) != want {
			t.Errorf("partition %d sent %d times, want %d", k.partition, len(chunks), want)
		}
	}
	expectOrder(t, f, msgs)
}

// TestProduceChunksStayInOrder: a partition's records beyond batch_size go
// in later requests, and when a chunk fails the following ones wait, so a
// retry never reorders a partition nor resends what was acknowledged.
func TestProduceChunksStayInOrder(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {1}})
	f.fail = func(call int, _ string, _ int32, _ []string) kafka.Error {
		if call == 2 {
			return kafka.RequestTimedOut
		}
		return 0
	}
	p := testProducer(f)
	p.batchSize = 2
	msgs := values("a", "v", 5)
	if err := p.publish(context.Background(), msgs, nil); err != nil {
		t.Fatal(err)
	}
	want := "[[v0 v1] [v2 v3] [v2 v3] [v4]]"
	if got := fmt.Sprint(f.sent[topicPartition{"a", 0}]); got != want {
		t.Fatalf("chunks sent %s, want %s", got, want)
	}
	expectOrder(t, f, msgs)
}

// TestProducePermanentError: a non-retriable error fails Publish at once,
// naming the partition and the error, never a payload.
func TestProducePermanentError(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {1, 1}})
	f.fail = func(_ int, _ string, partition int32, _ []string) kafka.Error {
		if partition == 0 {
			return kafka.MessageSizeTooLarge
		}
		return 0
	}
	err := testProducer(f).publish(context.Background(), values("a", "secret-payload-", 10), nil)
	if !errors.Is(err, kafka.MessageSizeTooLarge) {
		t.Fatalf("error %v, want MessageSizeTooLarge", err)
	}
	if f.calls != 1 || !strings.Contains(err.Error(), "a[0]") || strings.Contains(err.Error(), "secret") {
		t.Fatalf("%d requests, error %q; want 1 request and an error naming a[0] without payload", f.calls, err)
	}
}

// TestProduceGivesUp: a retriable error that persists fails Publish after
// the configured attempts.
func TestProduceGivesUp(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {1}})
	f.fail = func(int, string, int32, []string) kafka.Error { return kafka.NotEnoughReplicas }
	err := testProducer(f).publish(context.Background(), values("a", "v", 3), nil)
	if !errors.Is(err, kafka.NotEnoughReplicas) || f.calls != 3 {
		t.Fatalf("error %v after %d requests, want NotEnoughReplicas after 3", err, f.calls)
	}
	if !strings.Contains(err.Error(), "3 records in 1 partitions not written") {
		t.Errorf("error %q does not count what was lost", err)
	}
}

// TestProduceConnectionError: a request that fails as a whole is retried.
func TestProduceConnectionError(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {1, 2}})
	f.sendErr = func(call int) error {
		if call == 1 {
			return io.ErrUnexpectedEOF
		}
		return nil
	}
	msgs := values("a", "v", 20)
	if err := testProducer(f).publish(context.Background(), msgs, nil); err != nil {
		t.Fatal(err)
	}
	expectOrder(t, f, msgs)
}

// TestProduceUnknownTopic: a topic the cluster does not have fails before
// anything is sent (topics are never auto-created).
func TestProduceUnknownTopic(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {1}})
	err := testProducer(f).publish(context.Background(), append(values("a", "v", 2), values("missing", "v", 1)...), nil)
	if !errors.Is(err, kafka.UnknownTopicOrPartition) || !strings.Contains(err.Error(), "missing") || f.calls != 0 {
		t.Fatalf("error %v after %d requests, want UnknownTopicOrPartition naming the topic, nothing sent", err, f.calls)
	}
}

// TestProduceNoLeader: a partition without a leader is retried, then fails.
func TestProduceNoLeader(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {-1}})
	err := testProducer(f).publish(context.Background(), values("a", "v", 2), nil)
	if !errors.Is(err, kafka.LeaderNotAvailable) || f.calls != 0 {
		t.Fatalf("error %v after %d requests, want LeaderNotAvailable and nothing sent", err, f.calls)
	}
}

// TestProducePartitionsShrink: metadata that suddenly lists fewer
// partitions than a record was assigned to (a recreated topic, a broker
// behind) is retried and reported, never a crash, and the record keeps its
// partition.
func TestProducePartitionsShrink(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {1, 1, 1, 1, 1, 1}})
	f.fail = func(call int, _ string, partition int32, _ []string) kafka.Error {
		if partition == 5 {
			f.leaders["a"] = []int32{1, 1, 1, 1} // seen from the next metadata request
			return kafka.NotLeaderForPartition
		}
		return 0
	}
	msgs := values("a", "v", 60)
	err := testProducer(f).publish(context.Background(), msgs, nil)
	if !errors.Is(err, kafka.UnknownTopicOrPartition) || !strings.Contains(err.Error(), "a[5]") {
		t.Fatalf("error %v, want UnknownTopicOrPartition for a[5]", err)
	}
	for k := range f.sent {
		if k.partition == 5 && len(f.sent[k]) != 1 {
			t.Errorf("a[5] sent %d times, want once (then held back)", len(f.sent[k]))
		}
	}
}

// TestProduceCancelledSendsNothing: a Publish whose context has ended sends
// no request (kafka-go would still hand one to an idle connection).
func TestProduceCancelledSendsNothing(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {1}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := testProducer(f).publish(ctx, values("a", "v", 3), nil); !errors.Is(err, context.Canceled) || f.calls != 0 {
		t.Fatalf("error %v after %d requests, want context.Canceled and none", err, f.calls)
	}
}

// TestRequestHoldsNoReference: a built request carries its own encoded
// bytes, so overwriting the messages afterwards (what the router does with
// its header memory once Publish returned) cannot change what is sent,
// even by a request the transport is still encoding after a timeout.
func TestRequestHoldsNoReference(t *testing.T) {
	msgs := values("a", "v", 10)
	for i := range msgs {
		msgs[i].Headers = []stream.Header{{Key: "h", Value: fmt.Appendf(nil, "%d", i)}}
	}
	p := testProducer(nil)
	p.attributes = protocol.Attributes(kafka.Lz4) & 0x7
	b := &partBatch{topic: "a", idx: []int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}}
	req, _, err := p.request(msgs, []*partBatch{b}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i := range msgs {
		for j := range msgs[i].Value {
			msgs[i].Value[j] = 'X'
		}
		msgs[i].Headers[0].Value[0] = 'X'
	}
	var rs protocol.RecordSet
	if _, err := rs.ReadFrom(req.Topics[0].Partitions[0].RecordSet.Reader); err != nil {
		t.Fatal(err)
	}
	if rs.Attributes.Compression() != protocol.Attributes(kafka.Lz4).Compression() {
		t.Errorf("record batch compression %v, want lz4", rs.Attributes.Compression())
	}
	for i := 0; ; i++ {
		rec, err := rs.Records.ReadRecord()
		if err == io.EOF {
			if i != 10 {
				t.Fatalf("%d records, want 10", i)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		v, _ := io.ReadAll(rec.Value)
		if string(v) != fmt.Sprintf("v%d", i) || len(rec.Headers) != 1 || string(rec.Headers[0].Value) != fmt.Sprint(i) {
			t.Fatalf("record %d = %q %v after the messages were overwritten", i, v, rec.Headers)
		}
	}
}
