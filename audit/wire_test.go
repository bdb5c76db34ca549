package audit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestWireRoundTrip(t *testing.T) {
	rec := NewWireRecord(4)
	var want [][]byte
	for _, v := range vectorLeaves() {
		var err error
		if rec, err = AppendWireLeaf(rec, &v.leaf); err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		j, _ := v.leaf.Encode()
		want = append(want, j)
	}
	leaves, err := DecodeWireRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaves) != len(want) {
		t.Fatalf("%d leaves, want %d", len(leaves), len(want))
	}
	for i := range leaves {
		got, err := leaves[i].Encode()
		if err != nil || string(got) != string(want[i]) {
			t.Errorf("leaf %d: %s (%v)\nwant %s", i, got, err, want[i])
		}
	}
	// Every truncation fails cleanly, never panics.
	for n := 0; n < len(rec); n++ {
		if _, err := DecodeWireRecord(rec[:n]); err == nil && n != 0 {
			// A cut exactly between leaves is a shorter valid record.
			continue
		}
	}
	if _, err := DecodeWireRecord([]byte{9}); !errors.Is(err, ErrInvalidWire) {
		t.Errorf("unknown format: %v", err)
	}
	if _, err := DecodeWireRecord([]byte{WireFormat, 3, 0x80, 0x80, 0x80}); !errors.Is(err, ErrInvalidWire) {
		t.Errorf("garbage: %v", err)
	}
}

func FuzzDecodeWireRecord(f *testing.F) {
	rec := NewWireRecord(1)
	l := vectorLeaves()[0].leaf
	rec, _ = AppendWireLeaf(rec, &l)
	f.Add(rec)
	f.Fuzz(func(t *testing.T, b []byte) {
		leaves, err := DecodeWireRecord(b)
		if err != nil {
			return
		}
		for i := range leaves {
			_, _ = leaves[i].Encode()
		}
	})
}

func TestAppendWireLeafDoesNotAllocate(t *testing.T) {
	l := vectorLeaves()[0].leaf
	rec := NewWireRecord(1000)
	if n := testing.AllocsPerRun(100, func() { rec, _ = AppendWireLeaf(rec[:1], &l) }); n != 0 {
		t.Fatalf("AppendWireLeaf allocates %v times", n)
	}
	if len(rec) > 200 {
		t.Errorf("a routed leaf takes %d bytes on the wire", len(rec))
	}
	j, _ := l.Encode()
	t.Logf("routed leaf: %d bytes on the wire, %d bytes of JSON", len(rec)-1, len(j))
}

// TestWireLengthSizes appends leaves whose wire size (and a ruleset leaf's
// policy size) crosses each length of the uvarint prefix (1, 2, 3 bytes),
// after another leaf: each prefix is the shortest uvarint of the size,
// and the record decodes to the leaves given.
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
			rec := NewWireRecord(2)
			rec, err := AppendWireLeaf(rec, &first)
			if err != nil {
				t.Fatal(err)
			}
			mark := len(rec)
			if rec, err = AppendWireLeaf(rec, &l); err != nil {
				t.Fatal(err)
			}
			size, k := binary.Uvarint(rec[mark:])
			if k <= 0 || int(size) != len(rec)-mark-k || k != len(binary.AppendUvarint(nil, size)) {
				t.Fatalf("policy %d, content %d: prefix %x of a %d-byte leaf", n, content, rec[mark:mark+3], len(rec)-mark-k)
			}
			got, err := DecodeWireRecord(rec)
			if err != nil || len(got) != 2 {
				t.Fatalf("policy %d, content %d: %d leaves, %v", n, content, len(got), err)
			}
			a, _ := got[1].Encode()
			b, _ := l.Encode()
			if !bytes.Equal(a, b) {
				t.Fatalf("policy %d, content %d: decoded leaf differs", n, content)
			}
			if a, _ := got[0].Encode(); !bytes.Equal(a, mustEncode(t, &first)) {
				t.Fatalf("policy %d, content %d: the first leaf changed", n, content)
			}
		}
	}
}

func mustEncode(t *testing.T, l *Leaf) []byte {
	t.Helper()
	b, err := l.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNewWireRecordRoom: a record made by NewWireRecord(n) holds n route
// leaves of a deployment's size (subject hash, a long router instance
// name and topic names) without growing: appending them does not move
// the record.
func TestNewWireRecordRoom(t *testing.T) {
	l := Leaf{Kind: KindRoute, Time: 1764028800123, Actor: "residency-router-7f9c5b8d6-x2k4p",
		Src:      Source{Topic: "prod.user-events.ingest", Partition: 117, Offset: 12_345_678_901},
		Decision: Routed, DecidedBy: "country", Jurisdiction: "EU", Region: "eu-central",
		Ruleset: RulesetRef{Version: 1234, Digest: Sum([]byte("r"))},
		Dest:    Destination{Cluster: "eu-frankfurt", Topic: "prod.residency.pinned.eu-central", Partition: 117, Offset: 12_345_678_901}}
	l.SetRecord([]byte("user-1234567890"), []byte("value"))
	l.Subject = Sum([]byte("subject"))
	rec := NewWireRecord(500)
	start := &rec[:1][0]
	for range 500 {
		var err error
		if rec, err = AppendWireLeaf(rec, &l); err != nil {
			t.Fatal(err)
		}
	}
	if &rec[0] != start {
		t.Errorf("500 leaves of %d bytes outgrew NewWireRecord(500) (%d bytes)", (len(rec)-1)/500, len(rec))
	}
}

// TestNewWireRecordBound: the room is per leaf, up to about 1 MiB.
func TestNewWireRecordBound(t *testing.T) {
	if c := cap(NewWireRecord(10)); c < 10*200 || c > 10*400 {
		t.Errorf("room for 10 leaves: %d bytes", c)
	}
	if c := cap(NewWireRecord(20_000)); c > 1<<20+1 || c < 1<<19 {
		t.Errorf("room for 20000 leaves: %d bytes, want at most 1 MiB", c)
	}
}

// TestAppendWireLeafGrowsByDoubling: a record started small and filled
// leaf by leaf to about 1 MiB is reallocated a few times, not once per
// quarter of its size (append's growth for large slices).
func TestAppendWireLeafGrowsByDoubling(t *testing.T) {
	l := vectorLeaves()[0].leaf
	rec := make([]byte, 1, 4096)
	rec[0] = WireFormat
	grown := 0
	for len(rec) < 1<<20 {
		before := cap(rec)
		var err error
		if rec, err = AppendWireLeaf(rec, &l); err != nil {
			t.Fatal(err)
		}
		if cap(rec) != before {
			grown++
		}
	}
	if grown > 10 {
		t.Errorf("the record was reallocated %d times while it grew from 4 KiB to 1 MiB", grown)
	}
}
