package auditwire

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
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
	// Now is the clock of the leaves' time, for the settled events that
	// do not carry their own (router.Settled.At: the router's do).
	// Default time.Now.
	Now func() time.Time
}

// Ledger implements router.Ledger over a Log: AppendLeaf encodes a
// decision leaf (its wire entry, audit.AppendWireEntry) on the caller's
// goroutine; each Append appends one audit record (audit.WireRecord: the
// leaves' shared names once; more records when they do not fit in
// MaxRecordBytes) holding the ruleset leaf of every ruleset (version and
// digest) this Ledger has not logged yet, then the leaves it is given. It
// keeps no reference to what it is given; it keeps its record buffers (up
// to 8 MiB) from one Append to the next, so a warm Append allocates
// nothing. It is safe for concurrent use.
type Ledger struct {
	log Log
	cfg LedgerConfig

	refMu sync.Mutex
	refs  map[string]audit.Digest // parsed ruleset digests, by hex
	last  atomic.Pointer[lastRef] // the ruleset of the last leaf

	mu     sync.Mutex                // one Append at a time
	logged map[audit.RulesetRef]bool // ruleset leaves appended
	rec    audit.WireRecord          // the current record
	recs   [][]byte                  // the records of one Append call
	left   int                       // bytes of the call's leaves not yet in a record
	spare  [][]byte                  // record buffers kept from call to call, by index in recs
}

// maxSpareBytes bounds the record buffers a Ledger keeps from one Append
// to the next (Ledger.spare): enough for the records of a flush at half
// the router's default settled backlog (router.max_uncommitted_bytes
// 16 MiB) when they are at most 900 KiB each.
const maxSpareBytes = 8 << 20

// lastRef caches the reference of the last ruleset AppendLeaf saw.
type lastRef struct {
	rs  *rules.Ruleset
	ref audit.RulesetRef
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

// leafPool holds the leaves AppendLeaf fills (a Leaf is large: keeping it
// off the stack of every call keeps AppendLeaf from allocating).
var leafPool = sync.Pool{New: func() any { return new(audit.Leaf) }}

// AppendLeaf implements router.Ledger: it appends the decision leaf of s,
// as a wire entry (audit.AppendWireEntry), to dst. Its time is the
// call's.
func (l *Ledger) AppendLeaf(dst []byte, s *router.Settled) ([]byte, error) {
	ref, err := l.rulesetRef(s.Ruleset)
	if err != nil {
		return dst, err
	}
	leaf := leafPool.Get().(*audit.Leaf)
	at := s.At
	if at.IsZero() {
		at = l.cfg.Now()
	}
	l.fill(leaf, s, ref, at.UnixMilli())
	b, err := audit.AppendWireEntry(dst, leaf)
	*leaf = audit.Leaf{}
	leafPool.Put(leaf)
	if err != nil {
		return dst, fmt.Errorf("auditwire: %s leaf: %w", l.cfg.Kind, err)
	}
	return b, nil
}

// Append implements router.Ledger: it returns nil once the ruleset leaves
// of rulesets not logged yet, then leaves, are appended to the Log.
func (l *Ledger) Append(ctx context.Context, rulesets []*rules.Ruleset, leaves [][]byte) error {
	if len(leaves) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now().UnixMilli()
	l.recs = l.recs[:0]
	l.left = 0
	for _, lf := range leaves {
		l.left += len(lf)
	}
	// Room for the leaves, the ruleset leaves of a new ruleset aside
	// (append grows the record for them).
	l.rec.Start(l.record(0, l.left+1024))
	defer l.keep()
	var fresh []audit.RulesetRef
	for _, rs := range rulesets {
		ref, err := l.rulesetRef(rs)
		if err != nil {
			return err
		}
		if ref.Digest.IsZero() || l.logged[ref] || containsRef(fresh, ref) {
			continue
		}
		rl, err := RulesetLeaf(rs, l.cfg.Actor, now)
		if err != nil {
			return err
		}
		b, err := audit.AppendWireEntry(nil, &rl)
		if err == nil {
			err = l.add(b)
		}
		if err != nil {
			return fmt.Errorf("auditwire: %s leaf: %w", rl.Kind, err)
		}
		fresh = append(fresh, ref)
	}
	for i, lf := range leaves {
		if err := l.add(lf); err != nil {
			return fmt.Errorf("auditwire: leaf %d of %d: %w", i, len(leaves), err)
		}
		l.left -= len(lf)
	}
	l.recs = append(l.recs, l.rec.Bytes())
	if err := l.log.Append(ctx, l.recs...); err != nil {
		return fmt.Errorf("auditwire: append %d leaves: %w", len(leaves)+len(fresh), err)
	}
	for _, r := range fresh {
		l.logged[r] = true
	}
	return nil
}

// Record makes the leaves of settled durable in one Append
// (router.RecordSettled): the one-step use, for tests and tools.
func (l *Ledger) Record(ctx context.Context, settled []router.Settled) error {
	return router.RecordSettled(ctx, l, settled)
}

func containsRef(refs []audit.RulesetRef, r audit.RulesetRef) bool {
	for _, x := range refs {
		if x == r {
			return true
		}
	}
	return false
}

// add adds one leaf's wire entry to the current record, starting a new
// one when it would pass MaxRecordBytes (or its contexts' bound).
func (l *Ledger) add(entry []byte) error {
	if !l.rec.Fits(entry, l.cfg.MaxRecordBytes) {
		l.recs = append(l.recs, l.rec.Bytes())
		l.rec.Start(l.record(len(l.recs), l.left+1))
	}
	return l.rec.Add(entry)
}

// record returns the buffer of record i of the call: the spare buffer i
// when it has room for want bytes (at most MaxRecordBytes), else a new one
// of that room. l.mu is held.
func (l *Ledger) record(i, want int) []byte {
	want = max(min(want, l.cfg.MaxRecordBytes), 1)
	if i < len(l.spare) && cap(l.spare[i]) >= want {
		return l.spare[i][:0]
	}
	return make([]byte, 0, want)
}

// keep keeps the record buffers of the call (the Log keeps no reference
// to them once Append returns) for the next calls, up to maxSpareBytes
// in all. l.mu is held.
func (l *Ledger) keep() {
	total := 0
	for i, r := range l.recs {
		if total += cap(r); total > maxSpareBytes {
			break
		}
		if i < len(l.spare) {
			l.spare[i] = r[:0]
		} else {
			l.spare = append(l.spare, r[:0])
		}
	}
	// At most maxSpareBytes in all, whatever calls left them.
	total = 0
	for i := range l.spare {
		if total += cap(l.spare[i]); total > maxSpareBytes {
			clear(l.spare[i:])
			l.spare = l.spare[:i]
			break
		}
	}
	clear(l.recs)
	l.recs = l.recs[:0]
}

// rulesetRef returns the version and digest of rs. Safe for concurrent
// use: the last ruleset's without a lock, others' from a parsed cache.
func (l *Ledger) rulesetRef(rs *rules.Ruleset) (audit.RulesetRef, error) {
	if rs == nil || rs.Digest() == "" {
		return audit.RulesetRef{}, nil
	}
	if c := l.last.Load(); c != nil && c.rs == rs {
		return c.ref, nil
	}
	l.refMu.Lock()
	d, ok := l.refs[rs.Digest()]
	if !ok {
		var err error
		if d, err = audit.ParseDigest(rs.Digest()); err != nil {
			l.refMu.Unlock()
			return audit.RulesetRef{}, fmt.Errorf("auditwire: ruleset version %d: %w", rs.Version(), err)
		}
		if len(l.refs) > 64 {
			clear(l.refs)
		}
		l.refs[rs.Digest()] = d
	}
	l.refMu.Unlock()
	ref := audit.RulesetRef{Version: rs.Version(), Digest: d}
	l.last.Store(&lastRef{rs: rs, ref: ref})
	return ref, nil
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
			// A pin to a jurisdiction the ruleset lacks is the pin's value
			// as Redis holds it: the one name of a router's leaf from
			// outside its config and ruleset.
			leaf.Jurisdiction = cleanName(leaf.Jurisdiction)
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
