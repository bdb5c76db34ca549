package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the residency binary when
// `residency bench` starts its contenders as child processes of
// os.Executable().
func TestMain(m *testing.M) {
	if os.Getenv(benchChildEnv) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// benchJSON runs `residency bench --json` with args on the embedded stack
// and decodes its report.
func benchJSON(t *testing.T, args ...string) *benchReport {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"bench", "--json"}, args...), nil, &out, &errOut)
	if code != exitOK {
		t.Fatalf("bench exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	var rep benchReport
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("bench --json printed something that is not a report: %v\n%s", err, out.String())
	}
	return &rep
}

func checkContender(t *testing.T, name string, c contenderReport, rounds int, rate float64, warmup time.Duration, passes int) {
	t.Helper()
	if len(c.RoundEventsPerSecond) != rounds || c.EventsPerSecond <= 0 {
		t.Errorf("%s: events/s %v over rounds %v, want %d positive rounds", name, c.EventsPerSecond, c.RoundEventsPerSecond, rounds)
	}
	if c.CPUSecondsPerMillion <= 0 {
		t.Errorf("%s: CPU seconds per million events = %v, want > 0", name, c.CPUSecondsPerMillion)
	}
	if c.PeakRSSMiB < 1 || c.PeakRSSMiB > 4096 {
		t.Errorf("%s: peak RSS %v MiB is not plausible", name, c.PeakRSSMiB)
	}
	l := c.Latency
	if l == nil {
		t.Fatalf("%s: no latency pass", name)
	}
	if l.OfferedRate != rate || l.Sent < 1 || l.Received != l.Sent {
		t.Errorf("%s: latency pass offered %v/s, sent %d, received %d; want %v/s and every event received", name, l.OfferedRate, l.Sent, l.Received, rate)
	}
	if want := l.Passes * int(math.Round(rate*warmup.Seconds())); l.WarmupSent != want {
		t.Errorf("%s: %d untimed events at rate in %d passes, want %d", name, l.WarmupSent, l.Passes, want)
	}
	if l.Passes != passes || len(l.PassP99Ms) != passes {
		t.Errorf("%s: %d latency passes (p99s %v), want %d", name, l.Passes, l.PassP99Ms, passes)
	}
	for _, p99 := range l.PassP99Ms {
		if p99 > l.MaxMs || p99 <= 0 {
			t.Errorf("%s: a pass's p99 %v ms outside (0, max %v]", name, p99, l.MaxMs)
		}
	}
	if l.P50Ms <= 0 || l.P50Ms > l.P99Ms || l.P99Ms > l.MaxMs || l.MaxMs > 60_000 {
		t.Errorf("%s: latency p50 %v, p99 %v, max %v ms: want 0 < p50 <= p99 <= max < 60s", name, l.P50Ms, l.P99Ms, l.MaxMs)
	}
	if l.Clock != "log_append_time" && l.Clock != "arrival" {
		t.Errorf("%s: latency clock %q", name, l.Clock)
	}
	if l.AchievedRate <= 0 {
		t.Errorf("%s: achieved rate %v", name, l.AchievedRate)
	}
}

// TestBenchReportsBothContenders runs a tiny bench on the embedded stack
// with the contenders in child processes (this test binary, via TestMain)
// and checks the report's fields and their sanity.
func TestBenchReportsBothContenders(t *testing.T) {
	rep := benchJSON(t, "--events", "3000", "--partitions", "3", "--rounds", "2", "--rate", "2000", "--latency-duration", "1s", "--latency-warmup", "250ms", "--diagnose")
	if rep.Target != "embedded" || rep.Events != 3000 || rep.Partitions != 3 || rep.Rounds != 2 || rep.Processes != "child" {
		t.Errorf("report header: %+v", rep)
	}
	total, kinds := 0, map[string]int{}
	for k, n := range rep.Mix {
		total += n
		kinds[strings.Fields(k)[0]] += n
	}
	if total != 3000 || kinds["routable"] < 2700 || kinds["unplaceable"] == 0 || kinds["unplaceable"] > 300 {
		t.Errorf("event mix %v: want 3000 events, mostly routable, a few percent unplaceable", rep.Mix)
	}
	checkContender(t, "pass-through", rep.PassThrough, 2, 2000, 250*time.Millisecond, 2)
	checkContender(t, "router", rep.Router, 2, 2000, 250*time.Millisecond, 2)
	if want := rep.Router.EventsPerSecond / rep.PassThrough.EventsPerSecond; rep.Ratio != want || rep.Ratio <= 0 {
		t.Errorf("ratio %v, want router/pass-through = %v", rep.Ratio, want)
	}
	if f := rep.FanOut; f == nil || len(f.RoundEventsPerSecond) != 2 || f.EventsPerSecond <= 0 || f.CPUSecondsPerMillion <= 0 || f.Latency != nil ||
		rep.FanOutRatio != f.EventsPerSecond/rep.PassThrough.EventsPerSecond {
		t.Errorf("--diagnose: fan-out contender %+v, ratio %v", f, rep.FanOutRatio)
	}
	if w := rep.WriterPass; w == nil || len(w.RoundEventsPerSecond) != 2 || w.EventsPerSecond <= 0 || w.CPUSecondsPerMillion <= 0 || w.Latency != nil ||
		rep.RouterToWriterPass != rep.Router.EventsPerSecond/w.EventsPerSecond {
		t.Errorf("--diagnose: pass-through with the router's writer %+v, router / it %v", w, rep.RouterToWriterPass)
	}
	if len(rep.RoundRatios) != 2 {
		t.Errorf("round ratios %v, want 2", rep.RoundRatios)
	}
}

// TestBenchInProcessTwoClusters runs the contenders in this process with
// the EU and UK pinned topics on the embedded stack's second cluster, and
// prints the table.
func TestBenchInProcessTwoClusters(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"bench", "--in-process", "--remote-brokers", "embedded", "--events", "1000",
		"--partitions", "2", "--rate", "1000", "--latency-duration", "500ms", "--latency-warmup", "0s", "--latency-passes", "1"}, nil, &out, &errOut)
	if code != exitOK {
		t.Fatalf("bench exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{"contenders in this process", "pass-through", "router", "Router / pass-through:", "P99 ms"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBenchRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--events", "5"}, {"--partitions", "0"}, {"--rate", "-1"}, {"--latency-warmup", "-1s"}, {"--latency-passes", "0"}, {"extra"}, {"--child", "{not json"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), append([]string{"bench"}, args...), nil, &out, &errOut); code != exitUsage {
			t.Errorf("bench %v exited %d, want %d", args, code, exitUsage)
		}
	}
}
