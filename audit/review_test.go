package audit

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestReviewFitsBound: whatever the entries and the bound, a record that
// Fits grows into never passes maxBytes once it holds a leaf, and decodes.
func TestReviewFitsBound(t *testing.T) {
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

// TestReviewEncodeBeyondMaxContexts: EncodeWireRecord (and WireRecord.Add
// without Fits, as SinkLedger.Record and LeafLedger.Append use it) writes
// a record of more than MaxWireContexts contexts without an error, which
// DecodeWireRecord refuses: the integrator skips it, every leaf lost.
func TestReviewEncodeBeyondMaxContexts(t *testing.T) {
	base := vectorLeaves()[0].leaf
	many := make([]Leaf, MaxWireContexts+1)
	for i := range many {
		many[i] = base
		many[i].Reason = fmt.Sprint("reason-", i)
	}
	rec, err := EncodeWireRecord(many)
	if err != nil {
		return // refused at the writer: fine
	}
	if _, err := DecodeWireRecord(rec); err != nil {
		t.Fatalf("EncodeWireRecord wrote %d contexts without an error; DecodeWireRecord: %v", len(many), err)
	}
}

// TestReviewEntryRefusedLikeJSON: a leaf that Leaf.Encode refuses (a
// string that is not UTF-8, an unknown kind) must be refused by
// AppendWireEntry/WireRecord.Add too; otherwise the record holding it
// does not decode and the integrator skips it with every other leaf in it.
func TestReviewEntryRefusedLikeJSON(t *testing.T) {
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
			var scratch []byte
			var err error
			if scratch, err = w.AddLeaf(scratch, &good); err != nil {
				t.Fatal(err)
			}
			if _, err = w.AddLeaf(scratch, &bad); err != nil {
				if !errors.Is(err, ErrInvalidLeaf) && !errors.Is(err, ErrInvalidWire) {
					t.Fatalf("refused with %v", err)
				}
				if got, err := DecodeWireRecord(w.Bytes()); err != nil || len(got) != 1 {
					t.Fatalf("after the refusal: %d leaves, %v", len(got), err)
				}
				return
			}
			_, err = DecodeWireRecord(w.Bytes())
			t.Fatalf("the leaf is taken; the record (with a good leaf) then decodes to: %v", err)
		})
	}
}
