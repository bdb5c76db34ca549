package main

import (
	"bytes"
	"context"
	"testing"
)

// TestBenchRejectsBadFlags: bad flags of `residency bench` (the harness
// itself is tested in internal/bench) exit 2.
func TestBenchRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--events", "5"}, {"--partitions", "0"}, {"--rate", "-1"}, {"--latency-warmup", "-1s"}, {"--latency-passes", "0"}, {"--pins", "-1"}, {"--max-inflight-events", "-1"}, {"--memory-limit", "-1"}, {"--router-compression", "brotli"}, {"--router-compression-alt", "brotli"},
		{"--brokers", "127.0.0.1:1", "--pins", "10"}, {"extra"}, {"--child", "{not json"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), append([]string{"bench"}, args...), nil, &out, &errOut); code != exitUsage {
			t.Errorf("bench %v exited %d, want %d", args, code, exitUsage)
		}
	}
}
