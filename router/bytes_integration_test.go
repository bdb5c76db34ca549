package router_test

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
)

// Shapes of keys and producer headers the byte-for-byte tests produce: a
// Kafka key or header value is null, empty (zero bytes) or not empty, and
// header names may repeat (or be empty); a forged residency-* header is
// dropped by the router.
var (
	exactKeys = []struct {
		name string
		key  []byte
	}{{"null", nil}, {"empty", []byte{}}, {"user", []byte("user-1")}}
	exactHeaders = []struct {
		name string
		hs   []kgo.RecordHeader
	}{
		{"none", nil},
		{"null", []kgo.RecordHeader{{Key: "h", Value: nil}}},
		{"empty", []kgo.RecordHeader{{Key: "h", Value: []byte{}}}},
		{"mixed", []kgo.RecordHeader{
			{Key: "trace", Value: []byte("t-1")}, {Key: "r", Value: nil}, {Key: "r", Value: []byte{}},
			{Key: "r", Value: []byte{0}}, {Key: "", Value: []byte{}}, {Key: router.HeaderRegion, Value: []byte("forged")},
			{Key: "r", Value: []byte("3")}, {Key: "", Value: nil},
		}},
	}
)

// wantProducerHeaders is what the router keeps of hs: every header but the
// residency-* ones, in order, values as they are (null kept apart from
// empty).
func wantProducerHeaders(hs []kgo.RecordHeader) []kgo.RecordHeader {
	var out []kgo.RecordHeader
	for _, h := range hs {
		if !strings.HasPrefix(h.Key, router.HeaderPrefix) {
			out = append(out, h)
		}
	}
	return out
}

// sameBytes reports whether a and b hold the same bytes and are both null
// or both not.
func sameBytes(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

// showBytes formats b for a failure message: null, or quoted (cut short).
func showBytes(b []byte) string {
	if b == nil {
		return "null"
	}
	if len(b) > 40 {
		return fmt.Sprintf("%q... (%d bytes)", b[:40], len(b))
	}
	return fmt.Sprintf("%q", b)
}

func showHeaders(hs []kgo.RecordHeader) string {
	var b strings.Builder
	for i, h := range hs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%q:%s", h.Key, showBytes(h.Value))
	}
	return "[" + b.String() + "]"
}

// checkExact reports how out, the record the router wrote for in, differs
// from it: the key, the value (wantValue: in's, or null for a too_large
// dead-letter) and the producer's headers must be in's exactly, null kept
// apart from empty; they come first, followed by residency-* headers only.
func checkExact(in, out *kgo.Record, wantValue []byte) error {
	if !sameBytes(out.Key, in.Key) {
		return fmt.Errorf("key %s, want %s", showBytes(out.Key), showBytes(in.Key))
	}
	if !sameBytes(out.Value, wantValue) {
		return fmt.Errorf("value %s, want %s", showBytes(out.Value), showBytes(wantValue))
	}
	want := wantProducerHeaders(in.Headers)
	bad := len(out.Headers) < len(want)
	for i := 0; !bad && i < len(want); i++ {
		bad = out.Headers[i].Key != want[i].Key || !sameBytes(out.Headers[i].Value, want[i].Value)
	}
	for i := len(want); !bad && i < len(out.Headers); i++ {
		bad = !strings.HasPrefix(out.Headers[i].Key, router.HeaderPrefix)
	}
	if bad {
		return fmt.Errorf("headers %s, want %s followed by residency headers", showHeaders(out.Headers), showHeaders(want))
	}
	return nil
}

// outHeader returns the value of the last header of r named key.
func outHeader(r *kgo.Record, key string) string {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == key {
			return string(r.Headers[i].Value)
		}
	}
	return ""
}

// sourceOf returns the ingest coordinates the router wrote on r.
func sourceOf(r *kgo.Record) string {
	return outHeader(r, router.HeaderSourcePartition) + "/" + outHeader(r, router.HeaderSourceOffset)
}

// TestIntegrationBytesExact produces, with a client that is not ours
// (franz-go), events of every destination (pinned topics on both clusters,
// quarantine, dead-letter, the too_large dead-letter) with every shape of
// key and producer headers, routes them with the real pipeline, and reads
// every destination back with franz-go: key, value and producer headers
// leave the router exactly as they came, null kept apart from empty, and
// events sharing a key (the empty key included) keep their order in one
// partition.
func TestIntegrationBytesExact(t *testing.T) {
	s := newStack(t)
	ctx := testenv.Context(t, 120*time.Second)
	enc := func(id, country string) []byte {
		v, err := s.enc.Encode(sample.Event{ID: id, UserID: "u-" + id, Country: country})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	large := append(enc("large", "US"), make([]byte, 200<<10)...)
	values := []struct {
		name, dest string
		value      []byte
	}{
		{"us", "region:us", enc("us", "US")},
		{"eu", "region:eu", enc("eu", "DE")},
		{"quarantine", "quarantine:no_country", enc("q", "")},
		{"bad", "deadletter:bad_magic", []byte(`{"json": true}`)},
		{"empty", "deadletter:empty_value", []byte{}},
		{"null", "deadletter:empty_value", nil},
		{"large", "deadletter:too_large", large},
	}
	type sent struct {
		name, dest string
		rec        *kgo.Record
	}
	var recs []*kgo.Record
	var cases []sent
	for _, v := range values {
		for _, k := range exactKeys {
			for _, h := range exactHeaders {
				r := &kgo.Record{Topic: s.ingest, Key: k.key, Value: v.value, Headers: h.hs}
				recs = append(recs, r)
				cases = append(cases, sent{name: v.name + "/key " + k.name + "/headers " + h.name, dest: v.dest, rec: r})
			}
		}
	}
	// Same-key runs: the router must keep their order, the empty key's too.
	order := map[string][]*kgo.Record{}
	for i := range 20 {
		for _, k := range []string{"", "k-order"} {
			r := &kgo.Record{Topic: s.ingest, Key: []byte(k), Value: enc(fmt.Sprintf("order-%q-%d", k, i), "US"),
				Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}}}
			recs = append(recs, r)
			order[k] = append(order[k], r)
			cases = append(cases, sent{name: fmt.Sprintf("order %q %d", k, i), dest: "region:us", rec: r})
		}
	}
	r, _ := s.newRouter(t, "router-bytes", nil)
	stop := runRouter(t, r)
	producer := s.a.Franz(t, kgo.ProducerBatchMaxBytes(1<<20))
	if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce with franz-go: %v", err)
	}
	s.waitCommitted(t, ctx)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	// Where each event went, by its ingest coordinates.
	type placed struct {
		dest string
		rec  *kgo.Record
	}
	found := map[string][]placed{}
	read := func(k *testenv.Kafka, topic, label string, withReason bool) {
		for _, out := range k.ReadTopic(t, ctx, topic) {
			l := label
			if withReason {
				l += ":" + outHeader(out, router.HeaderReason)
			}
			found[sourceOf(out)] = append(found[sourceOf(out)], placed{l, out})
		}
	}
	for region, topic := range s.pinned {
		read(s.clusterOf(s.cluster[region]), topic, "region:"+region, false)
	}
	read(s.a, s.quarantine, "quarantine", true)
	read(s.a, s.deadLetter, "deadletter", true)

	for _, c := range cases {
		src := fmt.Sprintf("%d/%d", c.rec.Partition, c.rec.Offset)
		got := found[src]
		if len(got) != 1 || got[0].dest != c.dest {
			var dests []string
			for _, g := range got {
				dests = append(dests, g.dest)
			}
			t.Errorf("%s (ingest %s): found in %v, want once in %s", c.name, src, dests, c.dest)
			continue
		}
		wantValue := c.rec.Value
		if c.dest == "deadletter:too_large" {
			wantValue = nil // the value is not copied; the key and producer headers are
		}
		if err := checkExact(c.rec, got[0].rec, wantValue); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	for k, rs := range order {
		part, last := int32(-1), int64(-1)
		for i, in := range rs {
			got := found[fmt.Sprintf("%d/%d", in.Partition, in.Offset)]
			if len(got) != 1 {
				continue // reported above
			}
			out := got[0].rec
			if part >= 0 && out.Partition != part {
				t.Errorf("key %q: event %d in pinned partition %d, earlier ones in %d", k, i, out.Partition, part)
			}
			if out.Offset <= last {
				t.Errorf("key %q: event %d at pinned offset %d, after %d: order lost", k, i, out.Offset, last)
			}
			part, last = out.Partition, out.Offset
		}
	}
}
