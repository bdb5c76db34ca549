package auditwire

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
)

// DefaultMaxRecordBytes is LedgerConfig.MaxRecordBytes by default: below
// the brokers' default message.max.bytes (1 MiB), with room for the batch
// overhead (connectors/kafka.DefaultAuditMaxRecordBytes).
const DefaultMaxRecordBytes = 900 << 10

// LedgerConfig configures a Ledger.
type LedgerConfig struct {
	// Actor names the router (or replay) in every leaf: the router
	// instance, "replay:<id>". Required.
	Actor string
	// Kind is the kind of the decision leaves: audit.KindRoute for the
	// router, audit.KindReplay for replay. Default audit.KindRoute.
	Kind audit.Kind
	// Subjects makes each leaf's keyed hash of its event's user id
	// (audit.subject_key_file). Default nil: leaves carry no subject.
	Subjects *audit.Pseudonymizer
	// MaxRecordBytes bounds one audit record; a batch whose leaves do not
	// fit is split into several records, appended in one call. Default
	// DefaultMaxRecordBytes.
	MaxRecordBytes int
	// Now is the clock of the leaves' time. Default time.Now.
	Now func() time.Time
}

// Ledger implements router.Ledger over a Log: each Record appends one audit
// record (more when they do not fit in MaxRecordBytes) holding a leaf per
// settled event, preceded by the ruleset leaf of every ruleset (version
// and digest) this Ledger has not logged yet. It keeps no reference to
// what Record is given. It is safe for concurrent use.
type Ledger struct {
	log Log
	cfg LedgerConfig

	mu     sync.Mutex
	logged map[audit.RulesetRef]bool // ruleset leaves appended
	refs   map[string]audit.Digest   // parsed ruleset digests, by hex
	buf    []byte                    // the current record
	recs   [][]byte                  // the records of one Record call
}

// NewLedger returns a Ledger appending to log.
func NewLedger(log Log, cfg LedgerConfig) (*Ledger, error) {
	if log == nil {
		return nil, errors.New("auditwire: ledger: no Log")
	}
	if cfg.Actor == "" {
		return nil, errors.New("auditwire: ledger: no Actor")
	}
	cfg.Kind = cmp.Or(cfg.Kind, audit.KindRoute)
	cfg.MaxRecordBytes = cmp.Or(cfg.MaxRecordBytes, DefaultMaxRecordBytes)
	if cfg.MaxRecordBytes < audit.MaxLeafSize+16 {
		return nil, fmt.Errorf("auditwire: ledger: MaxRecordBytes %d is below a leaf's largest size (%d)", cfg.MaxRecordBytes, audit.MaxLeafSize+16)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Ledger{log: log, cfg: cfg, logged: map[audit.RulesetRef]bool{}, refs: map[string]audit.Digest{}}
	return l, nil
}

var _ router.Ledger = (*Ledger)(nil)

// Record implements router.Ledger: it returns nil once the leaves of
// settled are appended to the Log.
func (l *Ledger) Record(ctx context.Context, settled []router.Settled) error {
	if len(settled) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now().UnixMilli()
	l.recs = l.recs[:0]
	l.buf = audit.NewWireRecord(len(settled))
	var fresh []audit.RulesetRef
	var leaf audit.Leaf
	for i := range settled {
		s := &settled[i]
		ref, err := l.rulesetRef(s.Ruleset)
		if err != nil {
			return err
		}
		if !ref.Digest.IsZero() && !l.logged[ref] && !containsRef(fresh, ref) {
			rl, err := RulesetLeaf(s.Ruleset, l.cfg.Actor, now)
			if err != nil {
				return err
			}
			if err := l.add(&rl); err != nil {
				return err
			}
			fresh = append(fresh, ref)
		}
		l.fill(&leaf, s, ref, now)
		if err := l.add(&leaf); err != nil {
			return err
		}
	}
	l.recs = append(l.recs, l.buf)
	if err := l.log.Append(ctx, l.recs...); err != nil {
		return fmt.Errorf("auditwire: append %d leaves: %w", len(settled)+len(fresh), err)
	}
	for _, r := range fresh {
		l.logged[r] = true
	}
	return nil
}

func containsRef(refs []audit.RulesetRef, r audit.RulesetRef) bool {
	for _, x := range refs {
		if x == r {
			return true
		}
	}
	return false
}

// add appends a leaf to the current record, starting a new one when it
// would pass MaxRecordBytes.
func (l *Ledger) add(leaf *audit.Leaf) error {
	mark := len(l.buf)
	b, err := audit.AppendWireLeaf(l.buf, leaf)
	if err != nil {
		return fmt.Errorf("auditwire: %s leaf: %w", leaf.Kind, err)
	}
	if len(b) > l.cfg.MaxRecordBytes && mark > 1 {
		l.recs = append(l.recs, b[:mark:mark])
		rec := make([]byte, 1, max(len(b)-mark+1, 4096))
		rec[0] = audit.WireFormat
		l.buf = append(rec, b[mark:]...)
		return nil
	}
	l.buf = b
	return nil
}

// rulesetRef returns the version and digest of rs.
func (l *Ledger) rulesetRef(rs *rules.Ruleset) (audit.RulesetRef, error) {
	if rs == nil || rs.Digest() == "" {
		return audit.RulesetRef{}, nil
	}
	d, ok := l.refs[rs.Digest()]
	if !ok {
		var err error
		if d, err = audit.ParseDigest(rs.Digest()); err != nil {
			return audit.RulesetRef{}, fmt.Errorf("auditwire: ruleset version %d: %w", rs.Version(), err)
		}
		if len(l.refs) > 64 {
			clear(l.refs)
		}
		l.refs[rs.Digest()] = d
	}
	return audit.RulesetRef{Version: rs.Version(), Digest: d}, nil
}

// fill sets leaf to the decision leaf of s.
func (l *Ledger) fill(leaf *audit.Leaf, s *router.Settled, ref audit.RulesetRef, now int64) {
	ev := s.Event
	m := ev.Msg
	d := &ev.Decision
	*leaf = audit.Leaf{Kind: l.cfg.Kind, Time: now, Actor: l.cfg.Actor,
		Src:      audit.Source{Topic: m.Topic, Partition: int32(m.Partition), Offset: m.Offset},
		Decision: Decision(d.Outcome), Reason: d.Reason, Jurisdiction: d.Jurisdiction, Region: d.Region, Ruleset: ref,
		Dest: audit.Destination{Cluster: s.Cluster, Topic: s.Topic, Partition: s.Partition, Offset: s.Offset}}
	if ev.Sums.Set {
		leaf.Value, leaf.Key, leaf.KeyNull = ev.Sums.Value, ev.Sums.Key, m.Key == nil
	} else {
		leaf.SetRecord(m.Key, m.Value)
	}
	if d.Jurisdiction != "" && d.Outcome != router.DeadLettered {
		leaf.DecidedBy = "country"
		if d.Pinned {
			leaf.DecidedBy = "pin"
		}
	}
	if l.cfg.Subjects != nil && ev.Err == nil && len(ev.Fields.UserID) > 0 {
		leaf.Subject = l.cfg.Subjects.Subject(ev.Fields.UserID)
	}
}

// Decision returns the audit decision of a router outcome.
func Decision(o router.Outcome) audit.Decision {
	switch o {
	case router.Quarantined:
		return audit.Quarantined
	case router.DeadLettered:
		return audit.DeadLettered
	}
	return audit.Routed
}

// Policy returns the audit policy of a ruleset: its jurisdictions' regions,
// its regions' pinned topics and clusters, its stores' approved regions.
func Policy(rs *rules.Ruleset) *audit.Policy {
	js := make([]audit.PolicyJurisdiction, 0, len(rs.Jurisdictions))
	for _, j := range rs.Jurisdictions {
		js = append(js, audit.PolicyJurisdiction{Name: j.Name, Region: j.Region})
	}
	regions := make([]audit.PolicyRegion, 0, len(rs.Regions))
	for _, g := range rs.Regions {
		regions = append(regions, audit.PolicyRegion{Name: g.Name, Cluster: g.Cluster, Topic: g.Topic})
	}
	stores := make([]audit.PolicyStore, 0, len(rs.Stores))
	for _, s := range rs.Stores {
		rg := append([]string(nil), s.Regions...)
		sort.Strings(rg)
		stores = append(stores, audit.PolicyStore{Name: s.Name, Regions: rg})
	}
	return audit.NewPolicy(js, regions, stores)
}

// RulesetLeaf returns the ruleset leaf of rs: its version, digest and
// policy, and its content when rs has it (rules.Parse keeps it) and it
// fits in a leaf.
func RulesetLeaf(rs *rules.Ruleset, actor string, timeMillis int64) (audit.Leaf, error) {
	if c := rs.Content(); c != nil && rules.Hash(c) == rs.Digest() {
		l, err := audit.NewRulesetLeaf(rs.Version(), c, Policy(rs), actor, timeMillis)
		if err != nil {
			return audit.Leaf{}, fmt.Errorf("auditwire: ruleset leaf of version %d: %w", rs.Version(), err)
		}
		return l, nil
	}
	d, err := audit.ParseDigest(rs.Digest())
	if err != nil {
		return audit.Leaf{}, fmt.Errorf("auditwire: ruleset leaf of version %d: %w", rs.Version(), err)
	}
	return audit.Leaf{Kind: audit.KindRuleset, Time: timeMillis, Actor: actor,
		Ruleset: audit.RulesetRef{Version: rs.Version(), Digest: d}, Policy: Policy(rs)}, nil
}
