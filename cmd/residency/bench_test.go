package main

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"strings"
	"testing"
)

// TestBenchRejectsBadFlags: bad flags of `residency bench` (the harness
// itself is tested in internal/bench) exit 2.
func TestBenchRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--events", "5"}, {"--partitions", "0"}, {"--rate", "-1"}, {"--latency-warmup", "-1s"}, {"--latency-passes", "0"}, {"--pins", "-1"}, {"--max-inflight-events", "-1"}, {"--memory-limit", "-1"}, {"--router-compression", "brotli"}, {"--router-compression-alt", "brotli"},
		{"--brokers", "127.0.0.1:1", "--pins", "10"}, {"extra"}, {"--child", "{not json"}, {"--contenders", "router,x"}, {"--contenders", ""},
		{"--broker-pid", "x"}, {"--broker-pid", "0"}, {"--broker-pid", "1"}, {"--broker-pid", "auto"}, {"--brokers", "127.0.0.1:1", "--broker-pid", "1073741824"}} {
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
		{[]string{"--contenders", "router", "--audit-compression", "zstd"}, []string{"--audit-compression configures router+audit, which --contenders leaves out"}},
		{[]string{"--contenders", "franz-go", "--rate", "1000", "--pins", "10", "--redis", "127.0.0.1:1", "--brokers", "127.0.0.1:1"}, []string{"--pins configures router, router+audit, router+audit-b and router-alt"}},
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

// TestBenchBrokerPIDFlagErrors: each way --broker-pid can be wrong exits 2
// before anything starts, naming the flag: a value that is not a pid or
// auto (the flag package's message and the usage), and, on one line, a
// pid without --brokers, a process that does not exist, auto without
// --brokers or with no local listener to find.
func TestBenchBrokerPIDFlagErrors(t *testing.T) {
	for _, v := range []string{"abc", "0", "-3", "", "12x", "auto,1"} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"bench", "--brokers", "127.0.0.1:1", "--broker-pid", v}, nil, &out, &errOut)
		if code != exitUsage || !strings.Contains(errOut.String(), `invalid value "`+v+`" for flag -broker-pid: want a process id (a positive integer) or auto`) {
			t.Errorf("bench --broker-pid %q exited %d, stderr %q", v, code, errOut.String())
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := l.Addr().String()
	l.Close()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--broker-pid", "1"}, "--broker-pid needs --brokers"},
		{[]string{"--broker-pid", "auto"}, "--broker-pid auto needs --brokers"},
		{[]string{"--brokers", "192.0.2.1:9092", "--broker-pid", "auto"}, "--broker-pid auto: 192.0.2.1:9092: 192.0.2.1 is not an address of this host"},
		{[]string{"--brokers", "127.0.0.1:1", "--broker-pid", "1073741824"}, "--broker-pid 1073741824: "},
	}
	if runtime.GOOS == "linux" {
		cases = append(cases, struct {
			args []string
			want string
		}{[]string{"--brokers", free, "--broker-pid", "auto"}, "--broker-pid auto: no socket of this host listens on port"})
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"bench"}, c.args...), nil, &out, &errOut)
		msg := errOut.String()
		if code != exitUsage || !strings.HasPrefix(msg, "residency bench: ") || strings.Count(msg, "\n") != 1 || out.Len() > 0 || !strings.Contains(msg, c.want) {
			t.Errorf("bench %q exited %d, stdout %q, stderr %q: want 2 and one line with %q", c.args, code, out.String(), msg, c.want)
		}
	}
}
