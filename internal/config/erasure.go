package config

import (
	"fmt"
	"time"
)

// PurgeConfig configures `residency purge` (docs/erasure.md); its flags
// override it.
type PurgeConfig struct {
	// AfterSinks holds ingest records back until every sink of the config
	// (sinks[]) has stored them (--after-sinks). Default false.
	AfterSinks bool `yaml:"after_sinks"`
	// MinAge holds back records younger than this (--min-age). Default 0:
	// none.
	MinAge time.Duration `yaml:"min_age"`
	// Pinned also trims the sinks' pinned topics, each up to the lowest
	// offset every sink draining it committed (--pinned). Default false:
	// a pinned topic's retention is the operator's.
	Pinned bool `yaml:"pinned"`
	// Every runs the purge as a service, once per interval (--every).
	// Default 0: run once and exit.
	Every time.Duration `yaml:"every"`
	// MaxScan bounds the records of one pinned-topic partition read to
	// find the sinks' progress with AfterSinks; a longer unstored tail
	// holds every ingest partition (sinks_unknown). Default 1000000.
	MaxScan int64 `yaml:"max_scan"`
}

// ErasureConfig configures `residency erase`.
type ErasureConfig struct {
	// Settle is how long the second pass of an erasure waits after the
	// first, so that a batch a sink checked against the erasure markers
	// just before the marker was recorded has landed; it must be more
	// than every sinks[].write_timeout. Default: 30s, or the longest
	// sinks[].write_timeout plus 10s when that is more.
	Settle time.Duration `yaml:"settle"`
	// ListTopics makes erase list where the user's events still sit in
	// the Kafka topics the config knows (a full read of every topic).
	// Default true.
	ListTopics *bool `yaml:"list_topics"`
}

// TopicsListed reports whether erase lists the user's events in topics.
func (e *ErasureConfig) TopicsListed() bool { return e.ListTopics == nil || *e.ListTopics }

// ResidueConfig configures `residency residue`.
type ResidueConfig struct {
	// MaxListed bounds the residue rows listed one by one per store
	// (counts stay exact). Default 1000.
	MaxListed int `yaml:"max_listed"`
}

// validateErasure checks the purge, erasure and residue sections.
func (c *Config) validateErasure(ps *problems, s Scope) {
	notNegative(ps, map[string]time.Duration{"purge.min_age": c.Purge.MinAge, "purge.every": c.Purge.Every, "erasure.settle": c.Erasure.Settle})
	if c.Purge.MaxScan < 0 {
		ps.add("purge.max_scan", "must not be negative")
	}
	notNegative(ps, map[string]int{"residue.max_listed": c.Residue.MaxListed})
	if c.Erasure.Settle >= 0 {
		for i, sc := range c.Sinks {
			if sc.WriteTimeout >= 0 && c.Erasure.Settle <= sc.WriteTimeout {
				ps.add("erasure.settle", "%s must be more than sinks[%d].write_timeout (%s): a batch a sink checked against the erasure markers just before an erasure could land after its second pass",
					c.show("erasure.settle", c.Erasure.Settle), i, c.show(fmt.Sprintf("sinks[%d].write_timeout", i), sc.WriteTimeout))
			}
		}
	}
	if s.Erase && len(c.Sinks) == 0 {
		ps.add("sinks", "required by erase: the stores it removes the user's rows from are the sinks' stores")
	}
}
