package router

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/schemas"
)

// quarantineReasons and deadLetterReasons are every value the reason label
// of the quarantined and dead-lettered counters takes. Their counters are
// exported from the start, at zero, so increase() over them sees the first
// event of a reason.
var (
	quarantineReasons = []string{ReasonNoCountry, ReasonUnknownCountry, ReasonNoRule}
	deadLetterReasons = []string{
		schemas.Reason(schemas.ErrEmptyValue), schemas.Reason(schemas.ErrTooLarge),
		schemas.Reason(schemas.ErrBadMagic), schemas.Reason(schemas.ErrUnknownSchema),
		schemas.Reason(schemas.ErrTruncated), schemas.Reason(schemas.ErrCorrupt),
	}
)

// Metrics are the router's Prometheus metrics. Labels are bounded: region,
// jurisdiction, reason and ingest topic, never user, key or offset.
type Metrics struct {
	routed       *prometheus.CounterVec
	quarantined  *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	retries      *prometheus.CounterVec
	batchSeconds prometheus.Histogram
	batchEvents  prometheus.Histogram
	endToEnd     prometheus.Histogram
	lag          *prometheus.GaugeVec
	version      prometheus.Gauge
	ready        prometheus.Gauge
	regionReady  *prometheus.GaugeVec
	backlog      *prometheus.GaugeVec
	revoked      prometheus.Counter
	fullWait     *prometheus.CounterVec

	mu       sync.Mutex
	seenVer  int64
	seenAt   time.Time
	hasRules bool
}

// NewMetrics creates the router metrics and registers them with reg (which
// may be nil to leave them unregistered, e.g. in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "residency_router_routed_events_total",
			Help: "Events written to a region's pinned topic.",
		}, []string{"region", "jurisdiction"}),
		quarantined: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "residency_router_quarantined_events_total",
			Help: "Events written to the quarantine topic, by reason.",
		}, []string{"reason"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "residency_router_dead_lettered_events_total",
			Help: "Events written to the dead-letter topic, by reason.",
		}, []string{"reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "residency_router_retries_total",
			Help: "Retries of transient failures, by operation.",
		}, []string{"op"}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "residency_router_batch_seconds",
			Help:    "Time to route, publish and commit one batch.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		batchEvents: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "residency_router_batch_events",
			Help:    "Events per batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		endToEnd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "residency_router_end_to_end_seconds",
			Help:    "Time from the event's ingest timestamp to its acknowledgement at its destination.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "residency_router_consumer_lag",
			Help: "Events behind the high-water mark, summed over the partitions this router last read, per ingest topic.",
		}, []string{"topic"}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "residency_router_ruleset_version",
			Help: "Version of the ruleset in force (0 for a ruleset read from a file).",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "residency_router_ready",
			Help: "1 when the router routes every region (the same state as /readyz).",
		}),
		regionReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "residency_router_region_ready",
			Help: "1 when the region's cluster acknowledges records and its pinned topic exists.",
		}, []string{"region"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "residency_router_backlog_events",
			Help: "Records handed to a destination cluster's sender and not yet acknowledged.",
		}, []string{"cluster"}),
		revoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "residency_router_revoked_inflight_events_total",
			Help: "Events in flight when their partitions were given up (read again by the next owner).",
		}),
		fullWait: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "residency_router_window_full_seconds_total",
			Help: "Seconds the fetch stage waited for room in the window instead of fetching, by the bound reached: " +
				"inflight (events or bytes not yet acknowledged at their destination) or uncommitted (settled events awaiting their commit).",
		}, []string{"reason"}),
	}
	for _, r := range []string{fullInflight, fullUncommitted} {
		m.fullWait.WithLabelValues(r)
	}
	for _, r := range quarantineReasons {
		m.quarantined.WithLabelValues(r)
	}
	for _, r := range deadLetterReasons {
		m.deadLettered.WithLabelValues(r)
	}
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "residency_router_ruleset_age_seconds",
		Help: "Seconds since this router first used the ruleset version in force.",
	}, m.rulesetAge)
	if reg != nil {
		reg.MustRegister(m.routed, m.quarantined, m.deadLettered, m.retries, m.batchSeconds,
			m.batchEvents, m.endToEnd, m.lag, m.version, m.ready, m.regionReady, m.backlog, m.revoked, m.fullWait, age)
	}
	return m
}

func (m *Metrics) rulesetAge() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.hasRules {
		return 0
	}
	return time.Since(m.seenAt).Seconds()
}

func (m *Metrics) setRuleset(v int64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	if !m.hasRules || v != m.seenVer {
		m.hasRules, m.seenVer, m.seenAt = true, v, time.Now()
		m.version.Set(float64(v))
	}
	m.mu.Unlock()
}

func (m *Metrics) setReady(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.ready.Set(1)
	} else {
		m.ready.Set(0)
	}
}

func (m *Metrics) retry(op string) {
	if m != nil {
		m.retries.WithLabelValues(op).Inc()
	}
}

func (m *Metrics) setRegionReady(region string, ok bool) {
	if m == nil {
		return
	}
	v := 0.0
	if ok {
		v = 1
	}
	m.regionReady.WithLabelValues(region).Set(v)
}

func (m *Metrics) setBacklog(cluster string, n int) {
	if m != nil {
		m.backlog.WithLabelValues(cluster).Set(float64(n))
	}
}

// committed observes the events of one commit (residency_router_batch_events).
func (m *Metrics) committed(n int) {
	if m == nil || n == 0 {
		return
	}
	m.batchEvents.Observe(float64(n))
}

func (m *Metrics) revokedInflight(n int) {
	if m != nil {
		m.revoked.Add(float64(n))
	}
}

// windowFull adds d to the time the fetch stage waited for room, reason
// saying which bound was reached.
func (m *Metrics) windowFull(reason string, d time.Duration) {
	if m != nil {
		m.fullWait.WithLabelValues(reason).Add(d.Seconds())
	}
}
