package replay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/residency-router/residency/router/rules"
)

// ErrPlan: a replay cannot be planned as asked (a range, a ruleset version
// or a combination of options that does not hold); the message names the
// option. Commands exit with code 2 on it.
var ErrPlan = errors.New("replay: bad plan")

// planErr returns an ErrPlan error with the message format says.
func planErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrPlan, fmt.Sprintf(format, args...))
}

// Offsets tells which offsets a topic holds, for planning.
// connectors/kafka.Admin answers it (cmd/residency adapts it).
type Offsets interface {
	// Bounds returns, per partition of topic, the offsets it holds now:
	// [log start, end).
	Bounds(ctx context.Context, topic string) ([]Range, error)
	// TimeRanges returns, per partition of topic, the offsets of the
	// records produced in [from, to); a zero from or to is open.
	TimeRanges(ctx context.Context, topic string, from, to time.Time) ([]Range, error)
}

// PlanOptions are what a new replay is asked to do, as `residency replay`
// takes them.
type PlanOptions struct {
	// ID names the replay. Default: NewID().
	ID string
	// Source is the kind of topic read. Required.
	Source SourceKind
	// Topic is the topic read (the caller resolves it from the config).
	// Required.
	Topic string
	// From and To bound the records read by the time they were produced,
	// [From, To); zero is open. Not with Offsets.
	From, To time.Time
	// Offsets are per-partition offsets "P:START-END,..." (END exclusive;
	// an empty START or END is the log start or end). Default "": the
	// time range.
	Offsets string
	// Filter narrows the replay. Default: every event.
	Filter Filter
	// MaxReplays is the loop guard (Plan.MaxReplays).
	MaxReplays int
	// OnlyMoved: Plan.OnlyMoved.
	OnlyMoved bool
	// Again: Plan.Again.
	Again bool
}

// NewPlan plans a replay: it resolves the offsets to read, only what the
// topic holds now (retention may have deleted the start; the end is fixed
// so a replay never chases its own writes). Errors in the options wrap
// ErrPlan.
func NewPlan(ctx context.Context, o PlanOptions, offs Offsets) (Plan, error) {
	p := Plan{ID: o.ID, Source: o.Source, Topic: o.Topic, MaxReplays: o.MaxReplays, OnlyMoved: o.OnlyMoved, Filter: o.Filter, Again: o.Again}
	if p.ID == "" {
		p.ID = NewID()
	}
	if o.Offsets != "" && (!o.From.IsZero() || !o.To.IsZero()) {
		return p, planErr("--offsets and --from/--to exclude each other")
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if o.Offsets != "" {
		bounds, err := offs.Bounds(actx, p.Topic)
		if err != nil {
			return p, err
		}
		if p.Ranges, err = ParseOffsets(o.Offsets, bounds); err != nil {
			return p, fmt.Errorf("%w: --offsets: %w", ErrPlan, err)
		}
		return p, nil
	}
	ranges, err := offs.TimeRanges(actx, p.Topic, o.From, o.To)
	if err != nil {
		return p, err
	}
	p.Ranges = ranges
	return p, nil
}

// NewID returns a new replay id: replay-YYYYMMDD-HHMMSS-XXXXXX (UTC).
func NewID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "replay-" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// ParseWhen reads RFC 3339 or a duration ago ("2h", before now); "" is
// the zero time (open).
func ParseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration such as 2h", s)
}

// ParseOffsets reads P:START-END,... against the partitions' bounds.
func ParseOffsets(s string, bounds []Range) ([]Range, error) {
	byP := map[int]Range{}
	for _, b := range bounds {
		byP[b.Partition] = b
	}
	var out []Range
	seen := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		p, rng, ok := strings.Cut(part, ":")
		lo, hi, ok2 := strings.Cut(rng, "-")
		pi, err := strconv.Atoi(p)
		if !ok || !ok2 || err != nil {
			return nil, fmt.Errorf("%q is not PARTITION:START-END", part)
		}
		b, exists := byP[pi]
		if !exists {
			return nil, fmt.Errorf("%q: the topic has no partition %d", part, pi)
		}
		if seen[pi] {
			return nil, fmt.Errorf("partition %d is given twice", pi)
		}
		seen[pi] = true
		r := Range{Partition: pi, Start: b.Start, End: b.End}
		if lo != "" {
			if r.Start, err = strconv.ParseInt(lo, 10, 64); err != nil || r.Start < 0 {
				return nil, fmt.Errorf("%q: bad start offset", part)
			}
		}
		if hi != "" {
			if r.End, err = strconv.ParseInt(hi, 10, 64); err != nil || r.End < r.Start {
				return nil, fmt.Errorf("%q: bad end offset (it is exclusive and must not be before the start)", part)
			}
		}
		// Only what exists now: retention may have deleted the start, and
		// the end is fixed so a replay never chases its own writes.
		r.Start = min(max(r.Start, b.Start), b.End)
		r.End = max(min(r.End, b.End), r.Start)
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("no partition given")
	}
	return out, nil
}

// RulesetChoice says which ruleset a replay decides with.
type RulesetChoice struct {
	// File is a ruleset file to decide with instead of the history's
	// versions (a dry run only); "" for none.
	File string
	// FileFrom names where File came from in messages ("--rules",
	// "rules.file").
	FileFrom string
	// Version is the history's version to decide with; 0: the current one
	// (or, when resuming, the plan's).
	Version int64
	// Baseline, for an ingest source, is the ruleset the events were first
	// routed under: a version number or a file. Default "": the version
	// before Version (none for a file).
	Baseline string
	// Resume: the plan comes from a checkpoint, and must stay as it was.
	Resume bool
}

// BaselineVersion is Baseline as a version number, or 0 when it is a file
// (or not set).
func (c RulesetChoice) BaselineVersion() int64 {
	v, err := strconv.ParseInt(c.Baseline, 10, 64)
	if err != nil || v < 1 {
		return 0
	}
	return v
}

// CheckRealRun refuses, for a real (not dry) run, a ruleset that cannot be
// the one in force: a file, or a plan decided with one. The error wraps
// ErrPlan.
func CheckRealRun(plan *Plan, c RulesetChoice) error {
	if c.File != "" {
		return planErr("%s %s: a real replay publishes only under the ruleset version in force in Redis, and a file is not in force. "+
			"See what it would do with --dry-run, or apply it first (residency rules apply) and replay without --rules", c.FileFrom, c.File)
	}
	if plan.RulesetHash != "" {
		return planErr("replay %s was planned with a ruleset file (%s), which is not in force: it can only be resumed with --dry-run; "+
			"plan a new replay under the version in force", plan.ID, plan.RulesetVersion)
	}
	return nil
}

// CheckInForce refuses a real run whose ruleset rs is not the version in
// force (an ErrPlan error naming both versions); an error of inForce is
// returned as it is.
func CheckInForce(inForce RulesInForce, rs *rules.Ruleset, plan *Plan, c RulesetChoice) error {
	cur, err := inForce.Current()
	if err != nil {
		return fmt.Errorf("ruleset in force: %w", err)
	}
	if cur.Version() == rs.Version() {
		return nil
	}
	if c.Resume {
		return planErr("replay %s was planned under ruleset version %s but version %d is in force now: "+
			"it can be resumed only while version %s is in force. Plan a new replay under version %d (run it with --dry-run first)",
			plan.ID, plan.RulesetVersion, cur.Version(), plan.RulesetVersion, cur.Version())
	}
	return planErr("--rules-version %d: version %d is in force, and a real replay publishes only under the version in force. "+
		"See what version %d would do with --dry-run, or apply it first (residency rules rollback/apply)", rs.Version(), cur.Version(), rs.Version())
}

// Rulesets loads the ruleset a replay decides with, and the baseline of an
// ingest replay, from h (nil when c.File is set and no baseline version is
// asked for) or files, and records them in plan (its ruleset version, the
// file's hash, the baseline's name); a resumed plan must find the same.
// Errors: ErrPlan or ErrPlanMismatch for what the options got wrong,
// rules.ErrUnavailable when the history cannot be reached, any other for a
// ruleset that cannot be used.
func Rulesets(ctx context.Context, h rules.History, plan *Plan, c RulesetChoice) (rs, baseline *rules.Ruleset, err error) {
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var prev int64
	switch {
	case c.File != "":
		content, r, err := rules.ReadFile(c.File)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: rules file: %w", ErrPlan, err)
		}
		rs = r
		if plan.RulesetHash != "" && plan.RulesetHash != rules.Hash(content) {
			return nil, nil, fmt.Errorf("%w: replay %s was started with another ruleset file content", ErrPlanMismatch, plan.ID)
		}
		plan.RulesetHash = rules.Hash(content)
	default:
		v := c.Version
		if c.Resume && v == 0 {
			if v, err = strconv.ParseInt(plan.RulesetVersion, 10, 64); err != nil {
				return nil, nil, planErr("replay %s was decided with ruleset %q, not a Redis version; pass --rules FILE", plan.ID, plan.RulesetVersion)
			}
		}
		info, _, err := h.Show(rctx, v)
		if errors.Is(err, rules.ErrNotFound) && c.Version > 0 {
			return nil, nil, planErr("--rules-version %d: no such ruleset version%s", c.Version, latest(rctx, h))
		}
		if err != nil {
			return nil, nil, fmt.Errorf("ruleset: %w", err)
		}
		if rs, err = h.Load(rctx, info.Number); err != nil {
			return nil, nil, fmt.Errorf("ruleset: %w", err)
		}
		prev = info.Previous
	}
	if plan.RulesetVersion == "" {
		plan.RulesetVersion = rs.VersionString()
	}
	if plan.Source != SourceIngest {
		return rs, nil, nil
	}
	name := ""
	switch {
	case c.Baseline == "" && prev > 0:
		baseline, err = h.Load(rctx, prev)
		name = fmt.Sprintf("version %d", prev)
	case c.Baseline == "":
	case c.BaselineVersion() > 0:
		baseline, err = h.Load(rctx, c.BaselineVersion())
		name = fmt.Sprintf("version %d", c.BaselineVersion())
	default:
		var content []byte
		content, baseline, err = rules.ReadFile(c.Baseline)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: --baseline: %w", ErrPlan, err)
		}
		name = "sha256:" + rules.Hash(content)
	}
	if errors.Is(err, rules.ErrNotFound) && c.BaselineVersion() > 0 {
		return nil, nil, planErr("--baseline %d: no such ruleset version%s", c.BaselineVersion(), latest(rctx, h))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("ruleset: baseline: %w", err)
	}
	if c.Resume && plan.Baseline != name {
		return nil, nil, fmt.Errorf("%w: replay %s was started with baseline %q, not %q; pass the same --baseline",
			ErrPlanMismatch, plan.ID, plan.Baseline, name)
	}
	plan.Baseline = name
	return rs, baseline, nil
}

// latest says which version is the latest, for a message: " (the latest is
// version N)", or "" when that cannot be told.
func latest(ctx context.Context, h rules.History) string {
	head, err := h.Latest(ctx)
	if err != nil || head.Version == 0 {
		return ""
	}
	return fmt.Sprintf(" (the latest is version %d)", head.Version)
}
