package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/stream"
)

// stageTrace records, for the timed events of a latency pass, when the
// router polled them, handed them to a producer and had them acknowledged
// (RESIDENCY_BENCH_TRACE=file: a diagnostic, not part of the report).
type stageTrace struct {
	mu      sync.Mutex
	sent    map[int64]time.Time
	ingest  map[int64]time.Time // the record's timestamp: its append time at the ingest topic (LogAppendTime when tracing)
	polled  map[int64]time.Time
	produce map[int64]time.Time
	acked   map[int64]time.Time
	// The fetch stage between polls: when each Poll was called, how long
	// after the previous one returned (deciding, dispatching, waiting for
	// room in the window), and how long it took.
	lastRet time.Time
	gaps    []pollGap
	reg     *prometheus.Registry // the router's metrics (window-full seconds)
	name    string               // the contender's
}

type pollGap struct {
	gap  time.Duration // since the previous Poll returned
	in   time.Duration // inside Poll
	call time.Time     // when Poll was called
}

func newStageTrace() *stageTrace {
	return &stageTrace{sent: map[int64]time.Time{}, ingest: map[int64]time.Time{}, polled: map[int64]time.Time{},
		produce: map[int64]time.Time{}, acked: map[int64]time.Time{}}
}

func traceSeq(m *stream.Message) (seq int64, sent time.Time, ok bool) {
	seq = -1
	for _, h := range m.Headers {
		switch h.Key {
		case benchSeqHeader:
			seq, _ = strconv.ParseInt(string(h.Value), 10, 64)
		case benchSentHeader:
			ns, _ := strconv.ParseInt(string(h.Value), 10, 64)
			sent = time.Unix(0, ns)
		}
	}
	return seq, sent, seq >= 0
}

type tracedConsumer struct {
	router.BatchConsumer
	t *stageTrace
}

func (c *tracedConsumer) Poll(ctx context.Context, dst []stream.Message, max int) ([]stream.Message, error) {
	n := len(dst)
	call := time.Now()
	dst, err := c.BatchConsumer.Poll(ctx, dst, max)
	now := time.Now()
	c.t.mu.Lock()
	timed := false
	for i := n; i < len(dst); i++ {
		if seq, sent, ok := traceSeq(&dst[i]); ok {
			c.t.polled[seq] = now
			c.t.sent[seq] = sent
			c.t.ingest[seq] = dst[i].Time
			timed = true
		}
	}
	if timed || len(c.t.sent) > 0 {
		g := pollGap{gap: call.Sub(c.t.lastRet), in: now.Sub(call), call: call}
		if c.t.lastRet.IsZero() {
			g.gap = 0
		}
		c.t.gaps = append(c.t.gaps, g)
	}
	c.t.lastRet = now
	c.t.mu.Unlock()
	return dst, err
}

type tracedProducer struct {
	router.AsyncProducer
	t *stageTrace
}

func (p *tracedProducer) Produce(ctx context.Context, msgs []stream.Message, done func(router.ProduceAck)) error {
	var seqs []int64
	for i := range msgs {
		if seq, _, ok := traceSeq(&msgs[i]); ok {
			seqs = append(seqs, seq)
		}
	}
	p.t.first(p.t.produce, seqs)
	return p.AsyncProducer.Produce(ctx, msgs, func(a router.ProduceAck) {
		p.t.first(p.t.acked, seqs)
		done(a)
	})
}

// CopiesRecords is the traced producer's (router.RecordCopier): tracing
// reads msgs only during Produce.
func (p *tracedProducer) CopiesRecords() bool {
	rc, ok := p.AsyncProducer.(router.RecordCopier)
	return ok && rc.CopiesRecords()
}

// CheckTopics is the traced producer's (router.TopicChecker): the wrapped
// producer's check, so that a traced router checks its destination topics
// at start as route does; nil when the wrapped producer cannot check.
func (p *tracedProducer) CheckTopics(ctx context.Context, topics []string) error {
	if tc, ok := p.AsyncProducer.(router.TopicChecker); ok {
		return tc.CheckTopics(ctx, topics)
	}
	return nil
}

// first records now as the time of each of seqs in stage, unless one is
// there already (a record produced again keeps its first time).
func (t *stageTrace) first(stage map[int64]time.Time, seqs []int64) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range seqs {
		if _, ok := stage[s]; !ok {
			stage[s] = now
		}
	}
}

// write prints the stage percentiles to path.
func (t *stageTrace) write(path string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	stages := []struct {
		name     string
		from, to map[int64]time.Time
	}{{"sent->ingest", t.sent, t.ingest}, {"ingest->polled", t.ingest, t.polled}, {"sent->polled", t.sent, t.polled}, {"polled->produce", t.polled, t.produce}, {"produce->acked", t.produce, t.acked}, {"sent->acked", t.sent, t.acked}}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "trace %s: %d events polled\n", t.name, len(t.polled))
	for _, s := range stages {
		var d []time.Duration
		for k, a := range s.from {
			if b, ok := s.to[k]; ok {
				d = append(d, b.Sub(a))
			}
		}
		if len(d) == 0 {
			continue
		}
		slices.Sort(d)
		q := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))]) / 1e6 }
		fmt.Fprintf(f, "  %-16s n=%d p50 %.1f p90 %.1f p99 %.1f max %.1f ms\n", s.name, len(d), q(.5), q(.9), q(.99), q(1))
	}
	// Per half second of sending: the slowest event's stages.
	var t0 time.Time
	for _, a := range t.sent {
		if t0.IsZero() || a.Before(t0) {
			t0 = a
		}
	}
	type bucket struct {
		n                         int
		worst, poll, prod, ingest time.Duration
		maxGap, maxIn, outOfPoll  time.Duration
	}
	buckets := map[int]*bucket{}
	for k, a := range t.sent {
		b, ok := t.acked[k]
		if !ok {
			continue
		}
		i := int(a.Sub(t0) / (500 * time.Millisecond))
		bk := buckets[i]
		if bk == nil {
			bk = &bucket{}
			buckets[i] = bk
		}
		bk.n++
		if d := b.Sub(a); d > bk.worst {
			bk.worst, bk.poll, bk.prod, bk.ingest = d, t.polled[k].Sub(a), b.Sub(t.produce[k]), t.ingest[k].Sub(a)
		}
	}
	var gaps, ins []time.Duration
	var out time.Duration
	for _, g := range t.gaps {
		if g.call.Before(t0) {
			continue
		}
		gaps, ins = append(gaps, g.gap), append(ins, g.in)
		out += g.gap
		i := int(g.call.Sub(t0) / (500 * time.Millisecond))
		bk := buckets[i]
		if bk == nil {
			continue
		}
		bk.maxGap, bk.maxIn = max(bk.maxGap, g.gap), max(bk.maxIn, g.in)
		bk.outOfPoll += g.gap
	}
	if len(gaps) > 0 {
		slices.Sort(gaps)
		slices.Sort(ins)
		q := func(d []time.Duration, p float64) float64 { return float64(d[int(p*float64(len(d)-1))]) / 1e6 }
		fmt.Fprintf(f, "  polls %d: between polls p50 %.2f p99 %.1f max %.1f ms (%.2f s in all); in Poll p50 %.2f p99 %.1f max %.1f ms\n",
			len(gaps), q(gaps, .5), q(gaps, .99), q(gaps, 1), out.Seconds(), q(ins, .5), q(ins, .99), q(ins, 1))
	}
	if t.reg != nil {
		if mfs, err := t.reg.Gather(); err == nil {
			for _, mf := range mfs {
				if mf.GetName() == "residency_router_window_full_seconds_total" {
					for _, m := range mf.GetMetric() {
						fmt.Fprintf(f, "  window full (%s): %.3f s over the child's life\n", m.GetLabel()[0].GetValue(), m.GetCounter().GetValue())
					}
				}
			}
		}
	}
	for i := 0; i < 200; i++ {
		if bk := buckets[i]; bk != nil {
			fmt.Fprintf(f, "  t+%4.1fs n=%d worst %.1f ms (sent->ingest %.1f, sent->polled %.1f, produce->acked %.1f); polls: max gap %.1f, max in Poll %.1f, out of Poll %.0f ms\n",
				float64(i)/2, bk.n, float64(bk.worst)/1e6, float64(bk.ingest)/1e6, float64(bk.poll)/1e6, float64(bk.prod)/1e6,
				float64(bk.maxGap)/1e6, float64(bk.maxIn)/1e6, float64(bk.outOfPoll)/1e6)
		}
	}
	// The worst second: when the slowest events were sent.
	type ev struct {
		seq int64
		d   time.Duration
	}
	var worst []ev
	for k, a := range t.sent {
		if b, ok := t.acked[k]; ok {
			worst = append(worst, ev{k, b.Sub(a)})
		}
	}
	slices.SortFunc(worst, func(a, b ev) int { return int(b.d - a.d) })
	for _, w := range worst[:min(10, len(worst))] {
		fmt.Fprintf(f, "  slow seq %d: sent->ingest %.1f sent->polled %.1f polled->produce %.1f produce->acked %.1f ms\n", w.seq, float64(t.ingest[w.seq].Sub(t.sent[w.seq]))/1e6,
			float64(t.polled[w.seq].Sub(t.sent[w.seq]))/1e6, float64(t.produce[w.seq].Sub(t.polled[w.seq]))/1e6, float64(t.acked[w.seq].Sub(t.produce[w.seq]))/1e6)
	}
}

// franzSeq is traceSeq for a franz-go record.
func franzSeq(r *kgo.Record) (seq int64, sent time.Time, ok bool) {
	seq = -1
	for _, h := range r.Headers {
		switch h.Key {
		case benchSeqHeader:
			seq, _ = strconv.ParseInt(string(h.Value), 10, 64)
		case benchSentHeader:
			ns, _ := strconv.ParseInt(string(h.Value), 10, 64)
			sent = time.Unix(0, ns)
		}
	}
	return seq, sent, seq >= 0
}

// franzPolled notes the timed records of one poll of the franz-go
// pass-through as polled and handed to its producer now.
func (t *stageTrace) franzPolled(recs []*kgo.Record) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range recs {
		if seq, sent, ok := franzSeq(r); ok {
			t.sent[seq], t.ingest[seq], t.polled[seq], t.produce[seq] = sent, r.Timestamp, now, now
		}
	}
}

// franzAcked wraps a produce callback of the franz-go pass-through to note
// when a timed record was acknowledged.
func (t *stageTrace) franzAcked(next func(*kgo.Record, error)) func(*kgo.Record, error) {
	return func(r *kgo.Record, err error) {
		if seq, _, ok := franzSeq(r); ok {
			t.first(t.acked, []int64{seq})
		}
		next(r, err)
	}
}
