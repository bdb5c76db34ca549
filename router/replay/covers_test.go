package replay

import "testing"

// TestPlanCovers: an earlier replay covers a new one only if replaying its
// offsets again under the new plan would write the same events to the
// same places: same topic, source and ruleset, no filter or the same, a
// loop limit at least as high, and not --only-moved unless the new one is
// too with the same baseline.
func TestPlanCovers(t *testing.T) {
	base := Plan{ID: "new", Source: SourceIngest, Topic: "in", RulesetVersion: "4", MaxReplays: 3}
	for _, c := range []struct {
		name   string
		change func(p *Plan)
		want   bool
	}{
		{"the same plan", func(*Plan) {}, true},
		{"itself", func(p *Plan) { p.ID = "new" }, false},
		{"another topic", func(p *Plan) { p.Topic = "other" }, false},
		{"another source", func(p *Plan) { p.Source = SourceQuarantine }, false},
		{"another version", func(p *Plan) { p.RulesetVersion = "5" }, false},
		{"a ruleset file", func(p *Plan) { p.RulesetHash = "abc" }, false},
		{"a filter", func(p *Plan) { p.Filter.Jurisdictions = []string{"EU"} }, false},
		{"a lower loop limit", func(p *Plan) { p.MaxReplays = 2 }, false},
		{"a higher loop limit", func(p *Plan) { p.MaxReplays = 5 }, true},
		{"only moved", func(p *Plan) { p.OnlyMoved = true }, false},
	} {
		earlier := base
		earlier.ID = "old"
		c.change(&earlier)
		if got := earlier.covers(&base); got != c.want {
			t.Errorf("%s: covers = %v, want %v", c.name, got, c.want)
		}
	}
	filtered := base
	filtered.Filter.Jurisdictions = []string{"EU"}
	earlier := filtered
	earlier.ID = "old"
	if !earlier.covers(&filtered) || !(&Plan{ID: "old", Source: SourceIngest, Topic: "in", RulesetVersion: "4", MaxReplays: 3}).covers(&filtered) {
		t.Error("an unfiltered replay, or one with the same filter, covers a filtered one")
	}
}
