package router

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/residency-router/residency/stream"
)

// TestSumLagsExpiresPartitionsNoLongerRead: a partition lost in a
// rebalance stops counting after lagExpiry, so two routers never both report
// it; a topic whose partitions all expired reports 0, not its last value.
func TestSumLagsExpiresPartitionsNoLongerRead(t *testing.T) {
	now := time.Now()
	lags := map[topicPartition]lagEntry{
		{"ingest", 0}: {offset: 4, hw: 10, at: now},
		{"ingest", 1}: {offset: 2, hw: 10, at: now.Add(-time.Minute)}, // lost in a rebalance
		{"other", 0}:  {offset: 6, hw: 10, at: now.Add(-time.Minute)},
	}
	got := sumLags(lags, now, 30*time.Second)
	if got["ingest"] != 5 || got["other"] != 0 || len(got) != 2 {
		t.Fatalf("sums = %v, want ingest 5 and other 0", got)
	}
	if _, ok := lags[topicPartition{"ingest", 1}]; ok {
		t.Fatal("an expired partition was kept")
	}
	if len(lags) != 1 {
		t.Fatalf("%d partitions kept, want 1", len(lags))
	}
}

// TestObserveKeepsTheLatestOffsetsLag: the senders of two clusters
// acknowledge one partition's events out of order; the earlier offset,
// acknowledged last, does not raise the partition's lag back up (the
// gauge stayed at it until the next commit, for ever on an idle topic).
func TestObserveKeepsTheLatestOffsetsLag(t *testing.T) {
	r := &Router{cfg: Config{Metrics: NewMetrics(prometheus.NewRegistry())}, lags: map[topicPartition]lagEntry{}}
	msgs := []stream.Message{
		{Topic: "ingest", Partition: 0, Offset: 3, HighWaterMark: 10},
		{Topic: "ingest", Partition: 0, Offset: 9, HighWaterMark: 10},
	}
	fb := &fetched{msgs: msgs, batch: &Batch{Events: []Event{{Msg: &msgs[0]}, {Msg: &msgs[1]}}}}
	r.observe(fb, []int32{1}, []bool{true}) // cluster b's sender: offset 9
	r.observe(fb, []int32{0}, []bool{true}) // then cluster a's: offset 3
	got := sumLags(r.lags, time.Now(), time.Minute)
	if got["ingest"] != 0 {
		t.Fatalf("lag %d after offset 9 of 10 was acknowledged, want 0", got["ingest"])
	}
	// A later offset still moves it.
	msgs[0] = stream.Message{Topic: "ingest", Partition: 0, Offset: 11, HighWaterMark: 20}
	r.observe(fb, []int32{0}, []bool{true})
	if got := sumLags(r.lags, time.Now(), time.Minute); got["ingest"] != 8 {
		t.Fatalf("lag %d after offset 11 of 20, want 8", got["ingest"])
	}
}

// TestObserveCountsEveryOutcome: observe adds each acknowledged event to
// its outcome's counter once, also past the label sets it counts together
// (more than eight in one call), and skips what was not acknowledged.
func TestObserveCountsEveryOutcome(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	r := &Router{cfg: Config{Metrics: m}, lags: map[topicPartition]lagEntry{}}
	var evs []Event
	var idx []int32
	var ok []bool
	want := map[string]int{}
	for i := range 60 {
		d := Decision{Outcome: Routed, Region: fmt.Sprintf("r%d", i%12), Jurisdiction: "J"}
		key := "routed/" + d.Region
		switch i % 5 {
		case 3:
			d = Decision{Outcome: Quarantined, Reason: "no_country"}
			key = "quarantined/no_country"
		case 4:
			d = Decision{Outcome: DeadLettered, Reason: "bad_magic"}
			key = "dead/bad_magic"
		}
		evs = append(evs, Event{Msg: &stream.Message{Topic: "in"}, Decision: d})
		idx = append(idx, int32(i))
		ok = append(ok, i%7 != 0)
		if i%7 != 0 {
			want[key]++
		}
	}
	r.observe(&fetched{batch: &Batch{Events: evs}}, idx, ok)
	for key, n := range want {
		var got float64
		switch kind, label, _ := strings.Cut(key, "/"); kind {
		case "routed":
			got = testutil.ToFloat64(m.routed.WithLabelValues(label, "J"))
		case "quarantined":
			got = testutil.ToFloat64(m.quarantined.WithLabelValues(label))
		default:
			got = testutil.ToFloat64(m.deadLettered.WithLabelValues(label))
		}
		if int(got) != n {
			t.Errorf("%s counted %v, want %d", key, got, n)
		}
	}
}
