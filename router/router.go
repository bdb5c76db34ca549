package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

// Sentinel errors of the router.
var (
	// ErrConfig: the router's Config is incomplete or inconsistent.
	ErrConfig = errors.New("router: bad config")
	// ErrNotReady: the router cannot route now (no valid ruleset, or not in
	// its consumer group yet). Ready wraps it with the reason.
	ErrNotReady = errors.New("not ready")
	// ErrGaveUp: a transient failure (publish, commit, pin lookup, schema
	// registry) lasted longer than Config.GiveUp. Nothing was committed past
	// the failure; the events will be read again after a restart.
	ErrGaveUp = errors.New("router: gave up retrying")
	// ErrRunning: Run was called while the router was already running.
	ErrRunning = errors.New("router: already running")
)

// errNoRuleset is reported when a RulesSource returns neither a ruleset nor
// an error.
var errNoRuleset = errors.New("no ruleset")

// Config configures a Router. Subscriber, Publishers, IngestCluster,
// QuarantineTopic, DeadLetterTopic, Fields and Rules are required.
type Config struct {
	// Subscriber reads the ingest topics. Required.
	Subscriber stream.Subscriber
	// Publishers holds one publisher per Kafka cluster, by cluster name (the
	// names rulesets use in regions[].cluster). Required.
	Publishers map[string]stream.Publisher
	// IngestCluster is the name of the cluster (a key of Publishers) that
	// holds the quarantine and dead-letter topics. Required.
	IngestCluster string
	// QuarantineTopic receives events that could not be placed. Required.
	QuarantineTopic string
	// DeadLetterTopic receives events that could not be decoded. Required.
	DeadLetterTopic string
	// IngestTopics are the topics the Subscriber reads. A ruleset region
	// whose pinned topic is one of them, or the quarantine or dead-letter
	// topic, on the ingest cluster would loop events back into the router or
	// mix them with unplaced ones: its events are quarantined (no_rule)
	// instead (Destinations). Default: none known (only quarantine and
	// dead-letter are checked).
	IngestTopics []string
	// Fields reads the jurisdiction inputs of an event. Required.
	Fields FieldReader
	// Rules hands out the ruleset in force. Required.
	Rules RulesSource
	// Pins looks up per-user jurisdiction pins. Default nil: no pins.
	Pins PinLookup
	// Instance names this router in the residency-router header. Default:
	// the host name.
	Instance string
	// BatchSize is the most events routed as one batch. Default 500.
	BatchSize int
	// Linger is how long a batch waits for more events after its first.
	// Default 5ms.
	Linger time.Duration
	// MaxBatchBytes bounds the key and value bytes of one batch (the router
	// holds one batch at a time). Default 16 MiB.
	MaxBatchBytes int
	// MaxValueBytes is the largest event routed, counting its key, value
	// and headers; a larger one is dead-lettered with reason too_large and
	// without its body (see HeaderOmittedBytes), so one oversized event can
	// never block its partition. Keep it at least 16 KiB below the
	// max.message.bytes of the destination topics and below the publishers'
	// request size. Default 1 MiB - 16 KiB (1032192), which fits Kafka's
	// default limits.
	MaxValueBytes int
	// RetryMin is the first backoff after a transient failure. Default 50ms.
	RetryMin time.Duration
	// RetryMax is the longest backoff between retries. Default 2s.
	RetryMax time.Duration
	// GiveUp is how long a transient failure is retried before Run fails
	// with ErrGaveUp. Default 2m.
	GiveUp time.Duration
	// RulesPoll is how often the router checks for a valid ruleset while it
	// has none. Default 100ms.
	RulesPoll time.Duration
	// ShutdownTimeout bounds how long Run, once its context is cancelled,
	// spends publishing and committing the batch in hand. Default 10s.
	ShutdownTimeout time.Duration
	// Logger receives the router's logs (never payloads or user ids).
	// Default: slog.Default().
	Logger *slog.Logger
	// Metrics receives the router's metrics. Default nil: none.
	Metrics *Metrics
}

func (c *Config) validate() error {
	var missing []string
	if c.Subscriber == nil {
		missing = append(missing, "Subscriber")
	}
	if len(c.Publishers) == 0 {
		missing = append(missing, "Publishers")
	}
	if c.IngestCluster == "" {
		missing = append(missing, "IngestCluster")
	}
	if c.QuarantineTopic == "" {
		missing = append(missing, "QuarantineTopic")
	}
	if c.DeadLetterTopic == "" {
		missing = append(missing, "DeadLetterTopic")
	}
	if c.Fields == nil {
		missing = append(missing, "Fields")
	}
	if c.Rules == nil {
		missing = append(missing, "Rules")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %v", ErrConfig, missing)
	}
	if c.BatchSize < 0 || c.Linger < 0 || c.MaxBatchBytes < 0 || c.MaxValueBytes < 0 || c.GiveUp < 0 || c.ShutdownTimeout < 0 {
		return fmt.Errorf("%w: negative size or duration", ErrConfig)
	}
	return nil
}

// Defaults of Config, shared by replay (router/replay) and the YAML config
// (internal/config), so a limit has one default wherever it is set.
const (
	// DefaultBatchSize is the default of Config.BatchSize.
	DefaultBatchSize = 500
	// DefaultLinger is the default of Config.Linger.
	DefaultLinger = 5 * time.Millisecond
	// DefaultMaxBatchBytes is the default of Config.MaxBatchBytes.
	DefaultMaxBatchBytes = 16 << 20
	// DefaultMaxValueBytes is the default of Config.MaxValueBytes: Kafka's
	// default message size limit (1 MiB) less 16 KiB for the residency
	// headers and the record batch overhead.
	DefaultMaxValueBytes = 1<<20 - 16<<10
	// DefaultRetryMin is the default of Config.RetryMin.
	DefaultRetryMin = 50 * time.Millisecond
	// DefaultRetryMax is the default of Config.RetryMax.
	DefaultRetryMax = 2 * time.Second
	// DefaultGiveUp is the default of Config.GiveUp.
	DefaultGiveUp = 2 * time.Minute
	// DefaultRulesPoll is the default of Config.RulesPoll.
	DefaultRulesPoll = 100 * time.Millisecond
	// DefaultShutdownTimeout is the default of Config.ShutdownTimeout.
	DefaultShutdownTimeout = 10 * time.Second
)

// defaults fills in every unset field: the one defaults table of Config.
func (c *Config) defaults() {
	c.Instance = cmp.Or(c.Instance, hostname())
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	c.Linger = cmp.Or(c.Linger, DefaultLinger)
	c.MaxBatchBytes = cmp.Or(c.MaxBatchBytes, DefaultMaxBatchBytes)
	c.MaxValueBytes = cmp.Or(c.MaxValueBytes, DefaultMaxValueBytes)
	c.RetryMin = cmp.Or(c.RetryMin, DefaultRetryMin)
	c.RetryMax = cmp.Or(c.RetryMax, DefaultRetryMax)
	c.GiveUp = cmp.Or(c.GiveUp, DefaultGiveUp)
	c.RulesPoll = cmp.Or(c.RulesPoll, DefaultRulesPoll)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	c.Logger = cmp.Or(c.Logger, slog.Default())
}

// hostname is the host name, or "router" when it cannot be read: the
// default router instance name.
func hostname() string {
	h, _ := os.Hostname()
	return cmp.Or(h, "router")
}

// Router consumes the ingest topics and routes every event. Create it with
// New and run it with Run.
type Router struct {
	cfg     Config
	log     *slog.Logger
	retry   stream.Retry
	pipe    *Pipeline // decides and publishes every batch
	running atomic.Bool

	notReady atomic.Pointer[string] // why the router cannot route; nil when it can
	lags     map[topicPartition]lagEntry
}

type topicPartition struct {
	topic     string
	partition int
}

// New checks cfg, fills in defaults and returns a router.
func New(cfg Config) (*Router, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	r := &Router{cfg: cfg, log: cfg.Logger, lags: map[topicPartition]lagEntry{}}
	r.retry = stream.Retry{Min: cfg.RetryMin, Max: cfg.RetryMax, GiveUp: cfg.GiveUp, GaveUp: ErrGaveUp, Component: "router",
		Logger: r.log, OnRetry: cfg.Metrics.retry}
	var err error
	if r.pipe, err = NewPipeline(PipelineConfig{Publishers: cfg.Publishers, IngestCluster: cfg.IngestCluster,
		QuarantineTopic: cfg.QuarantineTopic, DeadLetterTopic: cfg.DeadLetterTopic, Reserved: cfg.IngestTopics,
		Fields: cfg.Fields, Pins: cfg.Pins, Instance: cfg.Instance, MaxValueBytes: cfg.MaxValueBytes, Retry: r.retry,
		Logger: r.log}); err != nil {
		return nil, err
	}
	why := "not started"
	r.notReady.Store(&why)
	return r, nil
}

// Ready returns nil when the router has a valid ruleset and has joined its
// consumer group, or an error wrapping ErrNotReady that says why not.
func (r *Router) Ready() error {
	if why := r.notReady.Load(); why != nil {
		return fmt.Errorf("%w: %s", ErrNotReady, *why)
	}
	if rs, err := r.cfg.Rules.Current(); err != nil || rs == nil {
		return fmt.Errorf("%w: ruleset: %v", ErrNotReady, cmp.Or(err, errNoRuleset))
	}
	if gm, ok := r.cfg.Subscriber.(stream.GroupMember); ok && !gm.Joined() {
		return fmt.Errorf("%w: not yet in the consumer group", ErrNotReady)
	}
	return nil
}

func (r *Router) setNotReady(why string) {
	if old := r.notReady.Load(); old == nil || *old != why {
		r.log.Warn("router not ready: not consuming", "reason", why)
	}
	r.notReady.Store(&why)
	r.cfg.Metrics.setReady(false)
}

func (r *Router) setReady() {
	if r.notReady.Swap(nil) != nil {
		r.log.Info("router ready: consuming")
	}
	r.cfg.Metrics.setReady(true)
}

// Run routes events until ctx is cancelled, then finishes the batch in hand
// (publish and commit, within Config.ShutdownTimeout) and returns nil. It
// returns an error when the subscriber fails or a transient failure outlasts
// Config.GiveUp; offsets are never committed past an event that was not
// acknowledged at its destination.
func (r *Router) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)
	// work is the context for publishing and committing: it outlives ctx by
	// ShutdownTimeout so the batch in hand can be finished.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.cfg.ShutdownTimeout, cancelWork)
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer stop()

	for {
		if ctx.Err() != nil {
			return nil
		}
		if _, ok := r.waitRules(ctx); !ok {
			return nil
		}
		batch, err := r.collect(ctx)
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			continue // ctx done before the first event
		}
		// Batch boundary: take the freshest ruleset. If it went away while
		// the batch was fetched, hold the batch (uncommitted) until it is
		// back; on shutdown without rules, leave it unrouted and uncommitted.
		rs, ok := r.waitRules(ctx)
		if !ok {
			r.log.Info("shutting down with an unrouted batch; it will be read again", "events", len(batch))
			return nil
		}
		start := time.Now()
		if err := r.route(work, batch, rs); err != nil {
			return err
		}
		if m := r.cfg.Metrics; m != nil {
			m.batchSeconds.Observe(time.Since(start).Seconds())
			m.batchEvents.Observe(float64(len(batch)))
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// waitRules returns the ruleset in force, waiting (not ready, not consuming)
// while there is none. ok is false when ctx ended before there was one.
func (r *Router) waitRules(ctx context.Context) (*rules.Ruleset, bool) {
	for {
		rs, err := r.cfg.Rules.Current()
		if err == nil && rs == nil {
			err = errNoRuleset
		}
		if err == nil {
			r.setReady()
			r.cfg.Metrics.setRuleset(rs.Version())
			return rs, true
		}
		r.setNotReady("ruleset: " + err.Error())
		select {
		case <-ctx.Done():
			return nil, false
		case <-time.After(r.cfg.RulesPoll):
		}
	}
}

// collect fetches one batch: it waits for the first event, then for more
// until BatchSize, MaxBatchBytes or Linger is reached. It returns an empty
// batch when no event came within RulesPoll, so the caller re-checks the
// ruleset while the ingest topics are idle.
func (r *Router) collect(ctx context.Context) ([]stream.Message, error) {
	fctx, cancelFirst := context.WithTimeout(ctx, max(r.cfg.RulesPoll, 100*time.Millisecond))
	first, err := r.cfg.Subscriber.Fetch(fctx)
	cancelFirst()
	if err != nil {
		if fctx.Err() != nil {
			return nil, nil
		}
		return nil, fmt.Errorf("router: fetch: %w", err)
	}
	batch := make([]stream.Message, 1, r.cfg.BatchSize)
	batch[0] = first
	size := len(first.Key) + len(first.Value)
	if len(batch) >= r.cfg.BatchSize || size >= r.cfg.MaxBatchBytes {
		return batch, nil
	}
	lctx, cancel := context.WithTimeout(ctx, r.cfg.Linger)
	defer cancel()
	for len(batch) < r.cfg.BatchSize && size < r.cfg.MaxBatchBytes {
		m, err := r.cfg.Subscriber.Fetch(lctx)
		if err != nil {
			if lctx.Err() != nil {
				break
			}
			return nil, fmt.Errorf("router: fetch: %w", err)
		}
		batch = append(batch, m)
		size += len(m.Key) + len(m.Value)
	}
	return batch, nil
}

// route decides, publishes and commits one batch.
func (r *Router) route(ctx context.Context, batch []stream.Message, rs *rules.Ruleset) error {
	b, err := r.pipe.Decide(ctx, batch, rs)
	if err != nil {
		return err
	}
	if err := r.pipe.Publish(ctx, b); err != nil {
		return err
	}
	if err := r.retry.Do(ctx, "commit", func(ctx context.Context) error {
		return r.cfg.Subscriber.Commit(ctx, batch...)
	}); err != nil {
		return err
	}
	r.observe(batch, b.Events)
	return nil
}

// observe updates the metrics for a batch that has been committed.
func (r *Router) observe(batch []stream.Message, out []Event) {
	m := r.cfg.Metrics
	if m == nil {
		return
	}
	now := time.Now()
	for i := range batch {
		d := &out[i].Decision
		switch d.Outcome {
		case Routed:
			m.routed.WithLabelValues(d.Region, d.Jurisdiction).Inc()
		case Quarantined:
			m.quarantined.WithLabelValues(d.Reason).Inc()
		case DeadLettered:
			m.deadLettered.WithLabelValues(d.Reason).Inc()
		}
		if !batch[i].Time.IsZero() {
			m.endToEnd.Observe(now.Sub(batch[i].Time).Seconds())
		}
		if hw := batch[i].HighWaterMark; hw > 0 {
			r.lags[topicPartition{batch[i].Topic, batch[i].Partition}] = lagEntry{lag: max(hw-batch[i].Offset-1, 0), at: now}
		}
	}
	for topic, l := range sumLags(r.lags, now, lagExpiry) {
		m.lag.WithLabelValues(topic).Set(float64(l))
	}
}

// lagEntry is a partition's consumer lag as of a batch.
type lagEntry struct {
	lag int64
	at  time.Time
}

// lagExpiry is how long a partition's lag counts without a new batch from
// it. A partition this router still owns and that has events is read far
// more often; one it lost in a rebalance stops counting here (its new owner
// reports it) instead of being summed by two routers.
const lagExpiry = 30 * time.Second

// sumLags drops entries older than expiry and sums the rest per topic. A
// topic whose partitions all expired reports 0.
func sumLags(lags map[topicPartition]lagEntry, now time.Time, expiry time.Duration) map[string]int64 {
	sums := map[string]int64{}
	for tp, e := range lags {
		if now.Sub(e.at) > expiry {
			delete(lags, tp)
			if _, seen := sums[tp.topic]; !seen {
				sums[tp.topic] = 0 // reset the gauge rather than leave the last value
			}
			continue
		}
		sums[tp.topic] += e.lag
	}
	return sums
}
