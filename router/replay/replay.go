package replay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

// Sentinel errors callers branch on (errors.Is).
var (
	// ErrConfig: the Config is incomplete or inconsistent; the message
	// names the field.
	ErrConfig = errors.New("replay: bad config")
	// ErrInterrupted: Run's context ended before the replay was complete.
	// Everything published was checkpointed; run again with the same id to
	// resume.
	ErrInterrupted = errors.New("replay interrupted")
	// ErrNoCheckpoint: Checkpoints.Load found no checkpoint for the id.
	ErrNoCheckpoint = errors.New("replay: no checkpoint")
	// ErrPlanMismatch: a checkpoint exists for the id but was made for a
	// different plan (source, ranges, ruleset, filters or loop limit).
	ErrPlanMismatch = errors.New("replay: plan differs from the checkpointed replay")
	// ErrGaveUp: publishing or checkpointing kept failing for longer than
	// Config.GiveUp. What was checkpointed stays valid: resume later.
	ErrGaveUp = errors.New("replay: gave up retrying")
	// ErrRulesetChanged: a real replay stopped (or did not start) because
	// the ruleset in force (Config.InForce) is no longer the plan's
	// version, or cannot be confirmed (stale, unavailable). Nothing was
	// published under the old version after the change was seen; what was
	// published before is checkpointed. The message says how to go on.
	ErrRulesetChanged = errors.New("replay: the ruleset in force is not the replay's")
)

// SourceKind is the kind of topic a replay reads.
type SourceKind string

// Sources a replay can read.
const (
	// SourceIngest: an ingest topic (events as producers wrote them).
	SourceIngest SourceKind = "ingest"
	// SourceQuarantine: the quarantine topic (events that could not be
	// placed).
	SourceQuarantine SourceKind = "quarantine"
	// SourceDeadLetter: the dead-letter topic (events that could not be
	// decoded).
	SourceDeadLetter SourceKind = "dead-letter"
	// SourceSinkQuarantine: a sink quarantine topic (routed events a sink
	// refused to store, e.g. sink_region_not_approved).
	SourceSinkQuarantine SourceKind = "sink-quarantine"
)

// Valid reports whether k is one of the four sources.
func (k SourceKind) Valid() bool {
	return k == SourceIngest || k == SourceQuarantine || k == SourceDeadLetter || k == SourceSinkQuarantine
}

// trustsHeaders reports whether the residency-* headers of the records of
// a source were written by residency (router, replay or sink) and so can
// be believed. Those of an ingest topic come from producers: the router
// strips them, and so does a replay of it.
func (k SourceKind) trustsHeaders() bool { return k != SourceIngest }

// Range is the half-open offset range [Start, End) of one partition.
type Range struct {
	// Partition is the partition id.
	Partition int `json:"partition"`
	// Start is the first offset read.
	Start int64 `json:"start"`
	// End is the offset after the last one read.
	End int64 `json:"end"`
}

// Filter narrows a replay to some events; the others are read (and
// counted as filtered) but neither decided into the report nor written.
// Empty lists match everything.
type Filter struct {
	// Jurisdictions keeps events recorded with (residency-jurisdiction
	// header; not for an ingest source, whose headers producers set) or
	// newly decided into one of these jurisdictions. Default: all.
	Jurisdictions []string `json:"jurisdictions,omitempty"`
	// Reasons keeps events whose recorded quarantine, dead-letter or sink
	// quarantine reason (residency-reason header) is one of these.
	// Default: all.
	Reasons []string `json:"reasons,omitempty"`
	// EventTypes keeps events whose event_type is one of these; it needs
	// Config.Decoder, and events that cannot be decoded do not match.
	// Default: all.
	EventTypes []string `json:"event_types,omitempty"`
}

// Plan is what a replay reads and how it decides. It is checkpointed with
// the replay's progress, so a resume reads and decides exactly the same.
type Plan struct {
	// ID names the replay (the residency-replay-id header and the
	// checkpoint key). Required.
	ID string `json:"id"`
	// Source is the kind of topic read. Required.
	Source SourceKind `json:"source"`
	// Topic is the topic read. Required.
	Topic string `json:"topic"`
	// Ranges are the offsets read, at most one per partition. Required.
	Ranges []Range `json:"ranges"`
	// RulesetVersion is the version of the ruleset the events are decided
	// with. Default: Config.Rules' version string.
	RulesetVersion string `json:"ruleset_version"`
	// RulesetHash identifies the ruleset content (e.g. rules.Hash of a
	// file); a resume with other content is refused. Default "": not
	// checked.
	RulesetHash string `json:"ruleset_hash,omitempty"`
	// Filter narrows the replay. Default: every event.
	Filter Filter `json:"filter"`
	// MaxReplays is the loop guard: an event already replayed this many
	// times (residency-replay-count header) is refused. Default 3.
	MaxReplays int `json:"max_replays"`
	// OnlyMoved, for an ingest source with a Config.Baseline, writes only
	// the events whose decision differs from the baseline's; the others
	// stay where the router put them (counted in Report.Stayed). Default
	// false: every event is republished.
	OnlyMoved bool `json:"only_moved,omitempty"`
	// Baseline names the Config.Baseline ruleset (e.g. "version 7" or
	// "sha256:…" of a file) so a resume uses the same one. Default "":
	// none, or not checked.
	Baseline string `json:"baseline,omitempty"`
	// Again replays even the offsets an earlier replay already replayed
	// under the same ruleset version (see Config.Checkpoints), writing
	// their events once more. Default false: they are skipped.
	Again bool `json:"again,omitempty"`
}

// Total is the number of offsets in the plan's ranges.
func (p *Plan) Total() int64 {
	var n int64
	for _, r := range p.Ranges {
		n += max(r.End-r.Start, 0)
	}
	return n
}

// RangeReader reads offset ranges of a topic without a consumer group.
// connectors/kafka.RangeReader satisfies it.
type RangeReader interface {
	// ReadRange reads the records of topic/partition with offsets in
	// [start, end) in offset order and calls fn with batches of at most
	// batch records, returning fn's first error.
	ReadRange(ctx context.Context, topic string, partition int, start, end int64, batch int, fn func([]stream.Message) error) error
}

// Decoder fully decodes an event, for its event_id (report samples) and
// event_type (Filter.EventTypes). schemas.Extractor satisfies it.
type Decoder interface {
	// Decode decodes value, framed as topic's events are.
	Decode(ctx context.Context, topic string, value []byte) (native any, writerSchema string, err error)
}

// Progress is a snapshot of a running replay, passed to Config.Progress
// after every batch.
type Progress struct {
	// Done is how many offsets of the plan are behind the replay,
	// checkpointed progress of earlier runs included.
	Done int64
	// Total is the number of offsets in the plan.
	Total int64
	// Read is how many events this run read.
	Read int64
	// Written is how many events this run wrote (would write, in a dry
	// run).
	Written int64
	// Refused is how many events the loop guard refused in this run.
	Refused int64
	// Elapsed is the time since this run started.
	Elapsed time.Duration
	// Rate is this run's events read per second.
	Rate float64
	// ETA estimates the time left at Rate (0 when unknown).
	ETA time.Duration
}

// RulesInForce tells which ruleset is in force now (the one routers and
// sinks use). rules.Cache satisfies it.
type RulesInForce interface {
	// Current returns the ruleset in force, or an error when it cannot be
	// confirmed (none loaded, stale).
	Current() (*rules.Ruleset, error)
}

// Config configures a Replay.
type Config struct {
	// Plan is what to read and how to decide. Required.
	Plan Plan
	// Rules is the ruleset events are decided with. Required. A real run
	// publishes only while it is the ruleset in force (InForce).
	Rules *rules.Ruleset
	// InForce follows the ruleset in force. Required unless DryRun: a real
	// run checks at start and before publishing every batch that its
	// version is still Plan.RulesetVersion, and otherwise stops with
	// ErrRulesetChanged. A dry run does not consult it.
	InForce RulesInForce
	// Baseline, for an ingest source, is the ruleset the events were first
	// routed under; the report's "from" side is its decision. Default nil:
	// "from" is "ingest".
	Baseline *rules.Ruleset
	// Reader reads the source topic. Required.
	Reader RangeReader
	// Publishers holds one publisher per Kafka cluster by name, as for the
	// router; a region whose cluster has none is quarantined (no_rule).
	// Required (a dry run never calls them).
	Publishers map[string]stream.Publisher
	// IngestCluster names the publisher of the quarantine and dead-letter
	// topics. Required.
	IngestCluster string
	// QuarantineTopic receives events that still cannot be placed.
	// Required.
	QuarantineTopic string
	// DeadLetterTopic receives events that cannot be decoded. Required.
	DeadLetterTopic string
	// IngestTopics are the router's ingest topics (router.Config's). A
	// region pinned to one of them (or to the quarantine or dead-letter
	// topic, or the topic the replay reads) on the ingest cluster is
	// refused as the router refuses it: its events are quarantined
	// (no_rule), never written where the router would read them again.
	// Required: a replay that did not know them could write into them.
	IngestTopics []string
	// Fields reads the jurisdiction inputs of an event. Required.
	Fields router.FieldReader
	// Decoder decodes whole events for sample event ids and the event-type
	// filter. Default nil: samples are topic/partition@offset coordinates;
	// required with Plan.Filter.EventTypes.
	Decoder Decoder
	// Pins looks up per-user pins, as the router does. Default nil: none.
	Pins router.PinLookup
	// Checkpoints keeps the replay's progress (not in a dry run), and the
	// other replays' checkpoints tell what they already replayed: offsets
	// of the plan's topic that an earlier replay read as the same source
	// under the same ruleset version, writing what this one would
	// (Plan.covers), are skipped, not written again (Report.AlreadyReplayed;
	// Plan.Again writes them anyway). Default nil: a replay can be neither
	// resumed nor told what was already replayed.
	Checkpoints Checkpoints
	// DryRun reads and decides but writes nothing (no events, no
	// checkpoint). Default false.
	DryRun bool
	// BatchSize is the most events decided and published together.
	// Default router.DefaultBatchSize (500), as the router.
	BatchSize int
	// Rate is the most events written per second. Default 0: unlimited.
	Rate float64
	// MaxValueBytes is the largest event routed, counting its key, value
	// and headers; larger ones are dead-lettered (too_large) without their
	// body, as by the router. Default router.DefaultMaxValueBytes, as the
	// router.
	MaxValueBytes int
	// Samples is how many sample event ids the report keeps per
	// from → to pair. Default 5.
	Samples int
	// Instance names the writer in the residency-router header. Default
	// "replay".
	Instance string
	// RetryMin is the first backoff after a failed publish, pin lookup,
	// schema registry call or checkpoint. Default router.DefaultRetryMin
	// (50ms), as the router.
	RetryMin time.Duration
	// RetryMax is the longest backoff between retries. Default
	// router.DefaultRetryMax (2s), as the router.
	RetryMax time.Duration
	// GiveUp is how long such a failure is retried before Run fails with
	// ErrGaveUp. Default router.DefaultGiveUp (2m), as the router.
	GiveUp time.Duration
	// ShutdownTimeout bounds how long Run, once its context ends, spends
	// publishing and checkpointing the batch in hand. Default
	// router.DefaultShutdownTimeout (10s), as the router.
	ShutdownTimeout time.Duration
	// Progress, if set, is called after every batch. Default nil.
	Progress func(Progress)
	// Attester, when set, attests every record replay writes (the
	// router.HeaderAttestation header), as the router does. Default nil.
	Attester router.Attester
	// Ledger, when set, records the decision of every event replay
	// writes (auditwire.NewLedger with kind replay) once it is published
	// and before its batch is checkpointed; a batch is checkpointed only
	// once its leaves are durable. The publishers do not report where
	// records went, so the leaves' destination partition and offset are
	// -1. Default nil: audit off.
	Ledger router.Ledger
	// Logger receives the replay's logs (coordinates and counts, never
	// payloads or user ids). Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) check() error {
	var missing []string
	for name, bad := range map[string]bool{
		"Plan.ID": c.Plan.ID == "", "Plan.Topic": c.Plan.Topic == "", "Plan.Ranges": len(c.Plan.Ranges) == 0,
		"Rules": c.Rules == nil, "Reader": c.Reader == nil, "Publishers": len(c.Publishers) == 0,
		"IngestCluster": c.IngestCluster == "", "QuarantineTopic": c.QuarantineTopic == "",
		"DeadLetterTopic": c.DeadLetterTopic == "", "IngestTopics": len(c.IngestTopics) == 0, "Fields": c.Fields == nil,
	} {
		if bad {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("%w: missing %v", ErrConfig, missing)
	}
	if !ValidID(c.Plan.ID) {
		return fmt.Errorf("%w: Plan.ID %q: use letters, digits, '.', '_' and '-' (at most 128)", ErrConfig, c.Plan.ID)
	}
	if !c.Plan.Source.Valid() {
		return fmt.Errorf("%w: Plan.Source %q is not ingest, quarantine, dead-letter or sink-quarantine", ErrConfig, c.Plan.Source)
	}
	if c.InForce == nil && !c.DryRun {
		return fmt.Errorf("%w: missing InForce: a real replay must follow the ruleset in force", ErrConfig)
	}
	if _, ok := c.Publishers[c.IngestCluster]; !ok {
		return fmt.Errorf("%w: IngestCluster %q has no publisher", ErrConfig, c.IngestCluster)
	}
	if c.Plan.RulesetVersion != "" && c.Plan.RulesetVersion != c.Rules.VersionString() {
		return fmt.Errorf("%w: Plan.RulesetVersion %s but Rules is version %s", ErrConfig, c.Plan.RulesetVersion, c.Rules.VersionString())
	}
	if len(c.Plan.Filter.EventTypes) > 0 && c.Decoder == nil {
		return fmt.Errorf("%w: Plan.Filter.EventTypes needs a Decoder", ErrConfig)
	}
	if c.Plan.OnlyMoved && (c.Plan.Source != SourceIngest || c.Baseline == nil) {
		return fmt.Errorf("%w: Plan.OnlyMoved needs an ingest source and a Baseline", ErrConfig)
	}
	if len(c.Plan.Filter.Reasons) > 0 && c.Plan.Source == SourceIngest {
		return fmt.Errorf("%w: Plan.Filter.Reasons: events of an ingest topic have no reason", ErrConfig)
	}
	if c.Plan.MaxReplays < 0 || c.BatchSize < 0 || c.Rate < 0 || c.MaxValueBytes < 0 || c.Samples < 0 || c.GiveUp < 0 ||
		c.RetryMin < 0 || c.RetryMax < 0 {
		return fmt.Errorf("%w: negative MaxReplays, BatchSize, Rate, MaxValueBytes, Samples, RetryMin, RetryMax or GiveUp", ErrConfig)
	}
	seen := map[int]bool{}
	for _, r := range c.Plan.Ranges {
		if seen[r.Partition] {
			return fmt.Errorf("%w: Plan.Ranges: partition %d appears twice", ErrConfig, r.Partition)
		}
		seen[r.Partition] = true
		if r.Start < 0 || r.End < r.Start {
			return fmt.Errorf("%w: Plan.Ranges: partition %d: [%d, %d) is not a range", ErrConfig, r.Partition, r.Start, r.End)
		}
	}
	return nil
}

func (c *Config) defaults() {
	c.Plan.RulesetVersion = cmp.Or(c.Plan.RulesetVersion, c.Rules.VersionString())
	if c.Plan.MaxReplays == 0 {
		c.Plan.MaxReplays = 3
	}
	c.BatchSize = cmp.Or(c.BatchSize, router.DefaultBatchSize)
	c.MaxValueBytes = cmp.Or(c.MaxValueBytes, router.DefaultMaxValueBytes)
	c.Samples = cmp.Or(c.Samples, 5)
	c.Instance = cmp.Or(c.Instance, "replay")
	c.RetryMin = cmp.Or(c.RetryMin, router.DefaultRetryMin)
	c.RetryMax = cmp.Or(c.RetryMax, router.DefaultRetryMax)
	c.GiveUp = cmp.Or(c.GiveUp, router.DefaultGiveUp)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, router.DefaultShutdownTimeout)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	sort.Slice(c.Plan.Ranges, func(i, j int) bool { return c.Plan.Ranges[i].Partition < c.Plan.Ranges[j].Partition })
}

// Replay re-routes one plan. Create it with New, run it with Run, read the
// outcome with Report.
type Replay struct {
	cfg   Config
	log   *slog.Logger
	retry stream.Retry
	pipe  *router.Pipeline // the router's pipeline: decides and publishes every batch

	mu    sync.Mutex
	rep   Report
	trans map[[2]string]*Transition
	next  map[int]int64 // per partition, the next offset to read
	kept  map[int]int64 // per partition, the first offset read and left in place (Checkpoint.KeptFrom)

	covered     map[int][]coverage // per partition, offsets earlier replays already replayed
	start       time.Time
	done0       int64 // offsets behind the replay when this run started
	read, wrote int64
	refused     int64
	rateNext    time.Time
	runCtx      context.Context // Run's context: ends on interrupt
	guardWarned int
	alreadyDone bool
}

// New checks cfg, fills in defaults and returns a replay.
func New(cfg Config) (*Replay, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	cfg.defaults()
	r := &Replay{cfg: cfg, log: cfg.Logger.With("replay_id", cfg.Plan.ID), trans: map[[2]string]*Transition{}, next: map[int]int64{},
		kept: map[int]int64{}}
	r.retry = stream.Retry{Min: cfg.RetryMin, Max: cfg.RetryMax, GiveUp: cfg.GiveUp, GaveUp: ErrGaveUp, Component: "replay", Logger: r.log}
	var err error
	// The router's destinations, so replay refuses what the router
	// refuses; the topic read is reserved too: a region pinned to it would
	// feed the replay its own writes.
	if r.pipe, err = router.NewPipeline(router.PipelineConfig{Publishers: cfg.Publishers, IngestCluster: cfg.IngestCluster,
		QuarantineTopic: cfg.QuarantineTopic, DeadLetterTopic: cfg.DeadLetterTopic, Reserved: append(slices.Clone(cfg.IngestTopics), cfg.Plan.Topic),
		Fields: cfg.Fields, Pins: cfg.Pins, Instance: cfg.Instance, MaxValueBytes: cfg.MaxValueBytes, Retry: r.retry, Logger: r.log,
		Attester: cfg.Attester}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	r.rep = newReport(&cfg.Plan, cfg.DryRun)
	return r, nil
}

// Report returns the replay's report so far (cumulative over resumes).
func (r *Replay) Report() Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snapshot()
}

// AlreadyComplete reports whether Run found the replay's checkpoint marked
// complete and so did nothing.
func (r *Replay) AlreadyComplete() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.alreadyDone
}

func (r *Replay) snapshot() Report {
	rep := r.rep.clone()
	rep.Transitions = make([]Transition, 0, len(r.trans))
	for _, t := range r.trans {
		c := *t
		c.Samples = slices.Clone(t.Samples)
		rep.Transitions = append(rep.Transitions, c)
	}
	sort.Slice(rep.Transitions, func(i, j int) bool {
		a, b := rep.Transitions[i], rep.Transitions[j]
		return a.From < b.From || (a.From == b.From && a.To < b.To)
	})
	return rep
}

// Run reads the plan's ranges (from the checkpoint, if any), re-decides
// and republishes every event, checkpointing after every batch. It returns
// nil when the plan is complete, an error wrapping ErrInterrupted when ctx
// ended first (the batch in hand is finished within ShutdownTimeout), or
// another error (ErrPlanMismatch, ErrGaveUp, a read failure); in every case
// what was checkpointed is a valid place to resume from.
func (r *Replay) Run(ctx context.Context) error {
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.cfg.ShutdownTimeout, cancelWork)
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer stop()

	r.runCtx = ctx
	if err := r.restore(ctx); err != nil {
		return err
	}
	if r.alreadyDone {
		r.log.Info("replay already complete; nothing to do")
		return nil
	}
	if err := r.checkInForce(); err != nil {
		return err
	}
	if err := r.coverage(ctx); err != nil {
		return err
	}
	r.start = time.Now()
	r.done0 = r.doneOffsets()
	r.emitProgress()

	for _, rg := range r.cfg.Plan.Ranges {
		from := max(rg.Start, r.nextOf(rg))
		if from >= rg.End {
			continue
		}
		if ctx.Err() != nil {
			return r.interrupted(ctx)
		}
		err := r.cfg.Reader.ReadRange(ctx, r.cfg.Plan.Topic, rg.Partition, from, rg.End, r.cfg.BatchSize, func(batch []stream.Message) error {
			if err := r.process(work, batch); err != nil {
				return err
			}
			r.emitProgress()
			return ctx.Err()
		})
		if err != nil {
			if errors.Is(err, ErrRulesetChanged) {
				return err
			}
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				return r.interrupted(ctx)
			}
			return fmt.Errorf("replay %s: partition %d: %w", r.cfg.Plan.ID, rg.Partition, err)
		}
		// The range is read: the reader returns nil only once the broker
		// shows nothing more is there (offsets deleted by retention or past
		// the end are reported by the reader), so mark the partition done.
		r.mu.Lock()
		r.next[rg.Partition] = rg.End
		r.mu.Unlock()
	}
	r.mu.Lock()
	r.rep.Complete = true
	r.mu.Unlock()
	if err := r.checkpoint(work); err != nil {
		return err
	}
	r.emitProgress()
	return nil
}

// checkInForce returns an ErrRulesetChanged error when a real run's
// ruleset is no longer (or cannot be confirmed to be) the one in force.
func (r *Replay) checkInForce() error {
	if r.cfg.DryRun {
		return nil
	}
	want := r.cfg.Plan.RulesetVersion
	cur, err := r.cfg.InForce.Current()
	if err != nil {
		return fmt.Errorf("%w: replay %s stopped at %d of %d offsets: cannot confirm that ruleset version %s is still in force (%w); "+
			"nothing more is published until it is: resume when the rules store answers again",
			ErrRulesetChanged, r.cfg.Plan.ID, r.doneOffsets(), r.cfg.Plan.Total(), want, err)
	}
	if got := cur.VersionString(); got != want {
		return fmt.Errorf("%w: replay %s stopped at %d of %d offsets: the ruleset in force changed from version %s to %s; "+
			"nothing more is published under version %s. Plan a new replay under version %s (run it with --dry-run first); "+
			"this one can be resumed only while version %s is in force",
			ErrRulesetChanged, r.cfg.Plan.ID, r.doneOffsets(), r.cfg.Plan.Total(), want, got, want, got, want)
	}
	return nil
}

func (r *Replay) interrupted(ctx context.Context) error {
	return fmt.Errorf("%w: replay %s stopped at %d of %d offsets: %w", ErrInterrupted, r.cfg.Plan.ID, r.doneOffsets(), r.cfg.Plan.Total(), context.Cause(ctx))
}

func (r *Replay) nextOf(rg Range) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := r.next[rg.Partition]; ok {
		return n
	}
	return rg.Start
}

func (r *Replay) doneOffsets() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, rg := range r.cfg.Plan.Ranges {
		if nx, ok := r.next[rg.Partition]; ok {
			n += min(max(nx-rg.Start, 0), rg.End-rg.Start)
		}
	}
	return n
}

// restore loads the checkpoint, or saves the first one.
func (r *Replay) restore(ctx context.Context) error {
	if r.cfg.Checkpoints == nil || r.cfg.DryRun {
		return nil
	}
	cp, err := r.cfg.Checkpoints.Load(ctx, r.cfg.Plan.ID)
	if errors.Is(err, ErrNoCheckpoint) {
		return r.checkpoint(ctx)
	}
	if err != nil {
		return fmt.Errorf("replay %s: load checkpoint: %w", r.cfg.Plan.ID, err)
	}
	if diff := cp.Plan.differs(&r.cfg.Plan); diff != "" {
		return fmt.Errorf("%w: replay %s was started with another %s; resume it with the same flags or choose a new replay id",
			ErrPlanMismatch, r.cfg.Plan.ID, diff)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, o := range cp.Next {
		r.next[p] = o
	}
	for p, o := range cp.KeptFrom {
		r.kept[p] = o
	}
	r.rep = cp.Report
	r.rep.DryRun = false
	if r.rep.Routed == nil {
		r.rep = newReport(&r.cfg.Plan, false)
	}
	for _, t := range cp.Report.Transitions {
		c := t
		r.trans[[2]string{t.From, t.To}] = &c
	}
	r.alreadyDone = cp.Report.Complete
	if !r.alreadyDone {
		r.rep.Resumed++
	}
	r.log.Info("resuming replay from its checkpoint", "done", r.doneOffsetsLocked(), "total", r.cfg.Plan.Total())
	return nil
}

func (r *Replay) doneOffsetsLocked() int64 {
	var n int64
	for _, rg := range r.cfg.Plan.Ranges {
		if nx, ok := r.next[rg.Partition]; ok {
			n += min(max(nx-rg.Start, 0), rg.End-rg.Start)
		}
	}
	return n
}

// checkpoint saves the progress (not in a dry run), retrying.
func (r *Replay) checkpoint(ctx context.Context) error {
	if r.cfg.Checkpoints == nil || r.cfg.DryRun {
		return nil
	}
	r.mu.Lock()
	cp := &Checkpoint{Plan: r.cfg.Plan, Next: maps.Clone(r.next), KeptFrom: maps.Clone(r.kept), Report: r.snapshot(), Updated: time.Now().UTC()}
	r.mu.Unlock()
	return r.retry.Do(ctx, "checkpoint", func(ctx context.Context) error { return r.cfg.Checkpoints.Save(ctx, cp) })
}

func (r *Replay) emitProgress() {
	if r.cfg.Progress == nil {
		return
	}
	done := r.doneOffsets()
	r.mu.Lock()
	p := Progress{Done: done, Total: r.cfg.Plan.Total(), Read: r.read, Written: r.wrote, Refused: r.refused, Elapsed: time.Since(r.start)}
	r.mu.Unlock()
	if secs := p.Elapsed.Seconds(); secs > 0 {
		p.Rate = float64(done-r.done0) / secs
	}
	if p.Rate > 0 && p.Total > p.Done {
		p.ETA = time.Duration(float64(p.Total-p.Done) / p.Rate * float64(time.Second))
	}
	r.cfg.Progress(p)
}

// item is one event of a batch on its way through process: the record
// read, and its event in the pipeline's batch.
type item struct {
	m       *stream.Message // as read from the replay's source
	ev      *router.Event   // decided by the pipeline (its Msg has the original ingest coordinates)
	count   int             // replays so far
	native  map[string]any
	decoded bool
}

// process decides, publishes and checkpoints one batch.
func (r *Replay) process(ctx context.Context, batch []stream.Message) error {
	if len(batch) == 0 {
		return nil
	}
	if err := r.checkInForce(); err != nil {
		return err
	}
	// A batch dropped unpublished (interrupt during the rate limit, a
	// ruleset change) is read again on resume: leave it out of the report.
	var undo func(error) error
	if !r.cfg.DryRun {
		r.mu.Lock()
		saved, read, refused := r.snapshot(), r.read, r.refused
		r.mu.Unlock()
		undo = func(err error) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.rep, r.read, r.refused = saved, read, refused
			r.trans = make(map[[2]string]*Transition, len(saved.Transitions))
			for _, t := range saved.Transitions {
				c := t
				c.Samples = slices.Clone(t.Samples)
				r.trans[[2]string{t.From, t.To}] = &c
			}
			return err
		}
	}
	trusted := r.cfg.Plan.Source.trustsHeaders()
	// The events as the pipeline decides and writes them: with the
	// coordinates the router first read them from. An ingest event's own
	// coordinates are its original ones; its residency-* headers, if any,
	// were set by its producer.
	origs := make([]stream.Message, 0, len(batch))
	read := make([]*stream.Message, 0, len(batch))
	for i := range batch {
		m := &batch[i]
		r.mu.Lock()
		r.rep.Read++
		r.read++
		r.mu.Unlock()
		if by := r.coveredBy(m); by != "" {
			r.alreadyReplayed(by)
			r.keep(m)
			continue
		}
		if !r.matchReason(m) {
			r.filtered()
			r.keep(m)
			continue
		}
		o := *m
		if trusted {
			o = original(m)
		}
		origs = append(origs, o)
		read = append(read, m)
	}
	b, err := r.pipe.Decide(ctx, origs, r.cfg.Rules)
	if err != nil {
		return err
	}
	for i := range b.Events {
		it := &item{m: read[i], ev: &b.Events[i]}
		it.ev.Skip = true // until it is known to be written
		if !r.matchJurisdiction(it) || !r.matchEventType(ctx, it) {
			r.filtered()
			r.keep(it.m)
			continue
		}
		n, ok := 0, true
		if trusted {
			n, ok = replayCount(it.m)
		}
		if !ok || n >= r.cfg.Plan.MaxReplays {
			r.refuse(it, n, ok)
			r.keep(it.m)
			continue
		}
		it.count = n
		d := &it.ev.Decision
		from, to := r.fromLabel(it), label(d)
		// Still unplaceable events stay where they are; events a sink
		// refused never stay: they are routed again, or quarantined by the
		// router's rules for the first time.
		stays := (r.cfg.Plan.Source == SourceQuarantine && d.Outcome == router.Quarantined) ||
			(r.cfg.Plan.Source == SourceDeadLetter && d.Outcome == router.DeadLettered) ||
			(r.cfg.Plan.OnlyMoved && from == to)
		r.record(ctx, it, from, to, stays)
		if stays {
			r.keep(it.m)
			continue
		}
		it.ev.Skip = false
		it.ev.Extra = r.provenance(it)
	}
	written := map[string]int64{}
	for i := range b.Events {
		if ev := &b.Events[i]; !ev.Skip {
			_, topic := r.pipe.Destination(&ev.Decision)
			written[topic]++
		}
	}
	if !r.cfg.DryRun {
		var n int
		for _, c := range written {
			n += int(c)
		}
		if err := r.limit(ctx, n); err != nil {
			return undo(err)
		}
		// The ruleset may have changed while deciding or waiting for the
		// rate limit: publish nothing under a ruleset no longer in force.
		if err := r.checkInForce(); err != nil {
			return undo(err)
		}
		if err := r.pipe.Publish(ctx, b); err != nil {
			return err
		}
		if err := r.ledger(ctx, b); err != nil {
			return err
		}
	}
	r.mu.Lock()
	for topic, c := range written {
		r.rep.Written[topic] += c
		r.wrote += c
	}
	last := batch[len(batch)-1]
	r.next[last.Partition] = last.Offset + 1
	r.mu.Unlock()
	return r.checkpoint(ctx)
}

// ledger records the events of b that were written in the Ledger,
// retrying, before the batch is checkpointed.
func (r *Replay) ledger(ctx context.Context, b *router.Batch) error {
	if r.cfg.Ledger == nil {
		return nil
	}
	var settled []router.Settled
	for i := range b.Events {
		ev := &b.Events[i]
		if ev.Skip {
			continue
		}
		cluster, topic := r.pipe.Destination(&ev.Decision)
		part, off := b.Placement(i)
		settled = append(settled, router.Settled{Event: ev, Ruleset: b.Ruleset, Cluster: cluster, Topic: topic, Partition: part, Offset: off})
	}
	if len(settled) == 0 {
		return nil
	}
	return r.retry.Do(ctx, "ledger", func(ctx context.Context) error { return router.RecordSettled(ctx, r.cfg.Ledger, settled) })
}

// coverage is a range of offsets an earlier replay already replayed.
type coverage struct {
	start, end int64
	by         string // its replay id
}

// coverage reads the other replays' checkpoints and keeps, per partition,
// the offsets of those that cover this plan (Plan.covers).
func (r *Replay) coverage(ctx context.Context) error {
	if r.cfg.Checkpoints == nil || r.cfg.Plan.Again {
		return nil
	}
	var cps []*Checkpoint
	if err := r.retry.Do(ctx, "checkpoints", func(ctx context.Context) error {
		var err error
		cps, err = r.cfg.Checkpoints.List(ctx)
		return err
	}); err != nil {
		return err
	}
	r.covered = map[int][]coverage{}
	for _, cp := range cps {
		if !cp.Plan.covers(&r.cfg.Plan) {
			continue
		}
		for _, rg := range cp.Plan.Ranges {
			if next, ok := cp.Next[rg.Partition]; ok && next > rg.Start {
				r.covered[rg.Partition] = append(r.covered[rg.Partition], coverage{rg.Start, min(next, rg.End), cp.Plan.ID})
			}
		}
	}
	return nil
}

// coveredBy returns the id of an earlier replay that already replayed m,
// or "".
func (r *Replay) coveredBy(m *stream.Message) string {
	for _, c := range r.covered[m.Partition] {
		if m.Offset >= c.start && m.Offset < c.end {
			return c.by
		}
	}
	return ""
}

// alreadyReplayed counts an event an earlier replay, by, already
// replayed.
func (r *Replay) alreadyReplayed(by string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.AlreadyReplayed++
	if !slices.Contains(r.rep.AlreadyReplayedBy, by) {
		r.rep.AlreadyReplayedBy = append(r.rep.AlreadyReplayedBy, by)
		slices.Sort(r.rep.AlreadyReplayedBy)
	}
}

// keep records that m, as read, was left where it is: no copy of it is
// written (Checkpoint.KeptFrom).
func (r *Replay) keep(m *stream.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o, ok := r.kept[m.Partition]; !ok || m.Offset < o {
		r.kept[m.Partition] = m.Offset
	}
}

func (r *Replay) filtered() {
	r.mu.Lock()
	r.rep.Filtered++
	r.mu.Unlock()
}

// original returns m with the coordinates it was first read from by the
// router (its residency-source-* headers), or m's own coordinates when it
// has none. Only for sources whose headers residency wrote: an ingest
// event's own coordinates are its original ones, whatever its headers say.
func original(m *stream.Message) stream.Message {
	o := *m
	t, ok1 := router.HeaderValue(m.Headers, router.HeaderSourceTopic)
	p, ok2 := router.HeaderValue(m.Headers, router.HeaderSourcePartition)
	off, ok3 := router.HeaderValue(m.Headers, router.HeaderSourceOffset)
	if !ok1 || !ok2 || !ok3 || len(t) == 0 {
		return o
	}
	pi, err1 := strconv.Atoi(string(p))
	oi, err2 := strconv.ParseInt(string(off), 10, 64)
	if err1 != nil || err2 != nil {
		return o
	}
	o.Topic, o.Partition, o.Offset = string(t), pi, oi
	return o
}

// replayCount reads the residency-replay-count header: 0 when absent; ok
// is false when it is present but not a count (the event is refused: fail
// closed). Only for sources whose headers residency wrote: an ingest
// event has not been replayed.
func replayCount(m *stream.Message) (int, bool) {
	v, ok := router.HeaderValue(m.Headers, router.HeaderReplayCount)
	if !ok {
		return 0, true
	}
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

func (r *Replay) matchReason(m *stream.Message) bool {
	if len(r.cfg.Plan.Filter.Reasons) == 0 {
		return true
	}
	v, _ := router.HeaderValue(m.Headers, router.HeaderReason)
	return slices.Contains(r.cfg.Plan.Filter.Reasons, string(v))
}

func (r *Replay) matchJurisdiction(it *item) bool {
	js := r.cfg.Plan.Filter.Jurisdictions
	if len(js) == 0 {
		return true
	}
	if slices.Contains(js, it.ev.Decision.Jurisdiction) {
		return true
	}
	if !r.cfg.Plan.Source.trustsHeaders() {
		return false // a producer's header: not a recorded decision
	}
	v, _ := router.HeaderValue(it.m.Headers, router.HeaderJurisdiction)
	return len(v) > 0 && slices.Contains(js, string(v))
}

func (r *Replay) matchEventType(ctx context.Context, it *item) bool {
	ts := r.cfg.Plan.Filter.EventTypes
	if len(ts) == 0 {
		return true
	}
	r.decode(ctx, it)
	t, _ := unwrap(it.native["event_type"]).(string)
	return t != "" && slices.Contains(ts, t)
}

// decode decodes it once, if a Decoder is configured; failures leave
// native nil.
func (r *Replay) decode(ctx context.Context, it *item) {
	if it.decoded || r.cfg.Decoder == nil || it.ev.Err != nil {
		return
	}
	it.decoded = true
	native, _, err := r.cfg.Decoder.Decode(ctx, it.ev.Msg.Topic, it.ev.Msg.Value)
	if err == nil {
		it.native, _ = native.(map[string]any)
	}
}

// unwrap returns the value of a goavro union ({"type": value}) or v.
func unwrap(v any) any {
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for _, x := range m {
			return x
		}
	}
	return v
}

// sampleID is the event's event_id, or its coordinates when it has none
// readable.
func (r *Replay) sampleID(ctx context.Context, it *item) string {
	r.decode(ctx, it)
	if id, ok := unwrap(it.native["event_id"]).(string); ok && id != "" {
		return id
	}
	return fmt.Sprintf("%s/%d@%d", it.m.Topic, it.m.Partition, it.m.Offset)
}

// fromLabel says where the event was before this replay.
func (r *Replay) fromLabel(it *item) string {
	switch r.cfg.Plan.Source {
	case SourceQuarantine, SourceDeadLetter, SourceSinkQuarantine:
		reason, _ := router.HeaderValue(it.m.Headers, router.HeaderReason)
		return string(r.cfg.Plan.Source) + ":" + cmp.Or(string(reason), "unknown")
	}
	if r.cfg.Baseline == nil {
		return "ingest"
	}
	if it.ev.Err != nil {
		return label(&it.ev.Decision) // undecodable under any ruleset
	}
	d := r.pipe.Place(it.ev.Fields, it.ev.Pin, r.cfg.Baseline)
	return label(&d)
}

// label names a decision's destination: region:R, quarantine:REASON or
// dead-letter:REASON.
func label(d *router.Decision) string {
	switch d.Outcome {
	case router.Routed:
		return "region:" + d.Region
	case router.Quarantined:
		return "quarantine:" + d.Reason
	default:
		return "dead-letter:" + d.Reason
	}
}

// record adds one decided event to the report.
func (r *Replay) record(ctx context.Context, it *item, from, to string, stays bool) {
	k := [2]string{from, to}
	r.mu.Lock()
	t := r.trans[k]
	if t == nil {
		// An event that stays was not written: not a move, whatever its
		// reason reads now (a dead-letter record whose body the router
		// left out decodes as empty_value).
		t = &Transition{From: from, To: to, Moves: from != to && !stays}
		r.trans[k] = t
	}
	t.Count++
	needSample := len(t.Samples) < r.cfg.Samples
	switch d := &it.ev.Decision; d.Outcome {
	case router.Routed:
		r.rep.Routed[d.Region]++
	case router.Quarantined:
		r.rep.Quarantined[d.Reason]++
	case router.DeadLettered:
		r.rep.DeadLettered[d.Reason]++
	}
	if stays {
		r.rep.Stayed++
	}
	r.mu.Unlock()
	if needSample {
		id := r.sampleID(ctx, it)
		r.mu.Lock()
		t.Samples = append(t.Samples, id)
		r.mu.Unlock()
	}
}

// refuse applies the loop guard.
func (r *Replay) refuse(it *item, n int, ok bool) {
	coords := fmt.Sprintf("%s/%d@%d", it.m.Topic, it.m.Partition, it.m.Offset)
	r.mu.Lock()
	r.rep.LoopGuard.Refused++
	r.refused++
	if len(r.rep.LoopGuard.Samples) < r.cfg.Samples {
		r.rep.LoopGuard.Samples = append(r.rep.LoopGuard.Samples, coords)
	}
	warn := r.guardWarned < 10
	r.guardWarned++
	r.mu.Unlock()
	if !warn {
		return
	}
	if !ok {
		r.log.Warn("loop guard: refusing an event whose residency-replay-count header is not a count", "event", coords)
		return
	}
	r.log.Warn(fmt.Sprintf("loop guard: event %s has already been replayed %d times (limit %d); not replaying it again",
		coords, n, r.cfg.Plan.MaxReplays), "event", coords, "replays", n, "limit", r.cfg.Plan.MaxReplays)
}

// provenance returns the replay headers written after the residency
// headers of it.
func (r *Replay) provenance(it *item) []stream.Header {
	return []stream.Header{
		{Key: router.HeaderReplayID, Value: []byte(r.cfg.Plan.ID)},
		{Key: router.HeaderReplayCount, Value: strconv.AppendInt(nil, int64(it.count+1), 10)},
		{Key: router.HeaderReplayTopic, Value: []byte(it.m.Topic)},
		{Key: router.HeaderReplayPartition, Value: strconv.AppendInt(nil, int64(it.m.Partition), 10)},
		{Key: router.HeaderReplayOffset, Value: strconv.AppendInt(nil, it.m.Offset, 10)},
	}
}

// limit waits so that writes stay under Config.Rate per second.
func (r *Replay) limit(ctx context.Context, n int) error {
	if r.cfg.Rate <= 0 || n == 0 {
		return nil
	}
	now := time.Now()
	at := r.rateNext
	if at.Before(now) {
		at = now
	}
	r.rateNext = at.Add(time.Duration(float64(n) / r.cfg.Rate * float64(time.Second)))
	if wait := time.Until(at); wait > 0 {
		// An interrupt while waiting drops the batch unpublished (and
		// uncheckpointed): a resume reads it again.
		run := r.runCtx
		if run == nil {
			run = ctx
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-run.Done():
			return run.Err()
		case <-time.After(wait):
		}
	}
	return nil
}
