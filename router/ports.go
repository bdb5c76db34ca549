package router

import (
	"context"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// FieldReader reads the jurisdiction inputs of an event from its encoded
// value without decoding the whole record. schemas.Extractor satisfies it.
// Errors wrap the schemas sentinel errors; schemas.ErrRegistryUnavailable is
// transient and is retried, every other error dead-letters the event.
type FieldReader interface {
	// Extract reads the fields of value, read from topic.
	Extract(ctx context.Context, topic string, value []byte) (schemas.Fields, error)
}

// RulesSource hands out the ruleset in force. rules.Cache satisfies it.
type RulesSource interface {
	// Current returns the ruleset in force, or an error when there is no
	// valid one (none loaded, stale, corrupt); the router then stops
	// consuming until it returns one again.
	Current() (*rules.Ruleset, error)
}

// PinSource hands out the per-user pins in force, from memory.
// rules.Pins satisfies it.
type PinSource interface {
	// Pins returns a view of the whole pin set, without a round trip, or
	// an error when there is no valid one (never loaded, or stale: not
	// confirmed against Redis within the staleness bound); the router then
	// stops consuming until it returns one again, as for the ruleset.
	Pins() (PinView, error)
}

// PinView is one consistent, immutable view of the pin set: Pin(userID)
// returns the jurisdiction the user is pinned to, "" for none, without
// allocating (tens of nanoseconds), safe for concurrent use while
// changes arrive (they make a new view). It is rules.PinView: a type
// alias, because rules (which router imports) cannot name a router type
// in rules.Pins' method.
type PinView = rules.PinView

// PinLookup returns per-user jurisdiction overrides. rules.Pins satisfies
// it, from its in-memory view (Pins is the port the batch loop uses).
type PinLookup interface {
	// Lookup returns, for each user id, the name of the jurisdiction the
	// user is pinned to, or "" if the user has no pin. The result has the
	// same length as userIDs.
	Lookup(ctx context.Context, userIDs [][]byte) ([]string, error)
}

// Ledger makes the audit record of settled events durable (docs/audit.md).
// The router's committer calls Record with the events whose every
// destination has acknowledged them, and commits their source offsets only
// once Record has returned nil: no committed offset without its leaf. A
// router killed between Record and the commit leaves leaves of offsets that
// are routed (and recorded) again, which the verifier explains as
// duplicates.
//
// Memory contract: settled and everything it points to (events, their
// messages, fields and the ruleset) are borrowed for the call; Record
// encodes what it needs before it returns and keeps no reference after.
// A Record error is transient: the router retries it under its retry
// policy and commits nothing past those events meanwhile.
type Ledger interface {
	// Record appends the leaves of settled durably (acknowledged by every
	// in-sync replica of the audit topic) before it returns nil.
	Record(ctx context.Context, settled []Settled) error
}

// Settled is an event whose destination acknowledged it, as given to
// Ledger.Record.
type Settled struct {
	// Event is the decided event: Event.Msg holds its source coordinates,
	// Event.Decision where it went and why, Event.Fields its jurisdiction
	// inputs.
	Event *Event
	// Ruleset is the ruleset it was published under.
	Ruleset *rules.Ruleset
	// Cluster and Topic are where it was written.
	Cluster, Topic string
	// Partition and Offset are its place in Topic, from the produce
	// acknowledgement; Offset is -1 when the broker did not say.
	Partition int32
	Offset    int64
}
