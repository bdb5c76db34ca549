package sink

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/router"
)

// Sentinel errors callers branch on (errors.Is).
var (
	// ErrNotApproved: the ruleset in force does not approve the store for
	// the sink's region, the region is not defined, or the consumed topic is
	// not the region's pinned topic. The message names the store, the region
	// and the ruleset version. Run returns it at start; afterwards Ready
	// reports it while writing is stopped.
	ErrNotApproved = errors.New("store not approved for region")
	// ErrNoRuleset: no valid ruleset is available (none loaded, stale,
	// corrupt). Run returns it at start; afterwards Ready reports it while
	// writing is stopped.
	ErrNoRuleset = errors.New("no valid ruleset")
	// ErrConfig: the configuration is invalid; the message names the field.
	ErrConfig = errors.New("sink: bad config")
	// ErrNotReady is wrapped by Ready's errors before Run started, while
	// the store fails, or while the subscriber has not joined its group.
	ErrNotReady = errors.New("sink not ready")
)

// Quarantine reasons, the values of the residency-reason header the sink
// sets and of the "reason" metric label, in the order they are checked.
// Every quarantined event also gets a residency-error header saying what
// exactly was wrong (never payload).
const (
	// ReasonNoRegion: the event has no residency-region header.
	ReasonNoRegion = "sink_no_region"
	// ReasonNoJurisdiction: the event has no residency-jurisdiction header.
	ReasonNoJurisdiction = "sink_no_jurisdiction"
	// ReasonNoSchemaHeader: the event has no residency-schema header, or
	// one that is not a writer schema reference (schemas.WriterRef): the
	// sink does not know how the event was read, and never guesses.
	ReasonNoSchemaHeader = "sink_no_schema_header"
	// ReasonUnknownSchema: the writer schema the residency-schema header
	// names is not known to this sink (a fingerprint neither embedded, in
	// the catalogue nor a raw schema; a registry id the registry does not
	// have, or no registry). A registry that cannot be reached is retried,
	// not quarantined.
	ReasonUnknownSchema = "sink_unknown_schema"
	// ReasonUndecodable: the value does not decode the way its
	// residency-schema header says (corrupt or cut short, trailing bytes,
	// or framing bytes that disagree with the header).
	ReasonUndecodable = "sink_undecodable"
	// ReasonMissingField: the decoded event lacks event_id or occurred_at.
	ReasonMissingField = "sink_missing_field"
	// ReasonUnknownRuleset: the residency-ruleset-version header is
	// missing, is not a version number, or names a version the sink cannot
	// load (not found, corrupt). A rules store that cannot be reached is
	// retried, not quarantined.
	ReasonUnknownRuleset = "sink_unknown_ruleset"
	// ReasonContentMismatch: the event's own fields (country, user id and
	// the user's pin) do not give, under the ruleset version that placed
	// it, the jurisdiction, region and decided-by its headers claim: the
	// router did not write it this way (forged, or written into the pinned
	// topic by something else). See CheckContent.
	ReasonContentMismatch = "sink_content_mismatch"
	// ReasonRegionNotApproved: the event's region is not one the store is
	// approved for under the ruleset in force.
	ReasonRegionNotApproved = "sink_region_not_approved"
	// ReasonRegionMoved: the event was placed right under the ruleset that
	// placed it, but under the ruleset in force (and its user's pin now) it
	// belongs to another region, or to none: its jurisdiction moved, its
	// country moved to another jurisdiction, or its user was pinned or
	// unpinned since. Replay routes it to where it now belongs.
	ReasonRegionMoved = "sink_region_moved"
)

// reasons lists every quarantine reason, in the order they are checked.
var reasons = []string{
	ReasonBadAttestation, ReasonNoRegion, ReasonNoJurisdiction, ReasonNoSchemaHeader, ReasonUnknownSchema, ReasonUndecodable,
	ReasonMissingField, ReasonUnknownRuleset, ReasonContentMismatch, ReasonRegionNotApproved, ReasonRegionMoved,
}

// Defaults of Config.
const (
	// DefaultBatchSize is the default of Config.BatchSize.
	DefaultBatchSize = 1000
	// DefaultBatchTimeout is the default of Config.BatchTimeout.
	DefaultBatchTimeout = 200 * time.Millisecond
	// DefaultRetryBackoff is the default of Config.RetryBackoff.
	DefaultRetryBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff is the default of Config.MaxBackoff.
	DefaultMaxBackoff = 5 * time.Second
	// DefaultRulesPoll is the default of Config.RulesPoll.
	DefaultRulesPoll = 250 * time.Millisecond
	// DefaultDrainTimeout is the default of Config.DrainTimeout.
	DefaultDrainTimeout = 10 * time.Second
	// DefaultWriteTimeout is the default of Config.WriteTimeout.
	DefaultWriteTimeout = 20 * time.Second
)

// HeaderStore is added to every event the sink quarantines: the name of the
// store that refused it.
const HeaderStore = "residency-sink-store"

// Config configures a Sink.
type Config struct {
	// Store is the name of the store in the ruleset (stores[].name).
	// Required.
	Store string
	// Region is the region whose pinned topic the sink drains. Required.
	Region string
	// Topic is the pinned topic consumed; it must be the region's topic in
	// the ruleset in force. Required.
	Topic string
	// Cluster, if set, is the name of the Kafka cluster the topic is read
	// from; it must then be the region's cluster in the ruleset in force.
	// Default "": not checked.
	Cluster string
	// QuarantineTopic receives events the store must not hold. Required.
	QuarantineTopic string
	// BatchSize is the most events written in one batch. Default 1000.
	BatchSize int
	// BatchTimeout is how long a batch waits to fill after its first event.
	// Default 200ms.
	BatchTimeout time.Duration
	// RetryBackoff is the first wait after a failed write, publish or
	// commit; it doubles up to MaxBackoff. Default 100ms.
	RetryBackoff time.Duration
	// MaxBackoff bounds RetryBackoff's growth. Default 5s.
	MaxBackoff time.Duration
	// RulesPoll is how often a sink whose approval is missing checks the
	// ruleset again. Default 250ms.
	RulesPoll time.Duration
	// DrainTimeout is how long, after Run's context ends, the batch in hand
	// may take to be written and committed. Default 10s.
	DrainTimeout time.Duration
	// WriteTimeout bounds each Store.Write. A write that does not finish
	// within it is cancelled and retried like any failed write (nothing is
	// committed), after the approval is checked again: a hung COPY or PUT
	// cannot land long after the approval was checked. Keep it below the
	// rules cache's staleness bound (`residency sink` checks this): a write
	// then lands at most WriteTimeout after the check it passed, less than
	// the time an unconfirmed ruleset may stay in force. A store that does
	// not honour ctx can still land later. Default 20s.
	WriteTimeout time.Duration
	// Rulesets hands out ruleset versions by number: each event is
	// re-decided under the version its residency-ruleset-version header
	// names. Production uses Versions over the rules store. Default nil:
	// only the version of the ruleset in force is known, and events placed
	// under any other version are quarantined (sink_unknown_ruleset).
	Rulesets RulesetVersions
	// Pins hands out the users' pins from memory (rules.Pins): one view per
	// batch; while there is none (not loaded, or stale past the staleness
	// bound) the batch waits, retried, and nothing is written. Default nil:
	// no user is pinned, so an event whose residency-decided-by header says
	// pin is quarantined (sink_content_mismatch).
	Pins router.PinSource
	// Erasures, when set, is asked right before every write whether an
	// erasure covers any event of the batch (erasure.Guard over the
	// erasure markers): covered events are neither written nor
	// quarantined (ReasonErased); a failed lookup is retried and nothing
	// is written meanwhile. Default nil: not checked (an erased user's
	// redelivered events would be stored again).
	Erasures Erasures
	// Attestation, when set, checks every record's residency-attestation
	// header before anything else (audit.enabled: auditwire.SinkAttestation
	// with audit.attestation.verify_keys); a record without a valid one is
	// refused (ReasonBadAttestation). Cluster must then be set: the tag
	// binds the cluster and topic the record was written to. Default nil:
	// not checked.
	Attestation Attestation
	// Ledger, when set, receives one entry per record stored or refused,
	// durably before the batch's offsets are committed (audit.enabled:
	// auditwire.SinkLedger, sink_write and sink_refusal leaves); while it
	// fails the sink retries, reports not-ready and commits nothing.
	// Default nil: no leaves.
	Ledger Ledger
	// Logger receives the sink's logs (never payloads or user ids).
	// Default: slog.Default().
	Logger *slog.Logger
	// Registerer, if not nil, gets the sink's metrics. Default nil (none).
	Registerer prometheus.Registerer
}

// withDefaults validates c and fills in defaults.
func (c Config) withDefaults() (Config, error) {
	for _, f := range []struct{ name, v string }{
		{"store", c.Store}, {"region", c.Region}, {"topic", c.Topic}, {"quarantine_topic", c.QuarantineTopic},
	} {
		if f.v == "" {
			return c, fmt.Errorf("%w: %s: required", ErrConfig, f.name)
		}
	}
	if c.Attestation != nil && c.Cluster == "" {
		return c, fmt.Errorf("%w: cluster: required with an attestation check (the tag binds the pinned topic's cluster)", ErrConfig)
	}
	if c.QuarantineTopic == c.Topic {
		return c, fmt.Errorf("%w: quarantine_topic: must differ from topic %q", ErrConfig, c.Topic)
	}
	if c.BatchSize < 0 || c.BatchTimeout < 0 || c.RetryBackoff < 0 || c.MaxBackoff < 0 || c.RulesPoll < 0 || c.DrainTimeout < 0 || c.WriteTimeout < 0 {
		return c, fmt.Errorf("%w: batch_size, batch_timeout, retry_backoff, max_backoff, rules_poll, drain_timeout and write_timeout must not be negative", ErrConfig)
	}
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	c.BatchTimeout = cmp.Or(c.BatchTimeout, DefaultBatchTimeout)
	c.RetryBackoff = cmp.Or(c.RetryBackoff, DefaultRetryBackoff)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, DefaultMaxBackoff)
	c.RulesPoll = cmp.Or(c.RulesPoll, DefaultRulesPoll)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, DefaultDrainTimeout)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c, nil
}
