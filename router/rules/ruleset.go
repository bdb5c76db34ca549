// Package rules is the residency policy: the ruleset model and its validation,
// the versioned store in Redis, the cache every router and sink keeps, and
// per-user pins.
//
// A Ruleset is parsed from YAML, validated (Parse; every problem is reported
// in a *ValidationError), and compiled into lookup tables. Once compiled it is
// immutable and safe for concurrent use, and known by its version number
// and its content digest; a new version is a new *Ruleset, swapped in
// whole by a Cache, which compares both. A History keeps every applied
// version (connectors/redis.Rules, in Redis, with the pins), an Archive a
// durable copy outside Redis (the ruleset history topic); Pins keeps the
// whole pin set of a router or sink in memory. This package does no I/O of
// its own: it reaches Redis and Kafka only through the ports it owns
// (Source, History, PinStore, Archive). See docs/rules.md.
package rules

import (
	"fmt"
	"strconv"
)

// Ruleset is one version of the residency rules.
//
// The YAML form (see deploy/examples/rules.yaml):
//
//	jurisdictions:
//	  - name: US
//	    region: us
//	    countries: [US, PR, GU, VI, AS, MP, UM]
//	regions:
//	  - name: us
//	    cluster: us          # a Kafka cluster name from the router config
//	    topic: residency.us  # the region's pinned topic
//	stores:
//	  - name: us-postgres
//	    regions: [us]        # regions whose data this store may hold
//	unplaceable: quarantine  # the only accepted value: nothing is guessed
type Ruleset struct {
	// Jurisdictions map countries to a region.
	Jurisdictions []Jurisdiction `yaml:"jurisdictions" json:"jurisdictions"`
	// Regions name each region's pinned topic and the cluster it lives on.
	Regions []Region `yaml:"regions" json:"regions"`
	// Stores list, per store, the regions it is approved to hold.
	Stores []Store `yaml:"stores" json:"stores"`
	// Unplaceable says what happens to an event whose country is missing or
	// unknown. Only "quarantine" is accepted; empty means quarantine.
	Unplaceable string `yaml:"unplaceable,omitempty" json:"unplaceable,omitempty"`

	version    int64
	versionStr string
	digest     string                  // hex SHA-256 of the content it was parsed from
	content    []byte                  // the content it was parsed from
	byCountry  *[26 * 26]*Jurisdiction // by countryIndex: a lookup per event, no hashing
	byName     map[string]*Jurisdiction
	regions    map[string]*Region
	approvals  map[string]map[string]bool // store -> region -> approved
}

// Jurisdiction is a legal area whose users' data must stay in one region.
type Jurisdiction struct {
	// Name is the jurisdiction's code, e.g. "US", "EU", "UK".
	Name string `yaml:"name" json:"name"`
	// Region is the name of the region its data is pinned to.
	Region string `yaml:"region" json:"region"`
	// Countries are the ISO 3166-1 alpha-2 codes that belong to it.
	Countries []string `yaml:"countries" json:"countries"`

	region *Region
}

// RegionRef returns the region this jurisdiction maps to. It is nil before
// the ruleset is compiled.
func (j *Jurisdiction) RegionRef() *Region { return j.region }

// Region is a place where data may rest, with its pinned topic.
type Region struct {
	// Name is the region's name, e.g. "us", "eu".
	Name string `yaml:"name" json:"name"`
	// Cluster is the name of the Kafka cluster (from the router's config)
	// that holds the pinned topic.
	Cluster string `yaml:"cluster" json:"cluster"`
	// Topic is the region's pinned topic.
	Topic string `yaml:"topic" json:"topic"`
}

// Store is a sink destination (a database, a bucket) and the regions whose
// data it is approved to hold.
type Store struct {
	// Name is the store's name, used by `residency sink --store NAME`.
	Name string `yaml:"name" json:"name"`
	// Regions are the regions this store is approved for.
	Regions []string `yaml:"regions" json:"regions"`
}

// Version is the ruleset's version number in the store; 0 for a ruleset that
// has not been applied (read from a file).
func (r *Ruleset) Version() int64 { return r.version }

// VersionString is Version in decimal, precomputed for event headers.
func (r *Ruleset) VersionString() string { return r.versionStr }

// Content returns the document the ruleset was parsed from (its Digest is
// its SHA-256), nil for a ruleset not built by Parse. The caller must not
// modify it.
func (r *Ruleset) Content() []byte { return r.content }

// ShortDigestLen is the length of ShortDigest: 16 hex digits (64 bits).
const ShortDigestLen = 16

// Digest is the hex SHA-256 of the content the ruleset was parsed from (as
// applied: the `sha256` of its version in Redis, Hash of a ruleset file).
// Two versions with the same number and different digests are two
// different rulesets: the rules cache and the sinks compare digests, never
// numbers alone.
func (r *Ruleset) Digest() string { return r.digest }

// ShortDigest is the first ShortDigestLen hex digits of Digest, the value
// of the residency-ruleset-digest header; "" when Digest is.
func (r *Ruleset) ShortDigest() string { return ShortDigest(r.digest) }

// HasDigest reports whether d, a digest as the residency-ruleset-digest
// header or a version's record gives it (short or full), is the digest of
// r's content. "" is no digest and never matches.
func (r *Ruleset) HasDigest(d string) bool {
	return d != "" && r.digest != "" && (d == r.digest || d == r.ShortDigest())
}

// ShortDigest cuts a hex digest to ShortDigestLen digits.
func ShortDigest(digest string) string {
	if len(digest) < ShortDigestLen {
		return digest
	}
	return digest[:ShortDigestLen]
}

// SetVersion records the version number the store assigned.
func (r *Ruleset) SetVersion(v int64) {
	r.version = v
	r.versionStr = strconv.FormatInt(v, 10)
}

// JurisdictionOf returns the jurisdiction a country belongs to. country is
// matched case-insensitively and must be two ASCII letters; anything else is
// not found. It does not allocate.
func (r *Ruleset) JurisdictionOf(country []byte) (*Jurisdiction, bool) {
	i, ok := countryIndex(country)
	if !ok || r.byCountry == nil {
		return nil, false
	}
	j := r.byCountry[i]
	return j, j != nil
}

// Jurisdiction returns the jurisdiction with the given name.
func (r *Ruleset) Jurisdiction(name string) (*Jurisdiction, bool) {
	j, ok := r.byName[name]
	return j, ok
}

// Region returns the region with the given name.
func (r *Ruleset) Region(name string) (*Region, bool) {
	g, ok := r.regions[name]
	return g, ok
}

// Approves reports whether store is approved to hold data of region.
func (r *Ruleset) Approves(store, region string) bool {
	return r.approvals[store][region]
}

// countryIndex maps a two-letter ASCII country code, in either case, to
// 0..675; anything else is not a country code.
func countryIndex(c []byte) (int, bool) {
	if len(c) != 2 {
		return 0, false
	}
	a, b := c[0]|0x20, c[1]|0x20 // ASCII lower case; other bytes fail below
	if a < 'a' || a > 'z' || b < 'a' || b > 'z' {
		return 0, false
	}
	return int(a-'a')*26 + int(b-'a'), true
}

// compile builds the lookup tables. It assumes the ruleset has been validated
// and reports only inconsistencies that would make a lookup ambiguous.
func (r *Ruleset) compile() error {
	r.regions = make(map[string]*Region, len(r.Regions))
	for i := range r.Regions {
		g := &r.Regions[i]
		r.regions[g.Name] = g
	}
	r.byCountry = new([26 * 26]*Jurisdiction)
	r.byName = make(map[string]*Jurisdiction, len(r.Jurisdictions))
	for i := range r.Jurisdictions {
		j := &r.Jurisdictions[i]
		g, ok := r.regions[j.Region]
		if !ok {
			return fmt.Errorf("jurisdiction %q: region %q is not defined", j.Name, j.Region)
		}
		j.region = g
		r.byName[j.Name] = j
		for _, c := range j.Countries {
			k, ok := countryIndex([]byte(c))
			if !ok {
				return fmt.Errorf("jurisdiction %q: %q is not a two-letter country code", j.Name, c)
			}
			if other := r.byCountry[k]; other != nil && other != j {
				return fmt.Errorf("country %s is in jurisdictions %q and %q", c, other.Name, j.Name)
			}
			r.byCountry[k] = j
		}
	}
	r.approvals = make(map[string]map[string]bool, len(r.Stores))
	for _, s := range r.Stores {
		m := make(map[string]bool, len(s.Regions))
		for _, g := range s.Regions {
			m[g] = true
		}
		r.approvals[s.Name] = m
	}
	if r.versionStr == "" {
		r.SetVersion(r.version)
	}
	return nil
}
