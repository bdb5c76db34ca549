package auditwire

import (
	"crypto/sha256"
	"fmt"
	"sync"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/router"
)

// Attester implements router.Attester over an audit.Attester: the tag
// binds what audit.AttestationInputOf reads back from the record as
// written (its key and value digests, the decision its topic's role
// implies, its reason, jurisdiction, region and ruleset version headers,
// its destination and its source coordinates), so a sink's and the
// verifier's check succeeds on exactly the records a router wrote. It is
// safe for concurrent use without a lock (each goroutine takes a signing
// state from a pool) and does not allocate.
type Attester struct {
	keyID  string
	states sync.Pool // of *attestState
}

// attestState is one goroutine's signer and input.
type attestState struct {
	a  *audit.Attester
	in audit.AttestationInput
}

var _ router.Attester = (*Attester)(nil)

// NewAttester returns an Attester signing with key.
func NewAttester(key audit.AttestKey) (*Attester, error) {
	a, err := audit.NewAttester(key)
	if err != nil {
		return nil, fmt.Errorf("auditwire: attester: %w", err)
	}
	at := &Attester{keyID: a.KeyID()}
	at.states.New = func() any { return &attestState{a: a.Clone()} }
	at.states.Put(&attestState{a: a})
	return at, nil
}

// KeyID returns the id of the signing key.
func (a *Attester) KeyID() string { return a.keyID }

// AppendAttestation implements router.Attester.
func (a *Attester) AppendAttestation(dst []byte, r *router.AttestedRecord) []byte {
	st := a.states.Get().(*attestState)
	d := &r.Event.Decision
	m := r.Event.Msg
	in := &st.in
	in.Value = sha256.Sum256(r.Value)
	in.KeyNull = r.Key == nil
	if in.KeyNull {
		in.Key = audit.Digest{}
	} else {
		in.Key = sha256.Sum256(r.Key)
	}
	// The leaf digests the event as read; when the record carries the same
	// bytes (all but a too_large dead-letter record), share the digests.
	if same(r.Value, m.Value) && same(r.Key, m.Key) {
		r.Event.Sums = router.RecordSums{Value: in.Value, Key: in.Key, Set: true}
	}
	in.Decision, in.Reason, in.Jurisdiction, in.Region = Decision(d.Outcome), d.Reason, d.Jurisdiction, d.Region
	in.RulesetVersion = r.RulesetVersion
	in.DestCluster, in.DestTopic = r.Cluster, r.Topic
	in.SrcTopic, in.SrcPartition, in.SrcOffset = m.Topic, int32(m.Partition), m.Offset
	dst = st.a.AppendTag(dst, in)
	*in = audit.AttestationInput{} // keep no reference to the record's strings
	a.states.Put(st)
	return dst
}

// same reports whether a and b are the same bytes in memory (both nil, or
// the same slice), which is cheaper than comparing them and enough here:
// the record's key and value are the event's, or not at all.
func same(a, b []byte) bool {
	if len(a) != len(b) || (a == nil) != (b == nil) {
		return false
	}
	return len(a) == 0 || &a[0] == &b[0]
}
