package router_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

// TestRouterKeepsBytesExactly runs the pipeline over the in-memory brokers
// (which keep null apart from empty, see streamtest.TestPubSub) with every
// shape of key and producer headers, to every destination, over several
// batches (so the header memory of one batch is reused by the next): the
// router itself turns no empty key, value or header value into a null one
// or back, and keeps repeated header names in order. The same over real
// Kafka: TestIntegrationBytesExact.
func TestRouterKeepsBytesExactly(t *testing.T) {
	f := newFixture(t)
	f.cfg.BatchSize = 7
	f.cfg.MaxValueBytes = 1000
	keys := [][]byte{nil, {}, []byte("user-1")}
	headers := [][]stream.Header{
		nil,
		{{Key: "h", Value: nil}},
		{{Key: "h", Value: []byte{}}},
		{{Key: "r", Value: []byte("1")}, {Key: "r", Value: nil}, {Key: "", Value: []byte{}},
			{Key: router.HeaderRegion, Value: []byte{}}, {Key: "r", Value: []byte{}}, {Key: "", Value: nil}},
	}
	values := []struct {
		dest  string
		value func(id string) []byte
	}{
		{"a/pinned.us", func(id string) []byte { return []byte("E|US|u|" + id) }},
		{"a/" + quarantine, func(id string) []byte { return []byte("E|-|u|" + id) }},
		{"a/" + deadLetter, func(string) []byte { return []byte("X") }},
		{"a/" + deadLetter, func(string) []byte { return []byte{} }},
		{"a/" + deadLetter, func(string) []byte { return nil }},
		{"a/" + deadLetter, func(id string) []byte { return append([]byte("E|US|u|"+id), make([]byte, 2000)...) }},
	}
	var sent []stream.Message
	var dests []string
	for _, v := range values {
		for _, k := range keys {
			for _, hs := range headers {
				id := fmt.Sprint(len(sent))
				// The id header comes first, so the record can be found.
				sent = append(sent, stream.Message{Key: k, Value: v.value(id),
					Headers: append([]stream.Header{{Key: "id", Value: []byte(id)}}, hs...)})
				dests = append(dests, v.dest)
			}
		}
	}
	f.produce(t, streamtest.CloneMessages(sent)...)
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "all events committed", func() bool { return f.committed() == int64(len(sent)) })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	same := func(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }
	found := map[string]stream.Message{}
	where := map[string]string{}
	for _, tp := range []string{"pinned.us", "pinned.in", quarantine, deadLetter} {
		for _, m := range f.a.Records(tp) {
			id := string(m.Headers[0].Value)
			found[id], where[id] = m, "a/"+tp
		}
	}
	for i, in := range sent {
		id := fmt.Sprint(i)
		out, ok := found[id]
		if !ok || where[id] != dests[i] {
			t.Errorf("event %s in %q, want %s", id, where[id], dests[i])
			continue
		}
		wantValue := in.Value
		if len(in.Value) > 1000 {
			wantValue = nil // too_large: the value is not copied
		}
		if !same(out.Key, in.Key) || !same(out.Value, wantValue) {
			t.Errorf("event %s: key %q (null %v), value null %v; want %q (null %v), null %v",
				id, out.Key, out.Key == nil, out.Value == nil, in.Key, in.Key == nil, wantValue == nil)
		}
		var want []stream.Header
		for _, h := range in.Headers {
			if !strings.HasPrefix(h.Key, router.HeaderPrefix) {
				want = append(want, h)
			}
		}
		good := len(out.Headers) > len(want)
		for j := 0; good && j < len(want); j++ {
			good = out.Headers[j].Key == want[j].Key && same(out.Headers[j].Value, want[j].Value)
		}
		for j := len(want); good && j < len(out.Headers); j++ {
			good = strings.HasPrefix(out.Headers[j].Key, router.HeaderPrefix)
		}
		if !good {
			t.Errorf("event %s: headers %v, want %v followed by residency headers", id, out.Headers, want)
		}
	}
}
