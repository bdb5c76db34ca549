package replay_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/replay"
	"github.com/residency-router/residency/schemas"
)

// TestReplayBytesExact: events produced by a client that is not ours
// (franz-go) with every shape of key and producer headers (null, empty and
// non-empty values, repeated names) are routed, then replayed from
// quarantine (to a pinned topic) and from the ingest topic (to pinned
// topics, dead-letter and the too_large dead-letter). Every record a
// replay writes, read back with franz-go, carries the key, the value (none
// for too_large) and the producer headers exactly as produced, null kept
// apart from empty.
func TestReplayBytesExact(t *testing.T) {
	e := newEnv(t)
	e.apply(t, rulesV1)
	ctx := testenv.Context(t, 120*time.Second)
	keys := [][]byte{nil, {}, []byte("user-1")}
	headers := [][]kgo.RecordHeader{
		nil,
		{{Key: "h", Value: nil}},
		{{Key: "h", Value: []byte{}}},
		{{Key: "trace", Value: []byte("t")}, {Key: "r", Value: nil}, {Key: "r", Value: []byte{}}, {Key: "", Value: []byte{}},
			{Key: router.HeaderReason, Value: []byte("forged")}, {Key: "r", Value: []byte{0}}},
	}
	large := append(e.event(t, eventID("0b1e", 0), "u-large", "US"), make([]byte, 200<<10)...)
	values := []struct {
		name  string
		value []byte
	}{
		{"ca", e.event(t, eventID("0b0c", 0), "u-ca", "CA")}, // quarantined under v1, routed to us under v2
		{"de", e.event(t, eventID("0b0d", 0), "u-de", "DE")},
		{"bad", []byte("not avro")},
		{"empty", []byte{}},
		{"null", nil},
		{"large", large}, // routed by the router, too_large for the ingest replay
	}
	var recs []*kgo.Record
	names := map[*kgo.Record]string{}
	for _, v := range values {
		for ki, k := range keys {
			for hi, h := range headers {
				r := &kgo.Record{Topic: e.ingest, Key: k, Value: v.value, Headers: h}
				recs = append(recs, r)
				names[r] = fmt.Sprintf("%s/key %d/headers %d", v.name, ki, hi)
			}
		}
	}
	if err := e.a.Franz(t, kgo.ProducerBatchMaxBytes(1<<20)).ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce with franz-go: %v", err)
	}
	fx := fields(t, schemas.ExtractorConfig{})
	e.route(t, fx)
	v2 := e.apply(t, rulesV2)

	run(t, e.config(e.plan(t, "bytes-q", replay.SourceQuarantine, e.quarantine), v2, fx))
	ingest := e.config(e.plan(t, "bytes-i", replay.SourceIngest, e.ingest), v2, fx)
	ingest.MaxValueBytes = 100 << 10
	run(t, ingest)

	// What each replay wrote, by the ingest coordinates of the event.
	written := map[string]map[string][]*kgo.Record{} // replay id -> source -> records
	for _, d := range []struct {
		k     *testenv.Kafka
		topic string
	}{{e.a, e.us}, {e.b, e.eu}, {e.a, e.quarantine}, {e.a, e.deadLetter}} {
		for _, out := range d.k.ReadTopic(t, ctx, d.topic) {
			id := lastHeader(out, router.HeaderReplayID)
			if id == "" {
				continue
			}
			if written[id] == nil {
				written[id] = map[string][]*kgo.Record{}
			}
			src := lastHeader(out, router.HeaderSourcePartition) + "/" + lastHeader(out, router.HeaderSourceOffset)
			written[id][src] = append(written[id][src], out)
		}
	}
	checked := map[string]int{}
	for _, in := range recs {
		name := names[in]
		src := fmt.Sprintf("%d/%d", in.Partition, in.Offset)
		for _, id := range []string{"bytes-q", "bytes-i"} {
			outs := written[id][src]
			if id == "bytes-q" && !strings.HasPrefix(name, "ca/") {
				if len(outs) != 0 {
					t.Errorf("%s: replay %s wrote %d records of an event it should leave", name, id, len(outs))
				}
				continue
			}
			if len(outs) != 1 {
				t.Errorf("%s: replay %s wrote %d records, want 1", name, id, len(outs))
				continue
			}
			wantValue := in.Value
			if id == "bytes-i" && strings.HasPrefix(name, "large/") {
				wantValue = nil // too_large: the value is not copied
				if r := lastHeader(outs[0], router.HeaderReason); r != "too_large" {
					t.Errorf("%s: replay %s reason %q, want too_large", name, id, r)
				}
			}
			if err := exactCopy(in, outs[0], wantValue); err != nil {
				t.Errorf("%s: replay %s: %v", name, id, err)
			}
			checked[id]++
		}
	}
	if checked["bytes-q"] != len(keys)*len(headers) || checked["bytes-i"] != len(recs) {
		t.Fatalf("checked %v records, want %d from quarantine and %d from ingest", checked, len(keys)*len(headers), len(recs))
	}
}

// lastHeader returns the value of the last header of r named key.
func lastHeader(r *kgo.Record, key string) string {
	for i := len(r.Headers) - 1; i >= 0; i-- {
		if r.Headers[i].Key == key {
			return string(r.Headers[i].Value)
		}
	}
	return ""
}

// exactCopy reports how out differs from in: the key, the value
// (wantValue) and in's headers but the residency-* ones must be exactly
// the same, null apart from empty, first, followed by residency headers.
func exactCopy(in, out *kgo.Record, wantValue []byte) error {
	same := func(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }
	if !same(out.Key, in.Key) {
		return fmt.Errorf("key %q (null %v), want %q (null %v)", out.Key, out.Key == nil, in.Key, in.Key == nil)
	}
	if !same(out.Value, wantValue) {
		return fmt.Errorf("value of %d bytes (null %v), want %d (null %v)", len(out.Value), out.Value == nil, len(wantValue), wantValue == nil)
	}
	var want []kgo.RecordHeader
	for _, h := range in.Headers {
		if !strings.HasPrefix(h.Key, router.HeaderPrefix) {
			want = append(want, h)
		}
	}
	ok := len(out.Headers) >= len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = out.Headers[i].Key == want[i].Key && same(out.Headers[i].Value, want[i].Value)
	}
	for i := len(want); ok && i < len(out.Headers); i++ {
		ok = strings.HasPrefix(out.Headers[i].Key, router.HeaderPrefix)
	}
	if !ok {
		return fmt.Errorf("headers %s, want %s followed by residency headers", showHeaders(out.Headers), showHeaders(want))
	}
	return nil
}

func showHeaders(hs []kgo.RecordHeader) string {
	var b strings.Builder
	for _, h := range hs {
		if h.Value == nil {
			fmt.Fprintf(&b, " %q:null", h.Key)
		} else {
			fmt.Fprintf(&b, " %q:%q", h.Key, h.Value)
		}
	}
	return "[" + strings.TrimSpace(b.String()) + "]"
}
