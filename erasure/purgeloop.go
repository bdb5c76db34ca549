package erasure

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PurgeMetrics are the Prometheus metrics of a purge loop. Labels are
// bounded: topic (the topics of the config), role (the Role values) and
// held_by (the Hold values); never an offset or a user.
type PurgeMetrics struct {
	runs     *prometheus.CounterVec
	deleted  *prometheus.CounterVec
	retained *prometheus.GaugeVec
	held     *prometheus.GaugeVec
	last     prometheus.Gauge
	seconds  prometheus.Histogram
}

// NewPurgeMetrics creates the purge metrics and registers them with reg
// (nil leaves them unregistered).
func NewPurgeMetrics(reg prometheus.Registerer) *PurgeMetrics {
	m := &PurgeMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "residency_purge_runs_total",
			Help: "Purge runs, by result (ok, incomplete, error).",
		}, []string{"result"}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "residency_purge_deleted_records_total",
			Help: "Offsets deleted from topics by purge.",
		}, []string{"topic", "role"}),
		retained: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "residency_purge_retained_records",
			Help: "Offsets still held by each topic after the last purge (high-water mark minus log start, summed over partitions).",
		}, []string{"topic", "role"}),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "residency_purge_held_partitions",
			Help: "Partitions whose purge stopped, after the last run, by what stopped it.",
		}, []string{"topic", "held_by"}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "residency_purge_last_success_timestamp_seconds",
			Help: "Unix time of the last purge run that completed.",
		}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "residency_purge_run_seconds",
			Help:    "Time to plan and run one purge.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.runs, m.deleted, m.retained, m.held, m.last, m.seconds)
	}
	return m
}

// Observe records one run: its plan (nil when it failed before planning)
// and its error.
func (m *PurgeMetrics) Observe(plan *PurgePlan, err error, took time.Duration) {
	if m == nil {
		return
	}
	m.seconds.Observe(took.Seconds())
	switch {
	case err == nil:
		m.runs.WithLabelValues("ok").Inc()
		m.last.SetToCurrentTime()
	case errors.Is(err, ErrIncomplete):
		m.runs.WithLabelValues("incomplete").Inc()
	default:
		m.runs.WithLabelValues("error").Inc()
	}
	if plan == nil {
		return
	}
	type tk struct{ topic, role string }
	retained := map[tk]int64{}
	held := map[[2]string]float64{}
	for _, pp := range plan.Partitions {
		k := tk{pp.Name, string(pp.Role)}
		after := pp.LogStart
		if pp.Deleted {
			after = max(pp.NewLogStart, pp.Before)
			m.deleted.WithLabelValues(k.topic, k.role).Add(float64(pp.Records))
		}
		retained[k] += max(pp.HighWater-after, 0)
		if pp.Before < pp.HighWater || pp.HeldBy == HoldNoCommit {
			held[[2]string{pp.Name, string(pp.HeldBy)}]++
		}
	}
	for k, v := range retained {
		m.retained.WithLabelValues(k.topic, k.role).Set(float64(v))
	}
	m.held.Reset()
	for k, v := range held {
		m.held.WithLabelValues(k[0], k[1]).Set(v)
	}
}

// ErrNotReady is what PurgeLoop.Ready wraps before the first run and
// after a run that failed.
var ErrNotReady = errors.New("erasure: purge not ready")

// PurgeLoopConfig configures a PurgeLoop.
type PurgeLoopConfig struct {
	// Every is the interval between two runs. Required (positive).
	Every time.Duration
	// Options are the choices of every run.
	Options PurgeOptions
	// Metrics records every run. Default nil: none.
	Metrics *PurgeMetrics
	// Report, if set, is given every run's plan (nil when it failed
	// before planning) and error.
	Report func(*PurgePlan, error)
}

// PurgeLoop runs a Purger as a service: a run at start and one per
// interval, until its context ends.
type PurgeLoop struct {
	p   *Purger
	cfg PurgeLoopConfig

	mu   sync.Mutex
	last error // the last run's outcome; ErrNotReady before the first
}

// NewPurgeLoop returns the service running p every cfg.Every; errors wrap
// ErrConfig.
func NewPurgeLoop(p *Purger, cfg PurgeLoopConfig) (*PurgeLoop, error) {
	if cfg.Every <= 0 {
		return nil, fmt.Errorf("%w: purge loop: the interval must be positive", ErrConfig)
	}
	if cfg.Options.MinAge < 0 {
		return nil, fmt.Errorf("%w: --min-age: must not be negative", ErrConfig)
	}
	return &PurgeLoop{p: p, cfg: cfg, last: fmt.Errorf("%w: no purge has run yet", ErrNotReady)}, nil
}

// Ready returns nil when the last run completed, else why not (wrapping
// ErrNotReady): no run yet, or the last run's error.
func (l *PurgeLoop) Ready() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Run purges every interval until ctx ends (the first run at once),
// recording each run in the metrics and handing it to Report. A failed run
// is logged and the next one comes at the next tick: the loop never stops
// on a failure. A run in hand when ctx ends is cut short (a deletion the
// broker was asked for completes there or not at all; the next run
// finishes the work). Run returns nil when ctx ends.
func (l *PurgeLoop) Run(ctx context.Context) error {
	t := time.NewTicker(l.cfg.Every)
	defer t.Stop()
	for {
		start := time.Now()
		plan, err := l.p.Run(ctx, l.cfg.Options)
		if ctx.Err() != nil {
			return nil
		}
		l.cfg.Metrics.Observe(plan, err, time.Since(start))
		l.mu.Lock()
		if err != nil {
			l.last = fmt.Errorf("%w: the last purge, at %s, failed: %w", ErrNotReady, start.UTC().Format(time.RFC3339), err)
		} else {
			l.last = nil
		}
		l.mu.Unlock()
		if err != nil {
			l.p.log.Warn("purge: run failed; trying again at the next interval", "error", err, "every", l.cfg.Every)
		} else if plan != nil {
			l.p.log.Info("purge: run done", "records", plan.Records, "leaves", plan.Leaves)
		}
		if l.cfg.Report != nil {
			l.cfg.Report(plan, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
