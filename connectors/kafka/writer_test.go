package kafka

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"
	"unsafe"

	"github.com/residency-router/residency/stream"
	"github.com/segmentio/kafka-go"
	rawProduceAPI "github.com/segmentio/kafka-go/protocol/rawproduce"
)

// TestRecordsReader checks what the encoder is handed: every field and
// every header in order, in place, no header slice with room to grow into
// the next record's, and the publish time for a record without one.
func TestRecordsReader(t *testing.T) {
	now := time.Now()
	then := now.Add(-time.Hour)
	msgs := []stream.Message{
		{Topic: "a", Key: []byte("k1"), Value: []byte("v1"), Time: then, Headers: []stream.Header{{Key: "h1", Value: []byte("1")}, {Key: "h2", Value: []byte("2")}}},
		{Topic: "b", Key: []byte("k2"), Value: []byte("v2")},
		{Topic: "c", Value: []byte("v3"), Headers: []stream.Header{{Key: "h3", Value: nil}}},
	}
	r := &recordsReader{msgs: msgs, idx: []int32{2, 0, 1}, now: now}
	for _, i := range []int{2, 0, 1} {
		m := msgs[i]
		rec, err := r.ReadRecord()
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, rec.Key); !bytes.Equal(got, m.Key) || (m.Key == nil) != (rec.Key == nil) {
			t.Errorf("record %d key = %q, want %q", i, got, m.Key)
		}
		if got := readAll(t, rec.Value); !bytes.Equal(got, m.Value) {
			t.Errorf("record %d value = %q, want %q", i, got, m.Value)
		}
		want := m.Time
		if want.IsZero() {
			want = now
		}
		if !rec.Time.Equal(want) {
			t.Errorf("record %d time = %v, want %v", i, rec.Time, want)
		}
		if len(rec.Headers) != len(m.Headers) || cap(rec.Headers) != len(rec.Headers) {
			t.Fatalf("record %d: headers %v (cap %d), want %v", i, rec.Headers, cap(rec.Headers), m.Headers)
		}
		for j, h := range m.Headers {
			if rec.Headers[j].Key != h.Key || !bytes.Equal(rec.Headers[j].Value, h.Value) {
				t.Errorf("record %d header %d = %v, want %v", i, j, rec.Headers[j], h)
			}
		}
		if len(m.Headers) > 0 && unsafe.Pointer(&rec.Headers[0]) != unsafe.Pointer(&m.Headers[0]) {
			t.Errorf("record %d: headers were copied, not handed over in place", i)
		}
	}
	if _, err := r.ReadRecord(); err != io.EOF {
		t.Fatalf("after the last record: %v, want io.EOF", err)
	}
}

func readAll(t *testing.T, b interface{ io.Reader }) []byte {
	t.Helper()
	if b == nil {
		return nil
	}
	out, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRequestChunks checks how one leader's records are cut into requests:
// at most batchSize records and batchBytes bytes of a partition per request
// (but always at least one), at most requestBytes per request, and each
// partition's records in order.
func TestRequestChunks(t *testing.T) {
	val := bytes.Repeat([]byte("x"), 100-recordOverhead) // 100 bytes a record
	var msgs []stream.Message
	for i := range 30 {
		v := append(fmt.Appendf(nil, "%02d", i), val[2:]...) // 100 bytes a record, each its own
		msgs = append(msgs, stream.Message{Topic: fmt.Sprintf("t%d", i%3), Value: v})
	}
	batches := []*partBatch{{topic: "t0", partition: 0}, {topic: "t1", partition: 3}, {topic: "t2", partition: 1}}
	for i := range msgs {
		batches[i%3].idx = append(batches[i%3].idx, int32(i))
	}
	p := &producer{bal: &HashBalancer{}, batchSize: 4, batchBytes: 400, requestBytes: 750, timeout: time.Second, acks: -1}
	req, chunks, err := p.request(msgs, batches, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// 3 records of t0 (361 bytes with the batch header; 4 would be 461),
	// then 3 of t1: 722 bytes; t2 would make 1083.
	if chunks[batches[0]] != 3 || chunks[batches[1]] != 3 {
		t.Fatalf("chunks %v, want 3 records of t0 and of t1", chunkCounts(chunks, batches))
	}
	if _, ok := chunks[batches[2]]; ok {
		t.Fatalf("t2 in the first request though it does not fit: %v", chunkCounts(chunks, batches))
	}
	if req.Acks != -1 || req.Timeout != 750 || len(req.Topics) != 2 || req.Topics[1].Partitions[0].Partition != 3 {
		t.Fatalf("request %+v", req)
	}
	checkOrder(t, req, msgs, map[string][]int32{"t0": {0, 3, 6}, "t1": {1, 4, 7}})

	// One record larger than batch_bytes still goes, alone.
	big := []stream.Message{{Topic: "t0", Value: bytes.Repeat([]byte("x"), 1000)}, {Topic: "t0", Value: val}}
	b := &partBatch{topic: "t0", idx: []int32{0, 1}}
	if _, chunks, err = p.request(big, []*partBatch{b}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if chunks[b] != 1 {
		t.Fatalf("an oversized record: chunk of %d, want 1", chunks[b])
	}
}

func chunkCounts(chunks map[*partBatch]int, bs []*partBatch) []int {
	out := make([]int, len(bs))
	for i, b := range bs {
		out[i] = chunks[b]
	}
	return out
}

// checkOrder decodes the request's record sets as the broker would and
// compares the record order per topic with want (indexes into msgs, found
// by value).
func checkOrder(t *testing.T, req *rawProduceAPI.Request, msgs []stream.Message, want map[string][]int32) {
	t.Helper()
	index := map[string]int32{}
	for i, m := range msgs {
		index[string(m.Value)] = int32(i)
	}
	for _, tp := range req.Topics {
		var got []int32
		for _, pt := range tp.Partitions {
			values, err := decodeValues(pt.RecordSet)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range values {
				got = append(got, index[v])
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want[tp.Topic]) {
			t.Errorf("topic %s: records %v, want %v", tp.Topic, got, want[tp.Topic])
		}
	}
}

// TestAssignUsesTheBalancer: a key goes to the partition the producer's
// balancer chooses: the Java client's murmur2 (NewWriter's default) or
// kafka-go's Hash (kafka.partitioner: fnv1a, the placement of earlier
// versions).
func TestAssignUsesTheBalancer(t *testing.T) {
	meta := map[string]topicMeta{"t": {leaders: make([]int32, 6)}}
	var msgs []stream.Message
	for i := range 200 {
		msgs = append(msgs, stream.Message{Topic: "t", Key: fmt.Appendf(nil, "user-%d", i)})
	}
	var h kafka.Hash
	for name, tc := range map[string]struct {
		bal  Balancer
		want func(key []byte) int
	}{
		"murmur2": {&Murmur2Balancer{}, func(key []byte) int { return int(Murmur2(key)&0x7fffffff) % 6 }},
		"fnv1a":   {&HashBalancer{}, func(key []byte) int { return h.Balance(kafka.Message{Key: key}, 0, 1, 2, 3, 4, 5) }},
	} {
		p := &producer{bal: tc.bal}
		batches := p.assign(msgs, meta)
		seen := 0
		for _, b := range batches {
			for _, i := range b.idx {
				seen++
				if want := tc.want(msgs[i].Key); int32(want) != b.partition {
					t.Errorf("%s: key %s: partition %d, want %d", name, msgs[i].Key, b.partition, want)
				}
			}
		}
		if seen != len(msgs) || len(batches) != 6 {
			t.Fatalf("%s: %d records in %d batches, want %d in 6", name, seen, len(batches), len(msgs))
		}
	}
	w, err := NewWriter(WriterConfig{Cluster: Cluster{Name: "a", Brokers: []string{"h:1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := w.p.bal.(*Murmur2Balancer); !ok {
		t.Errorf("NewWriter's default balancer is %T, want *Murmur2Balancer", w.p.bal)
	}
}

func TestWriterConfigNamesField(t *testing.T) {
	c := Cluster{Name: "a", Brokers: []string{"h:1"}}
	for _, tc := range []struct {
		cfg  WriterConfig
		want string
	}{
		{WriterConfig{Cluster: c, BatchSize: -1}, "batch_size"},
		{WriterConfig{Cluster: c, BatchBytes: -1}, "batch_bytes"},
		{WriterConfig{Cluster: c, MaxRequestBytes: 1000}, "max_request_bytes (1000) is smaller than batch_bytes (1048576)"},
		{WriterConfig{Cluster: c, WriteTimeout: -time.Second}, "write_timeout"},
		{WriterConfig{Cluster: c, MaxAttempts: -1}, "max_attempts"},
		{WriterConfig{Cluster: c, Compression: "brotli"}, "compression"},
	} {
		_, err := NewWriter(tc.cfg)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("NewWriter(%+v) = %v, want an error naming %q", tc.cfg, err, tc.want)
		}
	}
}

// BenchmarkRequest times building the produce request of a routed batch:
// 500 records with eleven headers each over 7 topics of 6 partitions.
func BenchmarkRequest(b *testing.B) {
	hs := make([]stream.Header, 11)
	for i := range hs {
		hs[i] = stream.Header{Key: "residency-header", Value: []byte("value")}
	}
	msgs := make([]stream.Message, 500)
	for i := range msgs {
		msgs[i] = stream.Message{Topic: fmt.Sprintf("pinned.%d", i%7), Key: fmt.Appendf(nil, "user-%d", i), Value: make([]byte, 250), Headers: hs}
	}
	p := &producer{bal: &HashBalancer{}, batchSize: 500, batchBytes: 1 << 20, requestBytes: 16 << 20, timeout: time.Second, acks: -1}
	meta := map[string]topicMeta{}
	for i := range 7 {
		meta[fmt.Sprintf("pinned.%d", i)] = topicMeta{leaders: make([]int32, 6)}
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		batches := p.assign(msgs, meta)
		req, _, _ := p.request(msgs, batches, now)
		if len(req.Topics) != 7 {
			b.Fatal("lost topics")
		}
	}
}

// TestFromKafka: a fetched record becomes a router message with every field,
// its headers in place and in order.
func TestFromKafka(t *testing.T) {
	now := time.Now()
	k := kafka.Message{Topic: "t", Partition: 2, Offset: 7, HighWaterMark: 9, Key: []byte("k"), Value: []byte("v"), Time: now,
		Headers: []kafka.Header{{Key: "a", Value: []byte("1")}, {Key: "b"}}}
	m := fromKafka(k)
	if m.Topic != "t" || m.Partition != 2 || m.Offset != 7 || m.HighWaterMark != 9 || string(m.Key) != "k" || string(m.Value) != "v" || !m.Time.Equal(now) {
		t.Fatalf("fromKafka = %+v", m)
	}
	if len(m.Headers) != 2 || m.Headers[0].Key != "a" || string(m.Headers[0].Value) != "1" || m.Headers[1].Key != "b" || m.Headers[1].Value != nil {
		t.Fatalf("headers %v", m.Headers)
	}
	if unsafe.Pointer(&m.Headers[0]) != unsafe.Pointer(&k.Headers[0]) {
		t.Error("headers copied, not converted in place")
	}
	if fromKafka(kafka.Message{}).Headers != nil {
		t.Error("a record without headers got some")
	}
}
