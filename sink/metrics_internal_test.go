package sink

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsReasonsStartAtZero checks that the refusal counter of every
// quarantine reason is exported from the start, at zero, so that an alert on
// increase() sees the first refusal of a reason.
func TestMetricsReasonsStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg, "us-postgres"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "residency_sink_quarantined_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					got[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	want := reasons
	if len(want) != 11 {
		t.Fatalf("the sink has %d refusal reasons, this test knows 11: update it", len(want))
	}
	for _, r := range want {
		if v, ok := got[r]; !ok || v != 0 {
			t.Errorf("residency_sink_quarantined_events_total{reason=%q} at start: %v (exported: %v), want 0", r, v, ok)
		}
	}
	if len(got) != len(want) {
		t.Errorf("reasons at start %v, want exactly %v", got, want)
	}
	// Events refused because their user was erased are not quarantined:
	// they have their own counter, exported at zero from the start.
	erased := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "residency_sink_erased_events_total" && len(mf.GetMetric()) == 1 {
			erased = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if erased != 0 {
		t.Errorf("residency_sink_erased_events_total at start: %v, want 0 (-1: not exported)", erased)
	}
	if slices.Contains(reasons, ReasonErased) {
		t.Errorf("%s is a quarantine reason: erased users' events are never quarantined", ReasonErased)
	}
}
