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
	// ErrContentChanged is returned by Cache.Current when the source's
	// version with the number of the ruleset in use has another content
	// (another digest): a version number names two contents, which happens
	// only when Redis lost its data and rules were applied again without
	// the history topic. The caller must stop routing (fail closed); the
	// cache takes new content only as a version above the one in use.
	ErrContentChanged = errors.New("ruleset content changed")
	// ErrHistoryLost is returned by Cache.Current when the source's current
	// version is below the one in use (Redis lost its data or was restored
	// from an old snapshot), and by `rules apply` when Redis is behind the
	// history topic. The caller must stop routing (fail closed).
	ErrHistoryLost = errors.New("ruleset history lost")
	// ErrNoPins is returned by Pins.Pins before the pin set is first
	// loaded: the caller must not route.
	ErrNoPins = errors.New("pins not loaded")
	// ErrPinsStale is returned by Pins.Pins when the pin set has not been
	// confirmed against the store for longer than the staleness bound: the
	// caller must stop routing (fail closed).
	ErrPinsStale = errors.New("pins are stale")
)
