package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// reportWith returns a report of the run the targets are stated for
// (1M events, 3 rounds, 1M pins, child processes, rate at half the
// router's events/s) with the given router and franz-go figures.
func reportWith(routerEPS, franzEPS, routerCPU, franzCPU, p99, rssMiB float64) *Report {
	r := &Report{Events: 1_000_000, Rounds: 3, Pins: 1_000_000, Processes: "child", RateBasis: rateBasisRouter}
	r.Router = ContenderReport{EventsPerSecond: routerEPS, CPUMicrosPerEvent: routerCPU, CPUSecondsPerMillion: routerCPU, PeakRSSMiB: rssMiB,
		Latency: &LatencyReport{P50Ms: p99 / 2, P99Ms: p99, MaxMs: p99 * 2}}
	r.FranzGo = ContenderReport{EventsPerSecond: franzEPS, CPUMicrosPerEvent: franzCPU, CPUSecondsPerMillion: franzCPU}
	r.RouterToFranzGo = routerEPS / franzEPS
	r.CPURouterToFranzGo = routerCPU / franzCPU
	return r
}

func targetsByName(t *testing.T, r *Report) map[string]TargetCheck {
	t.Helper()
	out := map[string]TargetCheck{}
	for _, c := range r.Targets {
		out[c.Name] = c
	}
	if len(out) != 4 || len(r.Targets) != 4 {
		t.Fatalf("targets %+v: want throughput, cpu_per_event, p99_latency, peak_rss", r.Targets)
	}
	return out
}

// TestTargetsPassAndMiss: each of issue 16's targets gets the measured
// value, its bound and pass or miss, on the right side of the bound.
func TestTargetsPassAndMiss(t *testing.T) {
	// Every target met, right at or within its bound.
	r := reportWith(250_000, 500_000, 3.0, 1.5, 25, 95) // 95 MiB = 99.6 MB
	r.checkTargets()
	for name, c := range targetsByName(t, r) {
		if c.Verdict != "pass" || c.Caveat != "" {
			t.Errorf("%s: %+v, want pass without caveat", name, c)
		}
	}
	got := targetsByName(t, r)
	if c := got["throughput"]; c.Measured != 0.5 || c.Limit != 0.5 || c.Unit != "x franz-go" {
		t.Errorf("throughput check %+v", c)
	}
	if c := got["cpu_per_event"]; c.Measured != 2 || c.Limit != 2 {
		t.Errorf("cpu check %+v", c)
	}
	if c := got["peak_rss"]; c.Measured < 99.5 || c.Measured > 99.7 || c.Unit != "MB" {
		t.Errorf("peak RSS check %+v: want 95 MiB as 99.6 MB", c)
	}

	// Every target missed, just past its bound.
	r = reportWith(249_000, 500_000, 3.1, 1.5, 25.1, 96) // 96 MiB = 100.7 MB
	r.checkTargets()
	for name, c := range targetsByName(t, r) {
		if c.Verdict != "miss" {
			t.Errorf("%s: %+v, want miss", name, c)
		}
	}

	// No latency pass (nothing measured): not measured, never a pass,
	// and no NaN to break the JSON.
	r = reportWith(400_000, 500_000, 2, 1.5, 10, 50)
	r.Router.Latency = nil
	r.checkTargets()
	if c := targetsByName(t, r)["p99_latency"]; c.Verdict != "not measured" || c.Measured != 0 || c.Caveat != "no latency pass of the router" {
		t.Errorf("p99 without a latency pass: %+v, want not measured", c)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Errorf("the report without a latency pass does not encode: %v", err)
	}
}

// TestTargetsCaveats: where the run differs from the one a target is
// stated for, its check says so.
func TestTargetsCaveats(t *testing.T) {
	r := reportWith(400_000, 500_000, 2, 1.5, 10, 50)
	r.Events, r.Rounds, r.Pins, r.RateBasis, r.Processes = 3000, 1, 0, rateBasisFlag, "in-process"
	r.checkTargets()
	got := targetsByName(t, r)
	for name, want := range map[string][]string{
		"throughput":    {"3000 events", "1 round(s)", "pins off", "in the bench's process"},
		"cpu_per_event": {"3000 events", "pins off"},
		"p99_latency":   {"pins off", "--rate"},
		"peak_rss":      {"0 pins loaded, not 1000000"},
	} {
		for _, w := range want {
			if !strings.Contains(got[name].Caveat, w) {
				t.Errorf("%s caveat %q lacks %q", name, got[name].Caveat, w)
			}
		}
		if got[name].Verdict != "pass" {
			t.Errorf("%s: %+v: a caveat does not change the verdict", name, got[name])
		}
	}
	if strings.Contains(got["peak_rss"].Caveat, "pins off") {
		t.Errorf("peak RSS caveat %q: the pin count says it", got["peak_rss"].Caveat)
	}
}

// TestTableShowsFranzGoAndTargets: the table has a row for each contender
// with CPU per event, both ratios, and a line per target with its verdict.
func TestTableShowsFranzGoAndTargets(t *testing.T) {
	r := reportWith(100_000, 500_000, 6, 1.5, 40, 60)
	r.PassThrough = ContenderReport{EventsPerSecond: 80_000, CPUSecondsPerMillion: 6, CPUMicrosPerEvent: 6, Latency: &LatencyReport{}}
	r.Ratio = 100_000.0 / 80_000
	r.checkTargets()
	var out bytes.Buffer
	r.Table(&out)
	for _, want := range []string{
		"franz-go", "CPU µs/EVENT", "Router / franz-go: 0.20", "Router / pass-through (kafka-go): 1.25",
		"router CPU per event / franz-go's: 4.00",
		"TARGET", "VERDICT", "miss", "router p99 <= 25 ms", "40.0 ms",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
