package sink

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the sink's Prometheus metrics. Labels are bounded: store (one
// per process), region (only regions the store is approved for), reason (the
// Reason constants) and op.
type metrics struct {
	written      *prometheus.CounterVec
	quarantined  *prometheus.CounterVec
	erased       prometheus.Counter
	retries      *prometheus.CounterVec
	batchSeconds prometheus.Observer
	batchEvents  prometheus.Observer
	ready        prometheus.Gauge
	approved     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, store string) (*metrics, error) {
	constLabels := prometheus.Labels{"store": store}
	written := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "residency_sink_written_events_total",
		Help:        "Events the store accepted, by region (an event redelivered in a later batch counts again; the store keeps one copy).",
		ConstLabels: constLabels,
	}, []string{"region"})
	quarantined := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "residency_sink_quarantined_events_total",
		Help:        "Events the sink sent to its quarantine topic instead of the store, by reason.",
		ConstLabels: constLabels,
	}, []string{"reason"})
	for _, r := range reasons {
		quarantined.WithLabelValues(r)
	}
	erased := prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "residency_sink_erased_events_total",
		Help:        "Events neither written nor quarantined because their user was erased after they occurred (reason sink_erased).",
		ConstLabels: constLabels,
	})
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "residency_sink_retries_total",
		Help:        "Retries of failed operations, by operation (fetch, decode, rules, pins, write, quarantine, ledger, commit).",
		ConstLabels: constLabels,
	}, []string{"op"})
	for _, op := range []string{"fetch", "decode", "rules", "pins", "write", "quarantine", "ledger", "commit"} {
		retries.WithLabelValues(op)
	}
	batchSeconds := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:        "residency_sink_batch_seconds",
		Help:        "Time to write, quarantine and commit one batch, retries included.",
		ConstLabels: constLabels,
		Buckets:     prometheus.ExponentialBuckets(0.0005, 2, 18),
	})
	batchEvents := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:        "residency_sink_batch_events",
		Help:        "Events per batch.",
		ConstLabels: constLabels,
		Buckets:     prometheus.ExponentialBuckets(1, 2, 14),
	})
	ready := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "residency_sink_ready",
		Help:        "1 when the sink is approved, its store accepts writes and it has joined its group.",
		ConstLabels: constLabels,
	})
	approved := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "residency_sink_approved",
		Help:        "1 when the ruleset in force approves the store for the sink's region, 0 while writing is stopped.",
		ConstLabels: constLabels,
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{written, quarantined, erased, retries, batchSeconds, batchEvents, ready, approved} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("sink: registering metrics: %w", err)
			}
		}
	}
	return &metrics{written: written, quarantined: quarantined, erased: erased, retries: retries,
		batchSeconds: batchSeconds, batchEvents: batchEvents, ready: ready, approved: approved}, nil
}
