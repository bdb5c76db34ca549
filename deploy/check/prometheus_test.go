package check

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

var (
	alertsFile    = filepath.Join(root, "deploy", "prometheus", "alerts.yaml")
	dashboardFile = filepath.Join(root, "deploy", "grafana", "residency.json")
	promql        = parser.NewParser(parser.Options{})
)

// metricNames returns the metric names the PromQL expression expr selects.
func metricNames(expr string) ([]string, error) {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			if name == "" {
				err = fmt.Errorf("%s: a selector without a metric name", vs)
			}
			names = append(names, name)
		}
		return nil
	})
	return names, err
}

// alertRules parses deploy/prometheus/alerts.yaml with Prometheus's own
// rule-file parser (unknown fields refused; every expression and template
// checked) and returns every alert's name and expression.
func alertRules(t *testing.T) map[string]rulefmt.Rule {
	t.Helper()
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("alerts.yaml: %v", err)
	}
	if groups == nil {
		t.FailNow()
	}
	rules := map[string]rulefmt.Rule{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a recording rule %q: this file holds alerts only", g.Name, r.Record)
				continue
			}
			if _, dup := rules[r.Alert]; dup {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			rules[r.Alert] = r
		}
	}
	return rules
}

// TestAlertRules checks the alert rules: they parse (rulefmt and the PromQL
// parser), every alert has a severity (critical or warning), a summary, a
// description, and a runbook that is a section of docs/operations.md named
// after it.
func TestAlertRules(t *testing.T) {
	rules := alertRules(t)
	ops, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range rules {
		if _, err := metricNames(r.Expr); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", name, s)
		}
		for _, a := range []string{"summary", "description", "runbook"} {
			if r.Annotations[a] == "" {
				t.Errorf("%s: no %s annotation", name, a)
			}
		}
		if want := "docs/operations.md#" + strings.ToLower(name); r.Annotations["runbook"] != want {
			t.Errorf("%s: runbook %q, want %q", name, r.Annotations["runbook"], want)
		}
		if !bytes.Contains(ops, []byte("\n### "+name+"\n")) {
			t.Errorf("%s: docs/operations.md has no section `### %s`", name, name)
		}
	}
	t.Logf("%d alerts", len(rules))
}

// dashboard is the part of a Grafana dashboard model checked here.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// grafanaVar matches Grafana's variables in a query: $__rate_interval,
// $namespace, ${namespace}.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// promqlOfGrafana turns a panel's query into PromQL: interval variables
// become 5m, the others (all used in label matchers) ".*".
func promqlOfGrafana(q string) string {
	return grafanaVar.ReplaceAllStringFunc(q, func(v string) string {
		if strings.HasPrefix(strings.Trim(v, "${}"), "__") {
			return "5m"
		}
		return ".*"
	})
}

// dashboardQueries parses deploy/grafana/residency.json and returns each
// panel's queries (PromQL, variables substituted) by panel title, and the
// metrics the template variables query.
func dashboardQueries(t *testing.T) (map[string][]string, []string) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("residency.json: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("residency.json: uid and title are required")
	}
	queries := map[string][]string{}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if !bytes.Contains(p.Datasource, []byte(`"${datasource}"`)) {
				t.Errorf("panel %q: datasource %s, want the ${datasource} variable", p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				queries[p.Title] = append(queries[p.Title], promqlOfGrafana(tg.Expr))
			}
		}
	}
	walk(d.Panels)
	var varMetrics []string
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		if m := regexp.MustCompile(`label_values\((\w+),`).FindSubmatch(v.Query); m != nil {
			varMetrics = append(varMetrics, string(m[1]))
		} else {
			t.Errorf("variable %s: query %s is not label_values(METRIC, LABEL)", v.Name, v.Query)
		}
	}
	return queries, varMetrics
}

// TestDashboard checks the Grafana dashboard: it parses, every query is
// valid PromQL, and it shows what stream ops need: routed events per region,
// quarantined and dead-lettered per reason, consumer lag, end-to-end latency
// p50 and p99, ruleset version and age, router and sink readiness, sink
// writes and refusals per reason.
func TestDashboard(t *testing.T) {
	queries, _ := dashboardQueries(t)
	var all []string
	for title, qs := range queries {
		for _, q := range qs {
			if _, err := metricNames(q); err != nil {
				t.Errorf("panel %q: %s: %v", title, q, err)
			}
			all = append(all, q)
		}
	}
	text := strings.Join(all, "\n")
	for _, want := range []string{
		`sum by (region) (rate(residency_router_routed_events_total`,
		`sum by (reason) (rate(residency_router_quarantined_events_total`,
		`sum by (reason) (rate(residency_router_dead_lettered_events_total`,
		`residency_router_consumer_lag`,
		`histogram_quantile(0.5, sum by (le) (rate(residency_router_end_to_end_seconds_bucket`,
		`histogram_quantile(0.99, sum by (le) (rate(residency_router_end_to_end_seconds_bucket`,
		`residency_router_ruleset_version`,
		`residency_router_ruleset_age_seconds`,
		`residency_router_ready`,
		`residency_sink_ready`,
		`(rate(residency_sink_written_events_total`,
		`sum by (store, reason) (rate(residency_sink_quarantined_events_total`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no panel queries %s", want)
		}
	}
	t.Logf("%d panels with queries", len(queries))
}

// namedMetrics returns every metric the alert rules and the dashboard
// name, with where each is named.
func namedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	named := map[string][]string{}
	for name, r := range alertRules(t) {
		ms, err := metricNames(r.Expr)
		if err != nil {
			t.Fatalf("alert %s: %v", name, err)
		}
		for _, m := range ms {
			named[m] = append(named[m], "alert "+name)
		}
	}
	queries, varMetrics := dashboardQueries(t)
	for title, qs := range queries {
		for _, q := range qs {
			ms, err := metricNames(q)
			if err != nil {
				t.Fatalf("panel %q: %v", title, err)
			}
			for _, m := range ms {
				named[m] = append(named[m], "panel "+title)
			}
		}
	}
	for _, m := range varMetrics {
		named[m] = append(named[m], "dashboard variable")
	}
	for m := range named {
		slices.Sort(named[m])
		named[m] = slices.Compact(named[m])
	}
	return named
}

// checkNamedAreExported fails for every metric the alerts or the dashboard
// name that is not in exported (the sample names the binaries served:
// histograms as _bucket, _sum and _count).
func checkNamedAreExported(t *testing.T, exported map[string]bool) {
	t.Helper()
	named := namedMetrics(t)
	var names []string
	for m := range named {
		names = append(names, m)
	}
	sort.Strings(names)
	for _, m := range names {
		if !exported[m] {
			t.Errorf("%s is named by %s but neither the router nor a sink exports it", m, strings.Join(named[m], ", "))
		}
	}
	t.Logf("%d metrics named by the alerts and the dashboard, all checked against the running binaries", len(names))
}
