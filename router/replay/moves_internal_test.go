package replay

import (
	"context"
	"testing"

	"github.com/residency-router/residency/router"
)

// TestStayingEventIsNoMove: an event that stays where it is (a dead-letter
// record still undecodable, a quarantined one still unplaceable) is not a
// move, even when its reason reads otherwise now (a too_large record
// whose body the router left out decodes as empty_value), so the report
// never lists as moved what replay did not write.
func TestStayingEventIsNoMove(t *testing.T) {
	for _, c := range []struct {
		source   SourceKind
		decision router.Decision
		from     string
		stays    bool
		moves    bool
	}{
		{SourceDeadLetter, router.Decision{Outcome: router.DeadLettered, Reason: "empty_value"}, "dead-letter:too_large", true, false},
		{SourceQuarantine, router.Decision{Outcome: router.Quarantined, Reason: "unknown_country"}, "quarantine:no_rule", true, false},
		{SourceDeadLetter, router.Decision{Outcome: router.Routed, Region: "eu"}, "dead-letter:unknown_schema", false, true},
	} {
		plan := Plan{Source: c.source}
		r := &Replay{trans: map[[2]string]*Transition{}, rep: newReport(&plan, true)}
		it := &item{ev: &router.Event{Decision: c.decision}}
		r.record(context.Background(), it, c.from, label(&c.decision), c.stays)
		mv := r.rep.clone()
		mv.Transitions = nil
		for _, tr := range r.trans {
			mv.Transitions = append(mv.Transitions, *tr)
		}
		if got := len(mv.Moves()) == 1; got != c.moves {
			t.Errorf("%s -> %s (stays %v): moves %v, want %v", c.from, label(&c.decision), c.stays, got, c.moves)
		}
	}
}
