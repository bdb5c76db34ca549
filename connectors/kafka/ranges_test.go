package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/stream"
)

// TestRanges reads offset and time ranges of a real topic without a
// consumer group.
func TestRanges(t *testing.T) {
	k := testenv.KafkaA(t)
	topic := k.Topic(t, "ranges", 1)
	cl := kafka.Cluster{Name: "a", Brokers: k.Brokers}
	ctx := testenv.Context(t, 60*time.Second)
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: cl})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	t0 := time.Now().Add(-3 * time.Hour).Truncate(time.Millisecond)
	var msgs []stream.Message
	for i := range 10 {
		at := t0.Add(time.Duration(i/5) * time.Hour) // 5 records at t0, 5 an hour later
		msgs = append(msgs, stream.Message{Topic: topic, Key: []byte("k"), Value: fmt.Appendf(nil, "v%d", i), Time: at})
	}
	if err := w.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	a, err := kafka.NewAdmin(cl)
	if err != nil {
		t.Fatal(err)
	}
	b, err := a.Bounds(ctx, topic)
	if err != nil || len(b) != 1 || b[0] != (kafka.PartitionRange{Partition: 0, Start: 0, End: 10}) {
		t.Fatalf("Bounds = %v, %v", b, err)
	}
	for _, c := range []struct {
		from, to   time.Time
		start, end int64
	}{
		{t0.Add(30 * time.Minute), time.Time{}, 5, 10},
		{time.Time{}, t0.Add(30 * time.Minute), 0, 5},
		{t0, t0.Add(time.Hour), 0, 5},
		{t0.Add(2 * time.Hour), time.Time{}, 10, 10}, // nothing that late
	} {
		got, err := a.TimeRanges(ctx, topic, c.from, c.to)
		if err != nil || len(got) != 1 || got[0].Start != c.start || got[0].End != c.end {
			t.Errorf("TimeRanges(%v, %v) = %v, %v; want [%d, %d)", c.from, c.to, got, err, c.start, c.end)
		}
	}
	if _, err := a.TimeRanges(ctx, topic, t0.Add(time.Hour), t0); !errors.Is(err, kafka.ErrConfig) {
		t.Errorf("TimeRanges with to before from: %v", err)
	}

	rr, err := kafka.NewRangeReader(cl)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var batches int
	err = rr.ReadRange(ctx, topic, 0, 3, 8, 2, func(ms []stream.Message) error {
		batches++
		for _, m := range ms {
			got = append(got, fmt.Sprintf("%d:%s", m.Offset, m.Value))
		}
		return nil
	})
	if err != nil || fmt.Sprint(got) != "[3:v3 4:v4 5:v5 6:v6 7:v7]" || batches != 3 {
		t.Fatalf("ReadRange [3,8) = %v in %d batches, %v", got, batches, err)
	}
	// A range past the end stops once the partition is exhausted, and
	// says which offsets it did not read.
	rr.IdleCheck = 200 * time.Millisecond
	var skips []kafka.Skip
	rr.OnSkip = func(s kafka.Skip) { skips = append(skips, s) }
	got = nil
	if err := rr.ReadRange(ctx, topic, 0, 8, 20, 10, func(ms []stream.Message) error {
		for _, m := range ms {
			got = append(got, string(m.Value))
		}
		return nil
	}); err != nil || fmt.Sprint(got) != "[v8 v9]" {
		t.Fatalf("ReadRange [8,20) = %v, %v", got, err)
	}
	if len(skips) != 1 || skips[0] != (kafka.Skip{Topic: topic, Partition: 0, From: 10, To: 20, Reason: kafka.SkipPastEnd}) {
		t.Fatalf("skips of [8,20) = %+v, want [10,20) past_end", skips)
	}
	// fn's error stops the read.
	stop := errors.New("stop")
	if err := rr.ReadRange(ctx, topic, 0, 0, 10, 4, func([]stream.Message) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("ReadRange with a failing fn = %v", err)
	}
	// Cancelling stops the read too.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := rr.ReadRange(cctx, topic, 0, 0, 10, 4, func([]stream.Message) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadRange cancelled = %v", err)
	}
}

// faultCluster is a private embedded cluster with a topic of 10 records,
// for fault injection.
func faultCluster(t *testing.T) (*kfake.Cluster, kafka.Cluster, string) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "faults"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl := kafka.Cluster{Name: "f", Brokers: c.ListenAddrs()}
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: cl})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var msgs []stream.Message
	for i := range 10 {
		msgs = append(msgs, stream.Message{Topic: "faults", Key: []byte("k"), Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := w.Publish(testenv.Context(t, 20*time.Second), msgs...); err != nil {
		t.Fatal(err)
	}
	return c, cl, "faults"
}

// TestReadRangeReportsDeletedOffsets: offsets deleted by retention are
// skipped and reported, not silently passed over.
func TestReadRangeReportsDeletedOffsets(t *testing.T) {
	c, cl, topic := faultCluster(t)
	if err := c.DeleteRecords(topic, 0, 4); err != nil {
		t.Fatal(err)
	}
	rr, err := kafka.NewRangeReader(cl)
	if err != nil {
		t.Fatal(err)
	}
	rr.IdleCheck = 200 * time.Millisecond
	var skips []kafka.Skip
	rr.OnSkip = func(s kafka.Skip) { skips = append(skips, s) }
	ctx := testenv.Context(t, 30*time.Second)
	var got []int64
	read := func(ms []stream.Message) error {
		for _, m := range ms {
			got = append(got, m.Offset)
		}
		return nil
	}
	if err := rr.ReadRange(ctx, topic, 0, 0, 10, 100, read); err != nil || fmt.Sprint(got) != "[4 5 6 7 8 9]" {
		t.Fatalf("ReadRange [0,10) = %v, %v", got, err)
	}
	if len(skips) != 1 || skips[0] != (kafka.Skip{Topic: topic, Partition: 0, From: 0, To: 4, Reason: kafka.SkipDeleted}) {
		t.Fatalf("skips = %+v, want [0,4) deleted", skips)
	}
	got, skips = nil, nil
	if err := rr.ReadRange(ctx, topic, 0, 1, 3, 100, read); err != nil || len(got) != 0 {
		t.Fatalf("ReadRange of deleted [1,3) = %v, %v", got, err)
	}
	if len(skips) != 1 || skips[0].From != 1 || skips[0].To != 3 || skips[0].Reason != kafka.SkipDeleted {
		t.Fatalf("skips = %+v, want [1,3) deleted", skips)
	}
}

// TestReadRangeDoesNotSkipRecordsItCannotFetch: while the broker holds
// records of the range but does not serve them, the read neither ends as
// if complete nor reports a skip: it fails with ErrStalled. (It used to
// return nil after three idle checks, and replay then marked the range
// read.)
func TestReadRangeDoesNotSkipRecordsItCannotFetch(t *testing.T) {
	c, cl, topic := faultCluster(t)
	c.ControlKey(kmsg.Fetch.Int16(), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		return nil, errors.New("fetch refused by the test"), true
	})
	rr, err := kafka.NewRangeReader(cl)
	if err != nil {
		t.Fatal(err)
	}
	rr.IdleCheck, rr.MaxIdle = 150*time.Millisecond, 4
	var skips []kafka.Skip
	rr.OnSkip = func(s kafka.Skip) { skips = append(skips, s) }
	n := 0
	err = rr.ReadRange(testenv.Context(t, 60*time.Second), topic, 0, 2, 10, 100, func(ms []stream.Message) error { n += len(ms); return nil })
	if !errors.Is(err, kafka.ErrStalled) || !strings.Contains(err.Error(), "offsets 2 to 9") {
		t.Fatalf("ReadRange while fetches fail = %v, want ErrStalled", err)
	}
	if n != 0 || len(skips) != 0 {
		t.Fatalf("%d records, skips %+v; want none", n, skips)
	}
}
