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

	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"

	"github.com/residency-router/residency/router"
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
	case *produceAPI.Request:
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
				var values []string
				for {
					rec, err := p.RecordSet.Records.ReadRecord()
					if err == io.EOF {
						break
					}
					if err != nil {
						return nil, err
					}
					v, _ := io.ReadAll(rec.Value)
					values = append(values, string(v))
				}
				k := topicPartition{t.Topic, p.Partition}
				f.sent[k] = append(f.sent[k], values)
				var code kafka.Error
				if f.fail != nil {
					code = f.fail(call, t.Topic, p.Partition, values)
				}
				if code == 0 {
					f.got[k] = append(f.got[k], values...)
				}
				rt.Partitions = append(rt.Partitions, produceAPI.ResponsePartition{Partition: p.Partition, ErrorCode: int16(code)})
			}
			resp.Topics = append(resp.Topics, rt)
		}
		f.perLeader[leader]++
		return resp, nil
	}
	return nil, fmt.Errorf("unexpected request %T", req)
}

func testProducer(rt kafka.RoundTripper) *producer {
	return &producer{tr: rt, acks: -1, timeout: time.Second, batchSize: 500, batchBytes: 1 << 20,
		requestBytes: 16 << 20, attempts: 3, backoffMin: time.Millisecond, backoffMax: 2 * time.Millisecond}
}

// values returns n messages to topic with values prefix0, prefix1, ... and
// keys spreading them over partitions.
func values(topic, prefix string, n int) []router.Message {
	var msgs []router.Message
	for i := range n {
		msgs = append(msgs, router.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "%s%d", prefix, i)})
	}
	return msgs
}

// expectOrder checks that every published value was acknowledged exactly
// once, and in each partition in the order published.
func expectOrder(t *testing.T, f *fakeCluster, msgs []router.Message) {
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
	if err := testProducer(f).publish(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	if f.calls != 3 || f.perLeader[1] != 1 || f.perLeader[2] != 1 || f.perLeader[3] != 1 {
		t.Fatalf("%d requests (by leader %v), want one to each of 3 leaders", f.calls, f.perLeader)
	}
	expectOrder(t, f, msgs)
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
	if err := testProducer(f).publish(context.Background(), msgs); err != nil {
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
	if err := p.publish(context.Background(), msgs); err != nil {
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
	err := testProducer(f).publish(context.Background(), values("a", "secret-payload-", 10))
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
	err := testProducer(f).publish(context.Background(), values("a", "v", 3))
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
	if err := testProducer(f).publish(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	expectOrder(t, f, msgs)
}

// TestProduceUnknownTopic: a topic the cluster does not have fails before
// anything is sent (topics are never auto-created).
func TestProduceUnknownTopic(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {1}})
	err := testProducer(f).publish(context.Background(), append(values("a", "v", 2), values("missing", "v", 1)...))
	if !errors.Is(err, kafka.UnknownTopicOrPartition) || !strings.Contains(err.Error(), "missing") || f.calls != 0 {
		t.Fatalf("error %v after %d requests, want UnknownTopicOrPartition naming the topic, nothing sent", err, f.calls)
	}
}

// TestProduceNoLeader: a partition without a leader is retried, then fails.
func TestProduceNoLeader(t *testing.T) {
	f := newFakeCluster(map[string][]int32{"a": {-1}})
	err := testProducer(f).publish(context.Background(), values("a", "v", 2))
	if !errors.Is(err, kafka.LeaderNotAvailable) || f.calls != 0 {
		t.Fatalf("error %v after %d requests, want LeaderNotAvailable and nothing sent", err, f.calls)
	}
}
