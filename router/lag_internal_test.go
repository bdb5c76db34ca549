package router

import (
	"testing"
	"time"
)

// TestSumLagsExpiresPartitionsNoLongerRead: a partition lost in a
// rebalance stops counting after lagExpiry, so two routers never both report
// it; a topic whose partitions all expired reports 0, not its last value.
func TestSumLagsExpiresPartitionsNoLongerRead(t *testing.T) {
	now := time.Now()
	lags := map[topicPartition]lagEntry{
		{"ingest", 0}: {lag: 5, at: now},
		{"ingest", 1}: {lag: 7, at: now.Add(-time.Minute)}, // lost in a rebalance
		{"other", 0}:  {lag: 3, at: now.Add(-time.Minute)},
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
