package kafka

import (
	"bytes"
	"testing"
	"time"

	"github.com/residency-router/residency/router"
)

// TestToKafka checks the conversion into kafka-go messages: every field and
// every header in order, and no record's headers with room to grow into the
// next record's.
func TestToKafka(t *testing.T) {
	now := time.Now()
	msgs := []router.Message{
		{Topic: "a", Key: []byte("k1"), Value: []byte("v1"), Time: now, Headers: []router.Header{{Key: "h1", Value: []byte("1")}, {Key: "h2", Value: []byte("2")}}},
		{Topic: "b", Key: []byte("k2"), Value: []byte("v2")},
		{Topic: "c", Value: []byte("v3"), Headers: []router.Header{{Key: "h3", Value: nil}}},
	}
	ks := toKafka(msgs)
	if len(ks) != len(msgs) {
		t.Fatalf("%d messages, want %d", len(ks), len(msgs))
	}
	for i, m := range msgs {
		k := ks[i]
		if k.Topic != m.Topic || !bytes.Equal(k.Key, m.Key) || !bytes.Equal(k.Value, m.Value) || !k.Time.Equal(m.Time) {
			t.Errorf("message %d = %+v, want %+v", i, k, m)
		}
		if len(k.Headers) != len(m.Headers) || cap(k.Headers) != len(k.Headers) {
			t.Fatalf("message %d: headers %v (cap %d), want %v", i, k.Headers, cap(k.Headers), m.Headers)
		}
		for j, h := range m.Headers {
			if k.Headers[j].Key != h.Key || !bytes.Equal(k.Headers[j].Value, h.Value) {
				t.Errorf("message %d header %d = %v, want %v", i, j, k.Headers[j], h)
			}
		}
	}
	if ks[1].Headers != nil {
		t.Errorf("a record without headers got %v", ks[1].Headers)
	}
}

// BenchmarkToKafka times the conversion of a batch of 500 records with
// eleven headers each (one producer header and the residency headers).
func BenchmarkToKafka(b *testing.B) {
	hs := make([]router.Header, 11)
	for i := range hs {
		hs[i] = router.Header{Key: "residency-header", Value: []byte("value")}
	}
	msgs := make([]router.Message, 500)
	for i := range msgs {
		msgs[i] = router.Message{Topic: "pinned.eu", Key: []byte("k"), Value: []byte("v"), Headers: hs}
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(toKafka(msgs)) != len(msgs) {
			b.Fatal("lost records")
		}
	}
}
