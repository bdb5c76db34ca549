package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestFitsBound: whatever the entries and the bound, a record that
// Fits grows into never passes maxBytes once it holds a leaf, and decodes.
func TestFitsBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := vectorLeaves()
	var w WireRecord
	var scratch []byte
	for round := range 300 {
		maxBytes := 50 + rng.IntN(3000)
		w.Start(nil)
		n := 0
		for range 200 {
			l := base[rng.IntN(len(base))].leaf
			l.Reason = fmt.Sprint("r", rng.IntN(300)) // up to 300 contexts: refs of 1 and 2 bytes
			if l.Kind == KindRuleset {
				l.Reason = ""
			}
			l.Time = rng.Int64()
			e, err := AppendWireEntry(scratch[:0], &l)
			if err != nil {
				t.Fatal(err)
			}
			scratch = e
			if !w.Fits(e, maxBytes) {
				break
			}
			if err := w.Add(e); err != nil {
				t.Fatal(err)
			}
			n++
			if w.Leaves() > 1 && w.Len() > maxBytes {
				t.Fatalf("round %d: %d leaves in %d bytes, bound %d", round, w.Leaves(), w.Len(), maxBytes)
			}
		}
		if got, err := DecodeWireRecord(w.Bytes()); err != nil || len(got) != n {
			t.Fatalf("round %d: %d leaves of %d: %v", round, len(got), n, err)
		}
	}
}

// TestWireRecordBounds: past MaxWireContexts contexts or MaxWireLeaves
// leaves, EncodeWireRecord refuses (it makes one record) and
// EncodeWireRecords splits, every record decoding, the leaves in order;
// a record of either format holding more leaves than MaxWireLeaves is
// refused by the decoder (a record of tiny leaves must not make it
// decode hundreds of thousands).
func TestWireRecordBounds(t *testing.T) {
	base := vectorLeaves()[0].leaf
	manyContexts := make([]Leaf, MaxWireContexts+1)
	for i := range manyContexts {
		manyContexts[i] = base
		manyContexts[i].Reason = fmt.Sprint("reason-", i)
	}
	manyLeaves := make([]Leaf, MaxWireLeaves+1)
	for i := range manyLeaves {
		manyLeaves[i] = Leaf{Kind: KindPurge, Time: int64(i)}
	}
	for name, leaves := range map[string][]Leaf{"contexts": manyContexts, "leaves": manyLeaves} {
		t.Run(name, func(t *testing.T) {
			if _, err := EncodeWireRecord(leaves); !errors.Is(err, ErrInvalidWire) {
				t.Fatalf("EncodeWireRecord of %d leaves: %v", len(leaves), err)
			}
			recs, err := EncodeWireRecords(leaves, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 2 {
				t.Errorf("%d records, want 2", len(recs))
			}
			var times []int64
			for _, r := range recs {
				got, err := DecodeWireRecord(r)
				if err != nil {
					t.Fatal(err)
				}
				for i := range got {
					times = append(times, got[i].Time)
				}
			}
			if len(times) != len(leaves) || times[0] != leaves[0].Time || times[len(times)-1] != leaves[len(leaves)-1].Time {
				t.Fatalf("%d leaves back of %d", len(times), len(leaves))
			}
		})
	}
	// By hand: one leaf past the bound, in each format.
	full, err := EncodeWireRecord(manyLeaves[:MaxWireLeaves])
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeWireRecord(full); err != nil || len(got) != MaxWireLeaves {
		t.Fatalf("%d leaves: %d, %v", MaxWireLeaves, len(got), err)
	}
	one, _ := AppendWireEntry(nil, &manyLeaves[0])
	_, own, _ := splitEntry(one)
	over := binary.AppendUvarint(append(full, 1), uint64(len(own))) // context 1 again
	over = append(over, own...)
	if _, err := DecodeWireRecord(over); !errors.Is(err, ErrInvalidWire) || !strings.Contains(err.Error(), "leaves") {
		t.Errorf("format 2, %d leaves: %v", MaxWireLeaves+1, err)
	}
	if _, err := DecodeWireRecord(encodeV1Record(t, manyLeaves...)); !errors.Is(err, ErrInvalidWire) || !strings.Contains(err.Error(), "leaves") {
		t.Errorf("format 1, %d leaves: %v", MaxWireLeaves+1, err)
	}
	// A split by size keeps every record within the bound.
	recs, err := EncodeWireRecords(manyContexts, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if len(r) > 4096 {
			t.Errorf("record %d: %d bytes", i, len(r))
		}
	}
}

// TestEntryRefusedLikeJSON: a leaf that Leaf.Encode refuses (a
// string that is not UTF-8, an unknown kind) must be refused by
// AppendWireEntry/WireRecord.Add too; otherwise the record holding it
// does not decode and the integrator skips it with every other leaf in it.
func TestEntryRefusedLikeJSON(t *testing.T) {
	good := vectorLeaves()[0].leaf
	for name, mod := range map[string]func(*Leaf){
		"reason not UTF-8":       func(l *Leaf) { l.Reason = "bad\xff" },
		"jurisdiction not UTF-8": func(l *Leaf) { l.Jurisdiction = "\xc3" },
		"unknown kind":           func(l *Leaf) { l.Kind = "bogus" },
		"content not UTF-8":      func(l *Leaf) { l.Content = "\xff" },
	} {
		t.Run(name, func(t *testing.T) {
			bad := good
			mod(&bad)
			if _, err := bad.Encode(); !errors.Is(err, ErrInvalidLeaf) {
				t.Fatalf("Encode: %v", err)
			}
			var w WireRecord
			w.Start(nil)
			if err := addLeaf(&w, &good); err != nil {
				t.Fatal(err)
			}
			if err := addLeaf(&w, &bad); err != nil {
				if !errors.Is(err, ErrInvalidLeaf) && !errors.Is(err, ErrInvalidWire) {
					t.Fatalf("refused with %v", err)
				}
				if got, err := DecodeWireRecord(w.Bytes()); err != nil || len(got) != 1 {
					t.Fatalf("after the refusal: %d leaves, %v", len(got), err)
				}
				return
			}
			_, err := DecodeWireRecord(w.Bytes())
			t.Fatalf("the leaf is taken; the record (with a good leaf) then decodes to: %v", err)
		})
	}
}

// addLeaf encodes l and adds it to w, as a writer does.
func addLeaf(w *WireRecord, l *Leaf) error {
	e, err := AppendWireEntry(nil, l)
	if err != nil {
		return err
	}
	return w.Add(e)
}
