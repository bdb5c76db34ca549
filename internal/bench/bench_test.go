package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the residency binary when the
// harness starts its contenders as child processes of os.Executable()
// (`residency bench --child SPEC`).
func TestMain(m *testing.M) {
	if os.Getenv(ChildEnv) == "1" {
		args := os.Args[1:]
		if len(args) != 3 || args[0] != "bench" || args[1] != "--child" {
			fmt.Fprintf(os.Stderr, "bench test child: unexpected arguments %q\n", args)
			os.Exit(2)
		}
		if err := RunChild(context.Background(), args[2], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchJSON runs the harness with o on the embedded stack, contenders in
// child processes (this test binary, via TestMain), and decodes its report
// from JSON as `residency bench --json` prints it, refusing unknown fields.
func benchJSON(t *testing.T, o Options) *Report {
	t.Helper()
	var log, errOut bytes.Buffer
	rep, err := Run(context.Background(), o, &log, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\nprogress:\n%s\nstderr:\n%s", err, log.String(), errOut.String())
	}
	data, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&back); err != nil {
		t.Fatalf("the report does not read back: %v\n%s", err, data)
	}
	return &back
}

func checkContender(t *testing.T, name string, c ContenderReport, rounds int, rate float64, warmup time.Duration, passes int) {
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
	o := DefaultOptions()
	o.Events, o.Partitions, o.Rounds, o.Rate, o.LatencyFor, o.LatencyWarmup, o.Diagnose = 3000, 3, 2, 2000, time.Second, 250*time.Millisecond, true
	rep := benchJSON(t, o)
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
	o := DefaultOptions()
	o.InProcess, o.Remote, o.Events, o.Partitions, o.Rate = true, []string{"embedded"}, 1000, 2, 1000
	o.LatencyFor, o.LatencyWarmup, o.LatencyPasses = 500*time.Millisecond, 0, 1
	var log, errOut, out bytes.Buffer
	rep, err := Run(context.Background(), o, &log, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\nprogress:\n%s\nstderr:\n%s", err, log.String(), errOut.String())
	}
	rep.Table(&out)
	for _, want := range []string{"contenders in this process", "pass-through", "router", "Router / pass-through:", "P99 ms"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

// TestBenchRefusesBadOptions: Run refuses what the flags refuse, before
// starting anything.
func TestBenchRefusesBadOptions(t *testing.T) {
	for _, bad := range []func(*Options){
		func(o *Options) { o.Events = 5 }, func(o *Options) { o.Partitions = 0 }, func(o *Options) { o.Rate = -1 },
		func(o *Options) { o.LatencyWarmup = -time.Second }, func(o *Options) { o.LatencyPasses = 0 },
	} {
		o := DefaultOptions()
		bad(&o)
		if _, err := Run(context.Background(), o, io.Discard, io.Discard); err == nil {
			t.Errorf("Run(%+v) = nil error", o)
		}
	}
	if err := RunChild(context.Background(), "{not json", io.Discard); !errors.Is(err, ErrSpec) {
		t.Errorf("RunChild(bad spec) = %v, want ErrSpec", err)
	}
}
