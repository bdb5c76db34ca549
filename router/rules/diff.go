package rules

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Diff is what changes between two rulesets: where countries move, and which
// jurisdictions, regions and stores change. Lines puts it in words.
type Diff struct {
	// From is the older version compared (0 for a file).
	From int64 `json:"from"`
	// To is the version compared against From (0 for a file).
	To int64 `json:"to"`
	// Countries lists each country whose jurisdiction or region changes, by
	// country code.
	Countries []CountryChange `json:"countries,omitempty"`
	// Jurisdictions lists jurisdictions added, removed or mapped to another
	// region, by name.
	Jurisdictions []JurisdictionChange `json:"jurisdictions,omitempty"`
	// Regions lists regions added, removed, or with another pinned topic or
	// cluster, by name.
	Regions []RegionChange `json:"regions,omitempty"`
	// Stores lists stores added, removed, or approved for other regions, by
	// name.
	Stores []StoreChange `json:"stores,omitempty"`
}

// CountryChange is a country whose events go somewhere else. An empty
// jurisdiction means unassigned: its events are quarantined.
type CountryChange struct {
	// Country is the ISO 3166-1 alpha-2 code.
	Country string `json:"country"`
	// FromJurisdiction is its jurisdiction before ("" when unassigned).
	FromJurisdiction string `json:"from_jurisdiction"`
	// FromRegion is its region before ("" when unassigned).
	FromRegion string `json:"from_region"`
	// ToJurisdiction is its jurisdiction after ("" when unassigned).
	ToJurisdiction string `json:"to_jurisdiction"`
	// ToRegion is its region after ("" when unassigned).
	ToRegion string `json:"to_region"`
}

// JurisdictionChange is a jurisdiction added, removed, or mapped to another
// region (FromRegion is empty when added, ToRegion when removed).
type JurisdictionChange struct {
	// Name is the jurisdiction's name.
	Name string `json:"name"`
	// FromRegion is the region it mapped to before ("" when added).
	FromRegion string `json:"from_region"`
	// ToRegion is the region it maps to after ("" when removed).
	ToRegion string `json:"to_region"`
}

// RegionChange is a region added (From fields empty), removed (To fields
// empty), or moved to another pinned topic or cluster.
type RegionChange struct {
	// Name is the region's name.
	Name string `json:"name"`
	// FromCluster is its cluster before ("" when added).
	FromCluster string `json:"from_cluster"`
	// FromTopic is its pinned topic before ("" when added).
	FromTopic string `json:"from_topic"`
	// ToCluster is its cluster after ("" when removed).
	ToCluster string `json:"to_cluster"`
	// ToTopic is its pinned topic after ("" when removed).
	ToTopic string `json:"to_topic"`
}

// StoreChange is a store added, removed, or approved for other regions.
type StoreChange struct {
	// Name is the store's name.
	Name string `json:"name"`
	// Added is set for a store that did not exist before.
	Added bool `json:"added,omitempty"`
	// Removed is set for a store that no longer exists.
	Removed bool `json:"removed,omitempty"`
	// Gained are the regions it is newly approved for.
	Gained []string `json:"gained,omitempty"`
	// Lost are the regions it is no longer approved for.
	Lost []string `json:"lost,omitempty"`
}

// Empty reports whether nothing changes.
func (d *Diff) Empty() bool {
	return len(d.Countries)+len(d.Jurisdictions)+len(d.Regions)+len(d.Stores) == 0
}

// Compare returns what changes from one ruleset to another.
func Compare(from, to *Ruleset) *Diff {
	d := &Diff{From: from.Version(), To: to.Version()}

	countries := map[string]bool{}
	place := func(r *Ruleset) map[string][2]string {
		m := map[string][2]string{}
		for _, j := range r.Jurisdictions {
			for _, c := range j.Countries {
				m[c] = [2]string{j.Name, j.Region}
				countries[c] = true
			}
		}
		return m
	}
	a, b := place(from), place(to)
	for _, c := range sortedKeys(countries) {
		if a[c] != b[c] {
			d.Countries = append(d.Countries, CountryChange{Country: c,
				FromJurisdiction: a[c][0], FromRegion: a[c][1], ToJurisdiction: b[c][0], ToRegion: b[c][1]})
		}
	}

	ja, jb := map[string]string{}, map[string]string{}
	for _, j := range from.Jurisdictions {
		ja[j.Name] = j.Region
	}
	for _, j := range to.Jurisdictions {
		jb[j.Name] = j.Region
	}
	for _, n := range sortedKeys(union(ja, jb)) {
		if ja[n] != jb[n] {
			d.Jurisdictions = append(d.Jurisdictions, JurisdictionChange{Name: n, FromRegion: ja[n], ToRegion: jb[n]})
		}
	}

	ra, rb := map[string]Region{}, map[string]Region{}
	for _, g := range from.Regions {
		ra[g.Name] = g
	}
	for _, g := range to.Regions {
		rb[g.Name] = g
	}
	for _, n := range sortedKeys(union(ra, rb)) {
		if ra[n] != rb[n] {
			d.Regions = append(d.Regions, RegionChange{Name: n,
				FromCluster: ra[n].Cluster, FromTopic: ra[n].Topic, ToCluster: rb[n].Cluster, ToTopic: rb[n].Topic})
		}
	}

	sa, sb := map[string][]string{}, map[string][]string{}
	for _, s := range from.Stores {
		sa[s.Name] = s.Regions
	}
	for _, s := range to.Stores {
		sb[s.Name] = s.Regions
	}
	for _, n := range sortedKeys(union(sa, sb)) {
		old, oldOK := sa[n]
		cur, curOK := sb[n]
		sc := StoreChange{Name: n, Added: !oldOK, Removed: !curOK, Gained: minus(cur, old), Lost: minus(old, cur)}
		if sc.Added || sc.Removed || len(sc.Gained)+len(sc.Lost) > 0 {
			d.Stores = append(d.Stores, sc)
		}
	}
	return d
}

// Lines says what changes, one sentence a line, for a reviewer. Countries
// that move the same way are grouped.
func (d *Diff) Lines() []string {
	var out []string
	type move struct{ fj, fr, tj, tr string }
	var order []move
	groups := map[move][]string{}
	for _, c := range d.Countries {
		m := move{c.FromJurisdiction, c.FromRegion, c.ToJurisdiction, c.ToRegion}
		if _, ok := groups[m]; !ok {
			order = append(order, m)
		}
		groups[m] = append(groups[m], c.Country)
	}
	for _, m := range order {
		cs := groups[m]
		subject := "country " + cs[0]
		if len(cs) > 1 {
			subject = fmt.Sprintf("%d countries (%s)", len(cs), strings.Join(cs, ", "))
		}
		switch {
		case m.fj == "":
			out = append(out, fmt.Sprintf("%s: unassigned (quarantined) → jurisdiction %s, region %s", subject, m.tj, m.tr))
		case m.tj == "":
			out = append(out, fmt.Sprintf("%s: jurisdiction %s, region %s → unassigned (its events will be quarantined)", subject, m.fj, m.fr))
		default:
			out = append(out, fmt.Sprintf("%s: jurisdiction %s, region %s → jurisdiction %s, region %s", subject, m.fj, m.fr, m.tj, m.tr))
		}
	}
	for _, j := range d.Jurisdictions {
		switch {
		case j.FromRegion == "":
			out = append(out, fmt.Sprintf("jurisdiction %s is added, mapped to region %s", j.Name, j.ToRegion))
		case j.ToRegion == "":
			out = append(out, fmt.Sprintf("jurisdiction %s is removed (it mapped to region %s)", j.Name, j.FromRegion))
		default:
			out = append(out, fmt.Sprintf("jurisdiction %s maps to region %s instead of %s", j.Name, j.ToRegion, j.FromRegion))
		}
	}
	for _, g := range d.Regions {
		switch {
		case g.FromTopic == "" && g.FromCluster == "":
			out = append(out, fmt.Sprintf("region %s is added: pinned topic %s on cluster %s", g.Name, g.ToTopic, g.ToCluster))
		case g.ToTopic == "" && g.ToCluster == "":
			out = append(out, fmt.Sprintf("region %s is removed (pinned topic %s on cluster %s)", g.Name, g.FromTopic, g.FromCluster))
		default:
			if g.FromTopic != g.ToTopic {
				out = append(out, fmt.Sprintf("region %s: pinned topic changes from %s to %s", g.Name, g.FromTopic, g.ToTopic))
			}
			if g.FromCluster != g.ToCluster {
				out = append(out, fmt.Sprintf("region %s: cluster changes from %s to %s", g.Name, g.FromCluster, g.ToCluster))
			}
		}
	}
	for _, s := range d.Stores {
		switch {
		case s.Added:
			out = append(out, fmt.Sprintf("store %s is added, approved for %s", s.Name, regionList(s.Gained)))
		case s.Removed:
			out = append(out, fmt.Sprintf("store %s is removed (it was approved for %s)", s.Name, regionList(s.Lost)))
		default:
			if len(s.Gained) > 0 {
				out = append(out, fmt.Sprintf("store %s is now also approved for %s", s.Name, regionList(s.Gained)))
			}
			if len(s.Lost) > 0 {
				out = append(out, fmt.Sprintf("store %s is no longer approved for %s", s.Name, regionList(s.Lost)))
			}
		}
	}
	return out
}

// DiffVersions loads versions a and b from src and compares them.
func DiffVersions(ctx context.Context, src Source, a, b int64) (*Diff, error) {
	ra, err := src.Load(ctx, a)
	if err != nil {
		return nil, err
	}
	rb, err := src.Load(ctx, b)
	if err != nil {
		return nil, err
	}
	return Compare(ra, rb), nil
}

func regionList(rs []string) string {
	switch len(rs) {
	case 0:
		return "no region"
	case 1:
		return "region " + rs[0]
	}
	return "regions " + strings.Join(rs, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func union[V any](a, b map[string]V) map[string]bool {
	u := make(map[string]bool, len(a)+len(b))
	for k := range a {
		u[k] = true
	}
	for k := range b {
		u[k] = true
	}
	return u
}

// minus returns the elements of a not in b, sorted.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}
