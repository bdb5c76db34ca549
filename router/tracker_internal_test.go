package router

import (
	"fmt"
	"testing"

	"github.com/residency-router/residency/stream"
)

// trackerBatch returns a fetched batch of n events of partition 0 of
// "in", from offset from, registered with t.
func trackerBatch(t *tracker, from, n int) *fetched {
	fb := &fetched{msgs: make([]stream.Message, n), batch: &Batch{}, out: make([]outcome, n), parts: make([]*partState, n)}
	for i := range fb.msgs {
		fb.msgs[i] = stream.Message{Topic: "in", Partition: 0, Offset: int64(from + i), Value: []byte("v")}
	}
	t.add(fb)
	return fb
}

// trackerAcks acknowledges events idx of fb with leaves encoded, as the
// sender does, one after the other in buf; it returns the acks and buf.
func trackerAcks(fb *fetched, buf []byte, idx ...int32) (*acks, []byte) {
	a := &acks{idx: idx, ok: make([]bool, len(idx)), parts: make([]int32, len(idx)), offsets: make([]int64, len(idx)),
		leaves: make([][]byte, len(idx))}
	buf = buf[:0]
	for k, i := range idx {
		a.ok[k] = true
		start := len(buf)
		buf = fmt.Appendf(buf, "leaf of offset %d", fb.msgs[i].Offset)
		a.leaves[k] = buf[start:len(buf):len(buf)]
	}
	return a, buf
}

// TestTrackerLeavesOutliveSenderBuffer: the tracker keeps no reference to
// the sender's leaf buffer once ack returns (the sender reuses it for its
// next produce result): leaves that settle at once and leaves that wait
// behind an event not acknowledged yet are intact when taken, after the
// buffer was overwritten; and an arena recycled after a recorded flush
// holds the next flush's leaves without disturbing them.
func TestTrackerLeavesOutliveSenderBuffer(t *testing.T) {
	win := &window{maxEvents: 1000, maxByte: 1 << 20, maxDone: 1000, maxDoneBytes: 1 << 20}
	tr := newTracker(win, make(chan struct{}, 1))
	fb := trackerBatch(tr, 0, 6)
	for i := range fb.msgs {
		win.add(1, int64(recordBytes(&fb.msgs[i])))
	}
	buf := make([]byte, 0, 4096) // the sender's one buffer
	overwrite := func() {
		b := buf[:cap(buf)]
		for i := range b {
			b[i] = 'X'
		}
	}
	// Events 3-5 first: they wait behind 0-2.
	a, b := trackerAcks(fb, buf, 3, 4, 5)
	tr.ack(fb, a)
	if &b[0] != &buf[:1][0] {
		t.Fatal("the test's leaves are not in its buffer")
	}
	overwrite()
	// Then 0-2: everything settles.
	a, _ = trackerAcks(fb, buf, 0, 1, 2)
	tr.ack(fb, a)
	overwrite()
	first := tr.take()
	if len(first.leaves) != 6 || first.events != 6 {
		t.Fatalf("took %d leaves, %d events; want 6, 6", len(first.leaves), first.events)
	}
	for i, lf := range first.leaves {
		if want := fmt.Sprintf("leaf of offset %d", i); string(lf) != want {
			t.Fatalf("leaf %d = %q after the sender's buffer was overwritten, want %q", i, lf, want)
		}
	}
	// The flush recorded them: the arena goes back to the tracker.
	first.recorded = true
	arena := first.arena
	if cap(arena) == 0 {
		t.Fatal("the batch has no arena")
	}
	tr.recycle(first)
	if first.leaves != nil || first.arena != nil {
		t.Fatal("recycle left the batch its leaves")
	}
	fb2 := trackerBatch(tr, 6, 2)
	for i := range fb2.msgs {
		win.add(1, int64(recordBytes(&fb2.msgs[i])))
	}
	// One event settles into the tracker's arena before the take, then
	// the take hands it on and the other settles into the recycled one.
	a, _ = trackerAcks(fb2, buf, 0)
	tr.ack(fb2, a)
	overwrite()
	second := tr.take()
	a, _ = trackerAcks(fb2, buf, 1)
	tr.ack(fb2, a)
	overwrite()
	third := tr.take()
	if len(second.leaves) != 1 || string(second.leaves[0]) != "leaf of offset 6" ||
		len(third.leaves) != 1 || string(third.leaves[0]) != "leaf of offset 7" {
		t.Fatalf("leaves %q then %q, want offsets 6 then 7", second.leaves, third.leaves)
	}
	if &third.arena[:1][0] != &arena[:1][0] {
		t.Error("the arena recycled after the first flush was not reused")
	}
	// A flush that failed before its leaves were durable puts them back:
	// its arena is not recycled, the leaves stay intact.
	tr.putBack(third)
	fb3 := trackerBatch(tr, 8, 1)
	win.add(1, int64(recordBytes(&fb3.msgs[0])))
	a, _ = trackerAcks(fb3, buf, 0)
	tr.ack(fb3, a)
	overwrite()
	fourth := tr.take()
	if got := fmt.Sprintf("%q", fourth.leaves); got != `["leaf of offset 7" "leaf of offset 8"]` {
		t.Fatalf("after a put back: leaves %s, want offsets 7 and 8", got)
	}
}
