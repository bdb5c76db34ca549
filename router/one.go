package router

import (
	"context"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// DecideOne decides one event exactly as Decide decides each event of a
// batch (it is Decide on a batch of one): read (emptiness and size checks,
// then Fields, retried while the schema registry is away), the pin of its
// user looked up, then Place. `residency explain` decides events with it.
// A decode error is the event's: the returned Event's Err says why and its
// Decision dead-letters it. DecideOne fails only as Decide does: the schema
// registry or the pin lookup unavailable past the retry policy, or ctx
// ended.
func (p *Pipeline) DecideOne(ctx context.Context, m stream.Message, rs *rules.Ruleset) (Event, error) {
	b, err := p.Decide(ctx, []stream.Message{m}, rs)
	if err != nil {
		return Event{}, err
	}
	return b.Events[0], nil
}

// PlaceFields decides an event from its routing fields alone, as Decide
// does once they are read: the pin of its user looked up (when f has a
// user id and the pipeline has Pins), then Place. `residency explain`
// answers with it when it is given only the routing fields. It fails only
// when the pin lookup stays unavailable past the retry policy, or ctx
// ends.
func (p *Pipeline) PlaceFields(ctx context.Context, f schemas.Fields, rs *rules.Ruleset) (Event, error) {
	evs := []Event{{Fields: f}}
	if err := p.lookupPins(ctx, evs); err != nil {
		return Event{}, err
	}
	evs[0].Decision = p.Place(f, evs[0].Pin, rs)
	return evs[0], nil
}
