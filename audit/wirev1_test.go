package audit

// The writer of format 1 audit records, which the router and sinks wrote
// before format 2 (WireRecord): kept with the tests, which check that
// DecodeWireRecord still reads what is already on an audit topic.

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// wireLeafRoom: a route leaf takes 200 to 300 bytes in format 1.
const wireLeafRoom = 320

// maxWireRoom bounds the room newV1Record makes.
const maxWireRoom = 1 << 20

// newV1Record returns a buffer holding the start of an audit-topic
// record, with room for n leaves of typical size (at most 1 MiB).
func newV1Record(n int) []byte {
	b := make([]byte, 1, 1+min(n, maxWireRoom/wireLeafRoom)*wireLeafRoom)
	b[0] = WireFormatV1
	return b
}

// appendV1Leaf appends l, in its wire form with its length, to a record
// started by newV1Record. It does not allocate while rec has room for a
// typical leaf (320 bytes) to spare, a ruleset leaf's policy aside; when it
// has less, it doubles rec's capacity first.
func appendV1Leaf(rec []byte, l *Leaf) ([]byte, error) {
	flags := wireFlags(l)
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
