package erasure

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// Verdicts of a residue scan.
const (
	// VerdictClean: nothing of the jurisdiction was found outside its
	// approved places, and every record and row could be read.
	VerdictClean = "clean"
	// VerdictResidue: events of the jurisdiction sit outside its approved
	// places.
	VerdictResidue = "residue"
	// VerdictInconclusive: no residue was found, but some records or rows
	// could not be read (e.g. dead-lettered events): they may hold the
	// jurisdiction's data.
	VerdictInconclusive = "inconclusive"
)

// DefaultMaxListed is the default of ResidueConfig.MaxListed.
const DefaultMaxListed = 1000

// ResidueConfig configures a ResidueScanner.
type ResidueConfig struct {
	// Rules gives the ruleset in force. Required.
	Rules RulesSource
	// Pins gives users' pins. Default nil: no user is pinned.
	Pins router.PinLookup
	// Clusters are the clusters of the topics, by name. Required for every
	// topic scanned.
	Clusters map[string]Cluster
	// Topics are the topics the config knows besides the pinned topics:
	// ingest, quarantine, dead-letter, sink quarantine, hold. The pinned
	// topic of every region of the ruleset in force is added; Topics may
	// name more pinned topics (of regions the ruleset no longer has).
	Topics []Topic
	// Stores are every store of the config.
	Stores []StoreRef
	// Events reads the records' country and user id. Required with topics.
	Events EventReader
	// CountryField is the dotted path of the country in the stored events'
	// JSON (schemas.country_field). Default "country".
	CountryField string
	// Batch is how many records (rows) are decided at once. Default 500.
	Batch int
	// MaxListed bounds the residue rows listed one by one per store
	// (counts stay exact). Default 1000.
	MaxListed int
	// Progress, if set, is called after every batch.
	Progress func(ScanProgress)
}

// ResidueScanner finds a jurisdiction's events outside its approved places.
type ResidueScanner struct {
	cfg ResidueConfig
}

// NewResidueScanner checks cfg and returns a ResidueScanner; errors wrap
// ErrConfig.
func NewResidueScanner(cfg ResidueConfig) (*ResidueScanner, error) {
	if cfg.Rules == nil {
		return nil, fmt.Errorf("%w: residue: a ruleset source is required", ErrConfig)
	}
	for _, s := range cfg.Stores {
		if s.Store == nil {
			return nil, fmt.Errorf("%w: residue: store %q: not opened", ErrConfig, s.Name)
		}
	}
	if cfg.CountryField == "" {
		cfg.CountryField = "country"
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.MaxListed <= 0 {
		cfg.MaxListed = DefaultMaxListed
	}
	return &ResidueScanner{cfg: cfg}, nil
}

// PartitionResidue is the residue in one partition.
type PartitionResidue struct {
	// Partition is the partition.
	Partition int `json:"partition"`
	// Ranges are the offsets of the residue records, consecutive ones
	// merged.
	Ranges []Span `json:"ranges"`
	// Records is how many.
	Records int64 `json:"records"`
}

// RowResidue is one residue row of a store: its coordinates, never its
// content.
type RowResidue struct {
	// EventID is the row's event id.
	EventID string `json:"event_id"`
	// Object is, for an object store, the object holding it.
	Object string `json:"object,omitempty"`
	// Topic, Partition and Offset are the pinned-topic coordinates the sink
	// read it from.
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	// RecordedRegion and RecordedJurisdiction are what the row says.
	RecordedRegion       string `json:"recorded_region"`
	RecordedJurisdiction string `json:"recorded_jurisdiction"`
	// DecidedBy is "country" or "pin": what places the event in the
	// jurisdiction now.
	DecidedBy string `json:"decided_by"`
}

// PlaceScan is what the scan found in one topic or store.
type PlaceScan struct {
	// Kind is "topic" or "store".
	Kind string `json:"kind"`
	// Topic is the topic (Kind "topic").
	Topic *Topic `json:"topic,omitempty"`
	// Store and StoreRegion name the store (Kind "store").
	Store       string `json:"store,omitempty"`
	StoreRegion string `json:"store_region,omitempty"`
	// Approved is true for a place where the jurisdiction's data belongs
	// (its region's pinned topic, a store approved for its region); such
	// places are not read.
	Approved bool `json:"approved"`
	// Scanned is how many records or rows were read.
	Scanned int64 `json:"scanned"`
	// Residue is how many belong to the jurisdiction.
	Residue int64 `json:"residue"`
	// Unreadable is how many could not be read.
	Unreadable int64 `json:"unreadable"`
	// Partitions are, for a topic, where the residue is.
	Partitions []PartitionResidue `json:"partitions,omitempty"`
	// Rows are, for a store, the residue rows (at most MaxListed).
	Rows []RowResidue `json:"rows,omitempty"`
	// Truncated is true when Rows holds fewer than Residue.
	Truncated bool `json:"truncated,omitempty"`
}

// ResidueReport is the result of a residue scan; it holds coordinates and
// counts, never payloads or user ids.
type ResidueReport struct {
	// Jurisdiction is the jurisdiction scanned for.
	Jurisdiction string `json:"jurisdiction"`
	// Region is its region under the ruleset in force.
	Region string `json:"region"`
	// RulesetVersion is the version of the ruleset in force.
	RulesetVersion int64 `json:"ruleset_version"`
	// Places are every topic and store, approved ones included.
	Places []PlaceScan `json:"places"`
	// Residue is the total of residue records and rows.
	Residue int64 `json:"residue"`
	// Unreadable is the total of records and rows that could not be read.
	Unreadable int64 `json:"unreadable"`
	// Verdict is VerdictClean, VerdictResidue or VerdictInconclusive.
	Verdict string `json:"verdict"`
}

// Scan reads every topic and store outside the jurisdiction's approved
// places and reports each event whose own content (its country, or its
// user's pin) gives the jurisdiction under the ruleset in force.
func (s *ResidueScanner) Scan(ctx context.Context, jurisdiction string) (*ResidueReport, error) {
	rs, err := s.cfg.Rules.Current()
	if err != nil {
		return nil, fmt.Errorf("erasure: residue: no ruleset in force: %w", err)
	}
	j, ok := rs.Jurisdiction(jurisdiction)
	if !ok {
		names := make([]string, len(rs.Jurisdictions))
		for i, x := range rs.Jurisdictions {
			names[i] = x.Name
		}
		return nil, fmt.Errorf("%w: %q is not in ruleset version %d (it has %s)", ErrUnknownJurisdiction, jurisdiction, rs.Version(), strings.Join(names, ", "))
	}
	region := j.Region
	rep := &ResidueReport{Jurisdiction: j.Name, Region: region, RulesetVersion: rs.Version()}
	for _, t := range s.topics(rs) {
		ps := PlaceScan{Kind: "topic", Topic: &t}
		if t.Role == RolePinned {
			if g, ok := rs.Region(region); ok && g.Cluster == t.Cluster && g.Topic == t.Name {
				ps.Approved = true
			}
		}
		if !ps.Approved {
			if err := s.scanTopic(ctx, rs, j.Name, t, &ps); err != nil {
				return rep, err
			}
		}
		rep.Places = append(rep.Places, ps)
	}
	for _, st := range s.cfg.Stores {
		ps := PlaceScan{Kind: "store", Store: st.Name, StoreRegion: st.Region, Approved: rs.Approves(st.Name, region)}
		if !ps.Approved {
			if err := s.scanStore(ctx, rs, j.Name, st, &ps, nil); err != nil {
				return rep, err
			}
		}
		rep.Places = append(rep.Places, ps)
	}
	for _, p := range rep.Places {
		rep.Residue += p.Residue
		rep.Unreadable += p.Unreadable
	}
	switch {
	case rep.Residue > 0:
		rep.Verdict = VerdictResidue
	case rep.Unreadable > 0:
		rep.Verdict = VerdictInconclusive
	default:
		rep.Verdict = VerdictClean
	}
	return rep, nil
}

// topics returns the configured topics and the pinned topic of every
// region, once each.
func (s *ResidueScanner) topics(rs *rules.Ruleset) []Topic {
	out := slices.Clone(s.cfg.Topics)
	has := func(cluster, name string) bool {
		return slices.ContainsFunc(out, func(t Topic) bool { return t.Cluster == cluster && t.Name == name })
	}
	for _, g := range rs.Regions {
		if !has(g.Cluster, g.Topic) {
			out = append(out, Topic{Cluster: g.Cluster, Name: g.Topic, Role: RolePinned, Region: g.Name})
		}
	}
	return out
}

// pinsOf looks up the pins of users (nil entries: no user).
func (s *ResidueScanner) pinsOf(ctx context.Context, users [][]byte) ([]string, error) {
	if s.cfg.Pins == nil {
		return make([]string, len(users)), nil
	}
	var ask [][]byte
	var at []int
	for i, u := range users {
		if len(u) > 0 {
			ask = append(ask, u)
			at = append(at, i)
		}
	}
	out := make([]string, len(users))
	if len(ask) == 0 {
		return out, nil
	}
	got, err := s.cfg.Pins.Lookup(ctx, ask)
	if err != nil {
		return nil, fmt.Errorf("erasure: residue: pins: %w", err)
	}
	for k, i := range at {
		out[i] = got[k]
	}
	return out, nil
}

func (s *ResidueScanner) scanTopic(ctx context.Context, rs *rules.Ruleset, jur string, t Topic, ps *PlaceScan) error {
	c, ok := s.cfg.Clusters[t.Cluster]
	if !ok || c.Admin == nil || c.Reader == nil {
		return fmt.Errorf("%w: residue: topic %s: no admin and reader for cluster %q", ErrConfig, t, t.Cluster)
	}
	if s.cfg.Events == nil {
		return fmt.Errorf("%w: residue: an event reader is required to read topics", ErrConfig)
	}
	low, high, err := c.Admin.Watermarks(ctx, t.Name)
	if err != nil {
		return fmt.Errorf("erasure: residue: %s: %w", t, err)
	}
	var total int64
	for p, e := range high {
		total += max(e-low[p], 0)
	}
	for _, p := range sortedKeys(high) {
		if high[p] <= low[p] {
			continue
		}
		pr := PartitionResidue{Partition: p}
		err := c.Reader.ReadRange(ctx, t.Name, p, low[p], high[p], s.cfg.Batch, func(ms []stream.Message) error {
			fields := make([]schemas.Fields, len(ms))
			ok := make([]bool, len(ms))
			users := make([][]byte, len(ms))
			for i := range ms {
				f, err := s.cfg.Events.Fields(ctx, t, &ms[i])
				ps.Scanned++
				if err != nil {
					if transient(err) {
						return err
					}
					ps.Unreadable++
					continue
				}
				fields[i], ok[i], users[i] = f, true, f.UserID
			}
			pins, err := s.pinsOf(ctx, users)
			if err != nil {
				return err
			}
			for i := range ms {
				if !ok[i] {
					continue
				}
				if d := router.Decide(fields[i], pins[i], rs); d.Jurisdiction != jur {
					continue
				}
				pr.Records++
				if n := len(pr.Ranges); n > 0 && pr.Ranges[n-1].End == ms[i].Offset {
					pr.Ranges[n-1].End++
				} else {
					pr.Ranges = append(pr.Ranges, Span{ms[i].Offset, ms[i].Offset + 1})
				}
			}
			if s.cfg.Progress != nil {
				s.cfg.Progress(ScanProgress{Place: t.String(), Done: ps.Scanned, Total: total, Found: ps.Residue + pr.Records})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("erasure: residue: %s/%d: %w", t, p, err)
		}
		if pr.Records > 0 {
			ps.Residue += pr.Records
			ps.Partitions = append(ps.Partitions, pr)
		}
	}
	return nil
}

// scanStore reads every row of st into ps and calls found (if not nil)
// with each residue row.
func (s *ResidueScanner) scanStore(ctx context.Context, rs *rules.Ruleset, jur string, st StoreRef, ps *PlaceScan, found func(*Row)) error {
	place := "store " + st.Name
	var batch []Row
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		fields := make([]schemas.Fields, len(batch))
		ok := make([]bool, len(batch))
		users := make([][]byte, len(batch))
		for i := range batch {
			r := &batch[i]
			c, has, err := jsonField(r.Event, s.cfg.CountryField)
			if err != nil {
				ps.Unreadable++
				continue
			}
			fields[i] = schemas.Fields{HasCountry: has, UserID: []byte(r.UserID)}
			if has {
				fields[i].Country = []byte(c)
			}
			ok[i], users[i] = true, fields[i].UserID
		}
		pins, err := s.pinsOf(ctx, users)
		if err != nil {
			return err
		}
		for i := range batch {
			if !ok[i] {
				continue
			}
			d := router.Decide(fields[i], pins[i], rs)
			if d.Jurisdiction != jur {
				continue
			}
			ps.Residue++
			r := &batch[i]
			if found != nil {
				found(r)
			}
			if len(ps.Rows) >= s.cfg.MaxListed {
				ps.Truncated = true
				continue
			}
			by := "country"
			if d.Pinned {
				by = "pin"
			}
			ps.Rows = append(ps.Rows, RowResidue{EventID: r.EventID, Object: r.Object, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
				RecordedRegion: r.Region, RecordedJurisdiction: r.Jurisdiction, DecidedBy: by})
		}
		batch = batch[:0]
		if s.cfg.Progress != nil {
			s.cfg.Progress(ScanProgress{Place: place, Done: ps.Scanned, Found: ps.Residue})
		}
		return nil
	}
	err := st.Store.Scan(ctx, func(r Row) error {
		ps.Scanned++
		batch = append(batch, r)
		if len(batch) >= s.cfg.Batch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("erasure: residue: %s: %w", place, err)
	}
	return nil
}

// WriteText prints the report for people: the verdict, then each place.
func (r *ResidueReport) WriteText(w io.Writer) {
	fmt.Fprintf(w, "Residue of %s (region %s, ruleset version %d): %s\n", r.Jurisdiction, r.Region, r.RulesetVersion, r.Verdict)
	fmt.Fprintf(w, "  %d events outside the approved places, %d records or rows unreadable\n\n", r.Residue, r.Unreadable)
	for _, p := range r.Places {
		name := "store " + p.Store + " (region " + p.StoreRegion + ")"
		if p.Kind == "topic" {
			name = string(p.Topic.Role) + " topic " + p.Topic.String()
		}
		if p.Approved {
			fmt.Fprintf(w, "  %-60s approved, not read\n", name)
			continue
		}
		fmt.Fprintf(w, "  %-60s read %d, residue %d, unreadable %d\n", name, p.Scanned, p.Residue, p.Unreadable)
		for _, pr := range p.Partitions {
			var rs []string
			for _, s := range pr.Ranges {
				if s.End == s.Start+1 {
					rs = append(rs, fmt.Sprint(s.Start))
				} else {
					rs = append(rs, fmt.Sprintf("%d-%d", s.Start, s.End-1))
				}
			}
			fmt.Fprintf(w, "      partition %d: %d at offsets %s\n", pr.Partition, pr.Records, strings.Join(rs, ","))
		}
		for _, row := range p.Rows {
			fmt.Fprintf(w, "      event %s (%s/%d@%d, recorded %s/%s, by %s)\n", row.EventID, row.Topic, row.Partition, row.Offset,
				row.RecordedJurisdiction, row.RecordedRegion, row.DecidedBy)
		}
		if p.Truncated {
			fmt.Fprintf(w, "      … %d more (see --output json for the first ones; counts are exact)\n", p.Residue-int64(len(p.Rows)))
		}
	}
}

// WriteJSON writes the report as indented JSON.
func (r *ResidueReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
