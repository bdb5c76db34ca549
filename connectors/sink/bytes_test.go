package sink_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/sink"
	"github.com/residency-router/residency/connectors/sink/sinktest"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
)

// TestQuarantineBytesExact: events a producer that is not ours (franz-go)
// wrote to a pinned topic without residency headers, with every shape of
// key, value and headers (null, empty and non-empty; repeated names), are
// quarantined by a sink on real Kafka with their key, value and headers
// exactly as produced, null kept apart from empty, followed by the reason
// and the store; events sharing a key (the empty key included) keep their
// order in one quarantine partition.
func TestQuarantineBytesExact(t *testing.T) {
	k := testenv.KafkaA(t)
	pinned, quar := k.Topic(t, "us", 2), k.Topic(t, "sinkquar", 3)
	ctx := testenv.Context(t, 90*time.Second)
	var recs []*kgo.Record
	for _, key := range [][]byte{nil, {}, []byte("user-1")} {
		for _, value := range [][]byte{nil, {}, sinktest.Event(1, "US")} {
			for _, hs := range [][]kgo.RecordHeader{
				nil,
				{{Key: "h", Value: nil}},
				{{Key: "h", Value: []byte{}}},
				{{Key: "r", Value: []byte("1")}, {Key: "r", Value: nil}, {Key: "", Value: []byte{}}, {Key: "r", Value: []byte{}}},
			} {
				// The case number comes first, so the record can be found.
				hs = append([]kgo.RecordHeader{{Key: "case", Value: strconv.AppendInt(nil, int64(len(recs)), 10)}}, hs...)
				recs = append(recs, &kgo.Record{Topic: pinned, Key: key, Value: value, Headers: hs})
			}
		}
	}
	if err := k.Franz(t).ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce with franz-go: %v", err)
	}

	cluster := kafka.Cluster{Name: k.Name, Brokers: k.Brokers}
	log := slog.New(slog.DiscardHandler)
	rd, err := kafka.NewReader(kafka.ReaderConfig{Cluster: cluster, GroupID: testenv.Name(t, "sink"), Topics: []string{pinned},
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 500 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: cluster, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	dec, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	store := newMemStore()
	s, err := sink.New(sink.Config{Store: storeName, Region: "us", Topic: pinned, QuarantineTopic: quar, BatchSize: 10,
		BatchTimeout: 20 * time.Millisecond, RetryBackoff: 10 * time.Millisecond, Logger: log},
		rd, store, w, sinktest.NewRules(sinktest.Ruleset(7, pinned, "eu", storeName, "us")), dec)
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	a, err := kafka.NewAdmin(cluster)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, "every event quarantined", func() bool {
		end, err := a.EndOffsets(ctx, quar)
		var n int64
		for _, e := range end {
			n += e
		}
		return err == nil && n >= int64(len(recs))
	})

	same := func(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }
	show := func(b []byte) string {
		if b == nil {
			return "null"
		}
		return fmt.Sprintf("%q", b)
	}
	byCase := map[string]*kgo.Record{}
	for _, out := range k.ReadTopic(t, ctx, quar) {
		if len(out.Headers) == 0 || out.Headers[0].Key != "case" {
			t.Fatalf("quarantined record without its case header first: %v", out.Headers)
		}
		byCase[string(out.Headers[0].Value)] = out
	}
	if store.count() != 0 || len(byCase) != len(recs) {
		t.Fatalf("%d quarantined cases and %d stored, want %d and none", len(byCase), store.count(), len(recs))
	}
	last := map[string][2]int64{} // key -> partition, offset
	for i, in := range recs {
		out := byCase[strconv.Itoa(i)]
		if !same(out.Key, in.Key) || !same(out.Value, in.Value) {
			t.Errorf("case %d: key %s, value %s; want %s, %s", i, show(out.Key), show(out.Value), show(in.Key), show(in.Value))
			continue
		}
		want := append(append([]kgo.RecordHeader{}, in.Headers...),
			kgo.RecordHeader{Key: router.HeaderReason, Value: []byte(sink.ReasonNoRegion)},
			kgo.RecordHeader{Key: router.HeaderError, Value: []byte("no residency-region header")},
			kgo.RecordHeader{Key: sink.HeaderStore, Value: []byte(storeName)})
		ok := len(out.Headers) == len(want)
		for j := 0; ok && j < len(want); j++ {
			ok = out.Headers[j].Key == want[j].Key && same(out.Headers[j].Value, want[j].Value)
		}
		if !ok {
			var got, exp []string
			for _, h := range out.Headers {
				got = append(got, h.Key+":"+show(h.Value))
			}
			for _, h := range want {
				exp = append(exp, h.Key+":"+show(h.Value))
			}
			t.Errorf("case %d: headers %v, want %v", i, got, exp)
		}
		if in.Key == nil {
			continue
		}
		if l, seen := last[string(in.Key)]; seen && (int64(out.Partition) != l[0] || out.Offset <= l[1]) {
			t.Errorf("case %d: key %s at %d/%d after %d/%d: not in one partition in order", i, show(in.Key), out.Partition, out.Offset, l[0], l[1])
		}
		last[string(in.Key)] = [2]int64{int64(out.Partition), out.Offset}
	}
}
