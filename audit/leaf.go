package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"
)

// LeafVersion is the version of the leaf encoding this package writes (the
// "v" field). See docs/audit.md.
const LeafVersion = 1

// MaxLeafSize is the largest encoded leaf: the C2SP entry bundle prefixes
// every entry with a big-endian uint16 length.
const MaxLeafSize = 65535

// ErrInvalidLeaf is wrapped by every error about a leaf that cannot be
// encoded or is not the canonical encoding of a leaf.
var ErrInvalidLeaf = errors.New("audit: invalid leaf")

// Kind says who appended a leaf and for what.
type Kind string

// Leaf kinds.
const (
	// KindRoute is a router's decision on an ingest record.
	KindRoute Kind = "route"
	// KindReplay is a record written by replay.
	KindReplay Kind = "replay"
	// KindSinkWrite is a record a sink wrote to its store.
	KindSinkWrite Kind = "sink_write"
	// KindSinkRefusal is a record a sink refused (sent to its quarantine topic).
	KindSinkRefusal Kind = "sink_refusal"
	// KindPurge is a range of a topic partition deleted by purge.
	KindPurge Kind = "purge"
	// KindErasure is one store's removal of a user's rows.
	KindErasure Kind = "erasure"
	// KindRuleset is a ruleset version: digest, content and policy.
	KindRuleset Kind = "ruleset"
)

func (k Kind) valid() bool {
	switch k {
	case KindRoute, KindReplay, KindSinkWrite, KindSinkRefusal, KindPurge, KindErasure, KindRuleset:
		return true
	}
	return false
}

// Decision is the outcome a leaf records.
type Decision string

// Decisions.
const (
	// Routed: written to the pinned topic of the jurisdiction's region.
	Routed Decision = "routed"
	// Quarantined: written to the quarantine topic (cannot be placed).
	Quarantined Decision = "quarantined"
	// DeadLettered: written to the dead-letter topic (cannot be decoded).
	DeadLettered Decision = "dead_lettered"
	// Held: written to a hold topic while its region is unavailable.
	Held Decision = "held"
	// Released: written from a hold topic to its destination.
	Released Decision = "released"
	// Written: stored by a sink.
	Written Decision = "written"
	// Refused: refused by a sink.
	Refused Decision = "refused"
	// Purged: deleted from a topic by purge.
	Purged Decision = "purged"
	// Erased: removed from a store by erase.
	Erased Decision = "erased"
)

// Digest is a SHA-256 digest (or HMAC-SHA256 tag). Its zero value means
// "absent" in a Leaf.
type Digest [32]byte

// Sum returns the SHA-256 of b.
func Sum(b []byte) Digest { return sha256.Sum256(b) }

// String returns d in lower-case hex.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// IsZero reports whether d is the zero value (absent).
func (d *Digest) IsZero() bool {
	return binary.LittleEndian.Uint64(d[0:])|binary.LittleEndian.Uint64(d[8:])|
		binary.LittleEndian.Uint64(d[16:])|binary.LittleEndian.Uint64(d[24:]) == 0
}

// ParseDigest parses 64 lower-case hex digits.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 64 {
		return d, fmt.Errorf("%w: digest %q is not 64 hex digits", ErrInvalidLeaf, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return d, fmt.Errorf("%w: digest %q is not lower-case hex", ErrInvalidLeaf, s)
		}
	}
	_, err := hex.Decode(d[:], []byte(s))
	return d, err
}

// Source is the record (or, for a purge, the range) an actor read.
type Source struct {
	// Cluster is the Kafka cluster's name ("" when it is the ingest cluster
	// and the actor does not say).
	Cluster string
	// Topic is the topic; "" means the leaf has no source.
	Topic string
	// Partition is the partition.
	Partition int32
	// Offset is the record's offset (for a purge: the first offset deleted).
	Offset int64
	// EndOffset is, for a purge, the offset after the last one deleted; 0
	// otherwise.
	EndOffset int64
}

// Destination is where an actor wrote a record: a topic partition and the
// offset the produce response gave, or a store.
type Destination struct {
	// Cluster is the Kafka cluster's name.
	Cluster string
	// Topic is the topic written to ("" for a store).
	Topic string
	// Partition and Offset are the record's coordinates in Topic (present
	// when Topic is set; -1 when unknown).
	Partition int32
	// Offset: see Partition.
	Offset int64
	// Store is the store written to (sink_write, erasure).
	Store string
}

func (d *Destination) present() bool { return d.Topic != "" || d.Store != "" || d.Cluster != "" }

// RulesetRef names a ruleset version by number and content digest (version
// numbers alone can repeat after a store lost its data).
type RulesetRef struct {
	// Version is the version number.
	Version int64
	// Digest is the SHA-256 of the ruleset content; zero means no ruleset.
	Digest Digest
}

// Leaf is one entry of the audit log. Which fields a kind uses is in
// docs/audit.md; a field at its zero value is absent from the encoding.
type Leaf struct {
	// Kind says who appended it and for what.
	Kind Kind
	// Time is when the actor acted, in milliseconds since the Unix epoch.
	Time int64
	// Actor names the router instance, sink or tool.
	Actor string
	// Src is the record read (absent when Src.Topic is "").
	Src Source
	// Value is the SHA-256 of the record value; zero when the leaf is not
	// about one record. Key is present exactly when Value is.
	Value Digest
	// Key is the SHA-256 of the record key, unless KeyNull.
	Key Digest
	// KeyNull is true for a record with a null key (an empty key is not
	// null: its digest is the SHA-256 of nothing).
	KeyNull bool
	// Event is the keyed hash of the event id (see Pseudonymizer).
	Event Digest
	// Subject is the keyed hash of the user id (see Pseudonymizer).
	Subject Digest
	// Decision is the outcome.
	Decision Decision
	// Reason is the quarantine, dead-letter or refusal reason.
	Reason string
	// DecidedBy is "country" or "pin".
	DecidedBy string
	// Jurisdiction is the event's jurisdiction.
	Jurisdiction string
	// Region is the jurisdiction's region.
	Region string
	// Ruleset is the ruleset the decision was made under.
	Ruleset RulesetRef
	// Dest is where the record was written.
	Dest Destination
	// Count is, for a purge or an erasure, how many records or rows went.
	Count int64
	// Policy is, for a ruleset leaf, what the verifier needs of the ruleset.
	Policy *Policy
	// Content is, for a ruleset leaf, the ruleset document as applied.
	Content string
}

// SetRecord sets Value, Key and KeyNull from a record's key and value; a
// nil key is a null key.
func (l *Leaf) SetRecord(key, value []byte) {
	l.Value = sha256.Sum256(value)
	l.KeyNull = key == nil
	if key != nil {
		l.Key = sha256.Sum256(key)
	} else {
		l.Key = Digest{}
	}
}

// LeafHash is the RFC 6962 hash of an encoded leaf: SHA-256(0x00 || leaf).
func LeafHash(encoded []byte) Digest { return Digest(tlog.RecordHash(encoded)) }

// Encode returns the canonical encoding of l.
func (l *Leaf) Encode() ([]byte, error) { return AppendLeaf(nil, l) }

// AppendLeaf appends the canonical encoding of l to dst. It does not
// allocate when dst has room (a ruleset leaf's policy aside). It fails,
// wrapping ErrInvalidLeaf, on an unknown kind, a string that is not UTF-8
// or an encoding over MaxLeafSize.
func AppendLeaf(dst []byte, l *Leaf) ([]byte, error) {
	if !l.Kind.valid() {
		return dst, fmt.Errorf("%w: unknown kind %q", ErrInvalidLeaf, l.Kind)
	}
	start := len(dst)
	dst = append(dst, `{"v":1,"kind":"`...)
	dst = append(dst, l.Kind...)
	dst = append(dst, `","time":`...)
	dst = strconv.AppendInt(dst, l.Time, 10)
	var ok = true
	dst, ok = appendStringField(dst, ok, "actor", l.Actor)
	if l.Src.Topic != "" {
		dst = append(dst, `,"src":{`...)
		mark := len(dst)
		dst, ok = appendStringField(dst, ok, "cluster", l.Src.Cluster)
		dst, ok = appendStringField(dst, ok, "topic", l.Src.Topic)
		dst = dropLeadingComma(dst, mark)
		dst = append(dst, `,"partition":`...)
		dst = strconv.AppendInt(dst, int64(l.Src.Partition), 10)
		dst = append(dst, `,"offset":`...)
		dst = strconv.AppendInt(dst, l.Src.Offset, 10)
		if l.Src.EndOffset != 0 {
			dst = append(dst, `,"end_offset":`...)
			dst = strconv.AppendInt(dst, l.Src.EndOffset, 10)
		}
		dst = append(dst, '}')
	}
	if !l.Value.IsZero() {
		if l.KeyNull {
			dst = append(dst, `,"key_sha256":null`...)
		} else {
			dst = appendDigestField(dst, "key_sha256", &l.Key)
		}
		dst = appendDigestField(dst, "value_sha256", &l.Value)
	}
	if !l.Event.IsZero() {
		dst = appendDigestField(dst, "event", &l.Event)
	}
	if !l.Subject.IsZero() {
		dst = appendDigestField(dst, "subject", &l.Subject)
	}
	dst, ok = appendStringField(dst, ok, "decision", string(l.Decision))
	dst, ok = appendStringField(dst, ok, "reason", l.Reason)
	dst, ok = appendStringField(dst, ok, "decided_by", l.DecidedBy)
	dst, ok = appendStringField(dst, ok, "jurisdiction", l.Jurisdiction)
	dst, ok = appendStringField(dst, ok, "region", l.Region)
	if !l.Ruleset.Digest.IsZero() {
		dst = append(dst, `,"ruleset":{"version":`...)
		dst = strconv.AppendInt(dst, l.Ruleset.Version, 10)
		dst = appendDigestField(dst, "digest", &l.Ruleset.Digest)
		dst = append(dst, '}')
	}
	if l.Dest.present() {
		dst = append(dst, `,"dest":{`...)
		mark := len(dst)
		dst, ok = appendStringField(dst, ok, "cluster", l.Dest.Cluster)
		dst, ok = appendStringField(dst, ok, "topic", l.Dest.Topic)
		if l.Dest.Topic != "" {
			dst = append(dst, `,"partition":`...)
			dst = strconv.AppendInt(dst, int64(l.Dest.Partition), 10)
			dst = append(dst, `,"offset":`...)
			dst = strconv.AppendInt(dst, l.Dest.Offset, 10)
		}
		dst, ok = appendStringField(dst, ok, "store", l.Dest.Store)
		dst = dropLeadingComma(dst, mark)
		dst = append(dst, '}')
	}
	if l.Count != 0 {
		dst = append(dst, `,"count":`...)
		dst = strconv.AppendInt(dst, l.Count, 10)
	}
	if l.Policy != nil {
		dst = append(dst, `,"policy":`...)
		var err error
		if dst, err = l.Policy.appendJSON(dst); err != nil {
			return dst[:start], err
		}
	}
	dst, ok = appendStringField(dst, ok, "content", l.Content)
	dst = append(dst, '}')
	if !ok {
		return dst[:start], fmt.Errorf("%w: a string field is not valid UTF-8", ErrInvalidLeaf)
	}
	if len(dst)-start > MaxLeafSize {
		return dst[:start], fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidLeaf, len(dst)-start, MaxLeafSize)
	}
	return dst, nil
}

// dropLeadingComma removes the comma written at mark by the first field of
// an object.
func dropLeadingComma(dst []byte, mark int) []byte {
	if len(dst) > mark && dst[mark] == ',' {
		copy(dst[mark:], dst[mark+1:])
		dst = dst[:len(dst)-1]
	}
	return dst
}

func appendDigestField(dst []byte, name string, d *Digest) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, `":"`...)
	dst = appendHex(dst, d)
	return append(dst, '"')
}

// appendStringField appends ,"name":"value" unless value is empty; ok
// becomes false if value is not UTF-8.
func appendStringField(dst []byte, ok bool, name, value string) ([]byte, bool) {
	if value == "" {
		return dst, ok
	}
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, `":`...)
	var good bool
	dst, good = appendString(dst, value)
	return dst, ok && good
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a canonical JSON string, escaped as RFC 8785
// (JCS) does: ", \, \b, \t, \n, \f, \r by their short escapes, other
// control characters as \u00xx (lower-case hex), nothing else.
func appendString(dst []byte, s string) ([]byte, bool) {
	dst = append(dst, '"')
	start := 0
	ascii := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			if c >= 0x80 {
				ascii = false
			}
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), ascii || utf8.ValidString(s)
}

// hexPairs holds the two hex digits of every byte value.
var hexPairs = func() (t [512]byte) {
	for i := 0; i < 256; i++ {
		t[2*i], t[2*i+1] = hexDigits[i>>4], hexDigits[i&0xf]
	}
	return t
}()

// appendHex appends d in lower-case hex.
func appendHex(dst []byte, d *Digest) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, 64)...) // no allocation: constant size, appended in place
	out := dst[n : n+64]
	for i, c := range d {
		out[2*i], out[2*i+1] = hexPairs[2*int(c)], hexPairs[2*int(c)+1]
	}
	return dst
}

// wire is the JSON shape of a leaf, for parsing.
type wire struct {
	V            *int            `json:"v"`
	Kind         Kind            `json:"kind"`
	Time         *int64          `json:"time"`
	Actor        string          `json:"actor"`
	Src          *wireSource     `json:"src"`
	KeySHA256    json.RawMessage `json:"key_sha256"`
	ValueSHA256  string          `json:"value_sha256"`
	Event        string          `json:"event"`
	Subject      string          `json:"subject"`
	Decision     Decision        `json:"decision"`
	Reason       string          `json:"reason"`
	DecidedBy    string          `json:"decided_by"`
	Jurisdiction string          `json:"jurisdiction"`
	Region       string          `json:"region"`
	Ruleset      *wireRuleset    `json:"ruleset"`
	Dest         *wireDest       `json:"dest"`
	Count        int64           `json:"count"`
	Policy       *Policy         `json:"policy"`
	Content      string          `json:"content"`
}

type wireSource struct {
	Cluster   string `json:"cluster"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	EndOffset int64  `json:"end_offset"`
}

type wireRuleset struct {
	Version int64  `json:"version"`
	Digest  string `json:"digest"`
}

type wireDest struct {
	Cluster   string `json:"cluster"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Store     string `json:"store"`
}

// ParseLeaf decodes an encoded leaf and checks that it is canonical: the
// leaf encoded again must be exactly b. Any other input is an error wrapping
// ErrInvalidLeaf.
func ParseLeaf(b []byte) (Leaf, error) {
	var w wire
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Leaf{}, fmt.Errorf("%w: %w", ErrInvalidLeaf, err)
	}
	if dec.More() {
		return Leaf{}, fmt.Errorf("%w: data after the object", ErrInvalidLeaf)
	}
	if w.V == nil || *w.V != LeafVersion {
		return Leaf{}, fmt.Errorf("%w: version is not %d", ErrInvalidLeaf, LeafVersion)
	}
	if w.Time == nil {
		return Leaf{}, fmt.Errorf("%w: no time", ErrInvalidLeaf)
	}
	l := Leaf{
		Kind: w.Kind, Time: *w.Time, Actor: w.Actor,
		Decision: w.Decision, Reason: w.Reason, DecidedBy: w.DecidedBy,
		Jurisdiction: w.Jurisdiction, Region: w.Region,
		Count: w.Count, Policy: w.Policy, Content: w.Content,
	}
	if w.Src != nil {
		l.Src = Source(*w.Src)
	}
	var err error
	if w.ValueSHA256 != "" {
		if l.Value, err = ParseDigest(w.ValueSHA256); err != nil {
			return Leaf{}, err
		}
		switch {
		case string(w.KeySHA256) == "null":
			l.KeyNull = true
		case len(w.KeySHA256) > 2 && w.KeySHA256[0] == '"':
			if l.Key, err = ParseDigest(string(w.KeySHA256[1 : len(w.KeySHA256)-1])); err != nil {
				return Leaf{}, err
			}
		default:
			return Leaf{}, fmt.Errorf("%w: key_sha256 must be a digest or null", ErrInvalidLeaf)
		}
	}
	for _, f := range []struct {
		s string
		d *Digest
	}{{w.Event, &l.Event}, {w.Subject, &l.Subject}} {
		if f.s != "" {
			if *f.d, err = ParseDigest(f.s); err != nil {
				return Leaf{}, err
			}
		}
	}
	if w.Ruleset != nil {
		l.Ruleset.Version = w.Ruleset.Version
		if l.Ruleset.Digest, err = ParseDigest(w.Ruleset.Digest); err != nil {
			return Leaf{}, err
		}
	}
	if w.Dest != nil {
		l.Dest = Destination(*w.Dest)
	}
	again, err := AppendLeaf(nil, &l)
	if err != nil {
		return Leaf{}, err
	}
	if !bytes.Equal(again, b) {
		return Leaf{}, fmt.Errorf("%w: not the canonical encoding", ErrInvalidLeaf)
	}
	return l, nil
}
