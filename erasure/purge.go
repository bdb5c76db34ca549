package erasure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/residency-router/residency/audit"
)

// DefaultMaxScan is the default of PurgeConfig.MaxScan.
const DefaultMaxScan = 1_000_000

// Hold says what stops a partition's purge where it stops.
type Hold string

// Holds, in the order they are applied (a tie names the first).
const (
	// HoldNoCommit: the router group never committed the partition; nothing
	// is deleted there.
	HoldNoCommit Hold = "no_commit"
	// HoldCommitted: the router group's committed offset (everything before
	// it was routed, quarantined or dead-lettered).
	HoldCommitted Hold = "committed"
	// HoldMinAge: the first record younger than the minimum age.
	HoldMinAge Hold = "min_age"
	// HoldSinks: the first ingest offset some sink has not stored yet.
	HoldSinks Hold = "sinks"
	// HoldSinksUnknown: the sinks' progress could not be established (a
	// sink's unstored tail is longer than MaxScan, or a sink missed
	// records its pinned topic no longer holds); nothing is deleted.
	HoldSinksUnknown Hold = "sinks_unknown"
	// HoldReplay: a replay still running has not read this offset yet.
	HoldReplay Hold = "replay"
	// HoldNotReplayed: (quarantine, dead-letter) no finished replay moved
	// this offset elsewhere.
	HoldNotReplayed Hold = "not_replayed"
	// HoldLogStart: the log start is already at or past every bound
	// (retention deleted at least as much); nothing to delete.
	HoldLogStart Hold = "log_start"
)

// Downstream is a consumer whose progress a purge with AfterSinks waits
// for: a sink's consumer group on its region's pinned topic (or the
// releaser of a hold topic). Every record it reads carries the ingest
// coordinates it came from (residency-source-* headers).
type Downstream struct {
	// Topic is the topic it consumes.
	Topic Topic `json:"topic"`
	// Group is its consumer group.
	Group string `json:"group"`
	// Name says who it is (the store), for reports.
	Name string `json:"name"`
}

// PurgeConfig configures a Purger.
type PurgeConfig struct {
	// Clusters are the Kafka clusters by name: the ingest cluster and every
	// cluster a Downstream reads. Required.
	Clusters map[string]Cluster
	// IngestCluster is the name of the ingest cluster. Required.
	IngestCluster string
	// IngestTopics are the router's ingest topics. Default: none.
	IngestTopics []string
	// RouterGroup is the router's consumer group. Required with
	// IngestTopics.
	RouterGroup string
	// Replayed are the topics of the ingest cluster purged over the ranges
	// finished replays moved elsewhere: quarantine, dead-letter, sink
	// quarantine. Default: none.
	Replayed []Topic
	// Replays lists the replays. Default nil: no replay is known, so the
	// Replayed topics are left alone and no replay holds an ingest topic.
	Replays ReplaySource
	// Downstream are the consumers AfterSinks waits for, and whose commits
	// bound the trimming of their pinned topics (Pinned): every sink's
	// group on its pinned topic. Default: none (AfterSinks and Pinned are
	// then refused).
	Downstream []Downstream
	// Ledger receives one purge leaf per partition range before the range
	// is deleted. Default nil: no audit leaves.
	Ledger Ledger
	// Actor names the purge in its leaves. Default "purge".
	Actor string
	// MaxScan bounds the records of one pinned-topic partition that
	// AfterSinks reads (a sink's unstored tail); a longer tail holds every
	// ingest partition (HoldSinksUnknown). Default 1000000.
	MaxScan int64
	// Batch is how many records a read hands over at once. Default 500.
	Batch int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives warnings (held partitions, failures). Default
	// slog.Default().
	Logger *slog.Logger
}

// PurgeOptions are the choices of one purge run.
type PurgeOptions struct {
	// AfterSinks holds ingest records back until every Downstream has
	// stored them.
	AfterSinks bool
	// MinAge holds back records younger than this (by their timestamps).
	MinAge time.Duration
	// Pinned also trims the pinned topics the Downstream consumers drain,
	// per partition up to the lowest offset they all committed: every
	// sink reading the topic stored (or quarantined) every record below
	// it. A partition one of them never committed is left alone.
	Pinned bool
	// DryRun plans and deletes nothing.
	DryRun bool
}

// PartitionPlan is what a purge does (or would do) to one partition.
type PartitionPlan struct {
	Topic
	// Partition is the partition.
	Partition int `json:"partition"`
	// LogStart is its log start offset when planned.
	LogStart int64 `json:"log_start"`
	// HighWater is its high-water mark when planned.
	HighWater int64 `json:"high_water"`
	// Committed is, for an ingest topic, the router group's committed
	// offset (nil when it never committed the partition).
	Committed *int64 `json:"committed,omitempty"`
	// Before is the new log start: records below it are deleted. Equal to
	// LogStart when nothing is.
	Before int64 `json:"delete_before"`
	// Records is how many offsets go (Before - LogStart; compaction or
	// transaction markers can make the records fewer).
	Records int64 `json:"records"`
	// HeldBy says what stops the purge at Before.
	HeldBy Hold `json:"held_by"`
	// Detail explains HeldBy, e.g. which sink or replay.
	Detail string `json:"detail,omitempty"`
	// NewLogStart is, after a run, the log start the broker reported.
	NewLogStart int64 `json:"new_log_start,omitempty"`
	// Deleted is, after a run, true when the range was deleted.
	Deleted bool `json:"deleted,omitempty"`
	// Error is, after a run, why the range could not be deleted.
	Error string `json:"error,omitempty"`
}

// DownstreamState is what AfterSinks found of one Downstream.
type DownstreamState struct {
	Downstream
	// Unstored is how many records of its topic it has not committed.
	Unstored int64 `json:"unstored"`
	// Problem says why its progress is unknown ("" when known).
	Problem string `json:"problem,omitempty"`
}

// PurgePlan is a purge, planned (DryRun) or run.
type PurgePlan struct {
	// Time is when it was planned.
	Time time.Time `json:"time"`
	// DryRun is true when nothing was deleted.
	DryRun bool `json:"dry_run"`
	// AfterSinks and MinAge are the options it was planned with.
	AfterSinks bool `json:"after_sinks"`
	// MinAge is the minimum age, as a duration string ("0s" for none).
	MinAge string `json:"min_age"`
	// Pinned is true when pinned topics were trimmed too.
	Pinned bool `json:"pinned,omitempty"`
	// Partitions are every partition of every topic considered, by topic
	// and partition.
	Partitions []PartitionPlan `json:"partitions"`
	// Downstream is, with AfterSinks, what was found of each sink.
	Downstream []DownstreamState `json:"downstream,omitempty"`
	// Records is how many offsets go (went) in total.
	Records int64 `json:"records"`
	// Leaves is how many audit leaves the run appended.
	Leaves int `json:"leaves,omitempty"`
}

// Purger plans and runs purges. It is safe for concurrent use; two purges
// at once (two replicas of a purge loop) are harmless: a log start offset
// never moves back, each deletes at most what is safe when it planned.
type Purger struct {
	cfg PurgeConfig
	log *slog.Logger
}

// NewPurger checks cfg and returns a Purger; errors wrap ErrConfig.
func NewPurger(cfg PurgeConfig) (*Purger, error) {
	var errs []error
	bad := func(f string, a ...any) { errs = append(errs, fmt.Errorf("%w: "+f, append([]any{ErrConfig}, a...)...)) }
	if cfg.IngestCluster == "" {
		bad("ingest cluster: required")
	} else if c, ok := cfg.Clusters[cfg.IngestCluster]; !ok || c.Admin == nil {
		bad("ingest cluster %q: no admin for it", cfg.IngestCluster)
	}
	if len(cfg.IngestTopics) > 0 && cfg.RouterGroup == "" {
		bad("router consumer group: required to purge ingest topics")
	}
	for _, t := range cfg.Replayed {
		if t.Cluster != cfg.IngestCluster {
			bad("topic %s (%s): replayed topics live on the ingest cluster %q", t, t.Role, cfg.IngestCluster)
		}
	}
	for _, d := range cfg.Downstream {
		c, ok := cfg.Clusters[d.Topic.Cluster]
		if !ok || c.Admin == nil || c.Reader == nil {
			bad("sink %s: no admin and reader for cluster %q", d.Name, d.Topic.Cluster)
		}
		if d.Group == "" {
			bad("sink %s: consumer group required", d.Name)
		}
	}
	if cfg.MaxScan < 0 {
		bad("max scan: must not be negative")
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Actor == "" {
		cfg.Actor = "purge"
	}
	if cfg.MaxScan == 0 {
		cfg.MaxScan = DefaultMaxScan
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Purger{cfg: cfg, log: log}, nil
}

// Run plans a purge and, unless opts.DryRun, runs it. The plan is returned
// with what happened to each partition; an error that stopped it part way
// wraps ErrIncomplete (the plan says which partitions were deleted).
func (p *Purger) Run(ctx context.Context, opts PurgeOptions) (*PurgePlan, error) {
	plan, err := p.Plan(ctx, opts)
	if err != nil || opts.DryRun {
		return plan, err
	}
	return plan, p.Execute(ctx, plan)
}

// Plan works out, per partition, how far a purge may delete. It changes
// nothing.
func (p *Purger) Plan(ctx context.Context, opts PurgeOptions) (*PurgePlan, error) {
	if opts.AfterSinks && len(p.cfg.Downstream) == 0 && len(p.cfg.IngestTopics) > 0 {
		return nil, fmt.Errorf("%w: --after-sinks: the config names no sink whose progress to wait for", ErrConfig)
	}
	if opts.MinAge < 0 {
		return nil, fmt.Errorf("%w: --min-age: must not be negative", ErrConfig)
	}
	if opts.Pinned && len(p.cfg.Downstream) == 0 {
		return nil, fmt.Errorf("%w: --pinned: the config names no sink whose commits bound the pinned topics", ErrConfig)
	}
	now := p.cfg.Now()
	plan := &PurgePlan{Time: now, DryRun: opts.DryRun, AfterSinks: opts.AfterSinks, MinAge: opts.MinAge.String(), Pinned: opts.Pinned}
	var replays []ReplayState
	if p.cfg.Replays != nil {
		var err error
		if replays, err = p.cfg.Replays.Replays(ctx); err != nil {
			return nil, fmt.Errorf("erasure: purge: replays: %w", err)
		}
	}
	ing := p.cfg.Clusters[p.cfg.IngestCluster].Admin

	// 1. The ingest topics: the router group's commits first, so that every
	// record of an offset below them is in its pinned topic before the
	// sinks' tails are read (step 2).
	type ingestState struct {
		low, high, committed, young map[int]int64
	}
	states := make([]ingestState, len(p.cfg.IngestTopics))
	for i, t := range p.cfg.IngestTopics {
		st := &states[i]
		var err error
		if st.committed, err = ing.CommittedOffsets(ctx, p.cfg.RouterGroup, t); err != nil {
			return nil, fmt.Errorf("erasure: purge: %w", err)
		}
		if st.low, st.high, err = ing.Watermarks(ctx, t); err != nil {
			return nil, fmt.Errorf("erasure: purge: %w", err)
		}
		if opts.MinAge > 0 {
			if st.young, err = ing.OffsetsAt(ctx, t, now.Add(-opts.MinAge)); err != nil {
				return nil, fmt.Errorf("erasure: purge: %w", err)
			}
		}
	}
	// 2. The sinks' progress.
	var stored *sinkProgress
	if opts.AfterSinks && len(p.cfg.IngestTopics) > 0 {
		var err error
		if stored, err = p.sinksProgress(ctx); err != nil {
			return nil, err
		}
		plan.Downstream = stored.states
	}
	for i, t := range p.cfg.IngestTopics {
		st := &states[i]
		topic := Topic{Cluster: p.cfg.IngestCluster, Name: t, Role: RoleIngest}
		for _, part := range sortedKeys(st.high) {
			pp := PartitionPlan{Topic: topic, Partition: part, LogStart: st.low[part], HighWater: st.high[part]}
			c, ok := st.committed[part]
			if !ok {
				pp.HeldBy, pp.Detail = HoldNoCommit, fmt.Sprintf("group %s has never committed this partition", p.cfg.RouterGroup)
				pp.Before = pp.LogStart
				plan.Partitions = append(plan.Partitions, pp)
				continue
			}
			pp.Committed = &c
			limit, hold, detail := c, HoldCommitted, ""
			if st.young != nil {
				if y, ok := st.young[part]; ok && y < limit {
					limit, hold, detail = y, HoldMinAge, "records from offset "+fmt.Sprint(y)+" are younger than "+opts.MinAge.String()
				}
			}
			if stored != nil {
				if stored.unknown != "" {
					limit, hold, detail = pp.LogStart, HoldSinksUnknown, stored.unknown
				} else if s, ok := stored.low[srcKey{t, part}]; ok && s < limit {
					limit, hold, detail = s, HoldSinks, stored.who[srcKey{t, part}]+" has not stored offset "+fmt.Sprint(s)
				}
			}
			if n, id, ok := replayCap(replays, t, part); ok && n < limit {
				limit, hold, detail = n, HoldReplay, "replay "+id+" has not read offset "+fmt.Sprint(n)
			}
			p.finish(&pp, limit, hold, detail)
			if pp.LogStart > c {
				pp.Detail = fmt.Sprintf("the log starts at %d, past the committed offset %d: retention deleted records the router never read", pp.LogStart, c)
			}
			plan.Partitions = append(plan.Partitions, pp)
		}
	}
	// 3. Quarantine, dead-letter, sink quarantine: the ranges finished
	// replays moved elsewhere.
	for _, t := range p.cfg.Replayed {
		low, high, err := ing.Watermarks(ctx, t.Name)
		if err != nil {
			return nil, fmt.Errorf("erasure: purge: %w", err)
		}
		for _, part := range sortedKeys(high) {
			pp := PartitionPlan{Topic: t, Partition: part, LogStart: low[part], HighWater: high[part]}
			limit, hold, detail := replayedUpTo(replays, t.Name, part, pp.LogStart, p.cfg.Replays != nil)
			if n, id, ok := replayCap(replays, t.Name, part); ok && n < limit {
				limit, hold, detail = n, HoldReplay, "replay "+id+" has not read offset "+fmt.Sprint(n)
			}
			p.finish(&pp, limit, hold, detail)
			plan.Partitions = append(plan.Partitions, pp)
		}
	}
	// 4. Pinned topics: up to what every sink draining them committed.
	if opts.Pinned {
		for _, t := range p.pinnedTopics() {
			pps, err := p.planPinned(ctx, t)
			if err != nil {
				return nil, err
			}
			plan.Partitions = append(plan.Partitions, pps...)
		}
	}
	for _, pp := range plan.Partitions {
		plan.Records += pp.Records
	}
	return plan, nil
}

// pinnedTopics returns the topics of the Downstream consumers, once each,
// in config order.
func (p *Purger) pinnedTopics() []Topic {
	var out []Topic
	for _, d := range p.cfg.Downstream {
		if !slices.ContainsFunc(out, func(t Topic) bool { return t.Cluster == d.Topic.Cluster && t.Name == d.Topic.Name }) {
			out = append(out, d.Topic)
		}
	}
	return out
}

// sinkCommits returns, per partition of t, the lowest offset every
// Downstream consumer of t committed, with who holds it there; a partition
// one of them never committed is absent from low and named in never.
func (p *Purger) sinkCommits(ctx context.Context, t Topic) (low map[int]int64, who map[int]string, never map[int]string, err error) {
	admin := p.cfg.Clusters[t.Cluster].Admin
	low, who, never = map[int]int64{}, map[int]string{}, map[int]string{}
	_, high, err := admin.Watermarks(ctx, t.Name)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("erasure: purge: %w", err)
	}
	for _, d := range p.cfg.Downstream {
		if d.Topic.Cluster != t.Cluster || d.Topic.Name != t.Name {
			continue
		}
		c, err := admin.CommittedOffsets(ctx, d.Group, t.Name)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("erasure: purge: %w", err)
		}
		for part := range high {
			if _, gone := never[part]; gone {
				continue
			}
			o, ok := c[part]
			if !ok {
				never[part] = fmt.Sprintf("sink %s (group %s) has never committed this partition", d.Name, d.Group)
				delete(low, part)
				continue
			}
			if cur, seen := low[part]; !seen || o < cur {
				low[part], who[part] = o, fmt.Sprintf("sink %s (group %s) committed %d", d.Name, d.Group, o)
			}
		}
	}
	return low, who, never, nil
}

// planPinned plans the trimming of pinned topic t.
func (p *Purger) planPinned(ctx context.Context, t Topic) ([]PartitionPlan, error) {
	lowWM, high, err := p.cfg.Clusters[t.Cluster].Admin.Watermarks(ctx, t.Name)
	if err != nil {
		return nil, fmt.Errorf("erasure: purge: %w", err)
	}
	low, who, never, err := p.sinkCommits(ctx, t)
	if err != nil {
		return nil, err
	}
	var out []PartitionPlan
	for _, part := range sortedKeys(high) {
		pp := PartitionPlan{Topic: t, Partition: part, LogStart: lowWM[part], HighWater: high[part]}
		if why, ok := never[part]; ok {
			pp.Before, pp.HeldBy, pp.Detail = pp.LogStart, HoldNoCommit, why
			out = append(out, pp)
			continue
		}
		c := low[part]
		pp.Committed = &c
		p.finish(&pp, c, HoldCommitted, who[part])
		out = append(out, pp)
	}
	return out, nil
}

// finish sets Before and Records from the limit found.
func (p *Purger) finish(pp *PartitionPlan, limit int64, hold Hold, detail string) {
	limit = min(limit, pp.HighWater)
	if limit <= pp.LogStart {
		pp.Before = pp.LogStart
		if limit < pp.LogStart && hold != HoldNoCommit && hold != HoldSinksUnknown && hold != HoldNotReplayed {
			hold, detail = HoldLogStart, fmt.Sprintf("the log already starts at %d (%s: %d)", pp.LogStart, hold, limit)
		}
	} else {
		pp.Before = limit
	}
	pp.Records = pp.Before - pp.LogStart
	pp.HeldBy, pp.Detail = hold, detail
}

// replayCap returns the lowest offset of topic/partition that a replay
// still running (not a dry run) has not read.
func replayCap(replays []ReplayState, topic string, partition int) (next int64, id string, ok bool) {
	for _, r := range replays {
		if r.Topic != topic || r.Complete || r.DryRun {
			continue
		}
		for _, rg := range r.Ranges {
			if rg.Partition != partition {
				continue
			}
			n, has := r.Next[partition]
			if !has {
				n = rg.Start
			}
			if n < rg.End && (!ok || n < next) {
				next, id, ok = n, r.ID, true
			}
		}
	}
	return next, id, ok
}

// replayedUpTo returns how far, from the log start, finished replays moved
// every event of topic/partition elsewhere.
func replayedUpTo(replays []ReplayState, topic string, partition int, logStart int64, known bool) (int64, Hold, string) {
	if !known {
		return logStart, HoldNotReplayed, "no replay checkpoints were given"
	}
	var done []OffsetRange
	var kept []string
	for _, r := range replays {
		if r.Topic != topic || !r.Complete || r.DryRun {
			continue
		}
		for _, rg := range r.Ranges {
			if rg.Partition != partition || rg.End <= rg.Start {
				continue
			}
			end := rg.End
			if r.KeptFrom != nil {
				if k, ok := r.KeptFrom[partition]; ok {
					end = min(end, k)
				}
			} else if r.Kept > 0 {
				kept = append(kept, fmt.Sprintf("replay %s left %d events in place", r.ID, r.Kept))
				continue
			}
			if end > rg.Start {
				done = append(done, OffsetRange{Partition: partition, Start: rg.Start, End: end})
			}
		}
	}
	sort.Slice(done, func(i, j int) bool { return done[i].Start < done[j].Start })
	at := logStart
	for _, d := range done {
		if d.Start > at {
			break
		}
		at = max(at, d.End)
	}
	detail := fmt.Sprintf("no finished replay moved offset %d elsewhere", at)
	if len(kept) > 0 {
		detail += " (" + strings.Join(kept, "; ") + ")"
	}
	return at, HoldNotReplayed, detail
}

// Execute deletes what plan says. Right before deleting it reads the
// router group's committed offsets (and, for pinned topics, the sinks')
// again and never deletes past them (an operator may have moved them back
// since the plan). Every range's purge
// leaf is appended to the ledger before any range is deleted; if the
// ledger fails nothing is deleted. Per partition it records the new log
// start or the error; a failure of some partitions wraps ErrIncomplete.
func (p *Purger) Execute(ctx context.Context, plan *PurgePlan) error {
	plan.DryRun = false
	ing := p.cfg.Clusters[p.cfg.IngestCluster].Admin
	committed := map[string]map[int]int64{}
	for i := range plan.Partitions {
		pp := &plan.Partitions[i]
		if pp.Role != RoleIngest || pp.Records == 0 {
			continue
		}
		c, ok := committed[pp.Name]
		if !ok {
			var err error
			if c, err = ing.CommittedOffsets(ctx, p.cfg.RouterGroup, pp.Name); err != nil {
				return fmt.Errorf("erasure: purge: %w", err)
			}
			committed[pp.Name] = c
		}
		now, ok := c[pp.Partition]
		if !ok {
			now = pp.LogStart
		}
		if now < pp.Before {
			pp.Before = max(now, pp.LogStart)
			pp.Records = pp.Before - pp.LogStart
			pp.HeldBy, pp.Detail = HoldCommitted, fmt.Sprintf("the committed offset moved back to %d since the plan", now)
		}
	}
	pinned := map[Topic]map[int]int64{}
	for i := range plan.Partitions {
		pp := &plan.Partitions[i]
		if pp.Role != RolePinned || pp.Records == 0 {
			continue
		}
		c, ok := pinned[pp.Topic]
		if !ok {
			var err error
			if c, _, _, err = p.sinkCommits(ctx, pp.Topic); err != nil {
				return err
			}
			pinned[pp.Topic] = c
		}
		now, ok := c[pp.Partition]
		if !ok {
			now = pp.LogStart
		}
		if now < pp.Before {
			pp.Before = max(now, pp.LogStart)
			pp.Records = pp.Before - pp.LogStart
			pp.HeldBy, pp.Detail = HoldCommitted, fmt.Sprintf("a sink's committed offset moved back to %d since the plan", now)
		}
	}
	now := p.cfg.Now()
	var leaves []audit.Leaf
	for _, pp := range plan.Partitions {
		if pp.Records > 0 {
			leaves = append(leaves, audit.Leaf{
				Kind: audit.KindPurge, Time: now.UnixMilli(), Actor: p.cfg.Actor,
				Src:      audit.Source{Cluster: pp.Cluster, Topic: pp.Name, Partition: int32(pp.Partition), Offset: pp.LogStart, EndOffset: pp.Before},
				Decision: audit.Purged, Count: pp.Records,
			})
		}
	}
	if len(leaves) > 0 && p.cfg.Ledger != nil {
		if err := p.cfg.Ledger.Append(ctx, leaves); err != nil {
			return fmt.Errorf("erasure: purge: audit leaves not appended, nothing deleted: %w", err)
		}
		plan.Leaves = len(leaves)
	}
	// Delete, one request per topic.
	type topicKey struct{ cluster, topic string }
	byTopic := map[topicKey][]int{}
	var order []topicKey
	for i, pp := range plan.Partitions {
		if pp.Records == 0 {
			continue
		}
		k := topicKey{pp.Cluster, pp.Name}
		if _, ok := byTopic[k]; !ok {
			order = append(order, k)
		}
		byTopic[k] = append(byTopic[k], i)
	}
	var errs []error
	for _, k := range order {
		idx := byTopic[k]
		before := make(map[int]int64, len(idx))
		for _, i := range idx {
			before[plan.Partitions[i].Partition] = plan.Partitions[i].Before
		}
		got, err := p.cfg.Clusters[k.cluster].Admin.DeleteRecords(ctx, k.topic, before)
		for _, i := range idx {
			pp := &plan.Partitions[i]
			if ls, ok := got[pp.Partition]; ok {
				pp.NewLogStart, pp.Deleted = ls, ls >= pp.Before
				if ls < pp.Before {
					pp.Error = fmt.Sprintf("the log start is %d after the delete, not %d", ls, pp.Before)
				}
			} else {
				pp.Error = "not deleted"
				if err != nil {
					pp.Error = err.Error()
				}
			}
		}
		if err != nil {
			errs = append(errs, err)
			p.log.Warn("purge: delete records failed", "cluster", k.cluster, "topic", k.topic, "error", err)
		}
	}
	plan.Records = 0
	for _, pp := range plan.Partitions {
		if pp.Deleted {
			plan.Records += pp.Records
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: purge: %w", ErrIncomplete, errors.Join(errs...))
	}
	return nil
}

func sortedKeys[V any](m map[int]V) []int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
