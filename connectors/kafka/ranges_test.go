package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
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
	var msgs []router.Message
	for i := range 10 {
		at := t0.Add(time.Duration(i/5) * time.Hour) // 5 records at t0, 5 an hour later
		msgs = append(msgs, router.Message{Topic: topic, Key: []byte("k"), Value: fmt.Appendf(nil, "v%d", i), Time: at})
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
	err = rr.ReadRange(ctx, topic, 0, 3, 8, 2, func(ms []router.Message) error {
		batches++
		for _, m := range ms {
			got = append(got, fmt.Sprintf("%d:%s", m.Offset, m.Value))
		}
		return nil
	})
	if err != nil || fmt.Sprint(got) != "[3:v3 4:v4 5:v5 6:v6 7:v7]" || batches != 3 {
		t.Fatalf("ReadRange [3,8) = %v in %d batches, %v", got, batches, err)
	}
	// A range past the end stops once the partition is exhausted.
	rr.IdleCheck = 200 * time.Millisecond
	got = nil
	if err := rr.ReadRange(ctx, topic, 0, 8, 20, 10, func(ms []router.Message) error {
		for _, m := range ms {
			got = append(got, string(m.Value))
		}
		return nil
	}); err != nil || fmt.Sprint(got) != "[v8 v9]" {
		t.Fatalf("ReadRange [8,20) = %v, %v", got, err)
	}
	// fn's error stops the read.
	stop := errors.New("stop")
	if err := rr.ReadRange(ctx, topic, 0, 0, 10, 4, func([]router.Message) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("ReadRange with a failing fn = %v", err)
	}
	// Cancelling stops the read too.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := rr.ReadRange(cctx, topic, 0, 0, 10, 4, func([]router.Message) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadRange cancelled = %v", err)
	}
}
