package replay

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Transition counts the events that went (or, in a dry run, would go) from
// one place to another.
type Transition struct {
	// From is where the event was: quarantine:REASON or dead-letter:REASON
	// for those sources; for an ingest source the Baseline's decision
	// (region:R, quarantine:REASON, dead-letter:REASON), or "ingest"
	// without a baseline.
	From string `json:"from"`
	// To is the new decision: region:R, quarantine:REASON or
	// dead-letter:REASON.
	To string `json:"to"`
	// Moves is true when To differs from From and the events were
	// written (not left where they are).
	Moves bool `json:"moves"`
	// Count is the number of events.
	Count int64 `json:"count"`
	// Samples are the event ids of the first few events (their
	// topic/partition@offset when the event id cannot be read).
	Samples []string `json:"samples"`
}

// LoopGuard reports the events refused because they had been replayed
// Plan.MaxReplays times already.
type LoopGuard struct {
	// Limit is Plan.MaxReplays.
	Limit int `json:"limit"`
	// Refused is the number of events refused.
	Refused int64 `json:"refused"`
	// Samples are the topic/partition@offset of the first few.
	Samples []string `json:"samples"`
}

// Report is what a replay did, or in a dry run would do. Counts are
// cumulative over resumes of the same replay.
type Report struct {
	// ID is the replay id.
	ID string `json:"id"`
	// Source is the kind of topic read.
	Source SourceKind `json:"source"`
	// Topic is the topic read.
	Topic string `json:"topic"`
	// RulesetVersion is the version of the ruleset the events were decided
	// with.
	RulesetVersion string `json:"ruleset_version"`
	// DryRun is true when nothing was written.
	DryRun bool `json:"dry_run"`
	// Planned is the number of offsets in the plan.
	Planned int64 `json:"planned"`
	// Read is the number of events read.
	Read int64 `json:"read"`
	// Filtered is the number of events read that the filters left out.
	Filtered int64 `json:"filtered"`
	// Routed counts the decided events by region.
	Routed map[string]int64 `json:"routed"`
	// Quarantined counts the events that still cannot be placed, by reason.
	Quarantined map[string]int64 `json:"quarantined"`
	// DeadLettered counts the events that cannot be decoded, by reason.
	DeadLettered map[string]int64 `json:"dead_lettered"`
	// Written counts the events written (would be written) by topic.
	Written map[string]int64 `json:"written"`
	// Stayed is the number of events left where they are: still
	// unplaceable events read from quarantine, still undecodable events
	// read from dead-letter, and with Plan.OnlyMoved unchanged events of
	// an ingest topic. No copy of them is written.
	Stayed int64 `json:"stayed"`
	// AlreadyReplayed is the number of events read that an earlier replay
	// of the same offsets under the same ruleset version already wrote
	// where this one would (see Config.Checkpoints): they are not written
	// again, nor decided into the counts above.
	AlreadyReplayed int64 `json:"already_replayed"`
	// AlreadyReplayedBy are the ids of those earlier replays.
	AlreadyReplayedBy []string `json:"already_replayed_by,omitempty"`
	// Transitions are the from → to pairs, sorted.
	Transitions []Transition `json:"transitions"`
	// LoopGuard reports the events refused by the loop guard.
	LoopGuard LoopGuard `json:"loop_guard"`
	// Complete is true once every range of the plan was read.
	Complete bool `json:"complete"`
	// Resumed is how many times the replay was resumed from a checkpoint.
	Resumed int `json:"resumed"`
}

func newReport(p *Plan, dry bool) Report {
	return Report{ID: p.ID, Source: p.Source, Topic: p.Topic, RulesetVersion: p.RulesetVersion, DryRun: dry,
		Planned: p.Total(), Routed: map[string]int64{}, Quarantined: map[string]int64{}, DeadLettered: map[string]int64{},
		Written: map[string]int64{}, LoopGuard: LoopGuard{Limit: p.MaxReplays}}
}

func (r Report) clone() Report {
	c := r
	c.Routed = maps.Clone(r.Routed)
	c.Quarantined = maps.Clone(r.Quarantined)
	c.DeadLettered = maps.Clone(r.DeadLettered)
	c.Written = maps.Clone(r.Written)
	c.Transitions = slices.Clone(r.Transitions)
	c.LoopGuard.Samples = slices.Clone(r.LoopGuard.Samples)
	c.AlreadyReplayedBy = slices.Clone(r.AlreadyReplayedBy)
	return c
}

// Moves returns the transitions whose destination changes.
func (r *Report) Moves() []Transition {
	var out []Transition
	for _, t := range r.Transitions {
		if t.Moves {
			out = append(out, t)
		}
	}
	return out
}

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) {
	verb, would := "wrote", ""
	if r.DryRun {
		verb, would = "would write", "would "
	}
	title := "Replay"
	if r.DryRun {
		title = "Dry run"
	}
	fmt.Fprintf(w, "%s %s: %s topic %s, ruleset version %s\n", title, r.ID, r.Source, r.Topic, r.RulesetVersion)
	fmt.Fprintf(w, "  read %d of %d offsets", r.Read, r.Planned)
	if r.Filtered > 0 {
		fmt.Fprintf(w, ", %d left out by the filters", r.Filtered)
	}
	if r.AlreadyReplayed > 0 {
		fmt.Fprintf(w, ", %d already replayed under ruleset version %s by %s (not written again; --again writes them anyway)",
			r.AlreadyReplayed, r.RulesetVersion, strings.Join(r.AlreadyReplayedBy, ", "))
	}
	if !r.Complete && !r.DryRun {
		fmt.Fprint(w, " (incomplete)")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "\nDecisions:")
	if len(r.Routed)+len(r.Quarantined)+len(r.DeadLettered) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	for _, k := range slices.Sorted(maps.Keys(r.Routed)) {
		fmt.Fprintf(w, "  %-36s %d\n", "region "+k, r.Routed[k])
	}
	for _, k := range slices.Sorted(maps.Keys(r.Quarantined)) {
		fmt.Fprintf(w, "  %-36s %d\n", "quarantine ("+k+")", r.Quarantined[k])
	}
	for _, k := range slices.Sorted(maps.Keys(r.DeadLettered)) {
		fmt.Fprintf(w, "  %-36s %d\n", "dead-letter ("+k+")", r.DeadLettered[k])
	}
	fmt.Fprintf(w, "\nWrites (%s):\n", verb)
	if len(r.Written) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	for _, k := range slices.Sorted(maps.Keys(r.Written)) {
		fmt.Fprintf(w, "  %-36s %d\n", k, r.Written[k])
	}
	if r.Stayed > 0 {
		fmt.Fprintf(w, "  %d %sstay where they are (no new copy)\n", r.Stayed, would)
	}
	if mv := r.Moves(); len(mv) > 0 {
		fmt.Fprintln(w, "\nMoves (from → to):")
		for _, t := range mv {
			fmt.Fprintf(w, "  %s → %s: %d  e.g. %s\n", t.From, t.To, t.Count, strings.Join(t.Samples, ", "))
		}
	}
	var still []Transition
	for _, t := range r.Transitions {
		if !strings.HasPrefix(t.To, "region:") {
			still = append(still, t)
		}
	}
	if len(still) > 0 {
		fmt.Fprintln(w, "\nUnplaceable (and why):")
		for _, t := range still {
			fmt.Fprintf(w, "  %s (was %s): %d  e.g. %s\n", t.To, t.From, t.Count, strings.Join(t.Samples, ", "))
		}
	}
	if r.LoopGuard.Refused > 0 {
		fmt.Fprintf(w, "\nLoop guard: %d events already replayed %d times were refused (raise --max-replays to replay them), e.g. %s\n",
			r.LoopGuard.Refused, r.LoopGuard.Limit, strings.Join(r.LoopGuard.Samples, ", "))
	}
}
