package audit

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Code is a finding's stable code (docs/audit.md lists them all).
type Code string

// Finding codes. Tools may match on them; they never change meaning.
const (
	CodeBadSignature           Code = "bad_signature"
	CodeAlteredLog             Code = "altered_log"
	CodeCheckpointNotExtending Code = "checkpoint_not_extending"
	CodeUnwitnessed            Code = "unwitnessed_checkpoint"
	CodeBadLeaf                Code = "bad_leaf"
	CodeMissingLeaf            Code = "missing_leaf"
	CodeConflictingDecisions   Code = "conflicting_decisions"
	CodeUnknownRuleset         Code = "unknown_ruleset"
	CodeRulesetMismatch        Code = "ruleset_mismatch"
	CodeUnloggedRecord         Code = "unlogged_record"
	CodeRecordMismatch         Code = "record_mismatch"
	CodeMissingRecord          Code = "missing_record"
	CodeMisplacedRecord        Code = "misplaced_record"
	CodeBadAttestation         Code = "bad_attestation"
	CodeUnloggedRow            Code = "unlogged_row"
	CodeRowMismatch            Code = "row_mismatch"
	CodeUnapprovedStore        Code = "unapproved_store"
	CodeMissingRow             Code = "missing_row"
	// Notes: explained, not findings.
	CodeDuplicateLeaf   Code = "duplicate_leaf"
	CodeDuplicateRecord Code = "duplicate_record"
	CodeDuplicateRow    Code = "duplicate_row"
	// CodeRefusedUnattested notes a record in a sink quarantine topic
	// without a valid attestation that its sink refused for that reason.
	CodeRefusedUnattested Code = "refused_unattested"
	CodeDecisionChanged   Code = "decision_changed"
	CodePurged            Code = "purged"
	CodeErased            Code = "erased"
	CodeGap               Code = "gap"
)

// Finding is one problem (or, with Note, one explained irregularity) found
// by a verification: a code, where, and a short detail. It never holds a
// payload, a key or a user id.
type Finding struct {
	// Code is the stable code.
	Code Code `json:"code"`
	// Note is true for an explained irregularity that does not fail the
	// verification.
	Note bool `json:"note,omitempty"`
	// Cluster, Topic, Partition and Offset are the record's coordinates
	// (Offset -1 when the finding is about a whole range).
	Cluster string `json:"cluster,omitempty"`
	// Topic: see Cluster.
	Topic string `json:"topic,omitempty"`
	// Partition: see Cluster.
	Partition int32 `json:"partition"`
	// Offset: see Cluster.
	Offset int64 `json:"offset"`
	// Store is the store, for row findings.
	Store string `json:"store,omitempty"`
	// Leaf is the index of the leaf concerned in the log, -1 for none.
	Leaf int64 `json:"leaf"`
	// Detail says what is wrong, in words and coordinates.
	Detail string `json:"detail"`
}

// ReasonSinkBadAttestation is a sink's refusal reason for a record
// without a valid attestation (sink.ReasonBadAttestation).
const ReasonSinkBadAttestation = "sink_bad_attestation"

// ReasonTooLarge is the dead-letter reason of an event too large to route,
// whose dead-letter record carries neither key nor value.
const ReasonTooLarge = "too_large"

// Role says what a topic is for, and so which decisions may put records
// there.
type Role string

// Topic roles.
const (
	// RoleIngest: an ingest topic (VerifyCompleteness).
	RoleIngest Role = "ingest"
	// RolePinned: a region's pinned topic (routed and released records).
	RolePinned Role = "pinned"
	// RoleQuarantine: the quarantine topic.
	RoleQuarantine Role = "quarantine"
	// RoleDeadLetter: the dead-letter topic.
	RoleDeadLetter Role = "dead_letter"
	// RoleHold: a hold topic.
	RoleHold Role = "hold"
	// RoleSinkQuarantine: a sink's quarantine topic: records a sink
	// refused, republished byte for byte with the router's headers. Their
	// attestation is checked as of the pinned topic the sink read them
	// from (the refusal leaf's source).
	RoleSinkQuarantine Role = "sink_quarantine"
)

// decisionFor is the decision an attestation binds for a record in a topic
// of this role.
func (r Role) decision() Decision {
	switch r {
	case RoleQuarantine:
		return Quarantined
	case RoleDeadLetter:
		return DeadLettered
	case RoleHold:
		return Held
	}
	return Routed
}

// Header is a record header.
type Header struct {
	// Key is the header name.
	Key string
	// Value is its value.
	Value []byte
}

// RecordKind says what a Record a RecordSource hands over stands for.
type RecordKind uint8

const (
	// KindData is a data record: an ingest event, or a record of a
	// destination topic. The zero value.
	KindData RecordKind = iota
	// KindTxnMarker is an offset that holds a transaction marker (the
	// control record a transactional producer's commit or abort leaves in
	// the partition): never an event and never a record a leaf wrote, at
	// any isolation level. Key, Value and Headers are nil.
	KindTxnMarker
	// KindAborted is an offset that holds a record of an aborted
	// transaction that the source did not return because it reads the
	// topic read_committed, as a router with kafka.isolation_level
	// read_committed does: not an event for that router. Key, Value and
	// Headers are nil. (Read read_uncommitted, an aborted record is a
	// KindData record like any other, and routed.)
	KindAborted
)

// Record is a record read from a topic, for VerifyCompleteness and
// VerifyPlacement.
type Record struct {
	// Partition and Offset are its coordinates in the range's topic.
	Partition int32
	// Offset: see Partition.
	Offset int64
	// Kind is what the offset holds: a data record (the zero value), or
	// an offset without one that the source can account for (a
	// transaction marker, an aborted record read read_committed).
	Kind RecordKind
	// Key is the record key (nil for a null key).
	Key []byte
	// Value is the record value.
	Value []byte
	// Headers are its headers.
	Headers []Header
}

// TopicRange is an offset range of one topic partition to verify.
type TopicRange struct {
	// Cluster is the Kafka cluster's name.
	Cluster string
	// Topic is the topic.
	Topic string
	// Role is what the topic is for.
	Role Role
	// Partition is the partition.
	Partition int32
	// From is the first offset; To the offset after the last.
	From int64
	// To: see From.
	To int64
}

// RecordSource reads topics for VerifyCompleteness and VerifyPlacement
// (the Kafka adapter in production).
type RecordSource interface {
	// Records calls fn for each record of r that still exists, in offset
	// order. A source that can tell also calls fn, in the same order, for
	// each offset that holds a transaction marker (KindTxnMarker) and,
	// when it reads r read_committed, for each offset of an aborted
	// record it did not return (KindAborted): completeness then needs no
	// leaf there, where an offset without a record needs one (or a gap
	// note with AllowGaps). fn must not keep rec.
	Records(ctx context.Context, r TopicRange, fn func(*Record) error) error
}

// Row is one stored event, for VerifyStores: only what the check needs.
type Row struct {
	// Cluster, Topic, Partition and Offset are the pinned-topic
	// coordinates the sink read it from.
	Cluster string
	// Topic: see Cluster.
	Topic string
	// Partition: see Cluster.
	Partition int32
	// Offset: see Cluster.
	Offset int64
	// Value is the SHA-256 of the stored record value (the raw column).
	Value Digest
	// Region and Jurisdiction are the row's columns.
	Region string
	// Jurisdiction: see Region.
	Jurisdiction string
	// RulesetVersion is the row's ruleset_version column: the version the
	// sink logged writing it under.
	RulesetVersion string
	// Stored are the digests of the row's event_id, user_id and event
	// columns, Derived the same of what the sink writes for the stored
	// value, decoded again (Decoded says whether it was): see SetColumns.
	Stored RowColumns
	// Derived: see Stored.
	Derived RowColumns
	// Decoded says whether Derived was computed.
	Decoded RowDecoding
	// DecodeError says why the stored value was not decoded (a decoder's
	// ErrUndecodable): its message, no payload.
	DecodeError string
	// SourceTopic is the row's source_topic column: the ingest topic the
	// router read the event from (set by SetColumns; compared with the
	// routing leaf's).
	SourceTopic string
}

// RowSource reads stores for VerifyStores (PostgreSQL, the object store).
type RowSource interface {
	// Rows calls fn for each row of the store.
	Rows(ctx context.Context, store string, fn func(*Row) error) error
}

type coords struct {
	cluster, topic string
	partition      int32
	offset         int64
}

type partKey struct {
	cluster, topic string
	partition      int32
}

type storeCoords struct {
	store string
	c     coords
}

// contentKey is a destination topic and the value digest of a record
// written there.
type contentKey struct {
	cluster, topic string
	value          Digest
}

type leafRef struct {
	index int64
	leaf  *Leaf
}

// Verification holds a verified log, indexed, and the findings of the
// checks run on it so far. Build it with VerifyLog, run the other checks,
// then take its Report.
type Verification struct {
	cfg VerifyConfig
	cp  Checkpoint
	// prev is the previously verified checkpoint, if any.
	prev *Checkpoint

	rulesets   map[RulesetRef]*Policy
	bySource   map[coords][]leafRef // route leaves by ingest coordinates (cluster "")
	byDest     map[coords][]leafRef // route and replay leaves by destination
	byDestPart map[partKey][]leafRef
	// unplaced holds the leaves that name their destination topic but not
	// the partition and offset (replay's, whose publishers do not report
	// them: -1), by destination topic and value digest, in log order; a
	// record that no leaf names by its coordinates matches the first one
	// not yet matched, so each such leaf explains one record.
	unplaced   map[contentKey][]leafRef
	sinkWrites map[storeCoords][]leafRef
	byStore    map[string][]leafRef
	purges     map[partKey][]*Leaf
	erasures   map[storeSubject]int64 // latest erasure leaf index
	unknown    map[RulesetRef]bool    // unknown rulesets already reported

	report Report
}

type storeSubject struct {
	store   string
	subject Digest
}

// VerifyConfig says what a verification needs besides the log.
type VerifyConfig struct {
	// LogKey is the log's public note verifier key (required), obtained
	// out of band.
	LogKey string
	// Previous is the checkpoint the reviewer verified last time (the
	// signed note); nil for a first verification.
	Previous []byte
	// Checkpoint, when set, is the signed checkpoint to verify the log at
	// (e.g. one a witness cosigned); default: the latest in the bucket.
	Checkpoint []byte
	// Witnesses are the cosignature/v1 verifier keys of witnesses whose
	// cosignature the checkpoint must carry (unwitnessed_checkpoint);
	// default none.
	Witnesses []string
	// IngestCluster is the name of the ingest cluster, where quarantine,
	// dead-letter and hold topics live (required for placement).
	IngestCluster string
	// Attestation checks record attestations; nil skips the check (and
	// the report says so).
	Attestation *AttestVerifier
	// Since and Until bound, in milliseconds since the epoch, the leaves
	// whose records and rows must still exist (missing_record,
	// missing_row); 0 means unbounded.
	Since, Until int64
	// AllowGaps makes an ingest offset with neither record nor leaf a note
	// (gap) instead of a missing_leaf finding: for compacted ingest topics,
	// or a RecordSource that cannot tell transaction markers apart (the
	// Kafka source hands them over as KindTxnMarker, which never needs a
	// leaf). Default false.
	AllowGaps bool
	// PolicyOf, when set, derives the policy from a ruleset leaf's content
	// (the rules package's parser); a leaf whose policy differs is a
	// ruleset_mismatch finding. Without it the logged policy is taken as
	// the router wrote it.
	PolicyOf func(content []byte) (*Policy, error)
	// Progress, when set, is called during long scans with the stage
	// ("log", "ingest", "records", "rows") and the number of its items
	// checked so far, at every 100,000th.
	Progress func(stage string, done int64)
}

// VerifyLog opens the log, checks its checkpoint (signature, consistency
// with cfg.Previous) and the integrity of every leaf, and indexes the
// leaves for the other checks. Problems with the log are findings in the
// report, not errors; the error is for I/O failures.
func VerifyLog(ctx context.Context, store Store, cfg VerifyConfig) (*Verification, error) {
	v := &Verification{
		cfg:        cfg,
		rulesets:   map[RulesetRef]*Policy{},
		bySource:   map[coords][]leafRef{},
		byDest:     map[coords][]leafRef{},
		byDestPart: map[partKey][]leafRef{},
		unplaced:   map[contentKey][]leafRef{},
		sinkWrites: map[storeCoords][]leafRef{},
		byStore:    map[string][]leafRef{},
		purges:     map[partKey][]*Leaf{},
		erasures:   map[storeSubject]int64{},
	}
	v.report.Counts = map[string]*RegionCount{}
	v.report.Attestation = cfg.Attestation != nil
	var log *Log
	var err error
	if cfg.Checkpoint != nil {
		log, err = OpenLogAt(ctx, store, cfg.LogKey, cfg.Checkpoint)
	} else {
		log, err = OpenLog(ctx, store, cfg.LogKey)
	}
	if errors.Is(err, ErrBadCheckpoint) {
		v.add(Finding{Code: CodeBadSignature, Leaf: -1, Offset: -1, Detail: err.Error()})
		return v, nil
	}
	if err != nil {
		return nil, err
	}
	v.cp = log.Checkpoint()
	v.report.Checkpoint = CheckpointInfo{Origin: v.cp.Origin, Size: v.cp.Size, Root: v.cp.Root.String(), Signed: string(v.cp.Signed)}
	if len(cfg.Witnesses) > 0 {
		if err := checkWitnesses(v.cp.Signed, cfg.LogKey, cfg.Witnesses); err != nil {
			v.add(Finding{Code: CodeUnwitnessed, Leaf: -1, Offset: -1, Detail: err.Error()})
		} else {
			v.report.Witnessed = len(cfg.Witnesses)
		}
	}
	if cfg.Previous != nil {
		prev, err := OpenCheckpoint(cfg.Previous, cfg.LogKey)
		if err != nil {
			v.add(Finding{Code: CodeBadSignature, Leaf: -1, Offset: -1, Detail: "previous checkpoint: " + err.Error()})
		} else {
			v.prev = &prev
			if _, err := log.ProveExtends(ctx, prev); err != nil {
				v.add(Finding{Code: CodeCheckpointNotExtending, Leaf: -1, Offset: -1,
					Detail: fmt.Sprintf("checkpoint of %d leaves does not extend the previous one of %d leaves: %v", v.cp.Size, prev.Size, err)})
				v.prev = nil // reported once
			}
		}
	}
	err = log.Scan(ctx, v.prev, func(i int64, b []byte) error {
		v.progress("log", i+1)
		l, err := ParseLeaf(b)
		if err != nil {
			v.add(Finding{Code: CodeBadLeaf, Leaf: i, Offset: -1, Detail: err.Error()})
			return nil
		}
		v.index(i, &l)
		return nil
	})
	switch {
	case errors.Is(err, ErrAlteredLog):
		v.add(Finding{Code: CodeAlteredLog, Leaf: -1, Offset: -1, Detail: err.Error()})
	case errors.Is(err, ErrNotExtending):
		v.add(Finding{Code: CodeCheckpointNotExtending, Leaf: -1, Offset: -1, Detail: err.Error()})
	case err != nil:
		return nil, err
	case v.prev != nil:
		// Shown to extend it (consistency proof and the leaves): only
		// now does the report say so.
		v.report.Previous = &CheckpointInfo{Origin: v.prev.Origin, Size: v.prev.Size, Root: v.prev.Root.String()}
	}
	v.report.Checked.Leaves = v.cp.Size
	return v, nil
}

// progressEvery is how often the scans call VerifyConfig.Progress: at
// every multiple of it (a variable for the tests).
var progressEvery int64 = 100000

// progress reports that done items of stage ("log", "ingest", "records",
// "rows") were checked, at every multiple of progressEvery (never at 0).
func (v *Verification) progress(stage string, done int64) {
	if v.cfg.Progress != nil && done > 0 && done%progressEvery == 0 {
		v.cfg.Progress(stage, done)
	}
}

func (v *Verification) add(f Finding) {
	if f.Note {
		v.report.Notes = append(v.report.Notes, f)
	} else {
		v.report.Findings = append(v.report.Findings, f)
	}
}

func (v *Verification) index(i int64, l *Leaf) {
	ref := leafRef{index: i, leaf: l}
	switch l.Kind {
	case KindRuleset:
		if l.Content != "" && Sum([]byte(l.Content)) != l.Ruleset.Digest {
			v.add(Finding{Code: CodeBadLeaf, Leaf: i, Offset: -1, Detail: fmt.Sprintf("ruleset version %d: content does not hash to its digest", l.Ruleset.Version)})
			return
		}
		if l.Policy == nil {
			return
		}
		f := Finding{Code: CodeRulesetMismatch, Leaf: i, Offset: -1}
		mine, _ := l.Policy.appendJSON(nil)
		if old, ok := v.rulesets[l.Ruleset]; ok {
			if theirs, _ := old.appendJSON(nil); !bytes.Equal(mine, theirs) {
				f.Detail = fmt.Sprintf("ruleset version %d logged again with another policy", l.Ruleset.Version)
				v.add(f)
			}
			return
		}
		if v.cfg.PolicyOf != nil && l.Content != "" {
			p, err := v.cfg.PolicyOf([]byte(l.Content))
			var want []byte
			if err == nil {
				want, err = p.appendJSON(nil)
			}
			if err != nil || !bytes.Equal(mine, want) {
				f.Detail = fmt.Sprintf("ruleset version %d: the logged policy is not the one its content defines (%v)", l.Ruleset.Version, err)
				v.add(f)
			}
		}
		v.rulesets[l.Ruleset] = l.Policy
	case KindRoute, KindReplay, KindSinkRefusal:
		if l.Kind == KindRoute && l.Src.Topic != "" && l.Decision != Released {
			// Ingest topics are on the ingest cluster: the cluster is not
			// part of the key.
			c := coords{"", l.Src.Topic, l.Src.Partition, l.Src.Offset}
			v.bySource[c] = append(v.bySource[c], ref)
		}
		if l.Dest.Topic != "" && l.Dest.Offset < 0 {
			k := contentKey{l.Dest.Cluster, l.Dest.Topic, l.Value}
			v.unplaced[k] = append(v.unplaced[k], ref)
		} else if l.Dest.Topic != "" {
			c := coords{l.Dest.Cluster, l.Dest.Topic, l.Dest.Partition, l.Dest.Offset}
			v.byDest[c] = append(v.byDest[c], ref)
			pk := partKey{l.Dest.Cluster, l.Dest.Topic, l.Dest.Partition}
			v.byDestPart[pk] = append(v.byDestPart[pk], ref)
		}
	case KindSinkWrite:
		sc := storeCoords{l.Dest.Store, coords{l.Src.Cluster, l.Src.Topic, l.Src.Partition, l.Src.Offset}}
		v.sinkWrites[sc] = append(v.sinkWrites[sc], ref)
		v.byStore[l.Dest.Store] = append(v.byStore[l.Dest.Store], ref)
	case KindPurge:
		pk := partKey{l.Src.Cluster, l.Src.Topic, l.Src.Partition}
		v.purges[pk] = append(v.purges[pk], l)
	case KindErasure:
		v.erasures[storeSubject{l.Dest.Store, l.Subject}] = i
	}
}

// policy returns the policy of a leaf's ruleset, or adds unknown_ruleset
// (once per ruleset).
func (v *Verification) policy(ref leafRef, f Finding) *Policy {
	p := v.rulesets[ref.leaf.Ruleset]
	if p == nil && !v.unknown[ref.leaf.Ruleset] {
		if v.unknown == nil {
			v.unknown = map[RulesetRef]bool{}
		}
		v.unknown[ref.leaf.Ruleset] = true
		f.Code, f.Leaf = CodeUnknownRuleset, ref.index
		f.Detail = fmt.Sprintf("leaf names ruleset version %d (%s…) that no ruleset leaf holds", ref.leaf.Ruleset.Version, ref.leaf.Ruleset.Digest.String()[:12])
		v.add(f)
	}
	return p
}

func sameDecision(a, b *Leaf) bool {
	return a.Decision == b.Decision && a.Reason == b.Reason && a.Jurisdiction == b.Jurisdiction &&
		a.Region == b.Region && a.Dest.Cluster == b.Dest.Cluster && a.Dest.Topic == b.Dest.Topic
}

// VerifyCompleteness checks that every offset of each ingest range (Role
// RoleIngest) has a route leaf, and explains the offsets that have several.
// With src (nil skips it) it also reads the ingest records still there and
// checks that each leaf's digests are its record's (record_mismatch);
// offsets without a record (compaction, or deleted by purge or retention)
// need their leaf all the same, unless cfg.AllowGaps. An offset src
// reports as a transaction marker (KindTxnMarker) needs no leaf and is
// never a finding; nor is one it reports as an aborted record read
// read_committed (KindAborted), which is checked only if leaves name it.
// Both are counted (Report.Checked).
func (v *Verification) VerifyCompleteness(ctx context.Context, ranges []TopicRange, src RecordSource) error {
	for _, r := range ranges {
		if src == nil {
			for off := r.From; off < r.To; off++ {
				v.checkOffset(r, off, nil)
			}
			continue
		}
		next := r.From
		err := src.Records(ctx, r, func(rec *Record) error {
			if rec.Offset < r.From || rec.Offset >= r.To {
				return nil
			}
			for ; next < rec.Offset; next++ {
				v.checkOffset(r, next, nil)
			}
			if rec.Kind == KindData {
				v.checkOffset(r, rec.Offset, rec)
			} else {
				v.passOffset(r, rec)
			}
			next = rec.Offset + 1
			return nil
		})
		if err != nil {
			return fmt.Errorf("audit: read %s/%d: %w", r.Topic, r.Partition, err)
		}
		for ; next < r.To; next++ {
			v.checkOffset(r, next, nil)
		}
	}
	return nil
}

// passOffset accounts for an ingest offset that holds no event for the
// router: a transaction marker (no leaf is needed, and a leaf naming it is
// not checked: the router's consumer never hands a marker over), or an
// aborted record read read_committed (checked only when leaves name it: a
// router that read it read_uncommitted before).
func (v *Verification) passOffset(r TopicRange, rec *Record) {
	switch rec.Kind {
	case KindTxnMarker:
		v.report.Checked.Offsets++
		v.report.Checked.TxnMarkers++
		v.progress("ingest", v.report.Checked.Offsets)
	case KindAborted:
		v.report.Checked.Aborted++
		if len(v.bySource[coords{"", r.Topic, r.Partition, rec.Offset}]) > 0 {
			v.checkOffset(r, rec.Offset, nil)
			return
		}
		v.report.Checked.Offsets++
		v.progress("ingest", v.report.Checked.Offsets)
	default:
		v.checkOffset(r, rec.Offset, rec)
	}
}

// checkOffset checks one ingest offset; rec is its record, nil when it was
// not read (no source, or no record there).
func (v *Verification) checkOffset(r TopicRange, off int64, rec *Record) {
	v.report.Checked.Offsets++
	v.progress("ingest", v.report.Checked.Offsets)
	refs := v.bySource[coords{"", r.Topic, r.Partition, off}]
	f := Finding{Topic: r.Topic, Partition: r.Partition, Offset: off, Leaf: -1}
	if len(refs) == 0 {
		if rec == nil && v.cfg.AllowGaps {
			f.Code, f.Note, f.Detail = CodeGap, true, "no record and no leaf at this offset"
		} else {
			f.Code, f.Detail = CodeMissingLeaf, "no decision leaf for this ingest offset"
		}
		v.add(f)
		return
	}
	if rec != nil {
		value, key := Sum(rec.Value), Digest{}
		if rec.Key != nil {
			key = Sum(rec.Key)
		}
		for _, x := range refs {
			if x.leaf.Value != value || x.leaf.KeyNull != (rec.Key == nil) || x.leaf.Key != key {
				g := f
				g.Code, g.Leaf, g.Detail = CodeRecordMismatch, x.index, "the decision leaf's digests are not this ingest record's"
				v.add(g)
			}
		}
	}
	v.counts(refs[0].leaf).Events++
	for _, o := range refs[1:] {
		f.Leaf = o.index
		switch {
		case o.leaf.Ruleset != refs[0].leaf.Ruleset:
			f.Code, f.Note = CodeDecisionChanged, true
			f.Detail = fmt.Sprintf("decided again under ruleset version %d (leaf %d: version %d): %s", o.leaf.Ruleset.Version, refs[0].index, refs[0].leaf.Ruleset.Version, o.leaf.Decision)
		case sameDecision(o.leaf, refs[0].leaf):
			f.Code, f.Note = CodeDuplicateLeaf, true
			f.Detail = fmt.Sprintf("same decision as leaf %d (routed again after a crash or a rebalance)", refs[0].index)
		default:
			f.Code, f.Note = CodeConflictingDecisions, false
			f.Detail = fmt.Sprintf("leaf %d says %s %s/%s, leaf %d says %s %s/%s under the same ruleset",
				refs[0].index, refs[0].leaf.Decision, refs[0].leaf.Jurisdiction, refs[0].leaf.Region,
				o.index, o.leaf.Decision, o.leaf.Jurisdiction, o.leaf.Region)
		}
		v.add(f)
	}
}

func regionKey(l *Leaf) string {
	key := l.Region
	switch l.Decision {
	case Quarantined:
		key = "(quarantine)"
	case DeadLettered:
		key = "(dead-letter)"
	case Held:
		key = "(held)"
	case Refused:
		key = "(refused by a sink)"
	}
	return key
}

func (v *Verification) counts(l *Leaf) *RegionCount {
	key := regionKey(l)
	c := v.report.Counts[key]
	if c == nil {
		c = &RegionCount{Region: key}
		v.report.Counts[key] = c
	}
	return c
}

// inWindow reports whether a leaf's time is within the window.
func (v *Verification) inWindow(l *Leaf) bool {
	return (v.cfg.Since == 0 || l.Time >= v.cfg.Since) && (v.cfg.Until == 0 || l.Time < v.cfg.Until)
}

func header(hs []Header, name string) []byte {
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].Key == name {
			return hs[i].Value
		}
	}
	return nil
}

// Residency header names the attestation check reads (the router's).
const (
	hdrJurisdiction = "residency-jurisdiction"
	hdrRegion       = "residency-region"
	hdrRuleset      = "residency-ruleset-version"
	hdrReason       = "residency-reason"
	hdrSrcTopic     = "residency-source-topic"
	hdrSrcPartition = "residency-source-partition"
	hdrSrcOffset    = "residency-source-offset"
)

// AttestationInputOf builds the attestation input of a record read from a
// topic of the given role on cluster/topic, from its bytes and residency
// headers: what a sink and the verifier check a tag against. For
// RolePinned the reason is empty whatever the headers say: a routed record
// has none, and the copy a sink puts in its quarantine topic (checked as of
// the pinned topic it came from) carries the sink's reason.
func AttestationInputOf(cluster, topic string, role Role, key, value []byte, hs []Header) AttestationInput {
	var reason []byte
	if role != RolePinned {
		reason = header(hs, hdrReason)
	}
	in := AttestationInput{
		Value: Sum(value), KeyNull: key == nil, Decision: role.decision(),
		Reason: string(reason), Jurisdiction: string(header(hs, hdrJurisdiction)),
		Region: string(header(hs, hdrRegion)), DestCluster: cluster, DestTopic: topic,
		SrcTopic: string(header(hs, hdrSrcTopic)),
	}
	if key != nil {
		in.Key = Sum(key)
	}
	in.RulesetVersion, in.SrcPartition, in.SrcOffset = recordNumbers(hs)
	return in
}

// recordNumbers reads the ruleset version and source partition and offset
// headers of a record's attestation input (0 when absent or not numbers).
func recordNumbers(hs []Header) (rulesetVersion int64, srcPartition int32, srcOffset int64) {
	rulesetVersion = parseHeaderInt(header(hs, hdrRuleset), 64)
	srcPartition = int32(parseHeaderInt(header(hs, hdrSrcPartition), 32))
	srcOffset = parseHeaderInt(header(hs, hdrSrcOffset), 64)
	return rulesetVersion, srcPartition, srcOffset
}

// parseHeaderInt is strconv.ParseInt's value, whatever its error (0 for an
// absent header, without the allocation of the error).
func parseHeaderInt(b []byte, bits int) int64 {
	if len(b) == 0 {
		return 0
	}
	v, _ := strconv.ParseInt(string(b), 10, bits)
	return v
}

// appendRecordInput appends what AttestationInputOf(cluster, topic, role,
// key, value, hs).AppendInput appends, given the value and key digests,
// writing the header values as they are instead of converting them.
func appendRecordInput(dst []byte, cluster, topic string, role Role, value, key *Digest, keyNull bool, hs []Header) []byte {
	var reason []byte
	if role != RolePinned {
		reason = header(hs, hdrReason)
	}
	rv, sp, so := recordNumbers(hs)
	dst = append(dst, attestDomain...)
	dst = appendLV(dst, value[:])
	if keyNull {
		dst = appendLV(dst, nil)
	} else {
		dst = appendLV(dst, key[:])
	}
	dst = appendLVString(dst, string(role.decision()))
	dst = appendLV(dst, reason)
	dst = appendLV(dst, header(hs, hdrJurisdiction))
	dst = appendLV(dst, header(hs, hdrRegion))
	dst = appendLVInt(dst, rv)
	dst = appendLVString(dst, cluster)
	dst = appendLVString(dst, topic)
	dst = appendLV(dst, header(hs, hdrSrcTopic))
	dst = appendLVInt(dst, int64(sp))
	dst = appendLVInt(dst, so)
	return dst
}

// VerifyPlacement checks every record of each range against the leaves
// that wrote it, and every leaf that wrote into a range against the
// records there.
func (v *Verification) VerifyPlacement(ctx context.Context, ranges []TopicRange, src RecordSource) error {
	for _, r := range ranges {
		seen := map[int64]bool{}
		err := src.Records(ctx, r, func(rec *Record) error {
			if rec.Offset < r.From || rec.Offset >= r.To || rec.Kind != KindData {
				return nil // a transaction marker is not a record
			}
			seen[rec.Offset] = true
			v.report.Checked.Records++
			v.progress("records", v.report.Checked.Records)
			v.checkRecord(r, rec)
			return nil
		})
		if err != nil {
			return fmt.Errorf("audit: read %s/%d: %w", r.Topic, r.Partition, err)
		}
		for _, ref := range v.byDestPart[partKey{r.Cluster, r.Topic, r.Partition}] {
			off := ref.leaf.Dest.Offset
			if off < r.From || off >= r.To || seen[off] || !v.inWindow(ref.leaf) {
				continue
			}
			f := Finding{Cluster: r.Cluster, Topic: r.Topic, Partition: r.Partition, Offset: off, Leaf: ref.index}
			if v.purged(partKey{r.Cluster, r.Topic, r.Partition}, off) {
				f.Code, f.Note, f.Detail = CodePurged, true, "record deleted by purge"
			} else {
				f.Code, f.Detail = CodeMissingRecord, "the leaf wrote a record here; the topic does not have it"
			}
			v.add(f)
		}
	}
	return nil
}

func (v *Verification) purged(pk partKey, off int64) bool {
	for _, p := range v.purges[pk] {
		if off >= p.Src.Offset && off < p.Src.EndOffset {
			return true
		}
	}
	if pk.cluster == v.cfg.IngestCluster {
		return v.purged(partKey{"", pk.topic, pk.partition}, off)
	}
	return false
}

func (v *Verification) checkRecord(r TopicRange, rec *Record) {
	f := Finding{Cluster: r.Cluster, Topic: r.Topic, Partition: r.Partition, Offset: rec.Offset, Leaf: -1}
	at := coords{r.Cluster, r.Topic, r.Partition, rec.Offset}
	refs := v.byDest[at]
	value := Sum(rec.Value)
	var key Digest
	if rec.Key != nil {
		key = Sum(rec.Key)
	}
	if len(refs) == 0 {
		// A leaf that wrote this record without knowing its coordinates
		// (replay): the first one of its topic and value not yet matched,
		// with its key. It now names these coordinates (for the stores).
		k := contentKey{r.Cluster, r.Topic, value}
		for i, x := range v.unplaced[k] {
			if x.leaf.KeyNull == (rec.Key == nil) && x.leaf.Key == key {
				v.unplaced[k] = slices.Delete(v.unplaced[k], i, i+1)
				refs = []leafRef{x}
				v.byDest[at] = refs
				break
			}
		}
	}
	var ref leafRef
	for _, x := range refs {
		if x.leaf.Value == value && x.leaf.KeyNull == (rec.Key == nil) && x.leaf.Key == key {
			ref = x
			break
		}
		// An event too large to route is dead-lettered without its key and
		// value (they stay at the source coordinates): the leaf's digests
		// are the source record's.
		if x.leaf.Decision == DeadLettered && x.leaf.Reason == ReasonTooLarge && len(rec.Value) == 0 && rec.Key == nil {
			ref = x
			break
		}
	}
	attested := false
	var in AttestationInput
	if v.cfg.Attestation != nil {
		cluster, topic, role := r.Cluster, r.Topic, r.Role
		if role == RoleSinkQuarantine && ref.leaf != nil {
			cluster, topic, role = ref.leaf.Src.Cluster, ref.leaf.Src.Topic, RolePinned
		}
		in = AttestationInputOf(cluster, topic, role, rec.Key, rec.Value, rec.Headers)
		if err := v.cfg.Attestation.Verify(header(rec.Headers, HeaderAttestation), &in); err != nil {
			g := f
			g.Code, g.Detail = CodeBadAttestation, err.Error()
			if r.Role == RoleSinkQuarantine && ref.leaf != nil && ref.leaf.Decision == Refused && ref.leaf.Reason == ReasonSinkBadAttestation {
				// The sink refused the record for exactly this: the copy
				// it quarantined is explained by its refusal leaf; the
				// record itself is reported where it was written (its
				// pinned topic: unlogged_record, bad_attestation).
				g.Code, g.Note, g.Leaf = CodeRefusedUnattested, true, ref.index
				g.Detail = fmt.Sprintf("a record without a valid attestation (%v), refused by the sink as %s and quarantined here (refusal leaf %d); reported where it was written, %s/%s/%d@%d",
					err, ReasonSinkBadAttestation, ref.index, ref.leaf.Src.Cluster, ref.leaf.Src.Topic, ref.leaf.Src.Partition, ref.leaf.Src.Offset)
			}
			v.add(g)
		} else {
			attested = true
		}
	}
	if len(refs) == 0 && attested && r.Role != RoleSinkQuarantine {
		// A router killed after writing a record and before its ledger
		// appended the leaf routes the event again: the first copy has no
		// leaf at its coordinates, but its attestation (valid: a router
		// wrote it) names the source offset whose leaf wrote the same
		// record, with the same decision, to the same topic. (A
		// dead-lettered record carries no ruleset version.)
		for _, x := range v.bySource[coords{"", in.SrcTopic, in.SrcPartition, in.SrcOffset}] {
			l := x.leaf
			if l.Dest.Cluster == r.Cluster && l.Dest.Topic == r.Topic && l.Decision == in.Decision && l.Reason == in.Reason &&
				l.Value == value && l.KeyNull == (rec.Key == nil) && l.Key == key &&
				l.Jurisdiction == in.Jurisdiction && l.Region == in.Region && (in.RulesetVersion == 0 || l.Ruleset.Version == in.RulesetVersion) {
				f.Code, f.Note, f.Leaf = CodeDuplicateRecord, true, x.index
				f.Detail = fmt.Sprintf("a router's copy of the record its leaf wrote at %s/%d@%d (a copy written before a crash and routed again, or a byte-for-byte copy of it: the two cannot be told apart)", l.Dest.Topic, l.Dest.Partition, l.Dest.Offset)
				v.add(f)
				// The row a sink stored from this copy is the leaf's record.
				v.byDest[at] = append(v.byDest[at], x)
				return
			}
		}
	}
	if len(refs) == 0 {
		f.Code, f.Detail = CodeUnloggedRecord, "no leaf wrote a record at these coordinates"
		v.add(f)
		return
	}
	if ref.leaf == nil {
		f.Code, f.Leaf, f.Detail = CodeRecordMismatch, refs[0].index, "a leaf wrote here, but this record's value or key differs from it"
		v.add(f)
		return
	}
	f.Leaf = ref.index
	l := ref.leaf
	v.counts(l).Records++
	want := map[Role][]Decision{RolePinned: {Routed, Released}, RoleQuarantine: {Quarantined}, RoleDeadLetter: {DeadLettered},
		RoleHold: {Held}, RoleSinkQuarantine: {Refused}}[r.Role]
	if !slices.Contains(want, l.Decision) {
		f.Code, f.Detail = CodeMisplacedRecord, fmt.Sprintf("a %s record in a %s topic", l.Decision, r.Role)
		v.add(f)
		return
	}
	if r.Role != RolePinned {
		if r.Cluster != v.cfg.IngestCluster {
			f.Code, f.Detail = CodeMisplacedRecord, fmt.Sprintf("%s topic on cluster %q, not the ingest cluster", r.Role, r.Cluster)
			v.add(f)
		}
		return
	}
	p := v.policy(ref, f)
	if p == nil {
		return
	}
	region, ok := p.RegionOf(l.Jurisdiction)
	g, gok := p.Region(region)
	switch {
	case !ok:
		f.Code, f.Detail = CodeMisplacedRecord, fmt.Sprintf("jurisdiction %q is not in ruleset version %d", l.Jurisdiction, l.Ruleset.Version)
	case region != l.Region:
		f.Code, f.Detail = CodeMisplacedRecord, fmt.Sprintf("jurisdiction %s maps to region %s under ruleset version %d, the leaf says %s", l.Jurisdiction, region, l.Ruleset.Version, l.Region)
	case !gok || g.Topic != r.Topic || g.Cluster != r.Cluster:
		f.Code, f.Detail = CodeMisplacedRecord, fmt.Sprintf("region %s's pinned topic is %s/%s under ruleset version %d, not %s/%s", region, g.Cluster, g.Topic, l.Ruleset.Version, r.Cluster, r.Topic)
	default:
		return
	}
	v.add(f)
}

// StoreCheck names a store to verify and the cluster of the pinned topics
// its sink reads (rows record topic, partition and offset, not the
// cluster).
type StoreCheck struct {
	// Store is the store's name.
	Store string
	// Cluster is the cluster of the pinned topic its sink reads.
	Cluster string
}

// VerifyStores checks every row of each store against the sink and router
// leaves, and every sink_write leaf in the window against the rows.
func (v *Verification) VerifyStores(ctx context.Context, stores []StoreCheck, rows RowSource) error {
	for _, s := range stores {
		seen := map[coords]rowPrint{} // the first row at each coordinate
		values := map[Digest]coords{} // a row per stored value, for copies kept once
		err := rows.Rows(ctx, s.Store, func(row *Row) error {
			if row.Cluster == "" {
				row.Cluster = s.Cluster
			}
			c := coords{row.Cluster, row.Topic, row.Partition, row.Offset}
			values[row.Value] = c
			v.report.Checked.Rows++
			v.progress("rows", v.report.Checked.Rows)
			v.checkRow(s.Store, c, row)
			p := printOf(row)
			if first, ok := seen[c]; ok {
				v.checkCopy(s.Store, c, first, p)
			} else {
				seen[c] = p
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("audit: read store %s: %w", s.Store, err)
		}
		for _, ref := range v.byStore[s.Store] {
			l := ref.leaf
			c := coords{l.Src.Cluster, l.Src.Topic, l.Src.Partition, l.Src.Offset}
			if _, ok := seen[c]; ok || !v.inWindow(l) {
				continue
			}
			f := Finding{Cluster: c.cluster, Topic: c.topic, Partition: c.partition, Offset: c.offset, Store: s.Store, Leaf: ref.index}
			if at, ok := v.erasures[storeSubject{s.Store, l.Subject}]; ok && !l.Subject.IsZero() && at > ref.index {
				f.Code, f.Note, f.Detail = CodeErased, true, fmt.Sprintf("row removed by the erasure of leaf %d", at)
			} else if at, ok := values[l.Value]; ok && !l.Value.IsZero() && v.sameRecordAt(s.Store, at, l) {
				// A router's duplicate of the event at other pinned-topic
				// coordinates: a store idempotent on the event id kept the
				// first copy only.
				f.Code, f.Note, f.Detail = CodeDuplicateLeaf, true, fmt.Sprintf("the store holds this event once, from %s/%d@%d", at.topic, at.partition, at.offset)
			} else {
				f.Code, f.Detail = CodeMissingRow, "the sink logged writing this record; the store does not have it"
			}
			v.add(f)
		}
	}
	return nil
}

// rowPrint is what VerifyStores keeps of the first row at a coordinate, to
// compare a second one with: the first 8 bytes of the digest of each
// column it compares (a few dozen bytes a row, like the rest of its
// per-row state).
type rowPrint struct {
	value, eventID, userID, event, region, jurisdiction, ruleset uint64
}

func prefix(d Digest) uint64 { return binary.BigEndian.Uint64(d[:8]) }

func printOf(row *Row) rowPrint {
	return rowPrint{value: prefix(row.Value), eventID: prefix(row.Stored.EventID), userID: prefix(row.Stored.UserID),
		event: prefix(row.Stored.Event), region: prefix(Sum([]byte(row.Region))),
		jurisdiction: prefix(Sum([]byte(row.Jurisdiction))), ruleset: prefix(Sum([]byte(row.RulesetVersion)))}
}

// checkCopy compares a second row at coordinate c with the first one
// there. A sink writes one row per pinned-topic record, but the object
// store may hold a record twice after a crash (an object written, the
// sink killed before its leaves were durable, the batch redelivered and
// written as another object overlapping the first): such a copy is the
// same in every column, and a note (duplicate_row). A copy that differs
// in any column (a row copied under a new event id, say) is row_mismatch:
// no sink writes two different rows for one record.
func (v *Verification) checkCopy(store string, c coords, first, p rowPrint) {
	f := Finding{Cluster: c.cluster, Topic: c.topic, Partition: c.partition, Offset: c.offset, Store: store, Leaf: -1}
	if first == p {
		f.Code, f.Note, f.Detail = CodeDuplicateRow, true, "the store holds this record twice, identical in every column (a batch written again after a crash)"
		v.add(f)
		return
	}
	var cols []string
	for _, x := range []struct {
		name string
		a, b uint64
	}{{"raw", first.value, p.value}, {"event_id", first.eventID, p.eventID}, {"user_id", first.userID, p.userID},
		{"event", first.event, p.event}, {"region", first.region, p.region}, {"jurisdiction", first.jurisdiction, p.jurisdiction},
		{"ruleset_version", first.ruleset, p.ruleset}} {
		if x.a != x.b {
			cols = append(cols, x.name)
		}
	}
	f.Code = CodeRowMismatch
	f.Detail = fmt.Sprintf("another row for the same pinned-topic record differs from this one in %s: a sink writes one row per record", strings.Join(cols, ", "))
	v.add(f)
}

// sameRecordAt reports whether a sink_write leaf of store at c logs the
// record l logs (the same value and key, and the same event when both name
// one): the row at c is then the one copy an idempotent store kept.
func (v *Verification) sameRecordAt(store string, c coords, l *Leaf) bool {
	for _, x := range v.sinkWrites[storeCoords{store, c}] {
		o := x.leaf
		if o.Value == l.Value && o.Key == l.Key && o.KeyNull == l.KeyNull && (o.Event.IsZero() || l.Event.IsZero() || o.Event == l.Event) {
			return true
		}
	}
	return false
}

func (v *Verification) checkRow(store string, c coords, row *Row) {
	f := Finding{Cluster: c.cluster, Topic: c.topic, Partition: c.partition, Offset: c.offset, Store: store, Leaf: -1}
	refs := v.sinkWrites[storeCoords{store, c}]
	if len(refs) == 0 {
		f.Code, f.Detail = CodeUnloggedRow, "no sink_write leaf of this store for these pinned-topic coordinates"
		v.add(f)
		return
	}
	var ref leafRef
	for _, x := range refs {
		if x.leaf.Value == row.Value {
			ref = x
			break
		}
	}
	if ref.leaf == nil {
		f.Code, f.Leaf, f.Detail = CodeRowMismatch, refs[0].index, "the stored value differs from the one the sink logged"
		v.add(f)
		return
	}
	l := ref.leaf
	f.Leaf = ref.index
	switch {
	case row.Decoded == RowDecoded:
		v.report.Checked.RowContents++
	case row.DecodeError != "":
		// The row's value is the one its sink logged (checked above), and
		// that sink decoded it: a value the verifier cannot decode (its
		// schemas settings lack a writer schema, a registry out of reach)
		// says nothing of the row; the report says how many and why.
		v.report.Checked.RowsUndecoded++
		if v.report.RowsUndecodedWhy == "" {
			v.report.RowsUndecodedWhy = row.DecodeError
		}
	}
	// The record the sink read must be one a router wrote: its leaf holds
	// the ruleset version that placed it (the sink's holds the one in
	// force when it wrote).
	var placed *Leaf
	for _, x := range v.byDest[c] {
		if x.leaf.Value == row.Value {
			placed = x.leaf
			break
		}
	}
	routed := placed != nil
	if detail := rowMismatch(row, l, placed); detail != "" {
		f.Code, f.Detail = CodeRowMismatch, detail
		v.add(f)
		return
	}
	if !routed {
		g := f
		g.Code, g.Detail = CodeUnloggedRecord, "the sink stored a record that no router leaf wrote at these coordinates"
		v.add(g)
	}
	p := v.policy(ref, f)
	if p == nil {
		return
	}
	if region, ok := p.RegionOf(l.Jurisdiction); !ok || region != l.Region || !p.Approves(store, l.Region) {
		f.Code, f.Detail = CodeUnapprovedStore, fmt.Sprintf("ruleset version %d does not approve store %s for %s data (region %s)", l.Ruleset.Version, store, l.Jurisdiction, l.Region)
		v.add(f)
	}
}

// rowMismatch says which columns of a row whose value is the one its
// sink_write leaf l logged differ from what that sink wrote for the
// record: region and jurisdiction (l's), ruleset_version (the version of
// the leaf that placed the record, the router's or replay's that wrote it
// at the row's coordinates, whose residency-ruleset-version header the
// sink stores; not checked when there is none: unlogged_record), and
// source_topic (a router's leaf's source topic), and event_id, user_id
// and event (the stored value decoded again, when the row source decoded
// it; a value it could not decode is counted, not a mismatch: it is the
// value the sink logged). It names columns, and the leaves' region,
// jurisdiction and version, never a value of the row but its region and
// jurisdiction; "" when they all match.
func rowMismatch(row *Row, l, placed *Leaf) string {
	var cols []string
	if row.Region != l.Region {
		cols = append(cols, "region")
	}
	if row.Jurisdiction != l.Jurisdiction {
		cols = append(cols, "jurisdiction")
	}
	version := l.Ruleset.Version
	if placed != nil {
		version = placed.Ruleset.Version
		if rv, err := strconv.ParseInt(row.RulesetVersion, 10, 64); err != nil || rv != version {
			cols = append(cols, "ruleset_version")
		}
		// A router's leaf names the ingest topic it read the event from,
		// which the sink stores (replay's names where replay read it).
		if placed.Kind == KindRoute && placed.Src.Topic != "" && row.SourceTopic != "" && row.SourceTopic != placed.Src.Topic {
			cols = append(cols, "source_topic")
		}
	}
	if row.Decoded == RowDecoded {
		cols = append(cols, row.Stored.differs(row.Derived)...)
	}
	if len(cols) == 0 {
		return ""
	}
	what := "column " + cols[0] + " differs"
	if len(cols) > 1 {
		what = "columns " + strings.Join(cols, ", ") + " differ"
	}
	d := fmt.Sprintf("%s from what the sink wrote for this record (leaf: %s/%s, placed under ruleset version %d", what, l.Jurisdiction, l.Region, version)
	if row.Region != l.Region || row.Jurisdiction != l.Jurisdiction {
		d += fmt.Sprintf("; the row says %s/%s", row.Jurisdiction, row.Region)
	}
	if row.Decoded == RowDecoded {
		d += "; event_id, user_id and event compared with the stored value decoded again"
	}
	return d + ")"
}

// Report returns the report of the checks run so far.
func (v *Verification) Report() *Report {
	r := v.report
	r.Findings = slices.Clone(r.Findings)
	r.Notes = slices.Clone(r.Notes)
	sortFindings(r.Findings)
	sortFindings(r.Notes)
	return &r
}

func sortFindings(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		if c := strings.Compare(string(a.Code), string(b.Code)); c != 0 {
			return c
		}
		if c := strings.Compare(a.Store, b.Store); c != 0 {
			return c
		}
		if c := strings.Compare(a.Cluster+"/"+a.Topic, b.Cluster+"/"+b.Topic); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Partition, b.Partition); c != 0 {
			return c
		}
		return cmp.Compare(a.Offset, b.Offset)
	})
}
