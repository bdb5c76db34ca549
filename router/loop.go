package router

import (
	"context"
	"sync"
	"time"

	"github.com/residency-router/residency/stream"
)

// The pipelined loop (docs/router.md, "The loop"). Three kinds of
// goroutine share the work:
//
//   - the fetch stage (Run's goroutine) polls a batch, takes the ruleset and
//     the pin view once for it, decides it, registers its events with the
//     tracker, splits them by destination cluster and hands each cluster's
//     records (a chunk) to that cluster's sender;
//   - one sender per destination cluster produces its chunks, in order,
//     through the cluster's AsyncProducer, and resends what failed;
//   - the committer records what settled in the Ledger and commits the
//     contiguous acknowledged prefix of every partition.
//
// The window bounds the events and bytes between poll and commit.

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
	done           bool // acknowledged at its destination
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

// window bounds the events, and their bytes, between poll and commit.
type window struct {
	mu                 sync.Mutex
	events, bytes      int64
	maxEvents, maxByte int64
	changed            notifier
}

// room returns how many events the fetch stage may poll now (0: full).
func (w *window) room() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.events >= w.maxEvents || w.bytes >= w.maxByte {
		return 0
	}
	return w.maxEvents - w.events
}

func (w *window) add(events, bytes int64) {
	w.mu.Lock()
	w.events += events
	w.bytes += bytes
	w.mu.Unlock()
}

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
// when it and every earlier event of its partition are acknowledged; the
// committer records and commits what settled, strictly in offset order.
type tracker struct {
	mu      sync.Mutex
	win     *window
	parts   map[Partition]*partState
	settled []Settled
	bytes   int64 // of settled
	offsets map[Partition]int64
	changed notifier
}

func newTracker(win *window) *tracker {
	return &tracker{win: win, parts: map[Partition]*partState{}, offsets: map[Partition]int64{}}
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

// ack records that the events idx of fb were acknowledged at the given
// partitions and offsets, and settles what it can.
func (t *tracker) ack(fb *fetched, idx []int32, ok []bool, parts []int32, offsets []int64) {
	t.mu.Lock()
	var touched [4]*partState
	more := touched[:0]
	var freeEvents, freeBytes int64
	for k, i := range idx {
		if !ok[k] {
			continue
		}
		o := &fb.out[i]
		o.done = true
		o.partition, o.offset = parts[k], offsets[k]
		ps := fb.parts[i]
		if ps.detached {
			freeEvents++
			freeBytes += int64(recordBytes(&fb.msgs[i]))
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
	for _, ps := range more {
		t.advance(ps)
	}
	t.mu.Unlock()
	t.win.release(freeEvents, freeBytes)
	t.changed.broadcast()
}

// advance moves the acknowledged prefix of ps to the settled list.
func (t *tracker) advance(ps *partState) {
	for ps.head < len(ps.q) {
		e := ps.q[ps.head]
		o := &e.fb.out[e.i]
		if !o.done {
			break
		}
		ev := &e.fb.batch.Events[e.i]
		t.settled = append(t.settled, Settled{Event: ev, Ruleset: e.fb.batch.Ruleset, Cluster: o.cluster, Topic: o.topic,
			Partition: o.partition, Offset: o.offset})
		t.bytes += int64(recordBytes(ev.Msg))
		t.offsets[ps.tp] = ev.Msg.Offset + 1
		ps.q[ps.head] = trackEntry{}
		ps.head++
	}
	if ps.head == len(ps.q) {
		ps.q, ps.head = ps.q[:0], 0
	} else if ps.head > 1024 && ps.head > len(ps.q)/2 {
		n := copy(ps.q, ps.q[ps.head:])
		clear(ps.q[n:])
		ps.q, ps.head = ps.q[:n], 0
	}
}

// take hands the settled events and the offsets to commit to the
// committer, and forgets them.
func (t *tracker) take() (settled []Settled, offsets []Offset, bytes int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	settled, bytes = t.settled, t.bytes
	t.settled, t.bytes = nil, 0
	for tp, next := range t.offsets {
		offsets = append(offsets, Offset{Topic: tp.Topic, Partition: tp.Partition, Next: next})
	}
	clear(t.offsets)
	return settled, offsets, bytes
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
	return unacked, len(t.settled)
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
