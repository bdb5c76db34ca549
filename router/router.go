package router

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/residency-router/residency/stream"
)

// Sentinel errors of the router.
var (
	// ErrConfig: the router's Config is incomplete or inconsistent.
	ErrConfig = errors.New("router: bad config")
	// ErrNotReady: the router cannot route now (no valid ruleset, or not in
	// its consumer group yet). Ready wraps it with the reason.
	ErrNotReady = errors.New("not ready")
	// ErrGaveUp: a transient failure lasted longer than the retry policy's
	// give-up (replay, and the Pipeline's synchronous Publish). The router's
	// loop never returns it: it reports the failure as not-ready and keeps
	// retrying.
	ErrGaveUp = errors.New("router: gave up retrying")
	// ErrUncommitted: Run stopped (its context ended) with events read and
	// not committed: not acknowledged at their destination within
	// Config.ShutdownTimeout, or never routed for want of a ruleset. They
	// are read again by the next owner of their partitions (duplicates,
	// never a loss). `residency route` exits 3 for it.
	ErrUncommitted = errors.New("router: stopped with events uncommitted")
	// ErrRunning: Run was called while the router was running, or after
	// it returned (a Router runs once; make a new one to route again).
	ErrRunning = errors.New("router: already running")
)

// Config configures a Router. Consumer (or Subscriber), Producers (or
// Publishers), IngestCluster, QuarantineTopic, DeadLetterTopic, Fields and
// Rules are required.
type Config struct {
	// Consumer reads the ingest topics in batches (connectors/kafka's
	// Consumer through its router adapter); its revoke hook must call
	// Router.Revoked. Required unless Subscriber is set.
	Consumer BatchConsumer
	// Subscriber reads the ingest topics one record at a time, when
	// Consumer is nil (tests, embedded stacks): the router polls it in
	// batches of BatchSize records, waiting Linger for more after the
	// first.
	Subscriber stream.Subscriber
	// Producers holds one asynchronous producer per Kafka cluster, by
	// cluster name (the names rulesets use in regions[].cluster).
	// Required unless Publishers is set.
	Producers map[string]AsyncProducer
	// Publishers holds one synchronous publisher per Kafka cluster, used
	// (one Publish at a time per cluster, retried until acknowledged) for
	// the clusters Producers lacks.
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
	// Pins looks up per-user jurisdiction pins. When it is also a
	// PinSource (rules.Pins is), the router takes one in-memory view of
	// the pin set per batch, without a round trip, and stops fetching
	// while there is no valid one; otherwise it calls Lookup once per
	// batch. Default nil: no pins.
	Pins PinLookup
	// Ledger makes the audit record of settled events durable before
	// their offsets are committed. Default nil: audit off.
	Ledger Ledger
	// Attester, when set, attests every record the router writes (pinned,
	// quarantine and dead-letter alike) in the HeaderAttestation header.
	// Default nil: no attestation. With the audit on, set both Ledger and
	// Attester.
	Attester Attester
	// MaxInflightEvents bounds the events between poll and settlement (an
	// event settles when it and every earlier event of its partition are
	// acknowledged by their destinations); fetching waits while it is
	// reached. Default 10000.
	MaxInflightEvents int
	// MaxInflightBytes bounds the key, value and header bytes of the events
	// between poll and settlement; fetching waits while it is reached (one
	// batch may overshoot it by up to MaxBatchBytes). Default 16 MiB.
	MaxInflightBytes int
	// MaxUncommittedEvents bounds the settled events whose offsets are not
	// committed yet; fetching waits while it is reached (it may be passed
	// by up to MaxInflightEvents), and the committer commits early once
	// half of it is reached. Default 40000.
	MaxUncommittedEvents int
	// MaxUncommittedBytes bounds the encoded audit leaves (with a Ledger)
	// of the settled events not committed yet, as MaxUncommittedEvents
	// bounds their number. Default 16 MiB.
	MaxUncommittedBytes int
	// CommitInterval is how often settled offsets are recorded and
	// committed (also when the settled backlog passes half its bound,
	// whenever fetching waits for room, and at revoke and shutdown).
	// Default 100ms.
	CommitInterval time.Duration
	// Instance names this router in the residency-router header. Default:
	// the host name.
	Instance string
	// BatchSize is the most events routed as one batch. Default 500.
	BatchSize int
	// Linger is how long a batch waits for more events after its first.
	// Default 5ms.
	Linger time.Duration
	// MaxBatchBytes bounds the key and value bytes of one batch read from
	// a Subscriber. Default 16 MiB.
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
	// GiveUp is how long a destination cluster may leave records
	// unacknowledged before its regions are reported down (not ready,
	// logged once); the router keeps retrying and never exits for it.
	// Default 2m.
	GiveUp time.Duration
	// RulesPoll is how often the router checks for a valid ruleset while it
	// has none. Default 100ms.
	RulesPoll time.Duration
	// ShutdownTimeout bounds how long Run, once its context is cancelled,
	// waits for the records in flight to be acknowledged before it records
	// and commits what settled (and returns ErrUncommitted if anything is
	// left). Default 10s.
	ShutdownTimeout time.Duration
	// Logger receives the router's logs (never payloads or user ids).
	// Default: slog.Default().
	Logger *slog.Logger
	// Metrics receives the router's metrics. Default nil: none.
	Metrics *Metrics
}

func (c *Config) validate() error {
	var missing []string
	if c.Consumer == nil && c.Subscriber == nil {
		missing = append(missing, "Consumer")
	}
	if len(c.Producers) == 0 && len(c.Publishers) == 0 {
		missing = append(missing, "Producers")
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
	if c.BatchSize < 0 || c.Linger < 0 || c.MaxBatchBytes < 0 || c.MaxValueBytes < 0 || c.GiveUp < 0 || c.ShutdownTimeout < 0 ||
		c.MaxInflightEvents < 0 || c.MaxInflightBytes < 0 || c.CommitInterval < 0 || c.MaxUncommittedEvents < 0 ||
		c.MaxUncommittedBytes < 0 {
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
	// DefaultMaxInflightEvents is the default of Config.MaxInflightEvents.
	DefaultMaxInflightEvents = 10000
	// DefaultMaxInflightBytes is the default of Config.MaxInflightBytes.
	DefaultMaxInflightBytes = 16 << 20
	// DefaultMaxUncommittedEvents is the default of
	// Config.MaxUncommittedEvents: four default windows.
	DefaultMaxUncommittedEvents = 40000
	// DefaultMaxUncommittedBytes is the default of
	// Config.MaxUncommittedBytes.
	DefaultMaxUncommittedBytes = 16 << 20
	// DefaultCommitInterval is the default of Config.CommitInterval.
	DefaultCommitInterval = 100 * time.Millisecond
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
	c.MaxInflightEvents = cmp.Or(c.MaxInflightEvents, DefaultMaxInflightEvents)
	c.MaxInflightBytes = cmp.Or(c.MaxInflightBytes, DefaultMaxInflightBytes)
	c.MaxUncommittedEvents = cmp.Or(c.MaxUncommittedEvents, DefaultMaxUncommittedEvents)
	c.MaxUncommittedBytes = cmp.Or(c.MaxUncommittedBytes, DefaultMaxUncommittedBytes)
	c.CommitInterval = cmp.Or(c.CommitInterval, DefaultCommitInterval)
	c.Logger = cmp.Or(c.Logger, slog.Default())
}

// hostname is the host name, or "router" when it cannot be read: the
// default router instance name.
func hostname() string {
	h, _ := os.Hostname()
	return cmp.Or(h, "router")
}

// lagEntry is a partition's consumer lag as of a batch.
type lagEntry struct {
	offset int64 // the highest offset acknowledged
	hw     int64 // the highest high-water mark its fetches saw
	at     time.Time
}

// lag is the events of the partition after its highest acknowledged one.
func (e lagEntry) lag() int64 { return max(e.hw-e.offset-1, 0) }

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
		sums[tp.topic] += e.lag()
	}
	return sums
}
