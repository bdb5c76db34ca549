package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"os"
	"strconv"
	"sync"
)

// HeaderAttestation is the record header that carries a router's
// attestation tag.
const HeaderAttestation = "residency-attestation"

// MinKeyBytes is the shortest secret accepted for attestation and
// pseudonymisation keys.
const MinKeyBytes = 32

// Attestation errors. A sink refuses a record for any of them; callers
// branch with errors.Is.
var (
	// ErrNoAttestation: the record has no attestation header.
	ErrNoAttestation = errors.New("audit: no attestation")
	// ErrUnknownAttestationKey: the tag names a key id the verifier lacks
	// (never known, or retired).
	ErrUnknownAttestationKey = errors.New("audit: unknown attestation key")
	// ErrBadAttestation: the tag is malformed or does not match the record.
	ErrBadAttestation = errors.New("audit: bad attestation")
	// ErrKey: an attestation or pseudonymisation key is unusable.
	ErrKey = errors.New("audit: bad key")
)

// AttestationInput is what an attestation binds: the record's value and key
// digests, the decision that placed it, and where it was read from and
// written to. The router fills it when it writes a record; a sink fills it
// from the record it read and its residency headers.
type AttestationInput struct {
	// Value is the SHA-256 of the record value.
	Value Digest
	// Key is the SHA-256 of the record key, unless KeyNull.
	Key Digest
	// KeyNull is true for a null key.
	KeyNull bool
	// Decision is the decision (routed, quarantined, dead_lettered, ...).
	Decision Decision
	// Reason is the quarantine or dead-letter reason ("" when routed).
	Reason string
	// Jurisdiction is the jurisdiction header.
	Jurisdiction string
	// Region is the region header.
	Region string
	// RulesetVersion is the ruleset version header.
	RulesetVersion int64
	// DestCluster is the cluster the record was written to.
	DestCluster string
	// DestTopic is the topic the record was written to.
	DestTopic string
	// SrcTopic, SrcPartition and SrcOffset are the source coordinates.
	SrcTopic string
	// SrcPartition: see SrcTopic.
	SrcPartition int32
	// SrcOffset: see SrcTopic.
	SrcOffset int64
}

// attestDomain starts every MAC input, so a tag can never be mistaken for
// another use of the same key.
const attestDomain = "residency-attestation-v1"

// AppendInput appends the MAC input layout of docs/audit.md: the domain
// string, then each field as a big-endian uint32 length and its bytes.
func (in *AttestationInput) AppendInput(dst []byte) []byte {
	dst = append(dst, attestDomain...)
	dst = appendLV(dst, in.Value[:])
	if in.KeyNull {
		dst = appendLV(dst, nil)
	} else {
		dst = appendLV(dst, in.Key[:])
	}
	dst = appendLVString(dst, string(in.Decision))
	dst = appendLVString(dst, in.Reason)
	dst = appendLVString(dst, in.Jurisdiction)
	dst = appendLVString(dst, in.Region)
	dst = appendLVInt(dst, in.RulesetVersion)
	dst = appendLVString(dst, in.DestCluster)
	dst = appendLVString(dst, in.DestTopic)
	dst = appendLVString(dst, in.SrcTopic)
	dst = appendLVInt(dst, int64(in.SrcPartition))
	dst = appendLVInt(dst, in.SrcOffset)
	return dst
}

func appendLV(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

func appendLVString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

func appendLVInt(dst []byte, v int64) []byte {
	n := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = strconv.AppendInt(dst, v, 10)
	binary.BigEndian.PutUint32(dst[n:], uint32(len(dst)-n-4))
	return dst
}

// AttestKey is a named HMAC-SHA256 secret.
type AttestKey struct {
	// ID names the key in tags: 1 to 64 of A-Z a-z 0-9 _ -.
	ID string
	// Secret is at least MinKeyBytes bytes.
	Secret []byte
}

func (k AttestKey) check() error {
	if len(k.ID) == 0 || len(k.ID) > 64 {
		return fmt.Errorf("%w: key id %q must be 1 to 64 characters", ErrKey, k.ID)
	}
	for i := 0; i < len(k.ID); i++ {
		c := k.ID[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%w: key id %q may only hold A-Z a-z 0-9 _ -", ErrKey, k.ID)
		}
	}
	if len(k.Secret) < MinKeyBytes {
		return fmt.Errorf("%w: key %q has %d bytes, at least %d needed", ErrKey, k.ID, len(k.Secret), MinKeyBytes)
	}
	return nil
}

// LoadAttestKey reads a key's secret from a file: its content with
// surrounding white space removed (e.g. `head -c 32 /dev/urandom | base64`),
// at least MinKeyBytes bytes.
func LoadAttestKey(id, path string) (AttestKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return AttestKey{}, fmt.Errorf("%w: %w", ErrKey, err)
	}
	k := AttestKey{ID: id, Secret: bytes.TrimSpace(b)}
	return k, k.check()
}

// Attester makes attestation tags with one key. It is not safe for
// concurrent use: give each goroutine its own (Clone).
type Attester struct {
	key    AttestKey
	mac    hash.Hash
	buf    []byte
	sum    []byte
	prefix []byte // "v1.<id>."
}

// NewAttester returns an Attester signing with k.
func NewAttester(k AttestKey) (*Attester, error) {
	if err := k.check(); err != nil {
		return nil, err
	}
	return &Attester{
		key:    k,
		mac:    hmac.New(sha256.New, k.Secret),
		buf:    make([]byte, 0, 256),
		sum:    make([]byte, 0, sha256.Size),
		prefix: []byte("v1." + k.ID + "."),
	}, nil
}

// Clone returns an Attester with the same key for another goroutine.
func (a *Attester) Clone() *Attester {
	c, _ := NewAttester(a.key)
	return c
}

// KeyID returns the id of the signing key.
func (a *Attester) KeyID() string { return a.key.ID }

// tagLen is the length of the encoded MAC.
var tagLen = base64.RawURLEncoding.EncodedLen(sha256.Size)

// AppendTag appends the tag for in ("v1.<key id>.<base64url MAC>") to dst.
// It does not allocate when dst has room.
func (a *Attester) AppendTag(dst []byte, in *AttestationInput) []byte {
	a.buf = in.AppendInput(a.buf[:0])
	a.mac.Reset()
	a.mac.Write(a.buf)
	a.sum = a.mac.Sum(a.sum[:0])
	dst = append(dst, a.prefix...)
	return base64.RawURLEncoding.AppendEncode(dst, a.sum)
}

// AttestVerifier checks tags against a set of keys by id. It is not safe
// for concurrent use: give each goroutine its own (Clone).
type AttestVerifier struct {
	keys []AttestKey
	macs map[string]hash.Hash
	buf  []byte
	sum  []byte
	got  []byte
}

// NewAttestVerifier returns a verifier accepting tags made with any of
// keys. Key ids must be distinct.
func NewAttestVerifier(keys ...AttestKey) (*AttestVerifier, error) {
	v := &AttestVerifier{
		keys: keys,
		macs: make(map[string]hash.Hash, len(keys)),
		buf:  make([]byte, 0, 256),
		sum:  make([]byte, 0, sha256.Size),
		got:  make([]byte, sha256.Size),
	}
	for _, k := range keys {
		if err := k.check(); err != nil {
			return nil, err
		}
		if _, dup := v.macs[k.ID]; dup {
			return nil, fmt.Errorf("%w: key id %q given twice", ErrKey, k.ID)
		}
		v.macs[k.ID] = hmac.New(sha256.New, k.Secret)
	}
	return v, nil
}

// Clone returns a verifier with the same keys for another goroutine.
func (v *AttestVerifier) Clone() *AttestVerifier {
	c, _ := NewAttestVerifier(v.keys...)
	return c
}

// Verify checks tag (the header value; nil when the header is absent)
// against in. The error wraps ErrNoAttestation, ErrUnknownAttestationKey or
// ErrBadAttestation; it never holds the tag's MAC.
func (v *AttestVerifier) Verify(tag []byte, in *AttestationInput) error {
	mac, err := v.parse(tag)
	if err != nil {
		return err
	}
	v.buf = in.AppendInput(v.buf[:0])
	return v.check(mac)
}

// VerifyRecord checks the attestation of a record read from topic on
// cluster, a topic of role: exactly what Verify checks with the tag of the
// record's last HeaderAttestation header and AttestationInputOf(cluster,
// topic, role, key, value, hs), without allocating. It returns the SHA-256
// of the record's value and key (zero for a nil key) whatever the outcome,
// so that the record's leaf need not hash it again.
func (v *AttestVerifier) VerifyRecord(cluster, topic string, role Role, key, value []byte, hs []Header) (valueSum, keySum Digest, err error) {
	valueSum = Sum(value)
	if key != nil {
		keySum = Sum(key)
	}
	mac, err := v.parse(header(hs, HeaderAttestation))
	if err != nil {
		return valueSum, keySum, err
	}
	v.buf = appendRecordInput(v.buf[:0], cluster, topic, role, &valueSum, &keySum, key == nil, hs)
	return valueSum, keySum, v.check(mac)
}

// parse returns the MAC of the key tag names, after checking its shape and
// decoding its MAC into v.got.
func (v *AttestVerifier) parse(tag []byte) (hash.Hash, error) {
	if len(tag) == 0 {
		return nil, ErrNoAttestation
	}
	rest, ok := bytes.CutPrefix(tag, []byte("v1."))
	if !ok {
		return nil, fmt.Errorf("%w: not a version 1 tag", ErrBadAttestation)
	}
	dot := bytes.LastIndexByte(rest, '.')
	if dot < 0 || len(rest)-dot-1 != tagLen {
		return nil, fmt.Errorf("%w: malformed tag", ErrBadAttestation)
	}
	mac, ok := v.macs[string(rest[:dot])] // no allocation: map lookup by converted bytes
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownAttestationKey, printable(rest[:dot]))
	}
	n, err := base64.RawURLEncoding.Decode(v.got, rest[dot+1:])
	if err != nil || n != sha256.Size {
		return nil, fmt.Errorf("%w: malformed tag", ErrBadAttestation)
	}
	return mac, nil
}

// check compares the MAC of v.buf with v.got.
func (v *AttestVerifier) check(mac hash.Hash) error {
	mac.Reset()
	mac.Write(v.buf)
	v.sum = mac.Sum(v.sum[:0])
	if !hmac.Equal(v.sum, v.got) {
		return fmt.Errorf("%w: does not match the record", ErrBadAttestation)
	}
	return nil
}

// printable cuts b to 64 bytes and replaces anything but printable ASCII,
// for error messages about untrusted input.
func printable(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		out[i] = c
	}
	return string(out)
}

// Pseudonymizer makes the keyed hashes of user ids and event ids that
// leaves may carry (HMAC-SHA256 with a key from the config, with a domain
// string per use). With the key one can find the leaves of a known user or
// event; without it, leaves cannot be linked to either. It is safe for
// concurrent use and does not allocate.
type Pseudonymizer struct {
	states sync.Pool // of *keyedState: an HMAC-SHA256 with the secret and a buffer
}

// keyedState is one goroutine's HMAC and the buffer its input is built in
// (so that the input is written in one call, without converting it).
type keyedState struct {
	mac hash.Hash
	buf []byte
	sum []byte
}

// NewPseudonymizer returns a Pseudonymizer with a secret of at least
// MinKeyBytes bytes.
func NewPseudonymizer(secret []byte) (*Pseudonymizer, error) {
	if len(secret) < MinKeyBytes {
		return nil, fmt.Errorf("%w: pseudonymisation key has %d bytes, at least %d needed", ErrKey, len(secret), MinKeyBytes)
	}
	key := bytes.Clone(secret)
	p := &Pseudonymizer{}
	p.states.New = func() any {
		return &keyedState{mac: hmac.New(sha256.New, key), buf: make([]byte, 0, 128), sum: make([]byte, 0, sha256.Size)}
	}
	return p, nil
}

// Domains of the Pseudonymizer's hashes, with the 0x00 that ends them.
const (
	subjectDomain = "residency-subject-v1\x00"
	eventDomain   = "residency-event-v1\x00"
)

// Subject returns the keyed hash of a user id: HMAC-SHA256(key,
// "residency-subject-v1" || 0x00 || id).
func (p *Pseudonymizer) Subject(userID []byte) Digest { return keyedSum(p, subjectDomain, userID) }

// SubjectString is Subject of a user id held in a string.
func (p *Pseudonymizer) SubjectString(userID string) Digest {
	return keyedSum(p, subjectDomain, userID)
}

// Event returns the keyed hash of an event id: HMAC-SHA256(key,
// "residency-event-v1" || 0x00 || id).
func (p *Pseudonymizer) Event(eventID []byte) Digest { return keyedSum(p, eventDomain, eventID) }

// EventString is Event of an event id held in a string.
func (p *Pseudonymizer) EventString(eventID string) Digest { return keyedSum(p, eventDomain, eventID) }

func keyedSum[T ~string | ~[]byte](p *Pseudonymizer, domain string, id T) Digest {
	st := p.states.Get().(*keyedState)
	st.buf = append(append(st.buf[:0], domain...), id...)
	st.mac.Reset()
	st.mac.Write(st.buf)
	st.sum = st.mac.Sum(st.sum[:0]) // into the state's buffer: a Digest passed in would escape
	d := Digest(st.sum)
	if cap(st.buf) > 4096 {
		st.buf = make([]byte, 0, 128) // an outsized id: do not keep its buffer
	}
	p.states.Put(st)
	return d
}
