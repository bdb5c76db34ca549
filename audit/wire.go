package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
)

// WireFormat is the first byte of every audit-topic record value this
// package writes.
//
// Actors do not put canonical JSON on the audit topic: they send each leaf
// in a compact binary form (raw digests, varints), a third of the JSON's
// size and several times cheaper to build on the router's hot path; the
// integrator turns each into its canonical JSON (Leaf.Encode) before it
// enters the log. The wire form never leaves this module; the JSON is the
// log's format. Layout of a record value (docs/audit.md):
//
//	0x01, then per leaf: uvarint length, leaf
//	leaf: uvarint flags, string kind, varint time, then the fields whose
//	      flag is set, in flag order (strings: uvarint length + UTF-8)
const WireFormat byte = 0x01

// ErrInvalidWire is wrapped by every error about an audit-topic record that
// cannot be decoded.
var ErrInvalidWire = errors.New("audit: invalid audit record")

// Flags of the wire form, in field order.
const (
	wActor = 1 << iota
	wSrc
	wValue
	wKeyNull
	wEvent
	wSubject
	wDecision
	wReason
	wDecidedBy
	wJurisdiction
	wRegion
	wRuleset
	wDest
	wCount
	wPolicy
	wContent
	wAll = wContent<<1 - 1
)

// wireLeafRoom is the room NewWireRecord makes per leaf: a route leaf with
// its subject hash and a deployment's names (router instance, topics of
// 20 to 30 characters) takes 200 to 300 bytes on the wire
// (TestNewWireRecordRoom); a record that outgrows its buffer is copied
// as it grows, which cost more than the larger buffer.
const wireLeafRoom = 320

// maxWireRoom bounds the room NewWireRecord makes: an audit record is at
// most about 1 MiB (the brokers' default message.max.bytes), and a writer
// splits a larger batch of leaves into several records.
const maxWireRoom = 1 << 20

// NewWireRecord returns a buffer holding the start of an audit-topic
// record, with room for n leaves of typical size (at most 1 MiB).
func NewWireRecord(n int) []byte {
	b := make([]byte, 1, 1+min(n, maxWireRoom/wireLeafRoom)*wireLeafRoom)
	b[0] = WireFormat
	return b
}

// AppendWireLeaf appends l, in its wire form with its length, to a record
// started by NewWireRecord. It does not allocate while rec has room for a
// typical leaf (320 bytes) to spare, a ruleset leaf's policy aside; when it
// has less, it doubles rec's capacity first.
func AppendWireLeaf(rec []byte, l *Leaf) ([]byte, error) {
	var flags uint64
	set := func(cond bool, f uint64) {
		if cond {
			flags |= f
		}
	}
	set(l.Actor != "", wActor)
	set(l.Src.Topic != "", wSrc)
	set(!l.Value.IsZero(), wValue)
	set(!l.Value.IsZero() && l.KeyNull, wKeyNull)
	set(!l.Event.IsZero(), wEvent)
	set(!l.Subject.IsZero(), wSubject)
	set(l.Decision != "", wDecision)
	set(l.Reason != "", wReason)
	set(l.DecidedBy != "", wDecidedBy)
	set(l.Jurisdiction != "", wJurisdiction)
	set(l.Region != "", wRegion)
	set(!l.Ruleset.Digest.IsZero(), wRuleset)
	set(l.Dest.present(), wDest)
	set(l.Count != 0, wCount)
	set(l.Policy != nil, wPolicy)
	set(l.Content != "", wContent)

	if cap(rec)-len(rec) < wireLeafRoom {
		// Double the record, as append does only for small slices (past a
		// few hundred bytes it grows by a quarter, which copies a large
		// record four times over while it fills).
		rec = slices.Grow(rec, max(len(rec), 8*wireLeafRoom))
	}
	start := len(rec)
	rec = append(rec, 0, 0) // room for the length (a route leaf's 128 to 16383 bytes); the body moves if it needs another size
	body := len(rec)
	rec = binary.AppendUvarint(rec, flags)
	rec = appendWireString(rec, string(l.Kind))
	rec = binary.AppendVarint(rec, l.Time)
	if flags&wActor != 0 {
		rec = appendWireString(rec, l.Actor)
	}
	if flags&wSrc != 0 {
		rec = appendWireString(rec, l.Src.Cluster)
		rec = appendWireString(rec, l.Src.Topic)
		rec = binary.AppendVarint(rec, int64(l.Src.Partition))
		rec = binary.AppendVarint(rec, l.Src.Offset)
		rec = binary.AppendVarint(rec, l.Src.EndOffset)
	}
	if flags&wValue != 0 {
		rec = append(rec, l.Value[:]...)
		if flags&wKeyNull == 0 {
			rec = append(rec, l.Key[:]...)
		}
	}
	if flags&wEvent != 0 {
		rec = append(rec, l.Event[:]...)
	}
	if flags&wSubject != 0 {
		rec = append(rec, l.Subject[:]...)
	}
	for _, f := range [...]struct {
		flag uint64
		s    string
	}{{wDecision, string(l.Decision)}, {wReason, l.Reason}, {wDecidedBy, l.DecidedBy}, {wJurisdiction, l.Jurisdiction}, {wRegion, l.Region}} {
		if flags&f.flag != 0 {
			rec = appendWireString(rec, f.s)
		}
	}
	if flags&wRuleset != 0 {
		rec = binary.AppendVarint(rec, l.Ruleset.Version)
		rec = append(rec, l.Ruleset.Digest[:]...)
	}
	if flags&wDest != 0 {
		rec = appendWireString(rec, l.Dest.Cluster)
		rec = appendWireString(rec, l.Dest.Topic)
		rec = binary.AppendVarint(rec, int64(l.Dest.Partition))
		rec = binary.AppendVarint(rec, l.Dest.Offset)
		rec = appendWireString(rec, l.Dest.Store)
	}
	if flags&wCount != 0 {
		rec = binary.AppendVarint(rec, l.Count)
	}
	if flags&wPolicy != 0 {
		n := len(rec)
		rec = append(rec, 0, 0)
		var err error
		if rec, err = l.Policy.appendJSON(rec); err != nil {
			return rec[:start], err
		}
		rec = putLength(rec, n, len(rec)-n-2)
	}
	if flags&wContent != 0 {
		rec = appendWireString(rec, l.Content)
	}
	size := len(rec) - body
	if size > 1<<21-1 {
		return rec[:start], fmt.Errorf("%w: leaf of %d bytes", ErrInvalidLeaf, size)
	}
	return putLength(rec, start, size), nil
}

// putLength writes n as a uvarint into the 2 bytes reserved at rec[at:],
// moving the n bytes that follow when it takes another number of bytes.
func putLength(rec []byte, at, n int) []byte {
	const reserved = 2
	if n >= 1<<7 && n < 1<<14 { // the usual case: two bytes, nothing moves
		rec[at], rec[at+1] = byte(n)|0x80, byte(n>>7)
		return rec
	}
	var tmp [binary.MaxVarintLen64]byte
	k := binary.PutUvarint(tmp[:], uint64(n))
	switch {
	case k < reserved:
		copy(rec[at+k:], rec[at+reserved:])
		rec = rec[:len(rec)-(reserved-k)]
	case k > reserved:
		rec = append(rec, tmp[:k-reserved]...) // grow; overwritten by the move
		copy(rec[at+k:], rec[at+reserved:len(rec)-(k-reserved)])
	}
	copy(rec[at:], tmp[:k])
	return rec
}

func appendWireString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// wireReader decodes one wire leaf.
type wireReader struct {
	b     []byte
	err   error
	names map[string]string // short strings already decoded from this record (name)
}

func (r *wireReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrInvalidWire, what)
	}
}

func (r *wireReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) bytes(n uint64) []byte {
	if uint64(len(r.b)) < n {
		r.fail("truncated")
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *wireReader) str() string {
	s := r.bytes(r.uvarint())
	if !utf8.Valid(s) {
		r.fail("string is not UTF-8")
	}
	return string(s)
}

// name is str for the short strings the leaves of a record repeat (kind,
// actor, topics, decision, names): one string per distinct value.
func (r *wireReader) name() string {
	s := r.bytes(r.uvarint())
	if v, ok := r.names[string(s)]; ok { // no allocation: map lookup by converted bytes
		return v
	}
	if !utf8.Valid(s) {
		r.fail("string is not UTF-8")
		return ""
	}
	v := string(s)
	if len(s) <= 128 && len(r.names) < 256 {
		r.names[v] = v
	}
	return v
}

func (r *wireReader) digest(d *Digest) { copy(d[:], r.bytes(32)) }

func (r *wireReader) int32() int32 {
	v := r.varint()
	if int64(int32(v)) != v {
		r.fail("partition out of range")
	}
	return int32(v)
}

// DecodeWireRecord decodes an audit-topic record value into its leaves.
func DecodeWireRecord(b []byte) ([]Leaf, error) {
	if len(b) == 0 || b[0] != WireFormat {
		return nil, fmt.Errorf("%w: unknown format", ErrInvalidWire)
	}
	r := wireReader{b: b[1:]}
	names := make(map[string]string, 16) // shared by the record's leaves
	leaves := make([]Leaf, 0, len(b)/200+1)
	for len(r.b) > 0 && r.err == nil {
		body := r.bytes(r.uvarint())
		if r.err != nil {
			break
		}
		l, err := decodeWireLeaf(body, names)
		if err != nil {
			return nil, fmt.Errorf("leaf %d: %w", len(leaves), err)
		}
		leaves = append(leaves, l)
	}
	if r.err != nil {
		return nil, r.err
	}
	return leaves, nil
}

func decodeWireLeaf(b []byte, names map[string]string) (Leaf, error) {
	r := wireReader{b: b, names: names}
	var l Leaf
	flags := r.uvarint()
	if flags&^wAll != 0 {
		r.fail("unknown flags")
	}
	l.Kind = Kind(r.name())
	l.Time = r.varint()
	if flags&wActor != 0 {
		l.Actor = r.name()
	}
	if flags&wSrc != 0 {
		l.Src.Cluster, l.Src.Topic = r.name(), r.name()
		l.Src.Partition, l.Src.Offset, l.Src.EndOffset = r.int32(), r.varint(), r.varint()
	}
	if flags&wValue != 0 {
		r.digest(&l.Value)
		if flags&wKeyNull != 0 {
			l.KeyNull = true
		} else {
			r.digest(&l.Key)
		}
	}
	if flags&wEvent != 0 {
		r.digest(&l.Event)
	}
	if flags&wSubject != 0 {
		r.digest(&l.Subject)
	}
	if flags&wDecision != 0 {
		l.Decision = Decision(r.name())
	}
	if flags&wReason != 0 {
		l.Reason = r.name()
	}
	if flags&wDecidedBy != 0 {
		l.DecidedBy = r.name()
	}
	if flags&wJurisdiction != 0 {
		l.Jurisdiction = r.name()
	}
	if flags&wRegion != 0 {
		l.Region = r.name()
	}
	if flags&wRuleset != 0 {
		l.Ruleset.Version = r.varint()
		r.digest(&l.Ruleset.Digest)
	}
	if flags&wDest != 0 {
		l.Dest.Cluster, l.Dest.Topic = r.name(), r.name()
		l.Dest.Partition, l.Dest.Offset = r.int32(), r.varint()
		l.Dest.Store = r.name()
	}
	if flags&wCount != 0 {
		l.Count = r.varint()
	}
	if flags&wPolicy != 0 {
		raw := r.bytes(r.uvarint())
		if r.err == nil {
			p, err := parsePolicy(raw)
			if err != nil {
				return Leaf{}, err
			}
			l.Policy = p
		}
	}
	if flags&wContent != 0 {
		l.Content = r.str()
	}
	if r.err != nil {
		return Leaf{}, r.err
	}
	if len(r.b) != 0 {
		return Leaf{}, fmt.Errorf("%w: %d bytes after the leaf", ErrInvalidWire, len(r.b))
	}
	if !l.Kind.valid() {
		return Leaf{}, fmt.Errorf("%w: unknown kind %q", ErrInvalidWire, printable([]byte(l.Kind)))
	}
	return l, nil
}
