package kafka

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	fetchAPI "github.com/segmentio/kafka-go/protocol/fetch"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/stream"
)

// faultyFetch passes requests to the cluster, but answers fetch requests
// itself while fault is set: fault's error, or (with a nil error) a wait
// until the request's context ends.
type faultyFetch struct {
	kafka.RoundTripper
	mu      sync.Mutex
	fault   func() error // nil: no fault
	fetches int
}

func (f *faultyFetch) set(fault func() error) {
	f.mu.Lock()
	f.fault = fault
	f.mu.Unlock()
}

func (f *faultyFetch) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	if _, ok := req.(*fetchAPI.Request); ok {
		f.mu.Lock()
		f.fetches++
		fault := f.fault
		f.mu.Unlock()
		if fault != nil {
			if err := fault(); err != nil {
				return nil, err
			}
			<-ctx.Done()
			return nil, ctx.Err()
		}
	}
	return f.RoundTripper.RoundTrip(ctx, addr, req)
}

// TestReaderKeepsARecordItCouldNotRestore: when telling an empty field from
// a null one fails (an error, or the context ends), Fetch fails and the
// next Fetch returns that record, restored, before any later one: nothing
// is lost and nothing is reordered.
func TestReaderKeepsARecordItCouldNotRestore(t *testing.T) {
	k := testenv.KafkaA(t)
	topic := k.Topic(t, "exact", 1)
	cl := Cluster{Name: k.Name, Brokers: k.Brokers}
	ctx := testenv.Context(t, 60*time.Second)
	w, err := NewWriter(WriterConfig{Cluster: cl})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Publish(ctx, stream.Message{Topic: topic, Key: []byte{}, Value: []byte("v0")},
		stream.Message{Topic: topic, Key: []byte("k"), Value: []byte("v1")}); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(ReaderConfig{Cluster: cl, GroupID: testenv.Name(t, "g"), Topics: []string{topic},
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ff := &faultyFetch{RoundTripper: r.exact.client.Transport}
	r.exact.client.Transport = ff
	r.exact.retry = stream.Retry{Min: time.Millisecond, Max: 5 * time.Millisecond}

	refused := errors.New("refused by the test")
	ff.set(func() error { return kafka.TopicAuthorizationFailed }) // not retriable
	if _, err := r.Fetch(ctx); !errors.Is(err, kafka.TopicAuthorizationFailed) {
		t.Fatalf("Fetch while the fetch is refused = %v, want TopicAuthorizationFailed", err)
	}
	ff.set(func() error { return refused }) // retried until ctx ends
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = r.Fetch(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Fetch while fetches fail = %v, want the deadline", err)
	}
	ff.set(func() error { return nil }) // hangs
	short, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = r.Fetch(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Fetch while the fetch hangs = %v, want the deadline", err)
	}
	ff.set(nil)
	for i, want := range []stream.Message{{Key: []byte{}, Value: []byte("v0")}, {Key: []byte("k"), Value: []byte("v1")}} {
		m, err := r.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Value) != string(want.Value) || (m.Key == nil) != (want.Key == nil) || string(m.Key) != string(want.Key) {
			t.Fatalf("record %d: key %q (null: %v), value %q; want key %q, value %q", i, m.Key, m.Key == nil, m.Value, want.Key, want.Value)
		}
	}
	if ff.fetches < 4 {
		t.Fatalf("%d fetches to restore, want at least 4 (one refused, retries, one hanging, one answered)", ff.fetches)
	}
}

// TestExactAnswersFromOneFetch: the records of a partition that a fetch
// covered are restored without another request; a reader sent back to an
// earlier offset fetches again; a record without a nil field costs nothing.
func TestExactAnswersFromOneFetch(t *testing.T) {
	k := testenv.KafkaA(t)
	topic := k.Topic(t, "exact", 1)
	ctx := testenv.Context(t, 60*time.Second)
	var recs []*kgo.Record
	for i := range 10 {
		var key []byte
		if i%2 == 0 {
			key = []byte{}
		}
		recs = append(recs, &kgo.Record{Topic: topic, Key: key, Value: []byte{byte('a' + i)},
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte{}}, {Key: "h", Value: nil}}})
	}
	recs = append(recs, &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte("v")})
	if err := k.Franz(t).ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	msgs := readKafkaGo(t, ctx, k, topic, len(recs))
	cl := Cluster{Name: k.Name, Brokers: k.Brokers}
	tr, err := cl.transport()
	if err != nil {
		t.Fatal(err)
	}
	ff := &faultyFetch{RoundTripper: tr}
	x := newExact(&kafka.Client{Addr: kafka.TCP(k.Brokers...), Transport: ff}, "a", slog.Default)
	check := func(i int, m *kafka.Message) {
		t.Helper()
		want := recs[i]
		if (m.Key == nil) != (want.Key == nil) || string(m.Key) != string(want.Key) {
			t.Fatalf("record %d: key null %v, want null %v", i, m.Key == nil, want.Key == nil)
		}
		for j, h := range want.Headers {
			if (m.Headers[j].Value == nil) != (h.Value == nil) {
				t.Fatalf("record %d: header %d null %v, want null %v", i, j, m.Headers[j].Value == nil, h.Value == nil)
			}
		}
	}
	for i := range msgs {
		if err := x.restore(ctx, &msgs[i]); err != nil {
			t.Fatal(err)
		}
		check(i, &msgs[i])
	}
	if ff.fetches != 1 {
		t.Fatalf("%d fetches for %d records of one partition, want 1", ff.fetches, len(msgs))
	}
	// Sent back: the records read again are collapsed again by kafka-go.
	again := readKafkaGo(t, ctx, k, topic, len(recs))
	if err := x.restore(ctx, &again[4]); err != nil {
		t.Fatal(err)
	}
	check(4, &again[4])
	if ff.fetches != 2 {
		t.Fatalf("%d fetches after going back, want 2", ff.fetches)
	}
}

// TestExactKeepsADeletedRecord: a record deleted (retention) between
// kafka-go's read and the fetch that would restore it keeps kafka-go's
// reading, with a warning; it is not lost.
func TestExactKeepsADeletedRecord(t *testing.T) {
	k := testenv.KafkaA(t)
	topic := k.Topic(t, "exact", 1)
	ctx := testenv.Context(t, 60*time.Second)
	fc := k.Franz(t)
	if err := fc.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte{}, Value: []byte("v0")},
		&kgo.Record{Topic: topic, Key: []byte{}, Value: []byte("v1")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	msgs := readKafkaGo(t, ctx, k, topic, 2)
	del := kmsg.NewPtrDeleteRecordsRequest()
	dt := kmsg.NewDeleteRecordsRequestTopic()
	dt.Topic = topic
	dp := kmsg.NewDeleteRecordsRequestTopicPartition()
	dp.Partition, dp.Offset = 0, 1
	dt.Partitions = append(dt.Partitions, dp)
	del.Topics = append(del.Topics, dt)
	resp, err := del.RequestWith(ctx, fc)
	if err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("delete records: %v %+v", err, resp)
	}
	var logs testenv.SyncBuffer
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers...)}
	x := newExact(c, "a", func() *slog.Logger { return slog.New(slog.NewTextHandler(&logs, nil)) })
	if err := x.restore(ctx, &msgs[0]); err != nil {
		t.Fatalf("restore of a deleted record: %v", err)
	}
	if msgs[0].Key != nil || !strings.Contains(logs.String(), "deleted before it could be read again") {
		t.Fatalf("deleted record: key null %v, log %q; want null and a warning", msgs[0].Key == nil, logs.String())
	}
	if err := x.restore(ctx, &msgs[1]); err != nil || msgs[1].Key == nil {
		t.Fatalf("record after the deleted one: %v, key null %v; want empty", err, msgs[1].Key == nil)
	}
}

// readKafkaGo reads the first n records of the one partition of topic with
// kafka-go's Reader, as the adapters do.
func readKafkaGo(t *testing.T, ctx context.Context, k *testenv.Kafka, topic string, n int) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Topic: topic, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	var out []kafka.Message
	for len(out) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestRangeReaderAndReadAllAreExact: replay's range reader and ReadAll
// return keys, values and header values as they are in the log, null
// apart from empty, whoever produced them (here franz-go).
func TestRangeReaderAndReadAllAreExact(t *testing.T) {
	k := testenv.KafkaA(t)
	topic := k.Topic(t, "exact", 1)
	ctx := testenv.Context(t, 60*time.Second)
	var recs []*kgo.Record
	for _, key := range [][]byte{nil, {}, []byte("k")} {
		for _, value := range [][]byte{nil, {}, []byte("v")} {
			recs = append(recs, &kgo.Record{Topic: topic, Key: key, Value: value, Headers: []kgo.RecordHeader{
				{Key: "r", Value: nil}, {Key: "r", Value: []byte{}}, {Key: "", Value: []byte("x")}, {Key: "r", Value: []byte{}}}})
		}
	}
	if err := k.Franz(t).ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	same := func(a, b []byte) bool { return (a == nil) == (b == nil) && string(a) == string(b) }
	check := func(what string, got []stream.Message) {
		t.Helper()
		if len(got) != len(recs) {
			t.Fatalf("%s: %d records, want %d", what, len(got), len(recs))
		}
		for i, want := range recs {
			m := got[i]
			ok := same(m.Key, want.Key) && same(m.Value, want.Value) && len(m.Headers) == len(want.Headers)
			for j := 0; ok && j < len(want.Headers); j++ {
				ok = m.Headers[j].Key == want.Headers[j].Key && same(m.Headers[j].Value, want.Headers[j].Value)
			}
			if !ok {
				t.Errorf("%s: record %d = key %q (null %v), value %q (null %v), headers %v; want key null %v, value null %v, headers %v",
					what, i, m.Key, m.Key == nil, m.Value, m.Value == nil, m.Headers, want.Key == nil, want.Value == nil, want.Headers)
			}
		}
	}
	cl := Cluster{Name: k.Name, Brokers: k.Brokers}
	rr, err := NewRangeReader(cl)
	if err != nil {
		t.Fatal(err)
	}
	var got []stream.Message
	if err := rr.ReadRange(ctx, topic, 0, 0, int64(len(recs)), 4, func(ms []stream.Message) error {
		got = append(got, ms...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check("ReadRange", got)
	a, err := NewAdmin(cl)
	if err != nil {
		t.Fatal(err)
	}
	all, err := a.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	check("ReadAll", all)
}
