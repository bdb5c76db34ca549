package streamtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/stream"
)

// Harness connects the conformance suite to one adapter and one cluster.
type Harness struct {
	// NewTopic creates a topic with the given partition count, unique to
	// the test, and returns its name.
	NewTopic func(t *testing.T, partitions int) string
	// NewPublisher returns a publisher to the cluster; the suite closes it.
	NewPublisher func(t *testing.T) stream.Publisher
	// NewSubscriber returns a member of group reading topics, starting at
	// the group's committed offsets (the earliest offset when none), and a
	// function that closes it without committing anything.
	NewSubscriber func(t *testing.T, group string, topics ...string) (stream.Subscriber, func())
	// NewGroup returns a consumer group name unique to the test.
	NewGroup func(t *testing.T) string
	// Timeout bounds each wait of the suite (joining a group on real Kafka
	// takes seconds). Default 30s.
	Timeout time.Duration
}

// TestPubSub runs the conformance suite: what the router relies on from a
// Publisher and a Subscriber.
func TestPubSub(t *testing.T, h Harness) {
	if h.Timeout == 0 {
		h.Timeout = 30 * time.Second
	}
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, h) })
	t.Run("CommitResume", func(t *testing.T) { testCommitResume(t, h) })
	t.Run("FetchCancelLosesNothing", func(t *testing.T) { testFetchCancel(t, h) })
	t.Run("UnknownTopicFails", func(t *testing.T) { testUnknownTopic(t, h) })
	t.Run("ManyTopicsInOneCall", func(t *testing.T) { testManyTopics(t, h) })
	t.Run("NoReferenceAfterPublish", func(t *testing.T) { testNoReference(t, h) })
	t.Run("BytesExact", func(t *testing.T) { testBytesExact(t, h) })
}

// testBytesExact: a record comes back exactly as it was given, null kept
// apart from empty (zero bytes): a null key, an empty key and a non-empty
// one; a null value and an empty one; header values null, empty and not,
// repeated header names, an empty header name, in their order. Records with
// an empty key share one partition and keep their order, as records with
// any other key do; only a null key leaves the partition to the publisher.
func testBytesExact(t *testing.T, h Harness) {
	one := h.NewTopic(t, 1) // one partition: records read back in order
	three := h.NewTopic(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*h.Timeout)
	defer cancel()
	p := publisher(t, h)
	want := exactRecords(one)
	if err := p.Publish(ctx, want...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	s, closeSub := h.NewSubscriber(t, h.NewGroup(t), one)
	got := fetchN(t, ctx, s, len(want))
	closeSub()
	if err := sameRecords(got, want); err != nil {
		t.Fatalf("%v (null and empty are different records)", err)
	}

	sent := keyedRecords(three)
	if err := p.Publish(ctx, sent[:len(sent)/2]...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if err := p.Publish(ctx, sent[len(sent)/2:]...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	s, closeSub = h.NewSubscriber(t, h.NewGroup(t), three)
	defer closeSub()
	if err := sameKeyOrder(fetchN(t, ctx, s, len(sent)), sent); err != nil {
		t.Fatal(err)
	}
}

// exactRecords returns records for topic covering every shape of key,
// value and headers a Kafka record can have (null and empty apart).
func exactRecords(topic string) []stream.Message {
	empty := func() []byte { return []byte{} }
	hs := func(kv ...any) []stream.Header {
		var out []stream.Header
		for i := 0; i < len(kv); i += 2 {
			v, _ := kv[i+1].([]byte)
			out = append(out, stream.Header{Key: kv[i].(string), Value: v})
		}
		return out
	}
	return []stream.Message{
		{Topic: topic, Key: nil, Value: []byte("null key")},
		{Topic: topic, Key: empty(), Value: []byte("empty key")},
		{Topic: topic, Key: []byte("k"), Value: []byte("key")},
		{Topic: topic, Key: []byte("k"), Value: nil},
		{Topic: topic, Key: []byte("k"), Value: empty()},
		{Topic: topic, Key: empty(), Value: empty()},
		{Topic: topic, Key: nil, Value: nil},
		{Topic: topic, Key: []byte{0}, Value: []byte{0}},
		{Topic: topic, Key: []byte("k"), Value: []byte("null header"), Headers: hs("h", nil)},
		{Topic: topic, Key: []byte("k"), Value: []byte("empty header"), Headers: hs("h", empty())},
		{Topic: topic, Key: nil, Value: []byte("header values"),
			Headers: hs("a", []byte("1"), "b", nil, "c", empty(), "d", []byte{0})},
		{Topic: topic, Key: empty(), Value: []byte("repeated names, in order"),
			Headers: hs("r", []byte("2"), "r", nil, "x", []byte("x"), "r", empty(), "r", []byte("1"))},
		{Topic: topic, Key: []byte("k"), Value: []byte("empty header name"),
			Headers: hs("", []byte("v"), "", nil, "", empty())},
		{Topic: topic, Key: nil, Value: nil, Headers: hs("only", nil)},
		{Topic: topic, Key: empty(), Value: empty(), Headers: hs("only", empty())},
	}
}

// keyedRecords returns records for topic interleaving an empty key, a
// non-empty key and a null key; every value is distinct.
func keyedRecords(topic string) []stream.Message {
	var out []stream.Message
	for i := range 30 {
		var key []byte
		switch i % 3 {
		case 0:
			key = []byte{}
		case 1:
			key = []byte("k")
		}
		out = append(out, stream.Message{Topic: topic, Key: key, Value: fmt.Appendf(nil, "v%d", i)})
	}
	return out
}

// sameKeyOrder checks got, the records of sent read back in any order, one
// by one: each has its key (null kept apart from empty), and the records of
// each non-null key, empty included, lie in one partition in the order sent.
func sameKeyOrder(got, sent []stream.Message) error {
	byValue := map[string]*stream.Message{}
	for i := range got {
		byValue[string(got[i].Value)] = &got[i]
	}
	if len(byValue) != len(sent) {
		return fmt.Errorf("%d distinct records, want %d", len(byValue), len(sent))
	}
	type place struct {
		partition int
		offset    int64
	}
	last := map[string]place{}
	for _, w := range sent {
		g, ok := byValue[string(w.Value)]
		if !ok {
			return fmt.Errorf("record %q missing", w.Value)
		}
		if !sameBytes(g.Key, w.Key) {
			return fmt.Errorf("record %q has key %s, want %s", w.Value, showBytes(g.Key), showBytes(w.Key))
		}
		if w.Key == nil {
			continue
		}
		k := string(w.Key)
		if l, seen := last[k]; seen {
			if l.partition != g.Partition {
				return fmt.Errorf("key %s in partitions %d and %d", showBytes(w.Key), l.partition, g.Partition)
			}
			if g.Offset <= l.offset {
				return fmt.Errorf("key %s: offset %d after %d, order lost", showBytes(w.Key), g.Offset, l.offset)
			}
		}
		last[k] = place{g.Partition, g.Offset}
	}
	return nil
}

// sameBytes reports whether a and b hold the same bytes and are both null
// (nil) or both not.
func sameBytes(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
}

// showBytes formats b for a failure message: null, or quoted.
func showBytes(b []byte) string {
	if b == nil {
		return "null"
	}
	return fmt.Sprintf("%q", b)
}

// testNoReference checks the Publisher memory contract: once Publish has
// returned nil, it neither changed nor keeps a reference to the messages it
// was given. The suite publishes as the router does, from memory it reuses:
// every call's keys, values and header values live in one byte slice and
// its headers in one header slice, and the next call's records are written
// over them in place (and over the msgs slice); after the last call,
// everything is overwritten with garbage. The records read back must be
// the ones given. An adapter that keeps the caller's slices (an
// asynchronous producer, a store that does not copy) reads back later
// calls' records or garbage instead.
func testNoReference(t *testing.T, h Harness) {
	topic := h.NewTopic(t, 1) // one partition: records read back in order
	p := publisher(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 2*h.Timeout)
	defer cancel()
	want, err := publishReusingMemory(ctx, p, topic)
	if err != nil {
		t.Fatal(err)
	}
	s, closeSub := h.NewSubscriber(t, h.NewGroup(t), topic)
	defer closeSub()
	if err := sameRecords(fetchN(t, ctx, s, len(want)), want); err != nil {
		t.Fatalf("%v: the publisher kept a reference to memory the caller reused after Publish returned nil "+
			"(see the memory contract of stream.Publisher)", err)
	}
}

// Shape of publishReusingMemory's calls.
const (
	reuseCalls   = 3  // Publish calls
	reuseRecords = 25 // records per call
)

// publishReusingMemory publishes reuseCalls batches of reuseRecords records
// to topic, each batch written over the previous one's memory once its
// Publish returned nil, then overwrites that memory with garbage. It returns
// copies of the records given, in order. It fails when Publish fails or
// changed the messages it was given.
func publishReusingMemory(ctx context.Context, p stream.Publisher, topic string) ([]stream.Message, error) {
	mem := make([]byte, 0, 64*reuseRecords)          // keys, values, header values
	slab := make([]stream.Header, 0, 2*reuseRecords) // headers
	msgs := make([]stream.Message, 0, reuseRecords)
	// put appends v to mem and returns it, capacity cut (no append through
	// it can reach the next value).
	put := func(v []byte) []byte {
		start := len(mem)
		mem = append(mem, v...)
		return mem[start:len(mem):len(mem)]
	}
	var want []stream.Message
	for call := range reuseCalls {
		// Every call has the same sizes, so it lands on the same bytes.
		mem, slab, msgs = mem[:0], slab[:0], msgs[:0]
		for i := range reuseRecords {
			start := len(slab)
			slab = append(slab,
				stream.Header{Key: fmt.Sprintf("trace-%d", call), Value: put(fmt.Appendf(nil, "t-%d-%03d", call, i))},
				stream.Header{Key: "binary", Value: put([]byte{byte(call), byte(i), 0, 0xff})},
			)
			msgs = append(msgs, stream.Message{
				Topic:   topic,
				Key:     put(fmt.Appendf(nil, "key-%d-%03d", call, i)),
				Value:   put(append([]byte{0, 0xff, byte(call), byte(i)}, fmt.Appendf(nil, "value-%d-%03d", call, i)...)),
				Headers: slab[start:len(slab):len(slab)],
			})
		}
		given := CloneMessages(msgs)
		if err := p.Publish(ctx, msgs...); err != nil {
			return nil, fmt.Errorf("publish call %d: %w", call+1, err)
		}
		if err := sameRecords(msgs, given); err != nil {
			return nil, fmt.Errorf("publish call %d changed the messages it was given: %w", call+1, err)
		}
		want = append(want, given...)
	}
	mem = mem[:cap(mem)]
	for i := range mem {
		mem[i] = 0xee
	}
	slab = slab[:cap(slab)]
	for i := range slab {
		slab[i] = stream.Header{Key: "overwritten", Value: mem[:3:3]}
	}
	for i := range msgs {
		msgs[i] = stream.Message{Topic: topic, Key: mem[:3:3], Value: mem[3:6:6], Headers: slab[:1:1]}
	}
	return want, nil
}

// CloneMessages returns deep copies of msgs: every field, with keys,
// values, headers and header values in memory of their own, a null key,
// value or header value kept apart from an empty one. Tests use it to keep
// what they gave a producer apart from memory the producer, or the code
// under test, may reuse.
func CloneMessages(msgs []stream.Message) []stream.Message {
	out := make([]stream.Message, len(msgs))
	for i, m := range msgs {
		m.Key, m.Value, m.Headers = bytes.Clone(m.Key), bytes.Clone(m.Value), cloneHeaders(m.Headers)
		out[i] = m
	}
	return out
}

// sameRecords returns an error naming the first record of got whose topic,
// key, value or headers differ from want's, in order. A null key, value or
// header value differs from an empty one.
func sameRecords(got, want []stream.Message) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := &got[i], &want[i]
		same := g.Topic == w.Topic && sameBytes(g.Key, w.Key) && sameBytes(g.Value, w.Value) && len(g.Headers) == len(w.Headers)
		for k := 0; same && k < len(w.Headers); k++ {
			same = g.Headers[k].Key == w.Headers[k].Key && sameBytes(g.Headers[k].Value, w.Headers[k].Value)
		}
		if !same {
			return fmt.Errorf("record %d is %s, want %s", i, describe(g), describe(w))
		}
	}
	return nil
}

// describe formats m's topic, key, value and headers for a failure message
// (null values as null).
func describe(m *stream.Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{topic %s, key %s, value %s, headers [", m.Topic, showBytes(m.Key), showBytes(m.Value))
	for i, h := range m.Headers {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%q:%s", h.Key, showBytes(h.Value))
	}
	b.WriteString("]}")
	return b.String()
}

// testManyTopics: one Publish call may carry records for several topics
// (the router sends quarantine and dead-letter records together); each lands
// in its own topic only.
func testManyTopics(t *testing.T, h Harness) {
	t1, t2 := h.NewTopic(t, 1), h.NewTopic(t, 2)
	p := publisher(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 2*h.Timeout)
	defer cancel()
	var msgs []stream.Message
	for i := range 10 {
		topic := t1
		if i%2 == 1 {
			topic = t2
		}
		msgs = append(msgs, stream.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: []byte(topic)})
	}
	if err := p.Publish(ctx, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	for _, topic := range []string{t1, t2} {
		s, closeSub := h.NewSubscriber(t, h.NewGroup(t), topic)
		for _, m := range fetchN(t, ctx, s, 5) {
			if m.Topic != topic || string(m.Value) != topic {
				t.Fatalf("record for %s read from %s", m.Value, m.Topic)
			}
		}
		short, c := context.WithTimeout(ctx, 300*time.Millisecond)
		if m, err := s.Fetch(short); err == nil {
			t.Fatalf("topic %s holds an extra record %q", topic, m.Value)
		}
		c()
		closeSub()
	}
}

func publisher(t *testing.T, h Harness) stream.Publisher {
	p := h.NewPublisher(t)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func fetchN(t *testing.T, ctx context.Context, s stream.Subscriber, n int) []stream.Message {
	t.Helper()
	out := make([]stream.Message, 0, n)
	for len(out) < n {
		m, err := s.Fetch(ctx)
		if err != nil {
			t.Fatalf("fetch %d of %d: %v", len(out)+1, n, err)
		}
		out = append(out, m)
	}
	return out
}

// testRoundTrip: records come back byte for byte with their headers; equal
// keys share a partition and keep their order; offsets rise per partition.
func testRoundTrip(t *testing.T, h Harness) {
	topic := h.NewTopic(t, 3)
	p := publisher(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	defer cancel()
	const n, keys = 120, 8
	var sent []stream.Message
	for i := range n {
		sent = append(sent, stream.Message{
			Topic: topic,
			Key:   fmt.Appendf(nil, "key-%d", i%keys),
			Value: append([]byte{0, 0xff, byte(i)}, fmt.Appendf(nil, "value-%d", i)...),
			Headers: []stream.Header{
				{Key: "trace", Value: fmt.Appendf(nil, "t%d", i)},
				{Key: "binary", Value: []byte{0, 1, 2, byte(i)}},
			},
		})
	}
	// Two calls, so order must hold across calls too.
	if err := p.Publish(ctx, sent[:n/2]...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if err := p.Publish(ctx, sent[n/2:]...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	s, closeSub := h.NewSubscriber(t, h.NewGroup(t), topic)
	defer closeSub()
	got := fetchN(t, ctx, s, n)

	byValue := map[string]stream.Message{}
	for _, m := range got {
		if m.Topic != topic {
			t.Fatalf("record from topic %q, want %q", m.Topic, topic)
		}
		byValue[string(m.Value)] = m
	}
	if len(byValue) != n {
		t.Fatalf("got %d distinct records, want %d", len(byValue), n)
	}
	keyPart := map[string]int{}
	lastOff := map[string]int64{}
	for _, want := range sent {
		m, ok := byValue[string(want.Value)]
		if !ok {
			t.Fatalf("record %q missing", want.Value)
		}
		if !sameBytes(m.Key, want.Key) {
			t.Fatalf("key %s, want %s", showBytes(m.Key), showBytes(want.Key))
		}
		if len(m.Headers) != len(want.Headers) {
			t.Fatalf("headers %v, want %v", m.Headers, want.Headers)
		}
		for i := range want.Headers {
			if m.Headers[i].Key != want.Headers[i].Key || !sameBytes(m.Headers[i].Value, want.Headers[i].Value) {
				t.Fatalf("header %d = %q:%q, want %q:%q", i, m.Headers[i].Key, m.Headers[i].Value, want.Headers[i].Key, want.Headers[i].Value)
			}
		}
		k := string(want.Key)
		if p, seen := keyPart[k]; seen && p != m.Partition {
			t.Fatalf("key %s in partitions %d and %d", k, p, m.Partition)
		}
		keyPart[k] = m.Partition
		if last, seen := lastOff[k]; seen && m.Offset <= last {
			t.Fatalf("key %s: offset %d after %d, order lost", k, m.Offset, last)
		}
		lastOff[k] = m.Offset
	}
}

// testCommitResume: a new member of the group starts right after the last
// committed record and loses nothing that was not committed.
func testCommitResume(t *testing.T, h Harness) {
	topic := h.NewTopic(t, 1)
	group := h.NewGroup(t)
	p := publisher(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 2*h.Timeout)
	defer cancel()
	var sent []stream.Message
	for i := range 10 {
		sent = append(sent, stream.Message{Topic: topic, Key: []byte("k"), Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := p.Publish(ctx, sent...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	s1, close1 := h.NewSubscriber(t, group, topic)
	got := fetchN(t, ctx, s1, 10)
	if err := s1.Commit(ctx, got[:4]...); err != nil {
		t.Fatalf("commit: %v", err)
	}
	close1()

	s2, close2 := h.NewSubscriber(t, group, topic)
	defer close2()
	rest := fetchN(t, ctx, s2, 6)
	for i, m := range rest {
		if want := fmt.Sprintf("v%d", i+4); string(m.Value) != want {
			t.Fatalf("after commit of 4, record %d is %q, want %q", i, m.Value, want)
		}
	}
}

// testFetchCancel: a Fetch that ends with its context does not swallow a
// record.
func testFetchCancel(t *testing.T, h Harness) {
	topic := h.NewTopic(t, 1)
	p := publisher(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 2*h.Timeout)
	defer cancel()
	s, closeSub := h.NewSubscriber(t, h.NewGroup(t), topic)
	defer closeSub()
	for range 3 {
		short, c := context.WithTimeout(ctx, 100*time.Millisecond)
		_, err := s.Fetch(short)
		c()
		if err == nil {
			t.Fatal("fetch on an empty topic returned a record")
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("fetch on an empty topic: %v, want a deadline error", err)
		}
	}
	if err := p.Publish(ctx, stream.Message{Topic: topic, Value: []byte("one")}, stream.Message{Topic: topic, Value: []byte("two")}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	got := fetchN(t, ctx, s, 2)
	if string(got[0].Value) != "one" || string(got[1].Value) != "two" {
		t.Fatalf("got %q, %q; want one, two", got[0].Value, got[1].Value)
	}
}

// testUnknownTopic: publishing to a topic that does not exist fails rather
// than creating it or dropping the record.
func testUnknownTopic(t *testing.T, h Harness) {
	p := publisher(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	defer cancel()
	err := p.Publish(ctx, stream.Message{Topic: fmt.Sprintf("missing_%d", time.Now().UnixNano()), Value: []byte("x")})
	if err == nil {
		t.Fatal("publish to a missing topic succeeded")
	}
}
