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
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/testenv"
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

// benchJSON runs the harness with o, contenders in child processes (this
// test binary, via TestMain) unless o.InProcess, and decodes its report
// from JSON as `residency bench --json` prints it, refusing unknown fields.
func benchJSON(t *testing.T, o Options) *Report {
	t.Helper()
	var log, errOut bytes.Buffer
	rep, err := Run(context.Background(), o, &log, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\nprogress:\n%s\nstderr:\n%s", err, log.String(), errOut.String())
	}
	return benchJSONOf(t, rep)
}

// benchJSONOf is rep encoded as `residency bench --json` prints it and
// decoded back, refusing unknown fields.
func benchJSONOf(t *testing.T, rep *Report) *Report {
	t.Helper()
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

// checkTargetsOf: the report carries issue 16's four targets, each with
// the run's own figure and a verdict that agrees with it.
func checkTargetsOf(t *testing.T, rep *Report) {
	t.Helper()
	want := map[string]float64{"throughput": rep.RouterToFranzGo, "cpu_per_event": rep.CPURouterToFranzGo,
		"p99_latency": rep.Router.Latency.P99Ms, "peak_rss": rep.Router.PeakRSSMiB * (1 << 20) / 1e6}
	if len(rep.Targets) != len(want) {
		t.Fatalf("targets %+v, want %d", rep.Targets, len(want))
	}
	for _, c := range rep.Targets {
		m, ok := want[c.Name]
		if !ok || c.Measured != m || c.Limit <= 0 || c.Target == "" {
			t.Errorf("target %+v: want measured %v", c, m)
		}
		pass := c.Measured >= c.Limit
		if c.Name != "throughput" {
			pass = c.Measured <= c.Limit
		}
		if (c.Verdict == "pass") != pass || (c.Verdict != "pass" && c.Verdict != "miss") {
			t.Errorf("target %s: measured %v, limit %v, verdict %q", c.Name, c.Measured, c.Limit, c.Verdict)
		}
		if !strings.Contains(c.Caveat, "events, not 1000000") {
			t.Errorf("target %s: caveat %q does not say the run is smaller than the target's", c.Name, c.Caveat)
		}
	}
}

// checkFranzGo: the franz-go contender is reported like the others, with
// the ratios the report derives from it.
func checkFranzGo(t *testing.T, rep *Report, rounds int) {
	t.Helper()
	f := rep.FranzGo
	if f.CPUMicrosPerEvent != f.CPUSecondsPerMillion || len(f.RoundCPUSecondsPerMillion) != rounds {
		t.Errorf("franz-go CPU: %v µs/event, %v s/1M, rounds %v", f.CPUMicrosPerEvent, f.CPUSecondsPerMillion, f.RoundCPUSecondsPerMillion)
	}
	if want := rep.Router.EventsPerSecond / f.EventsPerSecond; rep.RouterToFranzGo != want || want <= 0 {
		t.Errorf("router / franz-go %v, want %v", rep.RouterToFranzGo, want)
	}
	if want := rep.Router.CPUMicrosPerEvent / f.CPUMicrosPerEvent; rep.CPURouterToFranzGo != want || want <= 0 {
		t.Errorf("router / franz-go CPU per event %v, want %v", rep.CPURouterToFranzGo, want)
	}
	if len(rep.RouterToFranzGoRounds) != rounds || len(rep.RoundRatios) != rounds {
		t.Errorf("per-round ratios %v (franz-go), %v (kafka-go), want %d each", rep.RouterToFranzGoRounds, rep.RoundRatios, rounds)
	}
}

// checkPinsTookEffect: with every user of the events without a country
// pinned, the router routed those events instead of quarantining them.
func checkPinsTookEffect(t *testing.T, rep *Report) {
	t.Helper()
	d := rep.Router.Decisions
	noCountry, unknown, malformed := rep.Mix["unplaceable no_country"], rep.Mix["unplaceable unknown_country"], 0
	for k, n := range rep.Mix {
		if strings.HasPrefix(k, "malformed") {
			malformed += n
		}
	}
	if noCountry == 0 || rep.PinnedEvents <= noCountry {
		t.Fatalf("mix %v, %d events of pinned users: want events without a country, all pinned, and some routable ones pinned", rep.Mix, rep.PinnedEvents)
	}
	if d["quarantined"] != unknown || d["dead_lettered"] != malformed || d["routed"] != rep.Events-unknown-malformed {
		t.Errorf("router decisions %v with %d pins: want %d quarantined (only the unknown countries: the pins place the %d without one), %d dead-lettered, the rest routed",
			d, rep.Pins, unknown, noCountry, malformed)
	}
}

// TestBenchReportsEveryContender runs a small bench on the real Kafka and
// Redis (the dev stack; the embedded stand-ins without it), contenders in
// child processes (this test binary, via TestMain), pins loaded and
// --diagnose, and checks every contender, the ratios, the pins and the
// targets.
func TestBenchReportsEveryContender(t *testing.T) {
	k, r := testenv.KafkaA(t), testenv.NewRedis(t)
	o := DefaultOptions()
	o.Brokers, o.Redis, o.Pins = k.Brokers, r.Addr, 400
	o.Events, o.Partitions, o.Rounds, o.Rate, o.LatencyFor, o.LatencyWarmup, o.Diagnose = 3000, 3, 2, 2000, time.Second, 250*time.Millisecond, true
	rep := benchJSON(t, o)
	if rep.Target != strings.Join(k.Brokers, ",") || rep.Events != 3000 || rep.Partitions != 3 || rep.Rounds != 2 || rep.Processes != "child" || rep.Pins != 400 {
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
	checkContender(t, "franz-go", rep.FranzGo, 2, 2000, 250*time.Millisecond, 2)
	if k.Real && (rep.Router.Latency.Clock != "log_append_time" || rep.FranzGo.Latency.Clock != "log_append_time") {
		t.Errorf("latency clocks %q (router), %q (franz-go) on Apache Kafka, want log_append_time", rep.Router.Latency.Clock, rep.FranzGo.Latency.Clock)
	}
	checkFranzGo(t, rep, 2)
	checkPinsTookEffect(t, rep)
	if rep.RateBasis != rateBasisFlag {
		t.Errorf("rate basis %q with --rate, want %q", rep.RateBasis, rateBasisFlag)
	}
	checkTargetsOf(t, rep)
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
}

// TestBenchInProcessTwoClusters runs the contenders in this process on the
// real Kafka clusters, the EU and UK pinned topics on the second, pins off,
// with the latency passes at the default rate (half the router's events/s)
// and a second audit contender (--audit-compression-b snappy), and prints
// the table.
func TestBenchInProcessTwoClusters(t *testing.T) {
	a, b := testenv.KafkaA(t), testenv.KafkaB(t)
	o := DefaultOptions()
	o.Brokers, o.Remote = a.Brokers, b.Brokers
	o.AuditCompression, o.AuditCompressionB = "lz4", "snappy"
	o.InProcess, o.Events, o.Partitions = true, 1000, 2
	o.LatencyFor, o.LatencyWarmup, o.LatencyPasses = 500*time.Millisecond, 0, 1
	var log, errOut, out bytes.Buffer
	rep, err := Run(context.Background(), o, &log, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\nprogress:\n%s\nstderr:\n%s", err, log.String(), errOut.String())
	}
	checkFranzGo(t, rep, 1)
	if rep.RateBasis != rateBasisRouter || rep.Router.Latency.OfferedRate != rep.Router.EventsPerSecond/2 ||
		rep.FranzGo.Latency.OfferedRate != rep.Router.EventsPerSecond/2 {
		t.Errorf("offered %v/s (%s), want half the router's %v events/s", rep.Router.Latency.OfferedRate, rep.RateBasis, rep.Router.EventsPerSecond)
	}
	if rep.Pins != 0 || rep.Router.Decisions["quarantined"] != rep.Mix["unplaceable no_country"]+rep.Mix["unplaceable unknown_country"] {
		t.Errorf("pins off: %d pins, router decisions %v, mix %v", rep.Pins, rep.Router.Decisions, rep.Mix)
	}
	ab := rep.RouterAuditB
	if ab == nil || len(ab.RoundEventsPerSecond) != 1 || ab.EventsPerSecond <= 0 || ab.Latency != nil || rep.AuditCompressionB != "snappy" ||
		rep.AuditRatioB != ab.EventsPerSecond/rep.Router.EventsPerSecond || rep.AuditBToA != ab.EventsPerSecond/rep.RouterAudit.EventsPerSecond ||
		len(rep.AuditRoundsB) != 1 || len(rep.AuditBToARounds) != 1 {
		t.Errorf("--audit-compression-b snappy: contender %+v, ratios %v %v %v %v", ab, rep.AuditRatioB, rep.AuditRoundsB, rep.AuditBToA, rep.AuditBToARounds)
	}
	rep.Table(&out)
	for _, want := range []string{"contenders in this process", "pins off", "pass-through (kafka-go)", "franz-go", "router",
		"router+audit (lz4)", "router+audit-b (snappy)", "router+audit-b (snappy) / router:",
		"Router / franz-go:", "Router / pass-through (kafka-go):", "P99 ms", "half the router's events/s",
		"router events/s >= 0.5 x franz-go's", "router peak RSS <= 100 MB", "pins off (--pins 0)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

// TestBenchContendersSubset runs only the router and franz-go
// (--contenders franz-go,router), in this process on the real Kafka, two
// rounds and two latency passes: the others never start, the rounds and
// passes alternate the two's order, the report (JSON and table) has no
// trace of the others and no ratio against them, and the targets are
// checked.
func TestBenchContendersSubset(t *testing.T) {
	k := testenv.KafkaA(t)
	o := DefaultOptions()
	o.Brokers, o.Contenders = k.Brokers, []string{"franz-go", "router"}
	o.InProcess, o.Events, o.Partitions, o.Rounds = true, 1000, 2, 2
	o.LatencyFor, o.LatencyWarmup, o.LatencyPasses = 500*time.Millisecond, 0, 2
	if runtime.GOOS == "linux" {
		// This process stands in for the broker: the sampling path end to
		// end (in-process, the "broker" is the contender and the bench).
		o.BrokerPID = os.Getpid()
	}
	var log, errOut, out bytes.Buffer
	rep, err := Run(context.Background(), o, &log, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\nprogress:\n%s\nstderr:\n%s", err, log.String(), errOut.String())
	}
	if o.BrokerPID != 0 {
		for _, c := range []*ContenderReport{&rep.Router, &rep.FranzGo} {
			if len(c.RoundBrokerCPUMicrosPerEvent) != 2 || c.RoundBrokerCPUMicrosPerEvent[0] < 0 || c.RoundBrokerCPUMicrosPerEvent[1] < 0 ||
				c.BrokerCPUMicrosPerEvent != median(c.RoundBrokerCPUMicrosPerEvent) || c.BrokerPlusCPUMicrosPerEvent != c.BrokerCPUMicrosPerEvent+c.CPUMicrosPerEvent {
				t.Errorf("--broker-pid (this process): %+v", c)
			}
		}
		if rep.BrokerPID != o.BrokerPID || rep.BrokerCommand == "" || rep.BrokerClockTicks <= 0 || !strings.Contains(log.String(), "CPU µs per event, peak RSS") {
			t.Errorf("--broker-pid: report pid %d, command %q, ticks %d; progress:\n%s", rep.BrokerPID, rep.BrokerCommand, rep.BrokerClockTicks, log.String())
		}
	}
	var ran []string
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.HasPrefix(l, "Round ") || strings.HasPrefix(l, "Latency pass ") {
			ran = append(ran, strings.SplitN(l, ":", 2)[0])
		}
	}
	want := []string{"Round 1, router", "Round 1, franz-go", "Round 2, franz-go", "Round 2, router",
		"Latency pass 1, router at", "Latency pass 1, franz-go at", "Latency pass 2, franz-go at", "Latency pass 2, router at"}
	if len(ran) != len(want) {
		t.Fatalf("runs %q, want %q", ran, want)
	}
	for i := range want {
		if !strings.HasPrefix(ran[i], want[i]) {
			t.Errorf("run %d: %q, want %q", i+1, ran[i], want[i])
		}
	}
	if len(rep.RouterToFranzGoRounds) != 2 || rep.RouterToFranzGo != rep.Router.EventsPerSecond/rep.FranzGo.EventsPerSecond || rep.RouterToFranzGo <= 0 ||
		rep.CPURouterToFranzGo != rep.Router.CPUMicrosPerEvent/rep.FranzGo.CPUMicrosPerEvent || rep.CPURouterToFranzGo <= 0 {
		t.Errorf("router / franz-go %v (rounds %v), CPU %v", rep.RouterToFranzGo, rep.RouterToFranzGoRounds, rep.CPURouterToFranzGo)
	}
	if rep.PassThrough.ran() || rep.RouterAudit.ran() || rep.Ratio != 0 || rep.RoundRatios != nil || rep.AuditRatio != 0 || rep.AuditRounds != nil {
		t.Errorf("contenders not selected: pass-through %+v, router+audit %+v, ratios %v %v %v %v",
			rep.PassThrough, rep.RouterAudit, rep.Ratio, rep.RoundRatios, rep.AuditRatio, rep.AuditRounds)
	}
	if !slices.Equal(rep.Contenders, []string{"router", "franz-go"}) || rep.RateBasis != rateBasisRouter || rep.FranzGo.Latency.OfferedRate != rep.Router.EventsPerSecond/2 {
		t.Errorf("contenders %v, rate basis %q, offered %v/s", rep.Contenders, rep.RateBasis, rep.FranzGo.Latency.OfferedRate)
	}
	for _, c := range rep.Targets {
		if c.Verdict == "not measured" {
			t.Errorf("target %+v: router and franz-go both ran", c)
		}
	}
	back := benchJSONOf(t, rep)
	if back.PassThrough.ran() || !back.Router.ran() || !back.FranzGo.ran() {
		t.Errorf("the report read back from JSON: %+v", back)
	}
	rep.Table(&out)
	for _, want := range []string{"Contenders run (--contenders): router, franz-go.", "Router / franz-go: ", "Router / pass-through (kafka-go): not measured (pass-through not run)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if o.BrokerPID != 0 {
		for _, want := range []string{"BROKER CPU µs/EVENT", "Broker + contender CPU per event, router: ", "Broker + contender CPU per event, franz-go: "} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("table with --broker-pid lacks %q:\n%s", want, out.String())
			}
		}
	}
	if strings.Contains(out.String(), "router+audit") || strings.Contains(out.String(), "pass-through (kafka-go) ") {
		t.Errorf("table has a contender not run:\n%s", out.String())
	}
}

// TestBenchEmbeddedStack: without --brokers the bench starts the embedded
// stack, whose Redis takes the pins; latencies end at arrival there.
func TestBenchEmbeddedStack(t *testing.T) {
	o := DefaultOptions()
	o.InProcess, o.Remote, o.Events, o.Partitions, o.Rate, o.Pins = true, []string{"embedded"}, 1000, 2, 1000, 300
	o.LatencyFor, o.LatencyWarmup, o.LatencyPasses = 500*time.Millisecond, 0, 1
	var log, errOut bytes.Buffer
	rep, err := Run(context.Background(), o, &log, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\nprogress:\n%s\nstderr:\n%s", err, log.String(), errOut.String())
	}
	if rep.Target != "embedded" || rep.Pins != 300 || rep.FranzGo.Latency == nil || rep.FranzGo.Latency.Clock != "arrival" {
		t.Errorf("embedded run: target %q, %d pins, franz-go latency %+v", rep.Target, rep.Pins, rep.FranzGo.Latency)
	}
	checkPinsTookEffect(t, rep)
}

// TestBenchRefusesBadOptions: Run refuses what the flags refuse, before
// starting anything.
func TestBenchRefusesBadOptions(t *testing.T) {
	for _, bad := range []func(*Options){
		func(o *Options) { o.Events = 5 }, func(o *Options) { o.Partitions = 0 }, func(o *Options) { o.Rate = -1 },
		func(o *Options) { o.LatencyWarmup = -time.Second }, func(o *Options) { o.LatencyPasses = 0 },
		func(o *Options) { o.Pins = -1 }, func(o *Options) { o.Brokers, o.Pins = []string{"127.0.0.1:1"}, 10 },
		func(o *Options) { o.AuditCompression = "brotli" }, func(o *Options) { o.AuditCompressionB = "LZ4" },
		func(o *Options) { o.MaxUncommittedEvents = -1 }, func(o *Options) { o.MaxUncommittedBytes = -1 },
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
