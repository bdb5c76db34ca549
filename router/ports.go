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

// PinLookup returns per-user jurisdiction overrides. rules.Pins satisfies it.
type PinLookup interface {
	// Lookup returns, for each user id, the name of the jurisdiction the
	// user is pinned to, or "" if the user has no pin. The result has the
	// same length as userIDs.
	Lookup(ctx context.Context, userIDs [][]byte) ([]string, error)
}
