package audit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// encodeRecord returns the format 2 record of leaves (EncodeWireRecord).
func encodeRecord(t testing.TB, leaves ...Leaf) []byte {
	t.Helper()
	rec, err := EncodeWireRecord(leaves)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// encodeV1Record returns the format 1 record of leaves.
func encodeV1Record(t testing.TB, leaves ...Leaf) []byte {
	t.Helper()
	rec := newV1Record(len(leaves))
	for i := range leaves {
		var err error
		if rec, err = appendV1Leaf(rec, &leaves[i]); err != nil {
			t.Fatal(err)
		}
	}
	return rec
}

// TestWireRoundTrip: every kind of leaf, in a record of each format,
// decodes to the leaf given (its canonical JSON), and no truncation of
// either record panics.
func TestWireRoundTrip(t *testing.T) {
	var leaves []Leaf
	var want [][]byte
	for _, v := range vectorLeaves() {
		leaves = append(leaves, v.leaf)
		want = append(want, mustEncode(t, &v.leaf))
	}
	// Twice over, so that the second half refers to the first half's
	// contexts.
	leaves = append(leaves, leaves...)
	want = append(want, want...)
	for _, f := range []struct {
		name string
		rec  []byte
	}{{"format 2", encodeRecord(t, leaves...)}, {"format 1", encodeV1Record(t, leaves...)}} {
		got, err := DecodeWireRecord(f.rec)
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d leaves, want %d", f.name, len(got), len(want))
		}
		for i := range got {
			if j, err := got[i].Encode(); err != nil || string(j) != string(want[i]) {
				t.Errorf("%s: leaf %d: %s (%v)\nwant %s", f.name, i, j, err, want[i])
			}
		}
		for n := 1; n < len(f.rec); n++ {
			// A cut between leaves is a shorter valid record; any other
			// cut fails cleanly.
			if got, err := DecodeWireRecord(f.rec[:n]); err != nil && !errors.Is(err, ErrInvalidWire) && !errors.Is(err, ErrInvalidLeaf) {
				t.Fatalf("%s cut at %d: %v", f.name, n, err)
			} else if err == nil && len(got) >= len(want) {
				t.Fatalf("%s cut at %d: all %d leaves decoded", f.name, n, len(got))
			}
		}
	}
	for _, bad := range [][]byte{{9}, {}, {WireFormatV1, 3, 0x80, 0x80, 0x80}, {WireFormat, 3, 0x80, 0x80, 0x80}} {
		if _, err := DecodeWireRecord(bad); !errors.Is(err, ErrInvalidWire) {
			t.Errorf("%x: %v", bad, err)
		}
	}
}

// TestWireRecordContexts: leaves that share their context (names,
// decision, region, ruleset) carry it once per record; each distinct
// context is written once and referred to by number; a reference to a
// context not defined before, or more contexts than MaxWireContexts, is
// refused.
func TestWireRecordContexts(t *testing.T) {
	base := vectorLeaves()[0].leaf
	if base.Kind != KindRoute {
		t.Fatalf("the first vector leaf is a %s leaf", base.Kind)
	}
	var leaves []Leaf
	for i := range 100 {
		l := base
		l.Src.Offset, l.Dest.Offset = int64(1000+i), int64(50+i)
		l.Value = Sum(fmt.Append(nil, i))
		if i%2 == 1 {
			l.Region, l.Jurisdiction = "us", "US"
		}
		leaves = append(leaves, l)
	}
	rec := encodeRecord(t, leaves...)
	one := encodeRecord(t, leaves[0])
	entry, err := AppendWireEntry(nil, &leaves[0])
	if err != nil {
		t.Fatal(err)
	}
	ctx, own, err := splitEntry(entry)
	if err != nil {
		t.Fatal(err)
	}
	// 100 leaves, two contexts: each leaf costs its own fields and a
	// one-byte reference.
	if max := len(one) + len(ctx) + 2 + 99*(len(own)+3); len(rec) > max {
		t.Errorf("100 leaves of two contexts take %d bytes, want at most %d", len(rec), max)
	}
	if n := bytes.Count(rec, ctx); n != 1 {
		t.Errorf("the first context is written %d times", n)
	}
	got, err := DecodeWireRecord(rec)
	if err != nil || len(got) != 100 {
		t.Fatalf("%d leaves, %v", len(got), err)
	}
	for i := range got {
		if !bytes.Equal(mustEncode(t, &got[i]), mustEncode(t, &leaves[i])) {
			t.Fatalf("leaf %d differs", i)
		}
	}
	t.Logf("route leaf: entry %d bytes (context %d, own %d); 100 leaves in %d bytes, %.0f a leaf; JSON %d bytes",
		len(entry), len(ctx), len(own), len(rec), float64(len(rec)-1)/100, len(mustEncode(t, &leaves[0])))

	// A reference to context 2 when one is defined.
	bad := append(bytes.Clone(one), 2)
	bad = binary.AppendUvarint(bad, uint64(len(own)))
	bad = append(bad, own...)
	if _, err := DecodeWireRecord(bad); !errors.Is(err, ErrInvalidWire) || !strings.Contains(err.Error(), "context 2 not defined") {
		t.Errorf("undefined context: %v", err)
	}
	// Fits: the bound in bytes, and in contexts.
	var w WireRecord
	w.Start(nil)
	if !w.Fits(entry, 10) {
		t.Error("an empty record does not take a leaf")
	}
	if err := w.Add(entry); err != nil {
		t.Fatal(err)
	}
	if w.Fits(entry, w.Len()+len(entry)) || !w.Fits(entry, w.Len()+len(entry)+1) {
		t.Errorf("Fits at %d bytes with an entry of %d", w.Len(), len(entry))
	}
	many := make([]Leaf, MaxWireContexts+1)
	for i := range many {
		many[i] = base
		many[i].Reason = fmt.Sprint("reason-", i)
	}
	w.Start(nil)
	var scratch []byte
	for i := range many {
		e, err := AppendWireEntry(scratch[:0], &many[i])
		if err != nil {
			t.Fatal(err)
		}
		scratch = e
		if i == MaxWireContexts {
			if w.Fits(e, 1<<30) {
				t.Errorf("a record of %d contexts takes another", MaxWireContexts)
			}
			// Add refuses it; written by hand, the decoder does.
			if err := w.Add(e); !errors.Is(err, ErrInvalidWire) || w.Leaves() != MaxWireContexts {
				t.Fatalf("context %d: %v, %d leaves", MaxWireContexts+1, err, w.Leaves())
			}
			c, o, err := splitEntry(e)
			if err != nil {
				t.Fatal(err)
			}
			rec := append(bytes.Clone(w.Bytes()), 0)
			rec = binary.AppendUvarint(rec, uint64(len(c)))
			rec = append(rec, c...)
			rec = binary.AppendUvarint(rec, uint64(len(o)))
			rec = append(rec, o...)
			if _, err := DecodeWireRecord(rec); !errors.Is(err, ErrInvalidWire) || !strings.Contains(err.Error(), "contexts") {
				t.Errorf("%d contexts: %v", MaxWireContexts+1, err)
			}
			break
		}
		if !w.Fits(e, 1<<30) {
			t.Fatalf("a record of %d contexts is full", i)
		}
		if err := w.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	// A malformed entry is refused and leaves the record as it was.
	w.Start(nil)
	if err := w.Add(entry[:len(entry)-1]); !errors.Is(err, ErrInvalidWire) || w.Leaves() != 0 || w.Len() != 1 {
		t.Errorf("truncated entry: %v, %d leaves in %d bytes", err, w.Leaves(), w.Len())
	}
}

func FuzzDecodeWireRecord(f *testing.F) {
	l := vectorLeaves()[0].leaf
	f.Add(encodeRecord(f, l, l))
	f.Add(encodeV1Record(f, l))
	f.Fuzz(func(t *testing.T, b []byte) {
		leaves, err := DecodeWireRecord(b)
		if err != nil {
			return
		}
		// What decodes, written again in format 2, decodes to the same
		// leaves.
		again, err := EncodeWireRecord(leaves)
		if err != nil {
			return
		}
		back, err := DecodeWireRecord(again)
		if err != nil || len(back) != len(leaves) {
			t.Fatalf("re-encoded record: %d leaves of %d, %v", len(back), len(leaves), err)
		}
		for i := range leaves {
			j1, err1 := leaves[i].Encode()
			j2, err2 := back[i].Encode()
			if (err1 == nil) != (err2 == nil) || !bytes.Equal(j1, j2) {
				t.Fatalf("leaf %d changed when written again: %s (%v) -> %s (%v)", i, j1, err1, j2, err2)
			}
		}
	})
}

// TestWireEntryDoesNotAllocate: encoding a leaf into a buffer with room,
// and adding it to a record whose context it shares, allocate nothing.
func TestWireEntryDoesNotAllocate(t *testing.T) {
	l := vectorLeaves()[0].leaf
	entry := make([]byte, 0, 512)
	var w WireRecord
	w.Start(make([]byte, 0, 1<<20))
	if n := testing.AllocsPerRun(100, func() {
		entry, _ = AppendWireEntry(entry[:0], &l)
		if w.Len()+len(entry) > 1<<20-1 {
			t.Fatal("the record is full")
		}
		_ = w.Add(entry)
	}); n != 0 {
		t.Fatalf("AppendWireEntry and Add allocate %v times", n)
	}
}

// TestWireLengthSizes adds leaves whose own fields (and a ruleset leaf's
// policy) cross each length of the uvarint prefix (1, 2, 3 bytes), after
// another leaf: each prefix is the shortest uvarint of the size, and the
// record decodes to the leaves given.
func TestWireLengthSizes(t *testing.T) {
	first := vectorLeaves()[0].leaf
	for _, n := range []int{0, 1, 2, 3, 100, 101, 102, 103, 104, 105, 200, 300, 400, 500, 600, 700} {
		js := make([]PolicyJurisdiction, n)
		for i := range js {
			js[i] = PolicyJurisdiction{Name: fmt.Sprintf("J%04d", i), Region: fmt.Sprintf("region-%04d", i)}
		}
		for _, content := range []int{0, 1, 90, 100, 110, 120, 16300, 16330, 16360, 16390, 70000} {
			l := Leaf{Kind: KindRuleset, Time: 1, Actor: "a", Ruleset: RulesetRef{Version: 3, Digest: Sum([]byte("r"))},
				Content: strings.Repeat("c", content)}
			if n > 0 {
				l.Policy = NewPolicy(js, nil, nil)
			}
			e, err := AppendWireEntry(nil, &l)
			if err != nil {
				t.Fatal(err)
			}
			r := e
			for _, part := range []string{"context", "own fields"} {
				size, k := binary.Uvarint(r)
				if k <= 0 || int(size) > len(r)-k || k != len(binary.AppendUvarint(nil, size)) {
					t.Fatalf("policy %d, content %d: %s: prefix %x", n, content, part, r[:min(3, len(r))])
				}
				r = r[k+int(size):]
			}
			if len(r) != 0 {
				t.Fatalf("policy %d, content %d: %d bytes after the entry", n, content, len(r))
			}
			got, err := DecodeWireRecord(encodeRecord(t, first, l))
			if err != nil || len(got) != 2 {
				t.Fatalf("policy %d, content %d: %d leaves, %v", n, content, len(got), err)
			}
			a, _ := got[1].Encode() // nil for both past MaxLeafSize: compare the fields
			b, _ := l.Encode()
			if !bytes.Equal(a, b) || got[1].Content != l.Content || !bytes.Equal(policyJSON(t, got[1].Policy), policyJSON(t, l.Policy)) {
				t.Fatalf("policy %d, content %d: decoded leaf differs", n, content)
			}
			if !bytes.Equal(mustEncode(t, &got[0]), mustEncode(t, &first)) {
				t.Fatalf("policy %d, content %d: the first leaf changed", n, content)
			}
		}
	}
}

// policyJSON returns p's canonical JSON (nil for no policy).
func policyJSON(t *testing.T, p *Policy) []byte {
	t.Helper()
	if p == nil {
		return nil
	}
	b, err := p.appendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustEncode(t *testing.T, l *Leaf) []byte {
	t.Helper()
	b, err := l.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
