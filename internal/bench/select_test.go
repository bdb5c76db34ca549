package bench

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestContendersRefused: every way --contenders can be wrong, alone or
// against the flags that add contenders or --rate, is refused with the
// flags named.
func TestContendersRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		set  func(*Options)
		want []string
	}{
		{"unknown", func(o *Options) { o.Contenders = []string{"router", "x"} },
			[]string{`--contenders: unknown contender "x" (known: pass-through, franz-go, router, router+audit, router+audit-b, router-alt, pass-through+fan-out+headers, pass-through+router-writer)`}},
		{"the table's name", func(o *Options) { o.Contenders = []string{"pass-through (kafka-go)"} }, []string{`unknown contender "pass-through (kafka-go)"`}},
		{"empty", func(o *Options) { o.Contenders = []string{} }, []string{"--contenders: empty list", "router, router+audit"}},
		{"duplicate", func(o *Options) { o.Contenders = []string{"router", "franz-go", "router"} }, []string{`--contenders: "router" named twice`}},
		{"--audit-compression-b left out", func(o *Options) { o.AuditCompressionB, o.Contenders = "lz4", []string{"router", "router+audit"} },
			[]string{"--audit-compression-b adds router+audit-b, which --contenders leaves out"}},
		{"router+audit-b without its flag", func(o *Options) { o.Contenders = []string{"router", "router+audit-b"} },
			[]string{"--contenders: router+audit-b runs only with --audit-compression-b"}},
		{"--router-compression-alt left out", func(o *Options) { o.RouterCompressionAlt, o.Contenders = "lz4", []string{"router", "franz-go"} },
			[]string{"--router-compression-alt adds router-alt, which --contenders leaves out"}},
		{"router-alt without its flag", func(o *Options) { o.Contenders = []string{"router", "router-alt"} },
			[]string{"--contenders: router-alt runs only with --router-compression-alt"}},
		{"--diagnose left out", func(o *Options) { o.Diagnose, o.Contenders = true, []string{"router"} },
			[]string{"--diagnose adds pass-through+fan-out+headers and pass-through+router-writer, which --contenders leaves out"}},
		{"a --diagnose contender without --diagnose", func(o *Options) { o.Contenders = []string{"router", "pass-through+router-writer"} },
			[]string{"--contenders: pass-through+router-writer runs only with --diagnose"}},
		{"--audit-compression without router+audit", func(o *Options) { o.AuditCompression, o.Contenders = "lz4", []string{"router", "franz-go"} },
			[]string{"--audit-compression configures router+audit, which --contenders leaves out"}},
		{"--router-compression without a router", func(o *Options) { o.RouterCompression, o.Contenders, o.Rate = "zstd", []string{"franz-go"}, 1000 },
			[]string{"--router-compression configures router, router+audit, router+audit-b and router-alt, which --contenders leaves out"}},
		{"--pins without a router", func(o *Options) { o.Pins, o.Contenders, o.Rate = 1000, []string{"franz-go", "pass-through"}, 1000 },
			[]string{"--pins configures router"}},
		{"--max-inflight-events without a router", func(o *Options) { o.MaxInflightEvents, o.Contenders, o.Rate = 5000, []string{"franz-go"}, 1000 },
			[]string{"--max-inflight-events configures router"}},
		{"--max-uncommitted-events without a router", func(o *Options) { o.MaxUncommittedEvents, o.Contenders, o.Rate = 5000, []string{"franz-go"}, 1000 },
			[]string{"--max-uncommitted-events configures router"}},
		{"--max-uncommitted-bytes without a router", func(o *Options) { o.MaxUncommittedBytes, o.Contenders, o.Rate = 5000, []string{"franz-go"}, 1000 },
			[]string{"--max-uncommitted-bytes configures router"}},
		{"--memory-limit without a router", func(o *Options) { o.MemoryLimit, o.Contenders, o.Rate = 1<<26, []string{"franz-go"}, 1000 },
			[]string{"--memory-limit configures router"}},
		{"latency passes without the router or --rate", func(o *Options) { o.Contenders = []string{"franz-go", "pass-through"} },
			[]string{"--contenders leaves out router", "--rate"}},
	} {
		o := DefaultOptions()
		c.set(&o)
		err := o.Validate()
		if err == nil {
			t.Errorf("%s: %v accepted", c.name, o.Contenders)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", c.name, err, w)
			}
		}
	}
}

// TestContendersAccepted: what --contenders may name.
func TestContendersAccepted(t *testing.T) {
	for _, set := range []func(*Options){
		func(o *Options) { o.Contenders = nil },
		func(o *Options) { o.Contenders = []string{"router", "franz-go"} },
		func(o *Options) { o.Contenders = []string{"franz-go", "router"} },
		func(o *Options) { o.Contenders, o.Rate = []string{"franz-go", "pass-through"}, 50_000 },
		func(o *Options) { o.Contenders = []string{"router+audit"} }, // no latency pass: no rate needed
		func(o *Options) {
			o.Contenders, o.AuditCompressionB = []string{"router", "router+audit", "router+audit-b"}, "zstd"
		},
		func(o *Options) { o.Contenders, o.AuditCompressionB = []string{"router+audit-b"}, "zstd" },
		func(o *Options) { o.Contenders, o.RouterCompressionAlt = []string{"router", "router-alt"}, "lz4" },
		func(o *Options) { o.Contenders, o.Diagnose = []string{"router", "pass-through+router-writer"}, true },
		func(o *Options) { o.Contenders, o.AuditCompression = []string{"router+audit"}, "zstd" },
		func(o *Options) { o.Contenders, o.RouterCompression, o.Pins = []string{"router+audit"}, "zstd", 10 },
		func(o *Options) {
			o.Contenders, o.RouterCompressionAlt, o.MaxInflightEvents, o.Rate = []string{"router-alt"}, "lz4", 5000, 1000
		},
		func(o *Options) { o.Contenders, o.Pins = nil, 10 }, // every contender: nothing left out
	} {
		o := DefaultOptions()
		set(&o)
		if err := o.Validate(); err != nil {
			t.Errorf("--contenders %v: %v", o.Contenders, err)
		}
	}
}

// TestContendersOrder: a selection keeps the rounds' order (whatever the
// list's) and its reversal every other round, and the latency passes' A B
// B A; without a selection the order is what it always was.
func TestContendersOrder(t *testing.T) {
	o := DefaultOptions()
	for _, c := range []struct {
		name            string
		set             func(*Options)
		round0, latency []string
	}{
		{"all", func(o *Options) {}, []string{"pass-through", "router", "router+audit", "franz-go"}, []string{"pass-through", "router", "franz-go"}},
		{"all, with the flags' contenders", func(o *Options) { o.AuditCompressionB, o.RouterCompressionAlt, o.Diagnose = "lz4", "zstd", true },
			[]string{"pass-through", "router+audit", "router", "router+audit-b", "router-alt", "franz-go", "pass-through+fan-out+headers", "pass-through+router-writer"},
			[]string{"pass-through", "router", "router-alt", "franz-go"}},
		{"router and franz-go", func(o *Options) { o.Contenders = []string{"franz-go", "router"} }, []string{"router", "franz-go"}, []string{"router", "franz-go"}},
		{"one", func(o *Options) { o.Contenders = []string{"router"} }, []string{"router"}, []string{"router"}},
		{"audit pair", func(o *Options) {
			o.AuditCompressionB, o.Contenders = "lz4", []string{"router+audit-b", "router+audit", "router"}
		},
			[]string{"router+audit", "router", "router+audit-b"}, []string{"router"}},
		{"throughput only", func(o *Options) { o.Contenders = []string{"router+audit"} }, []string{"router+audit"}, nil},
		{"writer pass", func(o *Options) {
			o.Diagnose, o.Contenders = true, []string{"router", "pass-through+router-writer", "franz-go"}
		},
			[]string{"router", "franz-go", "pass-through+router-writer"}, []string{"router", "franz-go"}},
	} {
		o := o
		c.set(&o)
		if err := o.Validate(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		reversed := func(s []string) []string { s = slices.Clone(s); slices.Reverse(s); return s }
		for round, want := range [][]string{c.round0, reversed(c.round0), c.round0} {
			if got := o.throughputOrder(round); !slices.Equal(got, want) {
				t.Errorf("%s: round %d runs %v, want %v", c.name, round+1, got, want)
			}
		}
		for pass, want := range [][]string{c.latency, reversed(c.latency)} {
			if got := o.latencyOrder(pass); !slices.Equal(got, want) {
				t.Errorf("%s: latency pass %d runs %v, want %v", c.name, pass+1, got, want)
			}
		}
	}
}

// roundsReport returns a report of the run the targets are stated for in
// which the contenders given ran two rounds at these events/s, and the
// router (if it ran) a latency pass; derive and checkTargets done.
func roundsReport(eps map[string][2]float64) *Report {
	r := &Report{Events: 1_000_000, Rounds: 2, Pins: 1_000_000, Processes: "child", RateBasis: rateBasisRouter}
	r.RouterAuditB = &ContenderReport{}
	for mode, rounds := range eps {
		c := r.contender(mode)
		c.RoundEventsPerSecond = rounds[:]
		c.RoundCPUSecondsPerMillion = []float64{1e6 / rounds[0], 1e6 / rounds[1]}
		c.PeakRSSMiB = 50
		if mode == contenderRouter {
			c.Latency = &LatencyReport{OfferedRate: 1000, Passes: 1, P50Ms: 2, P99Ms: 10, MaxMs: 20}
		}
	}
	if _, ok := eps[contenderRouterAuditB]; !ok {
		r.RouterAuditB = nil
	}
	r.derive()
	r.checkTargets()
	return r
}

// reportText is r as JSON (which must encode: no NaN or Inf) and as the
// table.
func reportText(t *testing.T, r *Report) (js, table string) {
	t.Helper()
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("the report does not encode as JSON: %v", err)
	}
	var out bytes.Buffer
	r.Table(&out)
	for _, bad := range []string{"NaN", "Inf"} {
		if strings.Contains(out.String(), bad) {
			t.Errorf("table has %s:\n%s", bad, out.String())
		}
	}
	return string(data), out.String()
}

// TestDeriveEveryContender: with every contender run the ratios are what
// they were, per round and over the rounds' medians, and nothing says
// "not measured".
func TestDeriveEveryContender(t *testing.T) {
	r := roundsReport(map[string][2]float64{contenderPassThrough: {40_000, 50_000}, contenderRouter: {100_000, 200_000},
		contenderRouterAudit: {90_000, 160_000}, contenderFranzGo: {400_000, 400_000}})
	if r.Ratio != 150_000.0/45_000 || !slices.Equal(r.RoundRatios, []float64{2.5, 4}) {
		t.Errorf("router / pass-through %v, rounds %v", r.Ratio, r.RoundRatios)
	}
	if r.RouterToFranzGo != 0.375 || !slices.Equal(r.RouterToFranzGoRounds, []float64{0.25, 0.5}) || r.CPURouterToFranzGo != r.Router.CPUMicrosPerEvent/r.FranzGo.CPUMicrosPerEvent {
		t.Errorf("router / franz-go %v, rounds %v, CPU %v", r.RouterToFranzGo, r.RouterToFranzGoRounds, r.CPURouterToFranzGo)
	}
	if r.AuditRatio != 125_000.0/150_000 || !slices.Equal(r.AuditRounds, []float64{0.9, 0.8}) {
		t.Errorf("audit / router %v, rounds %v", r.AuditRatio, r.AuditRounds)
	}
	js, table := reportText(t, r)
	for _, want := range []string{`"pass_through":`, `"franz_go":`, `"router_audit":`, `"ratio":`, `"router_to_franz_go":`, `"audit_ratio":`, `"measured":`} {
		if !strings.Contains(js, want) {
			t.Errorf("JSON lacks %s: %s", want, js)
		}
	}
	if strings.Contains(js, `"contenders"`) || strings.Contains(table, "not measured") || strings.Contains(table, "--contenders") {
		t.Errorf("every contender ran, yet:\n%s\n%s", js, table)
	}
	for _, want := range []string{"Router / franz-go: 0.38 (per round: 0.25, 0.50)", "Router / pass-through (kafka-go): 3.33 (per round: 2.50, 4.00)",
		"Router with the audit on / router: 0.83 (per round: 0.90, 0.80; issue 14 asks >= 0.9)"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

// TestDeriveWithoutFranzGo: the router and the audit without franz-go or
// the pass-through: the ratios against those are not measured, not
// computed against zero; the JSON has no trace of them, the table says
// "not measured", and the targets against franz-go are "not measured"
// while the router's own are checked.
func TestDeriveWithoutFranzGo(t *testing.T) {
	r := roundsReport(map[string][2]float64{contenderRouter: {100_000, 200_000}, contenderRouterAudit: {90_000, 160_000}})
	r.Contenders = []string{contenderRouter, contenderRouterAudit}
	if r.Ratio != 0 || r.RoundRatios != nil || r.RouterToFranzGo != 0 || r.RouterToFranzGoRounds != nil || r.CPURouterToFranzGo != 0 {
		t.Errorf("ratios against contenders not run: %v %v %v %v %v", r.Ratio, r.RoundRatios, r.RouterToFranzGo, r.RouterToFranzGoRounds, r.CPURouterToFranzGo)
	}
	if r.AuditRatio != 125_000.0/150_000 {
		t.Errorf("audit / router %v", r.AuditRatio)
	}
	js, table := reportText(t, r)
	for _, absent := range []string{`"pass_through"`, `"franz_go"`, `"ratio"`, `"round_ratios"`, `"router_to_franz_go"`, `"cpu_router_to_franz_go"`} {
		if strings.Contains(js, absent) {
			t.Errorf("JSON has %s: %s", absent, js)
		}
	}
	if !strings.Contains(js, `"contenders":["router","router+audit"]`) || !strings.Contains(js, `"audit_ratio":`) {
		t.Errorf("JSON: %s", js)
	}
	targets := targetsByName(t, r)
	for _, name := range []string{"throughput", "cpu_per_event"} {
		if c := targets[name]; c.Verdict != "not measured" || c.Measured != 0 || c.Caveat != "franz-go not run (--contenders)" {
			t.Errorf("%s without franz-go: %+v", name, c)
		}
	}
	if c := targets["p99_latency"]; c.Verdict != "pass" || c.Measured != 10 {
		t.Errorf("p99 of the router, which ran: %+v", c)
	}
	if c := targets["peak_rss"]; c.Verdict != "pass" {
		t.Errorf("peak RSS of the router, which ran: %+v", c)
	}
	for _, want := range []string{"Contenders run (--contenders): router, router+audit.",
		"Router / franz-go: not measured (franz-go not run)", "Router / pass-through (kafka-go): not measured (pass-through not run)",
		"Router with the audit on / router: 0.83 (per round: 0.90, 0.80; issue 14 asks >= 0.9)"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	for _, target := range []string{"router events/s >= 0.5 x franz-go's", "router CPU per event <= 2 x franz-go's"} {
		if !slices.ContainsFunc(strings.Split(table, "\n"), func(l string) bool {
			return strings.HasPrefix(l, target) && strings.Fields(l[len(target):])[0] == "-" && strings.Contains(l, "not measured  franz-go not run (--contenders)")
		}) {
			t.Errorf("table lacks %q not measured:\n%s", target, table)
		}
	}
	for _, absent := range []string{"pass-through (kafka-go)  ", "\nfranz-go  "} {
		if strings.Contains(table, absent) {
			t.Errorf("table has a row for a contender not run (%q):\n%s", absent, table)
		}
	}
}

// TestDeriveWithoutRouter: the audit contenders without the router:
// issue 14's ratio and router+audit-b's against the router are not
// measured, every target (all the router's) neither; router+audit-b /
// router+audit still is.
func TestDeriveWithoutRouter(t *testing.T) {
	r := roundsReport(map[string][2]float64{contenderRouterAudit: {90_000, 160_000}, contenderRouterAuditB: {99_000, 160_000}, contenderFranzGo: {400_000, 400_000}})
	r.AuditCompressionB = "lz4"
	if r.AuditRatio != 0 || r.AuditRounds != nil || r.AuditRatioB != 0 || r.AuditRoundsB != nil || r.RouterToFranzGo != 0 {
		t.Errorf("ratios against the router, not run: %v %v %v %v %v", r.AuditRatio, r.AuditRounds, r.AuditRatioB, r.AuditRoundsB, r.RouterToFranzGo)
	}
	if !slices.Equal(r.AuditBToARounds, []float64{1.1, 1}) {
		t.Errorf("router+audit-b / router+audit rounds %v", r.AuditBToARounds)
	}
	for _, c := range r.Targets {
		if c.Verdict != "not measured" || c.Measured != 0 || !strings.HasPrefix(c.Caveat, "router") {
			t.Errorf("target %+v without the router", c)
		}
	}
	js, table := reportText(t, r)
	if strings.Contains(js, `"router":`) || strings.Contains(js, `"audit_ratio"`) || strings.Contains(js, `"measured"`) {
		t.Errorf("JSON: %s", js)
	}
	for _, want := range []string{"Router with the audit on / router: not measured (router not run)",
		"router+audit-b (lz4) / router: not measured (router not run); / router+audit (none): 1.04 (per round: 1.10, 1.00)",
		"router not run (--contenders)"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "Router / franz-go") || strings.Contains(table, "Router / pass-through") {
		t.Errorf("table has the router's ratios without the router:\n%s", table)
	}
}
