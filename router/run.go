package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

// Router consumes the ingest topics and routes every event. Create it with
// New and run it with Run.
type Router struct {
	cfg   Config
	log   *slog.Logger
	retry stream.Retry
	pipe  *Pipeline // decides every batch and builds its records
	cons  BatchConsumer
	pins  PinSource    // nil: pins looked up per batch (or none)
	phase atomic.Int32 // phaseNotStarted, phaseRunning, then phaseStopped: a Router runs once

	senders  map[string]*sender
	clusters []string // of senders, sorted
	win      *window
	trk      *tracker
	flushSem chan struct{} // one flush at a time; acquired with a ctx
	wakeCmt  chan struct{}
	state    atomic.Pointer[readiness]
	stateMu  sync.Mutex // serialises assess's logging and metrics
	lastText string

	probMu    sync.Mutex
	problems  map[string]string // set by the stages: "poll", "commit", "leaf", "ledger", "decide"
	missing   map[string]string // preflight: cluster/topic -> problem
	checkedAt time.Time
	checked   string // digest of the ruleset last checked

	lagMu sync.Mutex
	lags  map[topicPartition]lagEntry
}

type topicPartition struct {
	topic     string
	partition int
}

// New checks cfg, fills in defaults and returns a router.
func New(cfg Config) (*Router, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	r := &Router{cfg: cfg, log: cfg.Logger, lags: map[topicPartition]lagEntry{}, senders: map[string]*sender{},
		wakeCmt: make(chan struct{}, 1), flushSem: make(chan struct{}, 1), problems: map[string]string{}, missing: map[string]string{}}
	r.retry = stream.Retry{Min: cfg.RetryMin, Max: cfg.RetryMax, GiveUp: cfg.GiveUp, GaveUp: ErrGaveUp, Component: "router",
		Logger: r.log, OnRetry: cfg.Metrics.retry}
	// The pipeline's publishers only answer "is there a connection to this
	// cluster?" (Destinations): the loop produces through the senders.
	pubs := map[string]stream.Publisher{}
	prods := map[string]AsyncProducer{}
	for name, p := range cfg.Producers {
		if p == nil {
			return nil, fmt.Errorf("%w: producer for cluster %q is nil", ErrConfig, name)
		}
		prods[name] = p
		pubs[name] = noPublisher{}
	}
	for name, p := range cfg.Publishers {
		if p == nil {
			return nil, fmt.Errorf("%w: publisher for cluster %q is nil", ErrConfig, name)
		}
		if _, ok := prods[name]; !ok {
			prods[name] = newPublisherProducer(p, stream.Retry{Min: cfg.RetryMin, Max: cfg.RetryMax, Component: "router",
				Logger: r.log, OnRetry: cfg.Metrics.retry})
			pubs[name] = p
		}
	}
	var err error
	if r.pipe, err = NewPipeline(PipelineConfig{Publishers: pubs, IngestCluster: cfg.IngestCluster,
		QuarantineTopic: cfg.QuarantineTopic, DeadLetterTopic: cfg.DeadLetterTopic, Reserved: cfg.IngestTopics,
		Fields: cfg.Fields, Pins: cfg.Pins, Instance: cfg.Instance, MaxValueBytes: cfg.MaxValueBytes, Retry: r.retry,
		Logger: r.log, Attester: cfg.Attester}); err != nil {
		return nil, err
	}
	if ps, ok := cfg.Pins.(PinSource); ok {
		r.pins = ps
	}
	r.cons = cfg.Consumer
	if r.cons == nil {
		r.cons = &subscriberConsumer{sub: cfg.Subscriber, linger: cfg.Linger, maxBytes: cfg.MaxBatchBytes}
	}
	for name, p := range prods {
		r.senders[name] = newSender(r, name, p)
		r.clusters = append(r.clusters, name)
	}
	sort.Strings(r.clusters)
	r.win = &window{maxEvents: int64(cfg.MaxInflightEvents), maxByte: int64(cfg.MaxInflightBytes),
		maxDone: int64(cfg.MaxUncommittedEvents), maxDoneBytes: int64(cfg.MaxUncommittedBytes)}
	r.trk = newTracker(r.win, r.wakeCmt)
	r.state.Store(&readiness{text: "not started"})
	r.lastText = "not started"
	return r, nil
}

// noPublisher stands for a cluster written through an AsyncProducer in the
// pipeline's map of clusters; the loop never calls it.
type noPublisher struct{}

func (noPublisher) Publish(context.Context, ...stream.Message) error {
	return errors.New("router: internal: no publisher")
}
func (noPublisher) Close() error { return nil }

// A Router's phases (Router.phase).
const (
	phaseNotStarted int32 = iota
	phaseRunning
	phaseStopped
)

// Run routes events until ctx is cancelled (docs/router.md, "The loop").
// Then it stops fetching, waits up to Config.ShutdownTimeout for the
// records in flight to be acknowledged, records and commits what settled,
// and returns nil, or an error wrapping ErrUncommitted (after logging, per
// partition, how many events stay uncommitted) when anything is left.
// Outages (the ruleset, the pins, a destination cluster, a missing topic,
// the ingest cluster, the ledger) never end Run: it reports not-ready,
// waits and resumes by itself. Offsets are never committed past an event
// that was not acknowledged at its destination. A Router runs once: Run
// while it runs, or after it returned, returns ErrRunning (make a new
// Router to route again).
func (r *Router) Run(ctx context.Context) error {
	if !r.phase.CompareAndSwap(phaseNotStarted, phaseRunning) {
		return ErrRunning // running, or ran: its senders, tracker and window were that run's
	}
	defer r.phase.Store(phaseStopped)
	// work is the context of the senders and the committer: it outlives
	// ctx by ShutdownTimeout so the records in flight can be finished.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.cfg.ShutdownTimeout, cancelWork)
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer stop()

	var wg sync.WaitGroup
	for _, s := range r.senders {
		wg.Go(func() { s.run(work) })
	}
	wg.Go(func() { r.commitLoop(work) })
	watchCtx, stopWatch := context.WithCancel(work)
	wg.Go(func() { r.watch(watchCtx) })

	held := r.fetchLoop(ctx, work)

	// Shutdown: wait for what is in flight, then record and commit.
	for work.Err() == nil {
		changed := r.trk.changed.wait()
		if n, _ := r.trk.pending(nil); n == 0 {
			break
		}
		sleepUntil(work, r.cfg.RulesPoll, changed)
	}
	stopWatch()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(r.cfg.ShutdownTimeout/2, time.Second))
	flushErr := r.flush(fctx)
	cancel()
	cancelWork()
	wg.Wait()
	left := r.trk.left()
	for tp, n := range r.trk.take().perPart { // what the last flush could not commit
		left[tp] += n
	}
	for i := range held {
		left[Partition{held[i].Topic, held[i].Partition}]++
	}
	r.setStopped()
	if len(left) == 0 {
		return nil
	}
	total := 0
	tps := make([]Partition, 0, len(left))
	for tp, n := range left {
		total += n
		tps = append(tps, tp)
	}
	sort.Slice(tps, func(i, j int) bool {
		return tps[i].Topic < tps[j].Topic || (tps[i].Topic == tps[j].Topic && tps[i].Partition < tps[j].Partition)
	})
	for _, tp := range tps {
		r.log.Error("router: stopping with events uncommitted; they will be read again", "topic", tp.Topic,
			"partition", tp.Partition, "events", left[tp])
	}
	err := fmt.Errorf("%w: %d events in %d partitions", ErrUncommitted, total, len(left))
	if flushErr != nil {
		err = fmt.Errorf("%w (last commit: %v)", err, flushErr)
	}
	return err
}

// fetchLoop is the fetch stage. It returns when ctx ends, with the batch
// it was holding unrouted, if any.
func (r *Router) fetchLoop(ctx, work context.Context) (held []stream.Message) {
	pollWait := max(r.cfg.RulesPoll, 100*time.Millisecond)
	pollFails := 0
	for ctx.Err() == nil {
		st := r.assess()
		if !st.fetch {
			sleepUntil(ctx, r.cfg.RulesPoll, nil)
			continue
		}
		changed := r.win.changed.wait()
		room, full := r.win.room()
		if room == 0 {
			poke(r.wakeCmt)
			t0 := time.Now()
			sleepUntil(ctx, r.cfg.RulesPoll, changed)
			r.cfg.Metrics.windowFull(full, time.Since(t0))
			continue
		}
		n := int(min(int64(r.cfg.BatchSize), room))
		pctx, cancel := context.WithTimeout(ctx, pollWait)
		msgs, err := r.cons.Poll(pctx, make([]stream.Message, 0, n), n)
		cancel()
		if err != nil && len(msgs) == 0 {
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				r.setProblem("poll", "")
				continue
			}
			pollFails++
			r.setProblem("poll", "ingest kafka: "+err.Error())
			sleepUntil(ctx, r.retry.Delay(pollFails), nil)
			continue
		}
		pollFails = 0
		r.setProblem("poll", "")
		if len(msgs) == 0 {
			continue
		}
		if !r.route(ctx, work, msgs) {
			return msgs
		}
	}
	return nil
}

// route decides one polled batch under the ruleset and pins in force now
// (waiting, not ready, while there are none) and hands it to the senders.
// It returns false when ctx ended first with no ruleset; a batch in hand
// is decided under work (shutdown lets it finish).
func (r *Router) route(ctx, work context.Context, msgs []stream.Message) bool {
	fails := 0
	for {
		rs, view, ok := r.routing()
		if !ok {
			r.assess()
			if !stream.Sleep(ctx, r.cfg.RulesPoll) {
				return false
			}
			continue
		}
		var b *Batch
		var err error
		if r.pins != nil {
			b, err = r.pipe.DecideView(work, msgs, rs, view)
		} else {
			b, err = r.pipe.Decide(work, msgs, rs)
		}
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			fails++
			r.setProblem("decide", "deciding: "+err.Error())
			r.assess()
			if !stream.Sleep(ctx, r.retry.Delay(fails)) {
				return false
			}
			continue
		}
		r.setProblem("decide", "")
		r.cfg.Metrics.setRuleset(rs.Version())
		r.dispatch(b)
		return true
	}
}

// routing returns the ruleset and pin view in force, or ok false.
func (r *Router) routing() (*rules.Ruleset, PinView, bool) {
	rs, err := r.cfg.Rules.Current()
	if err != nil || rs == nil {
		return nil, nil, false
	}
	if r.pins == nil {
		return rs, nil, true
	}
	view, err := r.pins.Pins()
	if err != nil || view == nil {
		return nil, nil, false
	}
	return rs, view, true
}

// dispatch registers a decided batch with the tracker and the window and
// hands each cluster's events to its sender, which builds their records
// when it produces them (build).
func (r *Router) dispatch(b *Batch) {
	fb := &fetched{msgs: b.msgs, batch: b, out: make([]outcome, len(b.Events)), parts: make([]*partState, len(b.Events))}
	var bytes int64
	type group struct {
		cluster string
		idx     []int32
	}
	var groups []group
	for i := range b.Events {
		ev := &b.Events[i]
		cluster, topic := r.pipe.Destination(&ev.Decision)
		fb.out[i] = outcome{cluster: cluster, topic: topic, offset: -1}
		bytes += int64(recordBytes(ev.Msg))
		k := -1
		for j := range groups {
			if groups[j].cluster == cluster {
				k = j
				break
			}
		}
		if k < 0 {
			groups = append(groups, group{cluster: cluster})
			k = len(groups) - 1
		}
		groups[k].idx = append(groups[k].idx, int32(i))
	}
	r.win.add(int64(len(b.Events)), bytes)
	r.trk.add(fb)
	for _, g := range groups {
		r.senders[g.cluster].enqueue(&chunk{fb: fb, idx: g.idx})
	}
}

// build builds the outgoing records of c's events, their headers in a
// builder of headerPool that c then owns. A sender calls it when it
// produces c, and again for a resend when it freed them meanwhile (a
// producer that copies them had them): the records are the same, the
// headers and the attestation depending only on the decided event. The
// attestation tags of a large chunk are made on several goroutines
// (fanOut): the Attester is called concurrently, by the senders of
// several clusters too.
func (r *Router) build(c *chunk) {
	b := c.fb.batch
	hdr := headerPool.Get().(*headerBuilder)
	hdr.tags = r.cfg.Attester != nil
	hdr.startBatch(b.msgs, b.Ruleset.VersionString(), b.Ruleset.ShortDigest(), r.cfg.Instance)
	var tags [][]byte
	if hdr.tags {
		tags = r.pipe.attestAll(b, c.idx, hdr, workers()) // on one goroutine for a small chunk
	}
	c.out = r.pipe.records(b, c.idx, hdr, tags, make([]stream.Message, 0, len(c.idx)))
	c.hdr = hdr
}

// Revoked is the consumer's hook before it gives up partitions (a
// rebalance, a lost session, Close): it waits, until ctx ends, for the
// events in flight of those partitions to be acknowledged, records and
// commits what settled, and forgets the partitions. What was not
// acknowledged by then is read again by the partitions' next owner
// (logged with its count).
func (r *Router) Revoked(ctx context.Context, parts []Partition) {
	if r.phase.Load() != phaseRunning || len(parts) == 0 {
		return
	}
	for ctx.Err() == nil {
		changed := r.trk.changed.wait()
		if n, _ := r.trk.pending(parts); n == 0 {
			break
		}
		sleepUntil(ctx, r.cfg.RulesPoll, changed)
	}
	if err := r.flush(ctx); err != nil {
		r.log.Warn("router: commit before giving up partitions failed", "error", err)
	}
	if n, _ := r.trk.pending(parts); n > 0 {
		r.log.Warn("router: giving up partitions with events in flight; their next owner reads them again", "events", n,
			"partitions", len(parts))
		r.cfg.Metrics.revokedInflight(n)
	}
	r.trk.detach(parts)
	// Their next owner reports their lag; if this router gets one back it
	// may read it again from an earlier offset.
	r.lagMu.Lock()
	for _, p := range parts {
		delete(r.lags, topicPartition{p.Topic, p.Partition})
	}
	r.lagMu.Unlock()
}

// commitLoop appends and commits what settled, every CommitInterval,
// whenever the settled backlog passes half its bound and whenever the
// fetch stage waits for room, until ctx ends.
func (r *Router) commitLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wakeCmt:
		}
		_ = r.flush(ctx)
	}
}

// flush appends the leaves of the settled events to the Ledger, then
// commits their offsets, each retried until it succeeds or ctx ends, and
// frees their room in the settled backlog. On failure what was taken is
// put back (without the leaves already appended).
func (r *Router) flush(ctx context.Context) error {
	// A flush under way (the committer retrying a failing commit) must not
	// hold a revoke past its deadline: wait for it only until ctx ends.
	select {
	case r.flushSem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("router: waiting for the commit under way: %w", ctx.Err())
	}
	defer func() { <-r.flushSem }()
	b := r.trk.take()
	if b.events == 0 && len(b.offsets) == 0 {
		return nil
	}
	forever := r.retry
	forever.GiveUp = 0
	if r.cfg.Ledger != nil && len(b.leaves) > 0 {
		err := forever.Do(ctx, "ledger", func(ctx context.Context) error {
			err := r.cfg.Ledger.Append(ctx, b.rulesets, b.leaves)
			if err != nil {
				r.setProblem("ledger", "audit ledger: "+err.Error())
				r.assess()
			}
			return err
		})
		if err != nil {
			r.trk.putBack(b)
			return err
		}
		b.recorded = true
		r.setProblem("ledger", "")
	}
	err := forever.Do(ctx, "commit", func(ctx context.Context) error {
		err := r.cons.Commit(ctx, b.offsets...)
		if errors.Is(err, ErrNotAssigned) {
			r.log.Info("router: offsets of partitions no longer held not committed; their next owner reads them again",
				"error", err)
			return nil
		}
		if err != nil {
			r.setProblem("commit", "ingest kafka: commit: "+err.Error())
			r.assess()
		}
		return err
	})
	if err != nil {
		r.trk.putBack(b)
		return err
	}
	r.setProblem("commit", "")
	r.cfg.Metrics.committed(int(b.events))
	r.publishLag()
	r.win.committed(b.events, b.leafSize)
	return nil
}

// observe updates the metrics for the events idx of fb that were
// acknowledged (ok) at their destination.
func (r *Router) observe(fb *fetched, idx []int32, ok []bool) {
	m := r.cfg.Metrics
	if m == nil {
		return
	}
	now := time.Now()
	// Count by label set, then add each count once: a labelled counter's
	// lookup (hashing its labels) per event cost more than the rest.
	var counts [8]outcomeCount
	n := 0
	r.lagMu.Lock()
	defer r.lagMu.Unlock()
	for k, i := range idx {
		if !ok[k] {
			continue
		}
		ev := &fb.batch.Events[i]
		d := &ev.Decision
		msg := ev.Msg
		c := outcomeCount{outcome: d.Outcome, a: d.Reason}
		if d.Outcome == Routed {
			c.a, c.b = d.Region, d.Jurisdiction
		}
		j := 0
		for j < n && (counts[j].outcome != c.outcome || counts[j].a != c.a || counts[j].b != c.b) {
			j++
		}
		switch {
		case j < n:
			counts[j].n++
		case n < len(counts):
			c.n = 1
			counts[n] = c
			n++
		default:
			c.n = 1
			c.add(m)
		}
		if !msg.Time.IsZero() {
			m.endToEnd.Observe(now.Sub(msg.Time).Seconds())
		}
		if hw := msg.HighWaterMark; hw > 0 {
			// The senders acknowledge a partition's events out of order
			// (one cluster's before another's): an earlier offset
			// acknowledged last must not raise the lag again.
			tp := topicPartition{msg.Topic, msg.Partition}
			e := r.lags[tp]
			e.offset, e.hw, e.at = max(e.offset, msg.Offset), max(e.hw, hw), now
			r.lags[tp] = e
		}
	}
	// The lag gauge first, then the counters: whoever sees an event
	// counted sees the lag gauge it left (TestDevStack scrapes once the
	// counters are complete, before any commit).
	r.publishLagLocked(now)
	for j := range n {
		counts[j].add(m)
	}
}

// outcomeCount is a count of acknowledged events of one label set.
type outcomeCount struct {
	outcome Outcome
	a, b    string // region and jurisdiction (routed), or reason
	n       int
}

// add adds c to its counter.
func (c *outcomeCount) add(m *Metrics) {
	switch c.outcome {
	case Routed:
		m.routed.WithLabelValues(c.a, c.b).Add(float64(c.n))
	case Quarantined:
		m.quarantined.WithLabelValues(c.a).Add(float64(c.n))
	case DeadLettered:
		m.deadLettered.WithLabelValues(c.a).Add(float64(c.n))
	}
}

// publishLag sets the lag gauges from what observe saw (at each
// acknowledgement, and at each commit, which expires the partitions no
// longer read).
func (r *Router) publishLag() {
	if r.cfg.Metrics == nil {
		return
	}
	r.lagMu.Lock()
	defer r.lagMu.Unlock()
	r.publishLagLocked(time.Now())
}

// publishLagLocked is publishLag with r.lagMu held.
func (r *Router) publishLagLocked(now time.Time) {
	for topic, l := range sumLags(r.lags, now, lagExpiry) {
		r.cfg.Metrics.lag.WithLabelValues(topic).Set(float64(l))
	}
}

// setProblem sets (or, with "", clears) what a stage reports.
func (r *Router) setProblem(stage, text string) {
	r.probMu.Lock()
	if text == "" {
		delete(r.problems, stage)
	} else {
		r.problems[stage] = text
	}
	r.probMu.Unlock()
}

// watch keeps the readiness current while the fetch stage waits, and
// checks the destinations of every new ruleset (the preflight).
func (r *Router) watch(ctx context.Context) {
	for {
		r.preflight(ctx)
		r.assess()
		if !stream.Sleep(ctx, r.cfg.RulesPoll) {
			return
		}
	}
}

// preflight checks that every topic the ruleset may write exists, with
// the producers that can say (TopicChecker): when the ruleset changes, and
// every second while one is missing.
func (r *Router) preflight(ctx context.Context) {
	rs, err := r.cfg.Rules.Current()
	if err != nil || rs == nil {
		return
	}
	r.probMu.Lock()
	due := rs.Digest() != r.checked || (len(r.missing) > 0 && time.Since(r.checkedAt) > time.Second)
	r.probMu.Unlock()
	if !due {
		return
	}
	topics := map[string][]string{r.cfg.IngestCluster: {r.cfg.QuarantineTopic, r.cfg.DeadLetterTopic}}
	for _, g := range rs.Regions {
		if r.pipe.Allows(g.Cluster, g.Topic) == nil && !slices.Contains(topics[g.Cluster], g.Topic) {
			topics[g.Cluster] = append(topics[g.Cluster], g.Topic)
		}
	}
	missing := map[string]string{}
	for cluster, ts := range topics {
		s := r.senders[cluster]
		tc, ok := s.prod.(TopicChecker)
		if !ok {
			continue
		}
		for _, t := range ts {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := tc.CheckTopics(cctx, []string{t})
			cancel()
			if errors.Is(err, ErrTopicMissing) {
				missing[cluster+"/"+t] = fmt.Sprintf("topic %s missing on cluster %s", t, cluster)
			} else if err != nil && ctx.Err() == nil {
				r.log.Debug("router: topic check failed", "cluster", cluster, "topic", t, "error", err)
			}
		}
	}
	r.probMu.Lock()
	r.missing, r.checked, r.checkedAt = missing, rs.Digest(), time.Now()
	r.probMu.Unlock()
}

// subscriberConsumer adapts a stream.Subscriber to BatchConsumer: the
// first record, then more for up to linger (or maxBytes).
type subscriberConsumer struct {
	sub      stream.Subscriber
	linger   time.Duration
	maxBytes int
}

func (s *subscriberConsumer) Poll(ctx context.Context, dst []stream.Message, max int) ([]stream.Message, error) {
	first, err := s.sub.Fetch(ctx)
	if err != nil {
		return dst, err
	}
	dst = append(dst, first)
	size := len(first.Key) + len(first.Value)
	lctx, cancel := context.WithTimeout(ctx, s.linger)
	defer cancel()
	for n := 1; n < max && size < s.maxBytes; n++ {
		m, err := s.sub.Fetch(lctx)
		if err != nil {
			if lctx.Err() != nil {
				break
			}
			return dst, err
		}
		dst = append(dst, m)
		size += len(m.Key) + len(m.Value)
	}
	return dst, nil
}

func (s *subscriberConsumer) Commit(ctx context.Context, offsets ...Offset) error {
	msgs := make([]stream.Message, len(offsets))
	for i, o := range offsets {
		msgs[i] = stream.Message{Topic: o.Topic, Partition: o.Partition, Offset: o.Next - 1}
	}
	return s.sub.Commit(ctx, msgs...)
}

func (s *subscriberConsumer) Joined() bool {
	if gm, ok := s.sub.(stream.GroupMember); ok {
		return gm.Joined()
	}
	return true
}

func (s *subscriberConsumer) Err() error { return nil }

// publisherProducer adapts a stream.Publisher to AsyncProducer: one
// goroutine publishes the calls in order, each retried until acknowledged
// or its ctx ends. That ctx is the sender's, which ends when Run does (its
// shutdown timeout past): a call not acknowledged by then fails, and a
// call queued behind it fails without a Publish, so nothing publishes
// after Run returned (the caller may close the Publisher then).
type publisherProducer struct {
	pub   stream.Publisher
	retry stream.Retry
	mu    sync.Mutex
	queue []pubJob
	busy  bool
	err   atomic.Pointer[string]
}

type pubJob struct {
	ctx  context.Context
	msgs []stream.Message
	done func(ProduceAck)
}

func newPublisherProducer(pub stream.Publisher, retry stream.Retry) *publisherProducer {
	return &publisherProducer{pub: pub, retry: retry}
}

func (p *publisherProducer) Produce(ctx context.Context, msgs []stream.Message, done func(ProduceAck)) error {
	p.mu.Lock()
	p.queue = append(p.queue, pubJob{ctx, msgs, done})
	start := !p.busy
	p.busy = true
	p.mu.Unlock()
	if start {
		go p.drain()
	}
	return nil
}

// drain publishes the queued calls in order until none is left.
func (p *publisherProducer) drain() {
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.busy = false
			p.mu.Unlock()
			return
		}
		j := p.queue[0]
		p.queue = p.queue[1:]
		p.mu.Unlock()
		failed := false
		err := j.ctx.Err() // the router stopped: publish nothing more
		if err == nil {
			err = p.retry.Do(j.ctx, "publish", func(ctx context.Context) error {
				err := p.pub.Publish(ctx, j.msgs...)
				if err != nil {
					failed = true
					why := err.Error()
					p.err.Store(&why)
				}
				return err
			})
		}
		if err == nil {
			p.err.Store(nil)
		}
		a := ProduceAck{Err: err, Retained: failed, Partitions: make([]int32, len(j.msgs)), Offsets: make([]int64, len(j.msgs))}
		for i := range a.Offsets {
			a.Offsets[i] = -1
		}
		if err != nil {
			a.Err = fmt.Errorf("publish: %w", err)
		}
		j.done(a)
	}
}

func (p *publisherProducer) Err() error {
	if why := p.err.Load(); why != nil {
		return errors.New(*why)
	}
	return nil
}

// The readiness of the router: one state, from which Ready (and /readyz),
// the residency_router_ready and residency_router_region_ready metrics and
// the log all derive.
type readiness struct {
	text       string          // "" when ready; else every problem, "; "-joined
	fetch      bool            // the fetch stage may poll
	regionDown map[string]bool // regions whose cluster is down or topic missing
}

// notReadyError is Ready's error: its text is the state alone (ops
// handlers prefix "not ready: "), and it matches ErrNotReady.
type notReadyError struct{ why string }

func (e *notReadyError) Error() string        { return e.why }
func (e *notReadyError) Is(target error) bool { return target == ErrNotReady }

// Ready returns nil when the router routes every region, or an error
// matching ErrNotReady whose text is the state: every problem, "; "-joined
// (no ruleset, ruleset stale, ruleset content changed, pins stale, not in
// the consumer group, ingest kafka unreachable, cluster X down, topic T
// missing on cluster X, ...).
func (r *Router) Ready() error {
	if st := r.state.Load(); st.text != "" {
		return &notReadyError{st.text}
	}
	return nil
}

func (r *Router) setStopped() {
	r.publish(&readiness{text: "stopped"})
}

// assess computes the readiness state from every source, stores it and
// derives the metrics and the log from it (once per change).
func (r *Router) assess() *readiness {
	if r.phase.Load() != phaseRunning {
		return r.state.Load()
	}
	st := &readiness{fetch: true, regionDown: map[string]bool{}}
	var problems []string
	rs, err := r.cfg.Rules.Current()
	switch {
	case err == nil && rs == nil:
		problems = append(problems, "no ruleset")
		st.fetch = false
	case errors.Is(err, rules.ErrNoRuleset):
		problems = append(problems, "no ruleset: "+err.Error())
		st.fetch = false
	case errors.Is(err, rules.ErrContentChanged):
		problems = append(problems, "ruleset content changed: "+err.Error())
		st.fetch = false
	case errors.Is(err, rules.ErrStale):
		problems = append(problems, "ruleset stale: "+err.Error())
		st.fetch = false
	case err != nil:
		problems = append(problems, "ruleset: "+err.Error())
		st.fetch = false
	}
	if r.pins != nil {
		if _, err := r.pins.Pins(); err != nil {
			if errors.Is(err, rules.ErrPinsStale) {
				problems = append(problems, "pins stale: "+err.Error())
			} else {
				problems = append(problems, "pins: "+err.Error())
			}
			st.fetch = false
		}
	}
	if !r.cons.Joined() {
		problems = append(problems, "not in the consumer group")
	}
	if err := r.cons.Err(); err != nil {
		problems = append(problems, "ingest kafka: "+strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	r.probMu.Lock()
	for _, k := range []string{"poll", "decide", "leaf", "ledger", "commit"} {
		if p := r.problems[k]; p != "" {
			problems = append(problems, p)
		}
	}
	missing := make(map[string]string, len(r.missing))
	for k, v := range r.missing {
		missing[k] = v
	}
	r.probMu.Unlock()
	down := map[string]bool{}
	now := time.Now()
	for _, name := range r.clusters {
		if err := r.senders[name].status(now, r.cfg.GiveUp); err != nil {
			down[name] = true
			if strings.Contains(err.Error(), "missing on cluster") {
				problems = append(problems, err.Error())
			} else {
				problems = append(problems, "cluster "+name+" down: "+err.Error())
			}
		}
	}
	keys := make([]string, 0, len(missing))
	for k := range missing {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !slices.Contains(problems, missing[k]) {
			problems = append(problems, missing[k])
		}
	}
	if rs != nil && err == nil {
		for _, g := range rs.Regions {
			_, gone := missing[g.Cluster+"/"+g.Topic]
			st.regionDown[g.Name] = down[g.Cluster] || gone
		}
	}
	st.text = strings.Join(problems, "; ")
	r.publish(st)
	return st
}

// publish stores st and derives the metrics and the log from it.
func (r *Router) publish(st *readiness) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	r.state.Store(st)
	r.cfg.Metrics.setReady(st.text == "")
	for region, down := range st.regionDown {
		r.cfg.Metrics.setRegionReady(region, !down)
	}
	if st.text == r.lastText {
		return
	}
	r.lastText = st.text
	if st.text == "" {
		r.log.Info("router ready: routing every region")
	} else {
		r.log.Warn("router not ready", "state", st.text, "fetching", st.fetch)
	}
}
