package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Policy is what the verifier needs of a ruleset, in this package's own
// stable form: which region each jurisdiction maps to, each region's pinned
// topic and cluster, and which regions each store is approved for. A
// ruleset leaf carries it, so a log stays verifiable whatever becomes of
// the ruleset file format. Build one with NewPolicy (which sorts it); the
// encoding requires every list sorted by name.
type Policy struct {
	// Jurisdictions map jurisdictions to regions.
	Jurisdictions []PolicyJurisdiction `json:"jurisdictions"`
	// Regions name each region's pinned topic and cluster.
	Regions []PolicyRegion `json:"regions"`
	// Stores list the regions each store is approved for.
	Stores []PolicyStore `json:"stores"`
}

// PolicyJurisdiction maps a jurisdiction to its region.
type PolicyJurisdiction struct {
	// Name is the jurisdiction.
	Name string `json:"name"`
	// Region is its region.
	Region string `json:"region"`
}

// PolicyRegion is a region and its pinned topic.
type PolicyRegion struct {
	// Name is the region.
	Name string `json:"name"`
	// Cluster is the Kafka cluster of its pinned topic.
	Cluster string `json:"cluster"`
	// Topic is its pinned topic.
	Topic string `json:"topic"`
}

// PolicyStore is a store and the regions it is approved for.
type PolicyStore struct {
	// Name is the store.
	Name string `json:"name"`
	// Regions are the regions it may hold, sorted.
	Regions []string `json:"regions"`
}

// NewPolicy returns a policy with copies of the given lists, sorted as the
// encoding requires.
func NewPolicy(js []PolicyJurisdiction, rs []PolicyRegion, ss []PolicyStore) *Policy {
	p := &Policy{
		Jurisdictions: slices.Clone(js),
		Regions:       slices.Clone(rs),
		Stores:        make([]PolicyStore, len(ss)),
	}
	for i, s := range ss {
		p.Stores[i] = PolicyStore{Name: s.Name, Regions: slices.Sorted(slices.Values(s.Regions))}
	}
	slices.SortFunc(p.Jurisdictions, func(a, b PolicyJurisdiction) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(p.Regions, func(a, b PolicyRegion) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(p.Stores, func(a, b PolicyStore) int { return strings.Compare(a.Name, b.Name) })
	return p
}

// RegionOf returns the region jurisdiction j maps to.
func (p *Policy) RegionOf(j string) (string, bool) {
	i, ok := slices.BinarySearchFunc(p.Jurisdictions, j, func(e PolicyJurisdiction, t string) int { return strings.Compare(e.Name, t) })
	if !ok {
		return "", false
	}
	return p.Jurisdictions[i].Region, true
}

// Region returns the region named name.
func (p *Policy) Region(name string) (PolicyRegion, bool) {
	i, ok := slices.BinarySearchFunc(p.Regions, name, func(e PolicyRegion, t string) int { return strings.Compare(e.Name, t) })
	if !ok {
		return PolicyRegion{}, false
	}
	return p.Regions[i], true
}

// Approves reports whether store is approved for region.
func (p *Policy) Approves(store, region string) bool {
	i, ok := slices.BinarySearchFunc(p.Stores, store, func(e PolicyStore, t string) int { return strings.Compare(e.Name, t) })
	if !ok {
		return false
	}
	_, ok = slices.BinarySearch(p.Stores[i].Regions, region)
	return ok
}

func sortedBy[T any](s []T, name func(T) string) bool {
	for i := 1; i < len(s); i++ {
		if name(s[i-1]) >= name(s[i]) {
			return false
		}
	}
	return true
}

func (p *Policy) appendJSON(dst []byte) ([]byte, error) {
	if !sortedBy(p.Jurisdictions, func(j PolicyJurisdiction) string { return j.Name }) ||
		!sortedBy(p.Regions, func(r PolicyRegion) string { return r.Name }) ||
		!sortedBy(p.Stores, func(s PolicyStore) string { return s.Name }) {
		return dst, fmt.Errorf("%w: policy lists must be sorted by name, without duplicates (use NewPolicy)", ErrInvalidLeaf)
	}
	ok := true
	var good bool
	dst = append(dst, `{"jurisdictions":[`...)
	for i, j := range p.Jurisdictions {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst, good = appendString(dst, j.Name)
		ok = ok && good
		dst = append(dst, `,"region":`...)
		dst, good = appendString(dst, j.Region)
		ok = ok && good
		dst = append(dst, '}')
	}
	dst = append(dst, `],"regions":[`...)
	for i, r := range p.Regions {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"name":`...)
		dst, good = appendString(dst, r.Name)
		ok = ok && good
		dst = append(dst, `,"cluster":`...)
		dst, good = appendString(dst, r.Cluster)
		ok = ok && good
		dst = append(dst, `,"topic":`...)
		dst, good = appendString(dst, r.Topic)
		ok = ok && good
		dst = append(dst, '}')
	}
	dst = append(dst, `],"stores":[`...)
	for i, s := range p.Stores {
		if i > 0 {
			dst = append(dst, ',')
		}
		if !sortedBy(s.Regions, func(r string) string { return r }) {
			return dst, fmt.Errorf("%w: store %q: regions must be sorted, without duplicates", ErrInvalidLeaf, s.Name)
		}
		dst = append(dst, `{"name":`...)
		dst, good = appendString(dst, s.Name)
		ok = ok && good
		dst = append(dst, `,"regions":[`...)
		for k, r := range s.Regions {
			if k > 0 {
				dst = append(dst, ',')
			}
			dst, good = appendString(dst, r)
			ok = ok && good
		}
		dst = append(dst, "]}"...)
	}
	dst = append(dst, "]}"...)
	if !ok {
		return dst, fmt.Errorf("%w: a policy string is not valid UTF-8", ErrInvalidLeaf)
	}
	return dst, nil
}

// parsePolicy decodes a policy's canonical JSON.
func parsePolicy(b []byte) (*Policy, error) {
	var p Policy
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: policy: %w", ErrInvalidLeaf, err)
	}
	again, err := p.appendJSON(nil)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("%w: policy is not canonical", ErrInvalidLeaf)
	}
	return &p, nil
}

// NewRulesetLeaf returns the ruleset leaf of a ruleset version: its
// digest (SHA-256 of content, as the rules store computes it), its policy,
// and its content when the leaf stays within MaxLeafSize (else the leaf
// carries the digest and policy only, and the content must be kept in the
// ruleset history).
func NewRulesetLeaf(version int64, content []byte, p *Policy, actor string, timeMillis int64) (Leaf, error) {
	l := Leaf{Kind: KindRuleset, Time: timeMillis, Actor: actor,
		Ruleset: RulesetRef{Version: version, Digest: Sum(content)}, Policy: p, Content: string(content)}
	if _, err := l.Encode(); err != nil {
		l.Content = ""
		if _, err2 := l.Encode(); err2 != nil {
			return Leaf{}, err
		}
	}
	return l, nil
}
