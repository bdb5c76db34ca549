package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/stream"
)

// TestDeleteRecords deletes records up to an offset on both clusters: the
// log start offset moves exactly there, readers (ours and franz-go) start
// at it, an offset below it changes nothing, and offsets past the
// high-water mark, negative offsets and unknown partitions are refused.
// Along the way it checks the other purge helpers: Watermarks,
// CommittedOffsets (a partition never committed is absent), OffsetsAt and
// TopicConfig.
func TestDeleteRecords(t *testing.T) {
	for _, k := range []*testenv.Kafka{testenv.KafkaA(t), testenv.KafkaB(t)} {
		t.Run("cluster "+k.Name, func(t *testing.T) {
			t.Parallel()
			testDeleteRecords(t, k)
		})
	}
}

func testDeleteRecords(t *testing.T, k *testenv.Kafka) {
	ctx := testenv.Context(t, 2*time.Minute)
	topic := k.Topic(t, "purge", 2)
	cl := kafka.Cluster{Name: k.Name, Brokers: k.Brokers}
	fr := k.Franz(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	t0 := time.Now().Add(-3 * time.Hour).Truncate(time.Millisecond)
	var recs []*kgo.Record
	for i := range 10 { // partition 0: 5 records at t0, 5 an hour later
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Value: fmt.Appendf(nil, "p0-%d", i), Timestamp: t0.Add(time.Duration(i/5) * time.Hour)})
	}
	for i := range 5 {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 1, Value: fmt.Appendf(nil, "p1-%d", i), Timestamp: t0})
	}
	if err := fr.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	a, err := kafka.NewAdmin(cl)
	if err != nil {
		t.Fatal(err)
	}

	low, high, err := a.Watermarks(ctx, topic)
	if err != nil || fmt.Sprint(low, high) != "map[0:0 1:0] map[0:10 1:5]" {
		t.Fatalf("Watermarks before = %v %v, %v", low, high, err)
	}
	at, err := a.OffsetsAt(ctx, topic, t0.Add(30*time.Minute))
	if err != nil || fmt.Sprint(at) != "map[0:5 1:5]" { // partition 1 has no record that late: its high-water mark
		t.Fatalf("OffsetsAt(t0+30m) = %v, %v", at, err)
	}

	// A group that committed partition 0 only.
	group := testenv.Name(t, "g")
	commitOffset(t, ctx, k, group, topic, 0, 7)
	committed, err := a.CommittedOffsets(ctx, group, topic)
	if err != nil || fmt.Sprint(committed) != "map[0:7]" {
		t.Fatalf("CommittedOffsets = %v, %v; want partition 0 only", committed, err)
	}
	if none, err := a.CommittedOffsets(ctx, testenv.Name(t, "nogroup"), topic); err != nil || len(none) != 0 {
		t.Fatalf("CommittedOffsets of a group that never committed = %v, %v", none, err)
	}

	got, err := a.DeleteRecords(ctx, topic, map[int]int64{0: 4, 1: 2})
	if err != nil || fmt.Sprint(got) != "map[0:4 1:2]" {
		t.Fatalf("DeleteRecords = %v, %v", got, err)
	}
	low, high, err = a.Watermarks(ctx, topic)
	if err != nil || fmt.Sprint(low, high) != "map[0:4 1:2] map[0:10 1:5]" {
		t.Fatalf("Watermarks after = %v %v, %v", low, high, err)
	}
	// Records below the new log start are gone for readers.
	var offsets []int64
	for _, r := range k.ReadTopic(t, ctx, topic) {
		if r.Partition == 0 {
			offsets = append(offsets, r.Offset)
		}
	}
	if fmt.Sprint(offsets) != "[4 5 6 7 8 9]" {
		t.Fatalf("franz-go reads partition 0 offsets %v after the delete", offsets)
	}
	rr, err := kafka.NewRangeReader(cl)
	if err != nil {
		t.Fatal(err)
	}
	var skipped []kafka.Skip
	rr.OnSkip = func(s kafka.Skip) { skipped = append(skipped, s) }
	var vals []string
	if err := rr.ReadRange(ctx, topic, 1, 0, 5, 10, func(ms []stream.Message) error {
		for _, m := range ms {
			vals = append(vals, strconv.FormatInt(m.Offset, 10)+":"+string(m.Value))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(vals) != "[2:p1-2 3:p1-3 4:p1-4]" || len(skipped) != 1 || skipped[0].Reason != kafka.SkipDeleted || skipped[0].To != 2 {
		t.Fatalf("ReadRange [0,5) of partition 1 = %v, skipped %+v", vals, skipped)
	}

	// Below the log start: nothing moves back.
	if got, err := a.DeleteRecords(ctx, topic, map[int]int64{0: 2}); err != nil || got[0] != 4 {
		t.Fatalf("DeleteRecords below the log start = %v, %v; want low watermark 4", got, err)
	}
	// Up to the high-water mark: the partition is empty.
	if got, err := a.DeleteRecords(ctx, topic, map[int]int64{1: 5}); err != nil || got[1] != 5 {
		t.Fatalf("DeleteRecords to the high-water mark = %v, %v", got, err)
	}
	// Refusals.
	if _, err := a.DeleteRecords(ctx, topic, map[int]int64{0: 11}); !errors.Is(err, kafka.ErrDeleteRecords) || !errors.Is(err, kafkago.OffsetOutOfRange) {
		t.Fatalf("DeleteRecords past the high-water mark: %v; want ErrDeleteRecords and OffsetOutOfRange", err)
	}
	if _, err := a.DeleteRecords(ctx, topic, map[int]int64{0: -1}); !errors.Is(err, kafka.ErrDeleteRecords) {
		t.Fatalf("DeleteRecords to -1: %v; want a refusal (Kafka would read it as the high-water mark)", err)
	}
	if _, err := a.DeleteRecords(ctx, topic, map[int]int64{7: 1}); !errors.Is(err, kafka.ErrNoPartition) {
		t.Fatalf("DeleteRecords on partition 7 of a 2-partition topic: %v", err)
	}
	low, _, err = a.Watermarks(ctx, topic)
	if err != nil || fmt.Sprint(low) != "map[0:4 1:5]" {
		t.Fatalf("Watermarks after the refusals = %v, %v; want unchanged", low, err)
	}

	cfg, err := a.TopicConfig(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if cfg[kafka.ConfigCleanupPolicy] != "delete" {
		t.Errorf("cleanup.policy = %q, want delete", cfg[kafka.ConfigCleanupPolicy])
	}
	if ms, err := strconv.ParseInt(cfg[kafka.ConfigRetentionMs], 10, 64); err != nil || ms == 0 {
		t.Errorf("retention.ms = %q", cfg[kafka.ConfigRetentionMs])
	}
	if _, err := a.TopicConfig(ctx, testenv.Name(t, "missing")); err == nil {
		t.Error("TopicConfig of a topic that does not exist: no error")
	}
}

// commitOffset commits offset for group on topic/partition, as a group with
// no members does (standalone commit).
func commitOffset(t *testing.T, ctx context.Context, k *testenv.Kafka, group, topic string, partition int, offset int64) {
	t.Helper()
	c := &kafkago.Client{Addr: kafkago.TCP(k.Brokers...), Timeout: 10 * time.Second}
	for {
		resp, err := c.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: group, GenerationID: -1,
			Topics: map[string][]kafkago.OffsetCommit{topic: {{Partition: partition, Offset: offset}}}})
		if err == nil {
			for _, p := range resp.Topics[topic] {
				err = errors.Join(err, p.Error)
			}
		}
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("commit %s/%d for %s: %v", topic, partition, group, err)
		}
		time.Sleep(200 * time.Millisecond) // the coordinator may be loading
	}
}
