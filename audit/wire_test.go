package audit

import (
	"errors"
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
