package rules

import "errors"

// Sentinel errors callers branch on. Errors returned by this package wrap
// them (test with errors.Is); validation failures are a *ValidationError.
var (
	// ErrNoRuleset is returned by Cache.Current before the first ruleset is
	// loaded: the caller must not route.
	ErrNoRuleset = errors.New("no ruleset loaded")
	// ErrStale is returned by Cache.Current when the ruleset could not be
	// confirmed for longer than the staleness bound: the caller must stop
	// routing (fail closed).
	ErrStale = errors.New("ruleset is stale")
	// ErrConflict is returned by Apply and Rollback when another version was
	// applied after the one the change was based on.
	ErrConflict = errors.New("another version was applied meanwhile")
	// ErrUnchanged is returned by Apply and Rollback when the content is the
	// current version's: nothing is written.
	ErrUnchanged = errors.New("no change")
	// ErrNotFound is returned for a version that does not exist, and by
	// Unpin for a user who is not pinned.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt is returned for a stored version whose content does not
	// match its hash, lacks fields, or is not a valid ruleset.
	ErrCorrupt = errors.New("stored ruleset is corrupt")
	// ErrUnavailable is returned when Redis cannot be reached.
	ErrUnavailable = errors.New("redis unavailable")
)
