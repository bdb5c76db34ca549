package kafka

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/segmentio/kafka-go/compress"

	"github.com/residency-router/residency/stream"
)

// fetchBody encodes a Fetch v11 response body (after the correlation id)
// with one topic and, per partition, the record batches given.
func fetchBody(topic string, parts map[int32][]byte) []byte {
	be := binary.BigEndian
	var b []byte
	b = be.AppendUint32(b, 0) // throttle
	b = be.AppendUint16(b, 0) // error code
	b = be.AppendUint32(b, 0) // session id
	b = be.AppendUint32(b, 1) // topics
	b = be.AppendUint16(b, uint16(len(topic)))
	b = append(b, topic...)
	b = be.AppendUint32(b, uint32(len(parts)))
	for p := int32(0); int(p) < len(parts); p++ {
		recs := parts[p]
		b = be.AppendUint32(b, uint32(p))
		b = be.AppendUint16(b, 0)          // error code
		b = be.AppendUint64(b, 1000)       // high-water mark
		b = be.AppendUint64(b, 1000)       // last stable offset
		b = be.AppendUint64(b, 0)          // log start
		b = be.AppendUint32(b, 0xffffffff) // aborted transactions: null
		b = be.AppendUint32(b, 0xffffffff) // preferred read replica: -1
		b = be.AppendUint32(b, uint32(len(recs)))
		b = append(b, recs...)
	}
	return b
}

// overlaps reports whether b shares memory with buf.
func overlaps(b, buf []byte) bool {
	if cap(b) == 0 || cap(buf) == 0 {
		return false
	}
	lo, hi := uintptr(unsafe.Pointer(unsafe.SliceData(buf))), uintptr(unsafe.Pointer(unsafe.SliceData(buf)))+uintptr(cap(buf))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return p+uintptr(cap(b)) > lo && p < hi
}

// TestParseFetchCopiesRecords: the records parseFetch delivers do not
// refer to the response it parsed (its frame is recycled at once): with
// the response overwritten afterwards, as the next fetch into the same
// frame would, every record still reads back byte for byte, for small
// batches (sharing a chunk), a batch of more than half a chunk (a copy of
// its own) and a compressed one.
func TestParseFetchCopiesRecords(t *testing.T) {
	e := batchEncoder{}
	gz := batchEncoder{codec: compress.Gzip}
	var want [2][]stream.Message
	batch := func(enc *batchEncoder, p int, base int64, msgs []stream.Message) []byte {
		t.Helper()
		b, err := enc.encode(msgs, allIdx(len(msgs)), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		binary.BigEndian.PutUint64(b, uint64(base))
		setProducer(b, -1, -1, -1)
		want[p] = append(want[p], msgs...)
		return bytes.Clone(b)
	}
	small := func(p, from, n int) []stream.Message {
		var out []stream.Message
		for i := range n {
			out = append(out, stream.Message{Key: fmt.Appendf(nil, "k%d-%d", p, from+i), Value: fmt.Appendf(nil, "value %d of %d", from+i, p),
				Headers: []stream.Header{{Key: fmt.Sprintf("h%d", i), Value: []byte("hv")}}})
		}
		return out
	}
	var p0, p1 []byte
	p0 = append(p0, batch(&e, 0, 0, small(0, 0, 3))...)
	p0 = append(p0, batch(&e, 0, 3, fidelityMessages())...) // a 70 KB value: a copy of its own
	p0 = append(p0, batch(&gz, 0, 8, small(0, 8, 4))...)
	p1 = append(p1, batch(&e, 1, 0, small(1, 0, 5))...)
	p1 = append(p1, batch(&e, 1, 5, small(1, 5, 2))...)
	body := fetchBody("t", map[int32][]byte{0: p0, 1: p1})

	parts := []fetchPart{{p: &partFetch{topic: "t", partition: 0}}, {p: &partFetch{topic: "t", partition: 1}}}
	out, err := parseFetch(body, parts, false)
	if err != nil {
		t.Fatal(err)
	}
	r := &fetchResult{}
	for i := range out {
		for _, v := range out[i].views {
			if overlaps(v.records, body) {
				t.Fatalf("partition %d: a batch's records alias the response", i)
			}
		}
		r.parts = append(r.parts, resultPart{topic: "t", partition: int32(i), views: out[i].views})
		r.left += out[i].nrecords
	}
	for i := range body {
		body[i] = 0xAA // the frame recycled: the next response read into it
	}
	got, err := r.decode(nil, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want[0])+len(want[1]) {
		t.Fatalf("%d records, want %d", len(got), len(want[0])+len(want[1]))
	}
	k := [2]int{}
	for i := range got {
		m := &got[i]
		w := &want[m.Partition][k[m.Partition]]
		if int64(k[m.Partition]) != m.Offset {
			t.Fatalf("record %d: partition %d offset %d, want %d", i, m.Partition, m.Offset, k[m.Partition])
		}
		k[m.Partition]++
		if err := sameMessage(m, w); err != nil {
			t.Fatalf("record %d (partition %d offset %d): %v", i, m.Partition, m.Offset, err)
		}
	}
}

// TestRecArena: copies are equal to their source, never share memory with
// it or with each other, and have no room to grow into a neighbour.
func TestRecArena(t *testing.T) {
	var a recArena
	src := bytes.Repeat([]byte("0123456789"), 10_000)
	var copies [][]byte
	var from [][]byte
	for _, n := range []int{0, 1, 100, 5000, recArenaChunk/2 - 1, recArenaChunk / 2, 70_000, 3, 30_000, 30_000} {
		s := src[:n]
		c := a.copy(s)
		if !bytes.Equal(c, s) || cap(c) != len(c) {
			t.Fatalf("copy of %d bytes: len %d cap %d, equal %v", n, len(c), cap(c), bytes.Equal(c, s))
		}
		if overlaps(c, src) {
			t.Fatalf("copy of %d bytes aliases its source", n)
		}
		for j, o := range copies {
			if overlaps(c, o) {
				t.Fatalf("copy of %d bytes overlaps copy of %d bytes", n, len(from[j]))
			}
		}
		copies, from = append(copies, c), append(from, s)
	}
}

// TestFramePool: a frame given back serves a later response that fits
// it, never one larger; the pool keeps at most its size, the larger
// frames, and no frame above framePoolMaxBuf.
func TestFramePool(t *testing.T) {
	p := framePool{max: 2}
	b := p.get(1000)
	if len(b) != 1000 || cap(b) < 1000 {
		t.Fatalf("get(1000): len %d cap %d", len(b), cap(b))
	}
	p.put(b)
	if c := p.get(cap(b) + 1); unsafe.SliceData(c) == unsafe.SliceData(b) || len(c) != cap(b)+1 {
		t.Fatal("a frame served a response larger than its capacity")
	}
	if c := p.get(500); unsafe.SliceData(c) != unsafe.SliceData(b) || len(c) != 500 {
		t.Fatal("a frame given back was not reused")
	}
	if len(p.free) != 0 {
		t.Fatalf("%d frames free after taking the only one", len(p.free))
	}
	small, mid, large := make([]byte, 10), make([]byte, 100), make([]byte, 1000)
	p.put(small)
	p.put(large)
	p.put(mid) // full: replaces the smallest
	if len(p.free) != 2 {
		t.Fatalf("%d frames kept, want 2", len(p.free))
	}
	for _, f := range p.free {
		if unsafe.SliceData(f) == unsafe.SliceData(small) {
			t.Fatal("the pool kept its smallest frame over a larger one")
		}
	}
	p.free = nil
	p.put(make([]byte, framePoolMaxBuf+1))
	if len(p.free) != 0 {
		t.Fatal("the pool kept a frame above framePoolMaxBuf")
	}
}
