package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestBenchRejectsBadFlags: bad flags of `residency bench` (the harness
// itself is tested in internal/bench) exit 2.
func TestBenchRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--events", "5"}, {"--partitions", "0"}, {"--rate", "-1"}, {"--latency-warmup", "-1s"}, {"--latency-passes", "0"}, {"--pins", "-1"}, {"--max-inflight-events", "-1"}, {"--memory-limit", "-1"}, {"--router-compression", "brotli"}, {"--router-compression-alt", "brotli"},
		{"--brokers", "127.0.0.1:1", "--pins", "10"}, {"extra"}, {"--child", "{not json"}, {"--contenders", "router,x"}, {"--contenders", ""}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), append([]string{"bench"}, args...), nil, &out, &errOut); code != exitUsage {
			t.Errorf("bench %v exited %d, want %d", args, code, exitUsage)
		}
	}
}

// TestBenchContendersFlagErrors: each way --contenders can be wrong exits 2
// before anything starts, with one line naming the flag (and the other
// flag it disagrees with).
func TestBenchContendersFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--contenders", "router,kafka"}, []string{`--contenders: unknown contender "kafka" (known: pass-through, franz-go, router,`}},
		{[]string{"--contenders", ""}, []string{"--contenders: empty list"}},
		{[]string{"--contenders", " , "}, []string{"--contenders: empty list"}},
		{[]string{"--contenders", "router,franz-go,router"}, []string{`--contenders: "router" named twice`}},
		{[]string{"--contenders", "router,franz-go", "--audit-compression-b", "lz4"}, []string{"--audit-compression-b adds router+audit-b, which --contenders leaves out"}},
		{[]string{"--contenders", "router,router+audit-b"}, []string{"--contenders: router+audit-b runs only with --audit-compression-b"}},
		{[]string{"--contenders", "router", "--router-compression-alt", "lz4"}, []string{"--router-compression-alt adds router-alt, which --contenders leaves out"}},
		{[]string{"--contenders", "router,router-alt"}, []string{"--contenders: router-alt runs only with --router-compression-alt"}},
		{[]string{"--contenders", "router", "--diagnose"}, []string{"--diagnose adds", "--contenders leaves out"}},
		{[]string{"--contenders", "router,pass-through+fan-out+headers"}, []string{"--contenders: pass-through+fan-out+headers runs only with --diagnose"}},
		{[]string{"--contenders", "franz-go"}, []string{"--contenders leaves out router", "--rate"}},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"bench"}, c.args...), nil, &out, &errOut)
		if code != exitUsage {
			t.Errorf("bench %q exited %d, want %d", c.args, code, exitUsage)
		}
		msg := errOut.String()
		if !strings.HasPrefix(msg, "residency bench: ") || strings.Count(msg, "\n") != 1 || out.Len() > 0 {
			t.Errorf("bench %q: stdout %q, stderr %q: want one line on stderr", c.args, out.String(), msg)
		}
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("bench %q: %q lacks %q", c.args, msg, w)
			}
		}
	}
}
