package router_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
)

// TestMetricsReasonsStartAtZero checks that every quarantine and dead-letter
// reason has its counter from the start, at zero, so that an alert on
// increase() sees the first event of a reason (a series that appears with
// value 1 has no increase).
func TestMetricsReasonsStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	router.NewMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					if got[mf.GetName()] == nil {
						got[mf.GetName()] = map[string]float64{}
					}
					got[mf.GetName()][l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	// Every decode error the router dead-letters (all the schemas sentinels
	// but the transient ErrRegistryUnavailable, which is retried) and every
	// error matching none of them ("corrupt").
	var deadLetter []string
	for _, err := range []error{schemas.ErrEmptyValue, schemas.ErrTooLarge, schemas.ErrBadMagic,
		schemas.ErrUnknownSchema, schemas.ErrTruncated, schemas.ErrCorrupt} {
		deadLetter = append(deadLetter, schemas.Reason(err))
	}
	want := map[string][]string{
		"residency_router_quarantined_events_total":   {router.ReasonNoCountry, router.ReasonUnknownCountry, router.ReasonNoRule},
		"residency_router_dead_lettered_events_total": deadLetter,
	}
	for name, reasons := range want {
		for _, r := range reasons {
			v, ok := got[name][r]
			if !ok {
				t.Errorf("%s{reason=%q} is not exported at start", name, r)
			} else if v != 0 {
				t.Errorf("%s{reason=%q} = %v at start, want 0", name, r, v)
			}
		}
		if len(got[name]) != len(reasons) {
			t.Errorf("%s has reasons %v at start, want exactly %v", name, got[name], reasons)
		}
	}
}
