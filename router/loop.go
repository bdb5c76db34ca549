package router

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

// The pipelined loop (docs/router.md, "The loop"). Three kinds of
// goroutine share the work:
//
//   - the fetch stage (Run's goroutine) polls a batch, takes the ruleset and
//     the pin view once for it, decides it, registers its events with the
//     tracker, splits them by destination cluster and hands each cluster's
//     events (a chunk) to that cluster's sender;
//   - one sender per destination cluster builds its chunks' records and
//     produces them, in order, through the cluster's AsyncProducer, and
//     resends what failed;
//   - the committer appends the leaves of what settled to the Ledger and
//     commits the contiguous acknowledged prefix of every partition.
//
// The window bounds the events and bytes between poll and settlement (an
// event leaves it once it and every earlier event of its partition are
// acknowledged); the settled events wait for their commit as their encoded
// leaf alone, under a bound of their own.

// fetched is one polled batch on its way through the loop.
type fetched struct {
	msgs  []stream.Message
	batch *Batch
	out   []outcome    // per event
	parts []*partState // per event: its partition's tracker state
}

// outcome is where one event of a fetched batch went.
type outcome struct {
	cluster, topic string
	partition      int32
	offset         int64
	done           bool   // acknowledged at its destination
	bad            bool   // its leaf could not be encoded: never settles
	leaf           []byte // its encoded leaf (with a Ledger), until it settles
}

// notifier lets goroutines wait for "something changed".
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed at the next broadcast.
func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) broadcast() {
	n.mu.Lock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.mu.Unlock()
}

// poke wakes the goroutine waiting on ch, without blocking.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// window bounds the events, and their bytes, between poll and settlement
// (events, bytes), and the settled events not yet committed (done) and
// their leaves' bytes (doneBytes).
type window struct {
	mu                    sync.Mutex
	events, bytes         int64
	maxEvents, maxByte    int64
	done, doneBytes       int64
	maxDone, maxDoneBytes int64
	changed               notifier
}

// Why the window has no room (window.room, the reason label of
// residency_router_window_full_seconds_total).
const (
	fullInflight    = "inflight"    // events or bytes between poll and settlement
	fullUncommitted = "uncommitted" // settled events (or leaf bytes) awaiting their commit
)

// room returns how many events the fetch stage may poll now; when none,
// it says which bound is reached (fullInflight or fullUncommitted).
func (w *window) room() (int64, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.events >= w.maxEvents || w.bytes >= w.maxByte {
		return 0, fullInflight
	}
	if w.done >= w.maxDone || w.doneBytes >= w.maxDoneBytes {
		return 0, fullUncommitted
	}
	return w.maxEvents - w.events, ""
}

func (w *window) add(events, bytes int64) {
	w.mu.Lock()
	w.events += events
	w.bytes += bytes
	w.mu.Unlock()
}

// release frees the room of events that leave without settling (those of
// a revoked partition).
func (w *window) release(events, bytes int64) {
	if events == 0 && bytes == 0 {
		return
	}
	w.mu.Lock()
	w.events -= events
	w.bytes -= bytes
	w.mu.Unlock()
	w.changed.broadcast()
}

// settle moves events (of bytes) from the window to the settled backlog,
// with their leaves' bytes; it reports whether the backlog passed half its
// bound (time to commit).
func (w *window) settle(events, bytes, leafBytes int64) (commit bool) {
	if events == 0 {
		return false
	}
	w.mu.Lock()
	w.events -= events
	w.bytes -= bytes
	w.done += events
	w.doneBytes += leafBytes
	commit = 2*w.done >= w.maxDone || 2*w.doneBytes >= w.maxDoneBytes
	w.mu.Unlock()
	w.changed.broadcast()
	return commit
}

// committed frees the backlog room of committed events and leaf bytes.
func (w *window) committed(events, leafBytes int64) {
	if events == 0 && leafBytes == 0 {
		return
	}
	w.mu.Lock()
	w.done -= events
	w.doneBytes -= leafBytes
	w.mu.Unlock()
	w.changed.broadcast()
}

// partState is the tracker's state of one source partition: its events in
// offset order, from the oldest not yet settled.
type partState struct {
	tp       Partition
	q        []trackEntry
	head     int
	detached bool // revoked: its acks no longer count
}

type trackEntry struct {
	fb *fetched
	i  int32
}

func (ps *partState) pending() int { return len(ps.q) - ps.head }

// tracker is the commit tracker: per source partition, an event settles
// when it and every earlier event of its partition are acknowledged; it
// then leaves the window, and the tracker keeps only its encoded leaf
// (with a Ledger) and its partition's offset until the committer takes
// them. The committer appends and commits what settled, strictly in
// offset order.
type tracker struct {
	mu       sync.Mutex
	win      *window
	wake     chan struct{} // the committer's: poked when the backlog passes half its bound
	parts    map[Partition]*partState
	leaves   [][]byte          // of the settled events, in settlement order
	rulesets []*rules.Ruleset  // every ruleset of leaves, in order of first appearance
	done     int64             // settled events not taken
	leafSize int64             // bytes of leaves
	perPart  map[Partition]int // settled events not taken, per partition
	offsets  map[Partition]int64
	changed  notifier
}

// commitBatch is what the committer takes from the tracker: the leaves of
// the settled events and the offsets to commit after them.
type commitBatch struct {
	leaves   [][]byte
	rulesets []*rules.Ruleset
	events   int64
	leafSize int64
	perPart  map[Partition]int
	offsets  []Offset
	recorded bool // the leaves are durable (Ledger.Append returned nil)
}

func newTracker(win *window, wake chan struct{}) *tracker {
	return &tracker{win: win, wake: wake, parts: map[Partition]*partState{}, offsets: map[Partition]int64{},
		perPart: map[Partition]int{}}
}

// add registers the events of fb, in order, before they are produced.
func (t *tracker) add(fb *fetched) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var last *partState
	for i := range fb.msgs {
		m := &fb.msgs[i]
		ps := last
		if ps == nil || ps.tp.Partition != m.Partition || ps.tp.Topic != m.Topic {
			tp := Partition{m.Topic, m.Partition}
			ps = t.parts[tp]
			if ps == nil {
				ps = &partState{tp: tp}
				t.parts[tp] = ps
			}
			last = ps
		}
		ps.q = append(ps.q, trackEntry{fb, int32(i)})
		fb.parts[i] = ps
	}
}

// acks is one produce result for events of a fetched batch, as the
// sender hands it to the tracker: per event (idx), whether it was
// acknowledged (ok), where (parts, offsets), its encoded leaf (leaves,
// with a Ledger) or whether its leaf could not be encoded (bad, nil when
// none).
type acks struct {
	idx     []int32
	ok      []bool
	parts   []int32
	offsets []int64
	leaves  [][]byte
	bad     []bool
}

// ack records the acknowledged events of a, settles what it can and frees
// its room in the window.
func (t *tracker) ack(fb *fetched, a *acks) {
	t.mu.Lock()
	var touched [4]*partState
	more := touched[:0]
	var freeEvents, freeBytes int64
	for k, i := range a.idx {
		if !a.ok[k] {
			continue
		}
		o := &fb.out[i]
		o.done = true
		o.partition, o.offset = a.parts[k], a.offsets[k]
		if a.leaves != nil {
			o.leaf = a.leaves[k]
		}
		if a.bad != nil && a.bad[k] {
			o.bad = true
		}
		ps := fb.parts[i]
		if ps.detached {
			freeEvents++
			freeBytes += int64(recordBytes(&fb.msgs[i]))
			o.leaf = nil
			continue
		}
		seen := false
		for _, p := range more {
			if p == ps {
				seen = true
				break
			}
		}
		if !seen {
			more = append(more, ps)
		}
	}
	var n, bytes, leafBytes int64
	for _, ps := range more {
		dn, db, dl := t.advance(ps)
		n, bytes, leafBytes = n+dn, bytes+db, leafBytes+dl
	}
	t.mu.Unlock()
	t.win.release(freeEvents, freeBytes)
	if t.win.settle(n, bytes, leafBytes) {
		poke(t.wake)
	}
	t.changed.broadcast()
}

// advance moves the acknowledged prefix of ps to the settled backlog: its
// leaves and its offset, nothing that points into its fetch response. It
// returns the events settled, their bytes and their leaves' bytes. An
// event whose leaf could not be encoded stops it.
func (t *tracker) advance(ps *partState) (n, bytes, leafBytes int64) {
	for ps.head < len(ps.q) {
		e := ps.q[ps.head]
		o := &e.fb.out[e.i]
		if !o.done || o.bad {
			break
		}
		msg := &e.fb.msgs[e.i]
		if o.leaf != nil {
			t.leaves = append(t.leaves, o.leaf)
			leafBytes += int64(len(o.leaf))
			o.leaf = nil
			if rs := e.fb.batch.Ruleset; rs != nil && (len(t.rulesets) == 0 || t.rulesets[len(t.rulesets)-1] != rs) &&
				!slices.Contains(t.rulesets, rs) {
				t.rulesets = append(t.rulesets, rs)
			}
		}
		n++
		bytes += int64(recordBytes(msg))
		t.offsets[ps.tp] = msg.Offset + 1
		ps.q[ps.head] = trackEntry{}
		ps.head++
	}
	if n > 0 {
		t.perPart[ps.tp] += int(n)
		t.done += n
		t.leafSize += leafBytes
	}
	if ps.head == len(ps.q) {
		ps.q, ps.head = ps.q[:0], 0
	} else if ps.head > 1024 && ps.head > len(ps.q)/2 {
		n := copy(ps.q, ps.q[ps.head:])
		clear(ps.q[n:])
		ps.q, ps.head = ps.q[:n], 0
	}
	return n, bytes, leafBytes
}

// take hands the settled backlog and the offsets to commit to the
// committer, and forgets them.
func (t *tracker) take() *commitBatch {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := &commitBatch{leaves: t.leaves, rulesets: t.rulesets, events: t.done, leafSize: t.leafSize, perPart: t.perPart}
	t.leaves, t.rulesets, t.done, t.leafSize = nil, nil, 0, 0
	t.perPart = map[Partition]int{}
	for tp, next := range t.offsets {
		b.offsets = append(b.offsets, Offset{Topic: tp.Topic, Partition: tp.Partition, Next: next})
	}
	clear(t.offsets)
	return b
}

// putBack returns what take handed out and could not be committed. Leaves
// already appended (b.recorded) are not kept: only their offsets wait for
// the next commit, and their bytes leave the backlog.
func (t *tracker) putBack(b *commitBatch) {
	t.mu.Lock()
	if !b.recorded {
		t.leaves = append(b.leaves, t.leaves...)
		for _, rs := range t.rulesets {
			if !slices.Contains(b.rulesets, rs) {
				b.rulesets = append(b.rulesets, rs)
			}
		}
		t.rulesets = b.rulesets
		t.leafSize += b.leafSize
	}
	t.done += b.events
	for tp, n := range b.perPart {
		t.perPart[tp] += n
	}
	for _, o := range b.offsets {
		tp := Partition{o.Topic, o.Partition}
		if _, attached := t.parts[tp]; !attached {
			continue
		}
		if cur, ok := t.offsets[tp]; !ok || o.Next > cur {
			t.offsets[tp] = o.Next
		}
	}
	t.mu.Unlock()
	if b.recorded {
		t.win.committed(0, b.leafSize)
		b.leaves, b.leafSize = nil, 0
	}
}

// pending returns how many events of parts (all partitions when nil) are
// not settled yet, and how many are settled and not yet taken.
func (t *tracker) pending(parts []Partition) (unacked, settled int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if parts == nil {
		for _, ps := range t.parts {
			unacked += ps.pending()
		}
	} else {
		for _, tp := range parts {
			if ps := t.parts[tp]; ps != nil {
				unacked += ps.pending()
			}
		}
	}
	return unacked, int(t.done)
}

// left returns the events not settled, per partition.
func (t *tracker) left() map[Partition]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[Partition]int{}
	for tp, ps := range t.parts {
		if n := ps.pending(); n > 0 {
			out[tp] = n
		}
	}
	return out
}

// detach forgets parts: their events still in flight release their share
// of the window when acknowledged, and are never committed by this member.
func (t *tracker) detach(parts []Partition) {
	t.mu.Lock()
	var freeEvents, freeBytes int64
	for _, tp := range parts {
		ps := t.parts[tp]
		if ps == nil {
			continue
		}
		ps.detached = true
		delete(t.parts, tp)
		delete(t.offsets, tp)
		for _, e := range ps.q[ps.head:] {
			e.fb.out[e.i].leaf = nil
		}
		// Events already acknowledged but behind an unacknowledged one are
		// released now; the others when their ack comes.
		for _, e := range ps.q[ps.head:] {
			if e.fb.out[e.i].done {
				freeEvents++
				freeBytes += int64(recordBytes(&e.fb.msgs[e.i]))
			}
		}
	}
	t.mu.Unlock()
	t.win.release(freeEvents, freeBytes)
}

// sleepUntil waits until d passes, ch fires or ctx ends.
func sleepUntil(ctx context.Context, d time.Duration, ch <-chan struct{}) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-ch:
	case <-t.C:
	}
}
