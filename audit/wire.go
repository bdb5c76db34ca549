package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// Audit-topic record formats: the first byte of every audit-topic record
// value.
//
// Actors do not put canonical JSON on the audit topic: they send each leaf
// in a compact binary form (raw digests, varints), several times smaller
// than the JSON and cheaper to build on the router's hot path; the
// integrator turns each into its canonical JSON (Leaf.Encode) before it
// enters the log. The wire form never leaves this module; the JSON is the
// log's format. Layouts (docs/audit.md, "Audit record format"):
//
//	format 2 (WireRecord): 0x02, then per leaf: uvarint ref, [uvarint
//	  length, context when ref is 0], uvarint length, own fields. A leaf's
//	  context is what the leaves of a batch share (flags, kind, actor,
//	  names, ruleset); ref 0 defines a new one, numbered from 1 in order,
//	  ref k refers to context k.
//	format 1 (read, no longer written): 0x01, then per leaf: uvarint
//	  length, leaf: uvarint flags, string kind, varint time, then the
//	  fields whose flag is set, in flag order.
const (
	WireFormat   byte = 0x02 // what WireRecord writes
	WireFormatV1 byte = 0x01 // decoded, no longer written
)

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

// MaxWireContexts bounds the contexts of one record (WireRecord.Fits): a
// router's leaves have a few dozen (decision, reason, region, destination
// and ruleset combinations); a decoder refuses more.
const MaxWireContexts = 4096

// MaxWireLeaves bounds the leaves of one record (WireRecord.Fits): a
// 900 KiB record of route leaves holds about 8,000; a decoder refuses
// more, so that a record of tiny leaves cannot make it decode hundreds of
// thousands (each leaf takes a few hundred bytes decoded).
const MaxWireLeaves = 1 << 16

// maxWireLeaf bounds the wire form of one leaf (context and own fields).
const maxWireLeaf = 1<<21 - 1

func wireFlags(l *Leaf) uint64 {
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
	return flags
}

// AppendWireEntry appends l to dst as a wire entry: its context (flags,
// kind, actor, source cluster and topic, decision, reason, decided by,
// jurisdiction, region, ruleset, destination cluster, topic and store)
// and its own fields (time, source partition and offsets, digests,
// destination partition and offset, count, policy, content), each with
// its uvarint length. WireRecord.Add puts entries into a record, writing
// each distinct context once. It does not allocate when dst has room
// (a route leaf's entry is 150 to 250 bytes), a ruleset leaf's policy
// aside.
func AppendWireEntry(dst []byte, l *Leaf) ([]byte, error) {
	flags := wireFlags(l)
	start := len(dst)
	dst = append(dst, 0, 0) // room for the context's length; moved when it needs another size
	body := len(dst)
	dst = binary.AppendUvarint(dst, flags)
	dst = appendWireString(dst, string(l.Kind))
	if flags&wActor != 0 {
		dst = appendWireString(dst, l.Actor)
	}
	if flags&wSrc != 0 {
		dst = appendWireString(dst, l.Src.Cluster)
		dst = appendWireString(dst, l.Src.Topic)
	}
	for _, f := range [...]struct {
		flag uint64
		s    string
	}{{wDecision, string(l.Decision)}, {wReason, l.Reason}, {wDecidedBy, l.DecidedBy}, {wJurisdiction, l.Jurisdiction}, {wRegion, l.Region}} {
		if flags&f.flag != 0 {
			dst = appendWireString(dst, f.s)
		}
	}
	if flags&wRuleset != 0 {
		dst = binary.AppendVarint(dst, l.Ruleset.Version)
		dst = append(dst, l.Ruleset.Digest[:]...)
	}
	if flags&wDest != 0 {
		dst = appendWireString(dst, l.Dest.Cluster)
		dst = appendWireString(dst, l.Dest.Topic)
		dst = appendWireString(dst, l.Dest.Store)
	}
	ctx := len(dst) - body
	if ctx > maxWireLeaf {
		return dst[:start], fmt.Errorf("%w: leaf context of %d bytes", ErrInvalidLeaf, ctx)
	}
	dst = putLength(dst, start, ctx)

	own := len(dst)
	dst = append(dst, 0, 0)
	body = len(dst)
	dst = binary.AppendVarint(dst, l.Time)
	if flags&wSrc != 0 {
		dst = binary.AppendVarint(dst, int64(l.Src.Partition))
		dst = binary.AppendVarint(dst, l.Src.Offset)
		dst = binary.AppendVarint(dst, l.Src.EndOffset)
	}
	if flags&wValue != 0 {
		dst = append(dst, l.Value[:]...)
		if flags&wKeyNull == 0 {
			dst = append(dst, l.Key[:]...)
		}
	}
	if flags&wEvent != 0 {
		dst = append(dst, l.Event[:]...)
	}
	if flags&wSubject != 0 {
		dst = append(dst, l.Subject[:]...)
	}
	if flags&wDest != 0 {
		dst = binary.AppendVarint(dst, int64(l.Dest.Partition))
		dst = binary.AppendVarint(dst, l.Dest.Offset)
	}
	if flags&wCount != 0 {
		dst = binary.AppendVarint(dst, l.Count)
	}
	if flags&wPolicy != 0 {
		n := len(dst)
		dst = append(dst, 0, 0)
		var err error
		if dst, err = l.Policy.appendJSON(dst); err != nil {
			return dst[:start], err
		}
		dst = putLength(dst, n, len(dst)-n-2)
	}
	if flags&wContent != 0 {
		if !utf8.ValidString(l.Content) {
			return dst[:start], fmt.Errorf("%w: content is not valid UTF-8", ErrInvalidLeaf)
		}
		dst = appendWireString(dst, l.Content)
	}
	if size := len(dst) - body; size > maxWireLeaf {
		return dst[:start], fmt.Errorf("%w: leaf of %d bytes", ErrInvalidLeaf, size)
	}
	return putLength(dst, own, len(dst)-body), nil
}

// splitEntry returns the context and the own fields of a wire entry.
func splitEntry(e []byte) (ctx, own []byte, err error) {
	r := wireReader{b: e}
	ctx = r.bytes(r.uvarint())
	own = r.bytes(r.uvarint())
	if r.err == nil && len(r.b) != 0 {
		r.fail("bytes after the entry")
	}
	return ctx, own, r.err
}

// WireRecord builds one audit-topic record (format 2) out of wire entries
// (AppendWireEntry), writing each distinct context once and referring to
// it by number afterwards: a router's batch of route leaves takes about
// 110 bytes a leaf (its digests, offsets and time) instead of 250 to 300
// when every leaf spells out its names, without a compressor. The zero
// value is ready for Start. A WireRecord is not safe for concurrent use.
type WireRecord struct {
	buf    []byte
	ctxs   map[string]*wireContext // contexts seen, this record's and earlier ones'
	gen    uint64                  // this record's number (Start)
	nctx   uint64                  // contexts defined in this record
	leaves int
}

// wireContext is a context a WireRecord has seen: its number in the
// record gen, the last record it was defined in. Kept from record to
// record, so that a warm record allocates nothing.
type wireContext struct{ gen, num uint64 }

// Start begins a new record in buf (its contents are overwritten; nil
// makes a buffer), forgetting the previous record's contexts. The record
// keeps buf until the next Start.
func (w *WireRecord) Start(buf []byte) {
	w.buf = append(buf[:0], WireFormat)
	if w.ctxs == nil || len(w.ctxs) > 2*MaxWireContexts {
		w.ctxs = make(map[string]*wireContext, 32)
	}
	w.gen++
	w.nctx, w.leaves = 0, 0
}

// Fits reports whether entry, added now, keeps the record within maxBytes
// MaxWireContexts and MaxWireLeaves. An empty record takes any entry.
func (w *WireRecord) Fits(entry []byte, maxBytes int) bool {
	if w.leaves == 0 {
		return true
	}
	return len(w.buf)+len(entry)+1 <= maxBytes && w.nctx < MaxWireContexts && w.leaves < MaxWireLeaves
}

// Add appends a wire entry to the record. It does not allocate when the
// record has room and entry's context is in it already. It refuses, and
// leaves the record as it was, an entry DecodeWireRecord would refuse: a
// context that does not decode (an unknown kind, a string that is not
// UTF-8), one past MaxWireContexts in the record, or a leaf past
// MaxWireLeaves (use Fits).
func (w *WireRecord) Add(entry []byte) error {
	ctx, own, err := splitEntry(entry)
	if err != nil {
		return err
	}
	if w.leaves == MaxWireLeaves {
		return fmt.Errorf("%w: more than %d leaves", ErrInvalidWire, MaxWireLeaves)
	}
	if len(w.buf) == 0 {
		w.Start(nil)
	}
	c := w.ctxs[string(ctx)] // no allocation: map lookup by converted bytes
	if c != nil && c.gen == w.gen {
		w.buf = binary.AppendUvarint(w.buf, c.num)
	} else {
		if w.nctx == MaxWireContexts {
			return fmt.Errorf("%w: more than %d contexts", ErrInvalidWire, MaxWireContexts)
		}
		if c == nil {
			// A context not seen yet: checked once, as the decoder will.
			if len(ctx) > MaxLeafSize {
				return fmt.Errorf("%w: leaf context of %d bytes", ErrInvalidLeaf, len(ctx))
			}
			if _, _, err := decodeWireContext(ctx, nil); err != nil {
				return err
			}
			c = new(wireContext)
			w.ctxs[string(ctx)] = c
		}
		w.nctx++
		c.gen, c.num = w.gen, w.nctx
		w.buf = append(w.buf, 0)
		w.buf = binary.AppendUvarint(w.buf, uint64(len(ctx)))
		w.buf = append(w.buf, ctx...)
	}
	w.buf = binary.AppendUvarint(w.buf, uint64(len(own)))
	w.buf = append(w.buf, own...)
	w.leaves++
	return nil
}

// Bytes returns the record: valid until the next Start.
func (w *WireRecord) Bytes() []byte {
	if len(w.buf) == 0 {
		w.Start(nil)
	}
	return w.buf
}

// Len returns the record's size in bytes.
func (w *WireRecord) Len() int { return max(len(w.buf), 1) }

// Leaves returns how many leaves the record holds.
func (w *WireRecord) Leaves() int { return w.leaves }

// EncodeWireRecord returns the audit-topic record of leaves, in one
// record whatever its size: for callers with a few leaves (tests, tools).
// It fails past MaxWireContexts distinct contexts or MaxWireLeaves
// leaves; EncodeWireRecords splits instead.
func EncodeWireRecord(leaves []Leaf) ([]byte, error) {
	recs, err := EncodeWireRecords(leaves, math.MaxInt)
	if err != nil {
		return nil, err
	}
	if len(recs) > 1 {
		return nil, fmt.Errorf("%w: %d leaves take more than one record (at most %d contexts and %d leaves)", ErrInvalidWire, len(leaves), MaxWireContexts, MaxWireLeaves)
	}
	return recs[0], nil
}

// EncodeWireRecords returns the audit-topic records of leaves, in order:
// a new record starts where the next leaf would take one past maxBytes
// (a leaf larger than that alone in its own), MaxWireContexts or
// MaxWireLeaves.
func EncodeWireRecords(leaves []Leaf, maxBytes int) ([][]byte, error) {
	var recs [][]byte
	var w WireRecord
	w.Start(nil)
	var entry []byte
	for i := range leaves {
		var err error
		if entry, err = AppendWireEntry(entry[:0], &leaves[i]); err != nil {
			return nil, fmt.Errorf("leaf %d: %w", i, err)
		}
		if !w.Fits(entry, maxBytes) {
			recs = append(recs, w.Bytes())
			w = WireRecord{ctxs: w.ctxs, gen: w.gen} // the record before keeps its buffer
			w.Start(nil)
		}
		if err := w.Add(entry); err != nil {
			return nil, fmt.Errorf("leaf %d: %w", i, err)
		}
	}
	return append(recs, w.Bytes()), nil
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

// wireReader decodes the fields of a wire record.
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
	if r.names != nil && len(s) <= 128 && len(r.names) < 256 {
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

// DecodeWireRecord decodes an audit-topic record value (either format)
// into its leaves.
func DecodeWireRecord(b []byte) ([]Leaf, error) {
	if len(b) == 0 || (b[0] != WireFormat && b[0] != WireFormatV1) {
		return nil, fmt.Errorf("%w: unknown format", ErrInvalidWire)
	}
	r := wireReader{b: b[1:]}
	names := make(map[string]string, 16) // shared by the record's leaves
	leaves := make([]Leaf, 0, len(b)/100+1)
	if b[0] == WireFormatV1 {
		for len(r.b) > 0 && r.err == nil {
			if len(leaves) == MaxWireLeaves {
				return nil, fmt.Errorf("%w: more than %d leaves", ErrInvalidWire, MaxWireLeaves)
			}
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
	type context struct {
		leaf  Leaf // the context's fields
		flags uint64
	}
	var ctxs []context
	for len(r.b) > 0 && r.err == nil {
		if len(leaves) == MaxWireLeaves {
			return nil, fmt.Errorf("%w: more than %d leaves", ErrInvalidWire, MaxWireLeaves)
		}
		ref := r.uvarint()
		if r.err != nil {
			break
		}
		if ref == 0 {
			if len(ctxs) == MaxWireContexts {
				return nil, fmt.Errorf("leaf %d: %w: more than %d contexts", len(leaves), ErrInvalidWire, MaxWireContexts)
			}
			raw := r.bytes(r.uvarint())
			if r.err != nil {
				break
			}
			var c context
			var err error
			if c.leaf, c.flags, err = decodeWireContext(raw, names); err != nil {
				return nil, fmt.Errorf("leaf %d: %w", len(leaves), err)
			}
			ctxs = append(ctxs, c)
			ref = uint64(len(ctxs))
		}
		if ref > uint64(len(ctxs)) {
			return nil, fmt.Errorf("leaf %d: %w: context %d not defined", len(leaves), ErrInvalidWire, ref)
		}
		own := r.bytes(r.uvarint())
		if r.err != nil {
			break
		}
		c := &ctxs[ref-1]
		l, err := decodeWireOwn(own, &c.leaf, c.flags)
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

// flags reads a leaf's flags, refusing unknown ones.
func (r *wireReader) flags() uint64 {
	f := r.uvarint()
	if f&^wAll != 0 {
		r.fail("unknown flags")
	}
	return f
}

// decision reads decision, reason, decided by, jurisdiction and region,
// as flagged.
func (r *wireReader) decision(l *Leaf, flags uint64) {
	for _, f := range [...]struct {
		flag uint64
		s    *string
	}{{wDecision, (*string)(&l.Decision)}, {wReason, &l.Reason}, {wDecidedBy, &l.DecidedBy}, {wJurisdiction, &l.Jurisdiction}, {wRegion, &l.Region}} {
		if flags&f.flag != 0 {
			*f.s = r.name()
		}
	}
}

// ruleset reads the ruleset version and digest, if flagged.
func (r *wireReader) ruleset(l *Leaf, flags uint64) {
	if flags&wRuleset != 0 {
		l.Ruleset.Version = r.varint()
		r.digest(&l.Ruleset.Digest)
	}
}

// digests reads the value and key, event and subject digests, as flagged.
func (r *wireReader) digests(l *Leaf, flags uint64) {
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
}

// tail reads the count, policy and content, as flagged: the last fields
// of a leaf in either format.
func (r *wireReader) tail(l *Leaf, flags uint64) {
	if flags&wCount != 0 {
		l.Count = r.varint()
	}
	if flags&wPolicy != 0 {
		raw := r.bytes(r.uvarint())
		if r.err == nil {
			l.Policy, r.err = parsePolicy(raw)
		}
	}
	if flags&wContent != 0 {
		l.Content = r.str()
	}
}

// end returns the first error, or one when bytes are left after what
// (a leaf or a context).
func (r *wireReader) end(what string) error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d bytes after the %s", ErrInvalidWire, len(r.b), what)
	}
	return nil
}

// validKind refuses a kind the log does not know.
func validKind(k Kind) error {
	if !k.valid() {
		return fmt.Errorf("%w: unknown kind %q", ErrInvalidWire, printable([]byte(k)))
	}
	return nil
}

// decodeWireContext decodes the context of a format 2 entry into the
// fields of a leaf it sets, and returns the leaf's flags.
func decodeWireContext(b []byte, names map[string]string) (Leaf, uint64, error) {
	r := wireReader{b: b, names: names}
	var l Leaf
	flags := r.flags()
	if flags&wKeyNull != 0 && flags&wValue == 0 {
		r.fail("null key flag without digests")
	}
	l.Kind = Kind(r.name())
	if flags&wActor != 0 {
		l.Actor = r.name()
	}
	if flags&wSrc != 0 {
		l.Src.Cluster, l.Src.Topic = r.name(), r.name()
	}
	r.decision(&l, flags)
	r.ruleset(&l, flags)
	if flags&wDest != 0 {
		l.Dest.Cluster, l.Dest.Topic, l.Dest.Store = r.name(), r.name(), r.name()
	}
	if err := r.end("context"); err != nil {
		return Leaf{}, 0, err
	}
	if err := validKind(l.Kind); err != nil {
		return Leaf{}, 0, err
	}
	return l, flags, nil
}

// decodeWireOwn decodes the own fields of a format 2 entry into a copy of
// its context's leaf.
func decodeWireOwn(b []byte, ctx *Leaf, flags uint64) (Leaf, error) {
	r := wireReader{b: b}
	l := *ctx
	l.Time = r.varint()
	if flags&wSrc != 0 {
		l.Src.Partition, l.Src.Offset, l.Src.EndOffset = r.int32(), r.varint(), r.varint()
	}
	r.digests(&l, flags)
	if flags&wDest != 0 {
		l.Dest.Partition, l.Dest.Offset = r.int32(), r.varint()
	}
	r.tail(&l, flags)
	if err := r.end("leaf"); err != nil {
		return Leaf{}, err
	}
	return l, nil
}

// decodeWireLeaf decodes one leaf of a format 1 record.
func decodeWireLeaf(b []byte, names map[string]string) (Leaf, error) {
	r := wireReader{b: b, names: names}
	var l Leaf
	flags := r.flags()
	l.Kind = Kind(r.name())
	l.Time = r.varint()
	if flags&wActor != 0 {
		l.Actor = r.name()
	}
	if flags&wSrc != 0 {
		l.Src.Cluster, l.Src.Topic = r.name(), r.name()
		l.Src.Partition, l.Src.Offset, l.Src.EndOffset = r.int32(), r.varint(), r.varint()
	}
	r.digests(&l, flags)
	r.decision(&l, flags)
	r.ruleset(&l, flags)
	if flags&wDest != 0 {
		l.Dest.Cluster, l.Dest.Topic = r.name(), r.name()
		l.Dest.Partition, l.Dest.Offset = r.int32(), r.varint()
		l.Dest.Store = r.name()
	}
	r.tail(&l, flags)
	if err := r.end("leaf"); err != nil {
		return Leaf{}, err
	}
	if err := validKind(l.Kind); err != nil {
		return Leaf{}, err
	}
	return l, nil
}
