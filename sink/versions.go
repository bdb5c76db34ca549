package sink

import (
	"context"
	"fmt"
	"sync"

	"github.com/residency-router/residency/router/rules"
)

// RulesetVersions hands out rulesets by version number and digest: the
// sink re-decides each event under the version that placed it (its
// residency-ruleset-version and residency-ruleset-digest headers).
// Versions implements it over a rules store.
type RulesetVersions interface {
	// Ruleset returns version v, validated and compiled, if its content
	// has the given digest (short or full, see rules.Ruleset.HasDigest;
	// "": any content). An error wrapping rules.ErrUnavailable is
	// transient: the batch waits and asks again. Any other error
	// (rules.ErrNotFound, rules.ErrCorrupt, rules.ErrContentChanged for a
	// version whose content has another digest) quarantines the events
	// that name v (sink_unknown_ruleset).
	Ruleset(ctx context.Context, v int64, digest string) (*rules.Ruleset, error)
}

// RulesetLoader loads one version of the ruleset. connectors/redis.Rules
// (every applied version) and rules.StaticSource (its one version, for
// `--rules FILE`) satisfy it, as every rules.Source does.
type RulesetLoader interface {
	// Load returns version v with its version number set.
	Load(ctx context.Context, v int64) (*rules.Ruleset, error)
}

// DefaultVersionsSize is NewVersions' default size.
const DefaultVersionsSize = 16

// Versions is a RulesetVersions over a RulesetLoader that keeps the
// versions used last in memory (at most its size), by number and digest.
// Versions are immutable, so a kept one is never out of date, but after
// Redis lost its data a number may name other content: a version asked
// for with a digest no kept content has is loaded again, and kept beside
// the other if the loader's content has that digest.
// Failed loads are not kept: a version that was not found is asked for
// again by the next batch that names it.
// A loader that answers with another version than the one asked (the
// Redis store's Load(0) returns the current version) is not trusted: the
// answer is rules.ErrNotFound. Safe for concurrent use.
type Versions struct {
	src  RulesetLoader
	size int

	mu   sync.Mutex
	kept []*rules.Ruleset // most recently used first
}

// NewVersions returns a RulesetVersions reading from src and keeping up to
// size versions (<= 0: DefaultVersionsSize).
func NewVersions(src RulesetLoader, size int) *Versions {
	if size <= 0 {
		size = DefaultVersionsSize
	}
	return &Versions{src: src, size: size}
}

// Ruleset returns version v with the given digest ("": any), from memory
// or from the loader.
func (c *Versions) Ruleset(ctx context.Context, v int64, digest string) (*rules.Ruleset, error) {
	match := func(rs *rules.Ruleset) bool { return rs.Version() == v && (digest == "" || rs.HasDigest(digest)) }
	c.mu.Lock()
	for i, rs := range c.kept {
		if match(rs) {
			copy(c.kept[1:i+1], c.kept[:i])
			c.kept[0] = rs
			c.mu.Unlock()
			return rs, nil
		}
	}
	c.mu.Unlock()
	rs, err := c.src.Load(ctx, v)
	if err != nil {
		return nil, fmt.Errorf("ruleset version %d: %w", v, err)
	}
	if rs == nil || rs.Version() != v {
		return nil, fmt.Errorf("ruleset version %d: %w: the rules source answered another version", v, rules.ErrNotFound)
	}
	if !match(rs) {
		return nil, fmt.Errorf("ruleset version %d: %w: its content has digest %s in the rules store, not %s: the version number names other content now (Redis lost its data?)",
			v, rules.ErrContentChanged, rs.ShortDigest(), rules.ShortDigest(digest))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.kept {
		if match(k) {
			return k, nil // loaded meanwhile by another caller
		}
	}
	if len(c.kept) < c.size {
		c.kept = append(c.kept, nil)
	}
	copy(c.kept[1:], c.kept[:len(c.kept)-1])
	c.kept[0] = rs
	return rs, nil
}

// Len returns how many versions are kept in memory.
func (c *Versions) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.kept)
}
