package kafka_test

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
)

// TestRecordSourceIngestEndsAtLastStableOffset: read_committed, an ingest
// range ends at the last stable offset (a transaction still open holds it
// back; the read would otherwise wait for it and fail), and OnUnstable
// says what was left out; read_uncommitted, and for every other role, it
// ends at the high-water mark.
func TestRecordSourceIngestEndsAtLastStableOffset(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 60*time.Second)
	topic := k.Topic(t, "txn-open", 1)
	plain := k.Franz(t, kgo.DefaultProduceTopic(topic))
	txn := k.Franz(t, kgo.TransactionalID(testenv.Name(t, "open")), kgo.DefaultProduceTopic(topic))
	for _, v := range []string{"p0", "p1"} {
		if err := plain.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"o2", "o3"} {
		if err := txn.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	defer func() { _ = txn.EndTransaction(ctx, kgo.TryAbort) }()
	if err := plain.ProduceSync(ctx, &kgo.Record{Value: []byte("p4")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	src, err := kafka.NewRecordSource(map[string]kafka.Cluster{k.Name: {Brokers: k.Brokers}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var left []int64
	src.OnUnstable = func(tp string, p int32, from, to int64) {
		if tp != topic || p != 0 {
			t.Errorf("unstable %s/%d", tp, p)
		}
		left = append(left, from, to)
	}
	ranges := func(level string, role audit.Role) []audit.TopicRange {
		t.Helper()
		src.IngestIsolationLevel = level
		rs, err := src.Ranges(ctx, k.Name, topic, role, time.Time{}, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 1 {
			t.Fatalf("%d ranges", len(rs))
		}
		return rs
	}
	if r := ranges(kafka.ReadCommitted, audit.RoleIngest)[0]; r.From != 0 || r.To != 2 {
		t.Errorf("read_committed ingest range [%d, %d), want [0, 2): the open transaction starts at 2", r.From, r.To)
	}
	if len(left) != 2 || left[0] != 2 || left[1] != 5 {
		t.Errorf("OnUnstable told %v, want [2 5]", left)
	}
	left = nil
	if r := ranges(kafka.ReadUncommitted, audit.RoleIngest)[0]; r.To != 5 {
		t.Errorf("read_uncommitted ingest range ends at %d, want the high-water mark 5", r.To)
	}
	if r := ranges(kafka.ReadCommitted, audit.RolePinned)[0]; r.To != 5 {
		t.Errorf("a pinned topic's range ends at %d, want the high-water mark 5", r.To)
	}
	if left != nil {
		t.Errorf("OnUnstable told %v for ranges that end at the high-water mark", left)
	}
}
