package auditwire

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/stream"
)

// SinkAttestation implements sink.Attestation with an audit.AttestVerifier:
// a record read from a pinned topic must carry, in its
// residency-attestation header, a router's tag over the record as read
// (audit.AttestationInputOf with audit.RolePinned: its value and key
// digests, its residency headers, the cluster and topic it was read from).
// It gives the sink the record's digests it computed, for the record's
// leaf. It is safe for concurrent use without a lock (each goroutine takes
// a verifier from a pool) and does not allocate for a valid record.
type SinkAttestation struct {
	states sync.Pool // of *sinkCheckState
}

// sinkCheckState is one goroutine's verifier and header buffer.
type sinkCheckState struct {
	v  *audit.AttestVerifier
	hs []audit.Header
}

// NewSinkAttestation returns the check with the keys of v (during a
// rotation, the old and the new: config.AuditConfig.Verifier). v must not
// be used elsewhere afterwards.
func NewSinkAttestation(v *audit.AttestVerifier) (*SinkAttestation, error) {
	if v == nil {
		return nil, errors.New("auditwire: sink attestation: no verify keys")
	}
	a := &SinkAttestation{}
	a.states.New = func() any { return &sinkCheckState{v: v.Clone()} }
	a.states.Put(&sinkCheckState{v: v})
	return a, nil
}

// Check implements sink.Attestation: it returns nil when msg, read from
// topic on cluster, carries a valid attestation; the error wraps
// audit.ErrNoAttestation, audit.ErrUnknownAttestationKey or
// audit.ErrBadAttestation. It sets sums to the digests of msg's value and
// key whatever the outcome.
func (a *SinkAttestation) Check(cluster, topic string, msg *stream.Message, sums *router.RecordSums) error {
	st := a.states.Get().(*sinkCheckState)
	st.hs = st.hs[:0]
	for _, h := range msg.Headers {
		st.hs = append(st.hs, audit.Header{Key: h.Key, Value: h.Value})
	}
	value, key, err := st.v.VerifyRecord(cluster, topic, audit.RolePinned, msg.Key, msg.Value, st.hs)
	clear(st.hs) // keep no reference to msg
	a.states.Put(st)
	if sums != nil {
		*sums = router.RecordSums{Value: value, Key: key, Set: true}
	}
	return err
}

// SinkLedgerConfig configures a SinkLedger.
type SinkLedgerConfig struct {
	// Store is the store's name (stores[].name): the leaves' dest.store and
	// actor "sink:<store>". Required.
	Store string
	// Cluster is the cluster of the pinned topic the sink reads: the
	// leaves' src.cluster. Required.
	Cluster string
	// QuarantineCluster is the cluster of the sink's quarantine topic (the
	// ingest cluster): the sink_refusal leaves' dest.cluster. Required.
	QuarantineCluster string
	// Pseudonymizer makes the keyed hashes of event and user ids
	// (audit.subject_key_file). Default nil: the leaves carry neither (the
	// verifier then cannot explain erased rows).
	Pseudonymizer *audit.Pseudonymizer
	// Now is the clock of the leaves' time. Default time.Now.
	Now func() time.Time
}

// SinkLedger implements sink.Ledger over a Log: one audit record per call
// (more past DefaultMaxRecordBytes or audit.MaxWireContexts), holding a
// sink_write leaf per stored record and a sink_refusal leaf per refused
// one (docs/audit.md). It is safe for concurrent use.
type SinkLedger struct {
	cfg   SinkLedgerConfig
	log   Log
	actor string // "sink:<store>"

	mu      sync.Mutex
	leaves  []audit.Leaf      // the leaves of one call, kept for the next
	rsHex   string            // the last ruleset digest parsed, in hex
	rsParse audit.Digest      // and parsed
	names   map[string]string // jurisdiction and region header values seen
}

// NewSinkLedger returns a ledger appending to log.
func NewSinkLedger(log Log, cfg SinkLedgerConfig) (*SinkLedger, error) {
	if log == nil {
		return nil, errors.New("auditwire: sink ledger: no audit log")
	}
	for _, f := range []struct{ name, v string }{{"store", cfg.Store}, {"cluster", cfg.Cluster}, {"quarantine cluster", cfg.QuarantineCluster}} {
		if f.v == "" {
			return nil, fmt.Errorf("auditwire: sink ledger: %s required", f.name)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &SinkLedger{cfg: cfg, log: log, actor: "sink:" + cfg.Store}, nil
}

// Record appends the leaves of entries as one audit record (more when
// they pass DefaultMaxRecordBytes or audit.MaxWireContexts) and returns
// once the log acknowledged it.
func (l *SinkLedger) Record(ctx context.Context, entries []sink.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Now().UnixMilli()
	l.leaves = l.leaves[:0]
	defer func() { clear(l.leaves) }() // keep no reference to the entries' strings
	for i := range entries {
		leaf, err := l.leaf(&entries[i], now)
		if err != nil {
			return fmt.Errorf("auditwire: sink leaf of %s/%d@%d: %w", entries[i].Msg.Topic, entries[i].Msg.Partition, entries[i].Msg.Offset, err)
		}
		l.leaves = append(l.leaves, leaf)
	}
	recs, err := audit.EncodeWireRecords(l.leaves, DefaultMaxRecordBytes)
	if err != nil {
		return fmt.Errorf("auditwire: sink leaves: %w", err)
	}
	if err := l.log.Append(ctx, recs...); err != nil {
		return fmt.Errorf("auditwire: sink leaves: %w", err)
	}
	return nil
}

// leaf builds the leaf of one entry. The value and key digests are the
// attestation check's (e.Sums) when it computed them.
func (l *SinkLedger) leaf(e *sink.Entry, now int64) (audit.Leaf, error) {
	m := e.Msg
	leaf := audit.Leaf{Kind: audit.KindSinkWrite, Time: now, Actor: l.actor,
		Src: audit.Source{Cluster: l.cfg.Cluster, Topic: m.Topic, Partition: int32(m.Partition), Offset: m.Offset}}
	if e.Sums.Set {
		leaf.Value, leaf.Key, leaf.KeyNull = e.Sums.Value, e.Sums.Key, m.Key == nil
	} else {
		leaf.SetRecord(m.Key, m.Value)
	}
	if p := l.cfg.Pseudonymizer; p != nil {
		if e.EventID != "" {
			leaf.Event = p.EventString(e.EventID)
		}
		if e.UserID != "" {
			leaf.Subject = p.SubjectString(e.UserID)
		}
	}
	if v, ok := router.HeaderValue(m.Headers, router.HeaderJurisdiction); ok {
		leaf.Jurisdiction = l.name(v)
	}
	if v, ok := router.HeaderValue(m.Headers, router.HeaderRegion); ok {
		leaf.Region = l.name(v)
	}
	if rs := e.Ruleset; rs != nil {
		leaf.Ruleset.Version = rs.Version()
		if h := rs.Digest(); h != "" {
			if h != l.rsHex {
				d, err := audit.ParseDigest(h)
				if err != nil {
					return leaf, fmt.Errorf("ruleset version %s: %w", rs.VersionString(), err)
				}
				l.rsHex, l.rsParse = h, d
			}
			leaf.Ruleset.Digest = l.rsParse
		}
	}
	if e.Written {
		leaf.Decision = audit.Written
		leaf.Dest = audit.Destination{Store: l.cfg.Store}
		return leaf, nil
	}
	leaf.Kind, leaf.Decision, leaf.Reason = audit.KindSinkRefusal, audit.Refused, e.Reason
	if e.QuarantineTopic == "" {
		return leaf, nil // not quarantined (an erased user's event)
	}
	leaf.Dest = audit.Destination{Cluster: l.cfg.QuarantineCluster, Topic: e.QuarantineTopic,
		Partition: e.QuarantinePartition, Offset: e.QuarantineOffset}
	return leaf, nil
}

// maxHeaderName bounds a jurisdiction or region name a sink puts in a
// leaf from a record's header, or a router from a pin (cleanName).
const maxHeaderName = 256

// name returns v as a string, from the few jurisdiction and region names
// a sink sees (no allocation once seen; at most 256 kept). A refused
// record's headers are whatever its writer put there: a value that is not
// UTF-8 or longer than maxHeaderName is made valid and cut, so that the
// leaf encodes (a leaf that does not would make the integrator skip the
// whole record, every other leaf of the batch with it).
func (l *SinkLedger) name(v []byte) string {
	if s, ok := l.names[string(v)]; ok { // no allocation: map lookup by converted bytes
		return s
	}
	if l.names == nil || len(l.names) >= 256 {
		l.names = make(map[string]string, 16)
	}
	s := string(v)
	t := cleanName(s)
	l.names[s] = t
	return t
}

// cleanName returns s when it is UTF-8 and at most maxHeaderName bytes;
// else s made valid (U+FFFD for each bad sequence) and cut there. For the
// names a leaf takes from outside the ruleset (a record's headers, a pin
// from Redis): one that does not encode would make the integrator skip
// the whole audit record, every other leaf with it.
func cleanName(s string) string {
	if len(s) <= maxHeaderName && utf8.ValidString(s) {
		return s
	}
	t := strings.ToValidUTF8(s, "\uFFFD")
	if len(t) > maxHeaderName {
		t = t[:maxHeaderName]
		for !utf8.ValidString(t) { // a rune cut: at most 3 bytes go
			t = t[:len(t)-1]
		}
	}
	return t
}

// LeafLedger appends ready-made leaves (purge, erasure: erasure.Ledger) to
// a Log, as one audit record per call (more when they do not fit in
// one). It is safe for concurrent use.
type LeafLedger struct {
	log Log
}

// NewLeafLedger returns a ledger appending to log.
func NewLeafLedger(log Log) (*LeafLedger, error) {
	if log == nil {
		return nil, errors.New("auditwire: leaf ledger: no audit log")
	}
	return &LeafLedger{log: log}, nil
}

// Append appends leaves as one audit record (more past
// DefaultMaxRecordBytes, audit.MaxWireContexts or audit.MaxWireLeaves)
// and returns once the log acknowledged them.
func (l *LeafLedger) Append(ctx context.Context, leaves []audit.Leaf) error {
	if len(leaves) == 0 {
		return nil
	}
	recs, err := audit.EncodeWireRecords(leaves, DefaultMaxRecordBytes)
	if err != nil {
		return fmt.Errorf("auditwire: %s leaves: %w", leaves[0].Kind, err)
	}
	if err := l.log.Append(ctx, recs...); err != nil {
		return fmt.Errorf("auditwire: %d %s leaves: %w", len(leaves), leaves[0].Kind, err)
	}
	return nil
}
