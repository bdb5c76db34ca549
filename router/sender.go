package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/residency-router/residency/stream"
)

// chunk is one fetched batch's records for one destination cluster.
type chunk struct {
	fb   *fetched
	idx  []int32          // the events of fb, in batch order
	out  []stream.Message // their outgoing records, built when produced; nil again once a producer that copies them has them
	hdr  *headerBuilder   // owns out's headers while out is held
	kept bool             // a producer may still read out: never reuse hdr

	acked []bool  // per record
	left  int     // records not acknowledged
	recs  []int32 // the records of the current attempt (indices into out)
	state chunkState
	sent  time.Time // first produce attempt
}

type chunkState int8

const (
	chunkQueued chunkState = iota
	chunkInFlight
	chunkFailed
	chunkDone
)

type produceResult struct {
	c   *chunk
	ack ProduceAck
}

// sender produces one cluster's chunks in order through its AsyncProducer
// (docs/router.md, "One sender per cluster"): several chunks in flight;
// after a failed one, nothing new is produced until every chunk in flight
// is resolved, then what failed is produced again, oldest first, after a
// backoff. A Produce call that fails at once (a missing topic) is retried
// after a backoff, before anything behind it.
type sender struct {
	r       *Router
	cluster string
	prod    AsyncProducer
	copies  bool // prod keeps no reference to a call's records once Produce returns (RecordCopier)

	mu      sync.Mutex
	all     []*chunk // unresolved chunks, oldest first
	results []produceResult
	events  int  // records of all not yet acknowledged
	calls   int  // Produce calls not yet acknowledged
	single  bool // one chunk per call (a call of several failed at once)
	problem error
	wake    chan struct{}

	// Owned by run.
	attempt int
	retryAt time.Time
	ack     acks     // the last produce result read (acks): the tracker keeps no reference to it
	leaves  [][]byte // ack.leaves' backing array, kept while ack.leaves is nil (no Ledger)
	ends    []int    // scratch of acks: where each leaf ends in its range's buffer
	bad     []bool   // scratch of acks: the leaves the Ledger could not encode
	settled Settled  // scratch of acks: the event AppendLeaf borrows
}

// resize returns b with length n, reusing its array when it has room.
func resize[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n)
	}
	return b[:n]
}

func newSender(r *Router, cluster string, prod AsyncProducer) *sender {
	s := &sender{r: r, cluster: cluster, prod: prod, wake: make(chan struct{}, 1)}
	if rc, ok := prod.(RecordCopier); ok {
		s.copies = rc.CopiesRecords()
	}
	return s
}

// enqueue hands c, its records not built yet, to the sender.
func (s *sender) enqueue(c *chunk) {
	c.acked = make([]bool, len(c.idx))
	c.left = len(c.idx)
	c.recs = make([]int32, len(c.idx))
	for i := range c.recs {
		c.recs[i] = int32(i)
	}
	s.mu.Lock()
	s.all = append(s.all, c)
	s.events += len(c.idx)
	s.mu.Unlock()
	s.r.cfg.Metrics.setBacklog(s.cluster, s.backlog())
	poke(s.wake)
}

// backlog is the records handed to the sender and not yet acknowledged.
func (s *sender) backlog() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.events
}

// status says what keeps the cluster from taking records: a produce error
// (a missing topic), or its oldest record unacknowledged for longer than
// giveUp. nil when nothing does.
func (s *sender) status(now time.Time, giveUp time.Duration) error {
	s.mu.Lock()
	problem := s.problem
	var oldest time.Time
	for _, c := range s.all {
		if c.state != chunkDone {
			oldest = c.sent
			break
		}
	}
	s.mu.Unlock()
	if problem != nil {
		return problem
	}
	if oldest.IsZero() || now.Sub(oldest) <= giveUp {
		return nil
	}
	// Not under s.mu: a producer may call done (which takes s.mu) while
	// holding its own lock.
	// The text stays the same while the outage lasts: the state is logged
	// once per change.
	why := "records unacknowledged for longer than give_up (" + giveUp.String() + ")"
	if err := s.prod.Err(); err != nil {
		why += ": " + err.Error()
	}
	return errors.New(why)
}

// run produces until ctx ends.
func (s *sender) run(ctx context.Context) {
	var timer *time.Timer
	for {
		s.step(ctx)
		var tc <-chan time.Time
		if !s.retryAt.IsZero() {
			d := time.Until(s.retryAt)
			if d <= 0 {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			tc = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-tc:
		}
		if timer != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// step handles the results that came in, resolves chunks and produces
// what may be produced.
func (s *sender) step(ctx context.Context) {
	s.mu.Lock()
	results := s.results
	s.results = nil
	s.mu.Unlock()
	for _, res := range results {
		s.resolve(res.c, res.ack)
	}
	s.mu.Lock()
	// Drop the resolved chunks at the head.
	n := 0
	for n < len(s.all) && s.all[n].state == chunkDone {
		n++
	}
	if n > 0 {
		clear(s.all[:n])
		s.all = s.all[n:]
	}
	inflight, failed := 0, false
	for _, c := range s.all {
		switch c.state {
		case chunkInFlight:
			inflight++
		case chunkFailed:
			failed = true
		}
	}
	s.mu.Unlock()
	s.r.cfg.Metrics.setBacklog(s.cluster, s.backlog())
	if failed {
		if inflight > 0 {
			return // resend once everything in flight is resolved
		}
		if s.retryAt.IsZero() {
			s.attempt++
			s.retryAt = time.Now().Add(s.r.retry.Delay(s.attempt))
			s.r.cfg.Metrics.retry("publish")
			return
		}
		if time.Now().Before(s.retryAt) {
			return
		}
		s.mu.Lock()
		for _, c := range s.all {
			if c.state == chunkFailed {
				c.state = chunkQueued
				c.recs = c.recs[:0]
				for k, ok := range c.acked {
					if !ok {
						c.recs = append(c.recs, int32(k))
					}
				}
			}
		}
		s.mu.Unlock()
		s.retryAt = time.Time{}
	}
	if !s.retryAt.IsZero() && time.Now().Before(s.retryAt) {
		return
	}
	s.retryAt = time.Time{}
	for {
		s.mu.Lock()
		if len(s.results) > 0 {
			// A result came in (perhaps a failure): take it first, so that
			// nothing is produced behind a failed chunk before it is
			// produced again. Its done poked wake: step runs again.
			s.mu.Unlock()
			return
		}
		if s.calls >= maxProduceCalls {
			// The producer has enough to do: what is queued now goes in
			// one call when one of these is acknowledged (its done pokes
			// wake).
			s.mu.Unlock()
			return
		}
		var run []*chunk
		recs := 0
		for _, x := range s.all {
			if x.state == chunkQueued {
				if len(run) > 0 && (recs+len(x.recs) > maxCallRecords || s.single) {
					break
				}
				run = append(run, x)
				recs += len(x.recs)
				continue
			}
			if x.state == chunkFailed {
				break // a later queued chunk waits for the failed one
			}
		}
		s.mu.Unlock()
		if len(run) == 0 || ctx.Err() != nil {
			return
		}
		err := s.produce(ctx, run)
		if err != nil && len(run) > 1 && ctx.Err() == nil {
			// One chunk's topic may be missing: the chunks before it
			// must not wait for it. Produce one chunk per call until a
			// call succeeds.
			s.mu.Lock()
			s.single = true
			s.mu.Unlock()
			err = s.produce(ctx, run[:1])
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			if s.problem == nil || s.problem.Error() != err.Error() {
				s.problem = err
			}
			s.mu.Unlock()
			s.attempt++
			s.retryAt = time.Now().Add(s.r.retry.Delay(s.attempt))
			s.r.cfg.Metrics.retry("publish")
			s.r.assess()
			return
		}
	}
}

// A sender has at most maxProduceCalls Produce calls unacknowledged; the
// chunks that queue meanwhile go together in the next call, up to
// maxCallRecords records (a call holds whole chunks, so one chunk larger
// than that goes alone). The producer writes one record batch per
// partition and call, and keeps a few requests in flight per broker: one
// call per polled batch made many small batches (a 500-event batch spread
// over 40 partitions is about 12 records per partition and request) and
// the producer's in-flight requests, not the window, bounded the
// throughput (docs/performance.md, "Window released at acknowledgement").
const (
	maxProduceCalls = 4
	maxCallRecords  = 8192
)

// produce hands the current records of run (consecutive queued chunks) to
// the producer in one call, building the records of chunks that have
// none: at their first produce, and at a resend when a producer that
// copies them had them. Once such a producer has them, their memory is
// freed: headers exist only for the length of a call, not while a chunk
// waits in the queue or for its acknowledgement.
func (s *sender) produce(ctx context.Context, run []*chunk) error {
	for _, c := range run {
		if c.out == nil {
			s.r.build(c)
		}
	}
	var msgs []stream.Message
	if len(run) == 1 && len(run[0].recs) == len(run[0].out) {
		msgs = run[0].out
	} else {
		n := 0
		for _, c := range run {
			n += len(c.recs)
		}
		msgs = make([]stream.Message, 0, n)
		for _, c := range run {
			if len(c.recs) == len(c.out) {
				msgs = append(msgs, c.out...)
				continue
			}
			for _, i := range c.recs {
				msgs = append(msgs, c.out[i])
			}
		}
	}
	now := time.Now()
	s.mu.Lock()
	for _, c := range run {
		if c.sent.IsZero() {
			c.sent = now
		}
		c.state = chunkInFlight
	}
	s.calls++
	s.mu.Unlock()
	err := s.prod.Produce(ctx, msgs, func(a ProduceAck) {
		s.mu.Lock()
		s.calls--
		if len(run) == 1 {
			s.results = append(s.results, produceResult{run[0], a})
		} else {
			// Each chunk's share of the acknowledgement, in call order.
			from := 0
			for _, c := range run {
				to := from + len(c.recs)
				part := ProduceAck{Err: a.Err, Retained: a.Retained}
				if from <= len(a.Partitions) {
					part.Partitions = a.Partitions[from:min(to, len(a.Partitions))]
				}
				if from <= len(a.Offsets) {
					part.Offsets = a.Offsets[from:min(to, len(a.Offsets))]
				}
				s.results = append(s.results, produceResult{c, part})
				from = to
			}
		}
		s.mu.Unlock()
		poke(s.wake)
	})
	if err == nil {
		s.mu.Lock()
		s.problem = nil
		s.single = false
		s.mu.Unlock()
		if s.copies {
			// The producer has its own copy: only a resend needs the
			// records again (resolve runs on this goroutine, so none of
			// run is being resolved meanwhile).
			for _, c := range run {
				c.free()
			}
		}
		return nil
	}
	s.mu.Lock()
	s.calls--
	for _, c := range run {
		c.state = chunkQueued
	}
	s.mu.Unlock()
	var mt *MissingTopicError
	if errors.As(err, &mt) {
		return fmt.Errorf("topic %s missing on cluster %s", mt.Topic, s.cluster)
	}
	return fmt.Errorf("cluster %s: %w", s.cluster, err)
}

// resolve takes a produce result for c: what was acknowledged goes to the
// tracker; c is done, or failed (what was not acknowledged is produced
// again).
func (s *sender) resolve(c *chunk, ack ProduceAck) {
	if ack.Retained {
		c.kept = true
	}
	a := s.acks(c, ack)
	acked := 0
	for _, ok := range a.ok {
		if ok {
			acked++
		}
	}
	if acked > 0 {
		s.r.observe(c.fb, a.idx, a.ok)
	}
	s.r.trk.ack(c.fb, a)
	c.left -= acked
	s.mu.Lock()
	s.events -= acked
	if c.left == 0 {
		c.state = chunkDone
	} else {
		c.state = chunkFailed
	}
	s.mu.Unlock()
	if c.left == 0 {
		s.attempt = 0
		c.free()
	} else if ack.Err != nil {
		s.r.log.Warn("router: produce failed; producing again", "cluster", s.cluster, "records", c.left, "error", ack.Err)
	}
}

// acks reads a produce result for c's current records: which events were
// acknowledged, where, and (with a Ledger) their encoded leaves, built here
// on the sender's goroutine (each sender builds its own cluster's). The
// result is the sender's own, valid until its next call (the tracker keeps
// the leaves, not the result's slices).
func (s *sender) acks(c *chunk, ack ProduceAck) *acks {
	n := len(c.recs)
	a := &s.ack
	a.idx, a.ok, a.parts, a.offsets = resize(a.idx, n), resize(a.ok, n), resize(a.parts, n), resize(a.offsets, n)
	clear(a.ok)
	clear(a.parts)
	a.leaves, a.bad = nil, nil
	for k, i := range c.recs {
		a.idx[k] = c.idx[i]
		a.offsets[k] = -1
		if ack.Err == nil || (k < len(ack.Offsets) && ack.Offsets[k] >= 0) {
			a.ok[k] = true
			c.acked[i] = true
			if k < len(ack.Partitions) {
				a.parts[k] = ack.Partitions[k]
			}
			if k < len(ack.Offsets) {
				a.offsets[k] = ack.Offsets[k]
			}
		}
	}
	led := s.r.cfg.Ledger
	if led == nil {
		return a
	}
	a.leaves, s.ends, s.bad = resize(s.leaves, n), resize(s.ends, n), resize(s.bad, n)
	clear(a.leaves)
	clear(s.bad)
	s.leaves = a.leaves
	now := time.Now() // one clock reading for the result, not one per leaf
	var bad atomic.Bool
	fanOut(n, workers(), minFanOut, func(lo, hi int) {
		st := &s.settled // the caller's range: no allocation
		if lo > 0 {
			st = new(Settled)
		}
		if !s.encodeLeaves(led, c.fb, a, lo, hi, now, st) {
			bad.Store(true)
		}
	})
	if bad.Load() {
		a.bad = s.bad
	}
	return a
}

// encodeLeaves encodes the leaves of a's acknowledged events lo to hi-1
// (of a result for a chunk of fb) into a new buffer of their own and sets
// a.leaves[k] to each, and s.bad[k] for a leaf the Ledger could not
// encode (false returned when there is one). Concurrent calls for
// disjoint ranges are safe (acks spreads a result over fanOut); st is
// the call's own scratch.
func (s *sender) encodeLeaves(led Ledger, fb *fetched, a *acks, lo, hi int, now time.Time, st *Settled) bool {
	ends := s.ends[lo:hi]
	buf := make([]byte, 0, 320*(hi-lo)) // a route leaf with its subject: 250-300 bytes
	good := true
	for k := lo; k < hi; k++ {
		ends[k-lo] = len(buf)
		if !a.ok[k] {
			continue
		}
		i := a.idx[k]
		o := &fb.out[i]
		*st = Settled{Event: &fb.batch.Events[i], Ruleset: fb.batch.Ruleset, Cluster: o.cluster, Topic: o.topic,
			Partition: a.parts[k], Offset: a.offsets[k], At: now}
		b, err := led.AppendLeaf(buf, st)
		if err == nil && len(b) == len(buf) {
			err = errors.New("the ledger encoded an empty leaf")
		}
		if err != nil {
			s.bad[k], good = true, false
			m := st.Event.Msg
			s.r.log.Error("router: the audit leaf of an event cannot be encoded; its partition is not committed past it",
				"topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "error", err)
			s.r.setProblem("leaf", fmt.Sprintf("audit leaf of %s[%d]@%d: %v", m.Topic, m.Partition, m.Offset, err))
			continue
		}
		buf = b
		ends[k-lo] = len(buf)
	}
	from := 0
	for k, e := range ends {
		if e > from {
			a.leaves[lo+k] = buf[from:e:e]
		}
		from = e
	}
	*st = Settled{}
	return good
}

// free drops c's outgoing records, returning their header builder to
// headerPool unless a producer may still read them (kept). No producer may
// refer to them any more.
func (c *chunk) free() {
	if !c.kept && c.hdr != nil {
		c.hdr.release()
		headerPool.Put(c.hdr)
	}
	c.hdr, c.out = nil, nil
}

// headerPool holds the header builders of chunks acknowledged in full, or
// handed to a producer that copies their records: each chunk holding
// records owns one, so a builder's memory is reused only once no producer
// refers to it (the AsyncProducer memory contract).
var headerPool = sync.Pool{New: func() any { return new(headerBuilder) }}
