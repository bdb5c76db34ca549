package router_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

// ctlConsumer is a BatchConsumer over an in-memory subscriber whose group
// membership and ingest errors a test sets.
type ctlConsumer struct {
	sub      *streamtest.Subscriber
	polled   atomic.Int64
	notIn    atomic.Bool
	err      atomic.Pointer[string]
	onCommit func([]router.Offset) error // called before each commit; an error fails it
}

func (c *ctlConsumer) Poll(ctx context.Context, dst []stream.Message, max int) ([]stream.Message, error) {
	m, err := c.sub.Fetch(ctx)
	if err != nil {
		return dst, err
	}
	dst = append(dst, m)
	for len(dst) < max {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Millisecond)
		m, err := c.sub.Fetch(fctx)
		cancel()
		if err != nil {
			break
		}
		dst = append(dst, m)
	}
	c.polled.Add(int64(len(dst)))
	return dst, nil
}

func (c *ctlConsumer) Commit(ctx context.Context, offsets ...router.Offset) error {
	if c.onCommit != nil {
		if err := c.onCommit(offsets); err != nil {
			return err
		}
	}
	msgs := make([]stream.Message, len(offsets))
	for i, o := range offsets {
		msgs[i] = stream.Message{Topic: o.Topic, Partition: o.Partition, Offset: o.Next - 1}
	}
	return c.sub.Commit(ctx, msgs...)
}

func (c *ctlConsumer) Joined() bool { return !c.notIn.Load() }

func (c *ctlConsumer) Err() error {
	if e := c.err.Load(); e != nil {
		return errors.New(*e)
	}
	return nil
}

// gateProducer is an AsyncProducer over an in-memory cluster: while closed
// it holds every call (unacknowledged, in order), and it writes and
// acknowledges them in order once open; while missing names a topic,
// Produce fails at once for calls writing it; while failCalls > 0 each call
// fails as a whole (Err set, nothing written). With copies it copies every
// call's records before Produce returns and says so (router.RecordCopier).
type gateProducer struct {
	pub       *streamtest.Publisher
	copies    bool
	mu        sync.Mutex
	closed    bool
	missing   string
	failCalls int
	held      []heldCall
	calls     int // Produce calls accepted
}

type heldCall struct {
	msgs []stream.Message
	done func(router.ProduceAck)
}

func (g *gateProducer) Produce(ctx context.Context, msgs []stream.Message, done func(router.ProduceAck)) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range msgs {
		if g.missing != "" && msgs[i].Topic == g.missing {
			return &router.MissingTopicError{Topic: g.missing}
		}
	}
	if g.failCalls > 0 {
		g.failCalls--
		offs := make([]int64, len(msgs))
		for i := range offs {
			offs[i] = -1
		}
		done(router.ProduceAck{Err: errors.New("broker said no"), Offsets: offs, Partitions: make([]int32, len(msgs))})
		return nil
	}
	g.calls++
	if g.copies {
		msgs = streamtest.CloneMessages(msgs)
	}
	g.held = append(g.held, heldCall{msgs, done})
	if !g.closed {
		g.flushLocked()
	}
	return nil
}

func (g *gateProducer) flushLocked() {
	for _, c := range g.held {
		if err := g.pub.Publish(context.Background(), c.msgs...); err != nil {
			panic(err) // the in-memory broker has every topic the tests write
		}
		a := router.ProduceAck{Partitions: make([]int32, len(c.msgs)), Offsets: make([]int64, len(c.msgs))}
		for i := range a.Offsets {
			a.Offsets[i] = int64(i)
		}
		c.done(a)
	}
	g.held = nil
}

func (g *gateProducer) CopiesRecords() bool { return g.copies }

func (g *gateProducer) set(closed bool, missing string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed, g.missing = closed, missing
	if !closed {
		g.flushLocked()
	}
}

func (g *gateProducer) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errors.New("broker unreachable")
	}
	return nil
}

// logCounter counts the router's "not ready" and "ready" log lines, by
// state.
type logCounter struct {
	mu     sync.Mutex
	states []string // in order: the state of every readiness line
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "router not ready") && !strings.HasPrefix(r.Message, "router ready") {
		return nil
	}
	state := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "state" {
			state = a.Value.String()
		}
		return true
	})
	l.mu.Lock()
	l.states = append(l.states, state)
	l.mu.Unlock()
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }

// checkOncePerChange fails the test when two consecutive readiness log
// lines say the same state: the state is logged once per change.
func (l *logCounter) checkOncePerChange(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 1; i < len(l.states); i++ {
		if l.states[i] == l.states[i-1] {
			t.Errorf("readiness logged twice in a row: %q", l.states[i])
		}
	}
}

func (l *logCounter) last() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.states) == 0 {
		return "<none>", 0
	}
	return l.states[len(l.states)-1], len(l.states)
}

// loopFixture is the in-memory fixture with the loop's own ports: a
// ctlConsumer and a gateProducer per cluster, metrics in a registry and a
// log counter.
type loopFixture struct {
	*fixture
	cons *ctlConsumer
	pa   *gateProducer
	pb   *gateProducer
	reg  *prometheus.Registry
	logs *logCounter
	pins *pinsBox
}

func newLoopFixture(t *testing.T) *loopFixture {
	f := &loopFixture{fixture: newFixture(t), reg: prometheus.NewRegistry(), logs: &logCounter{}, pins: &pinsBox{}}
	f.cons = &ctlConsumer{sub: f.a.Subscriber(group, ingest)}
	f.pa = &gateProducer{pub: f.a.Publisher()}
	f.pb = &gateProducer{pub: f.b.Publisher()}
	f.cfg.Subscriber, f.cfg.Publishers = nil, nil
	f.cfg.Consumer = f.cons
	f.cfg.Producers = map[string]router.AsyncProducer{"a": f.pa, "b": f.pb}
	f.cfg.Metrics = router.NewMetrics(f.reg)
	f.cfg.Logger = slog.New(f.logs)
	f.cfg.Pins = f.pins
	f.cfg.CommitInterval = 5 * time.Millisecond
	return f
}

// pinsBox is a PinSource (and PinLookup) whose error a test sets.
type pinsBox struct {
	mu    sync.Mutex
	err   error
	calls atomic.Int32 // Lookup calls: the loop makes none
}

func (p *pinsBox) Pins() (router.PinView, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return nil, p.err
	}
	return noPinView{}, nil
}

func (p *pinsBox) Lookup(_ context.Context, ids [][]byte) ([]string, error) {
	p.calls.Add(1)
	return make([]string, len(ids)), nil
}

func (p *pinsBox) set(err error) {
	p.mu.Lock()
	p.err = err
	p.mu.Unlock()
}

type noPinView struct{}

func (noPinView) Pin([]byte) string { return "" }

// gauge returns the value of a gauge of reg (with the label, if given).
func gauge(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				return m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// sample reads the three outputs of the readiness state: Ready's text
// ("" when ready), the residency_router_ready gauge and the state of the
// last readiness log line; it fails the test unless they agree.
func (f *loopFixture) sample(t *testing.T, r *router.Router) string {
	t.Helper()
	text := ""
	if err := r.Ready(); err != nil {
		if !errors.Is(err, router.ErrNotReady) {
			t.Fatalf("Ready = %v, not ErrNotReady", err)
		}
		text = err.Error()
		if strings.HasPrefix(text, "not ready") {
			t.Fatalf("Ready's text %q repeats \"not ready\" (/readyz prefixes it)", text)
		}
	}
	ready := gauge(t, f.reg, "residency_router_ready", "", "")
	if (text == "") != (ready == 1) {
		t.Fatalf("Ready says %q but residency_router_ready = %v", text, ready)
	}
	if logged, _ := f.logs.last(); logged != text {
		t.Fatalf("Ready says %q but the last readiness log line says %q", text, logged)
	}
	return text
}

// waitState waits until the readiness state contains want ("" : ready),
// then checks that its three outputs agree.
func (f *loopFixture) waitState(t *testing.T, r *router.Router, want string) string {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, "state "+want, func() bool {
		err := r.Ready()
		if want == "" {
			return err == nil
		}
		return err != nil && strings.Contains(err.Error(), want)
	})
	// The log line and gauge are written with the state; give the
	// publishing goroutine its turn.
	var text string
	testenv.Eventually(t, 5*time.Second, "outputs agree", func() bool {
		logged, _ := f.logs.last()
		err := r.Ready()
		cur := ""
		if err != nil {
			cur = err.Error()
		}
		return logged == cur
	})
	text = f.sample(t, r)
	return text
}

func usEvents(n int, from int) []stream.Message {
	var out []stream.Message
	for i := range n {
		out = append(out, event("US", fmt.Sprintf("us-%d", from+i), fmt.Sprint(from+i)))
	}
	return out
}

func ukEvents(n int, from int) []stream.Message {
	var out []stream.Message
	for i := range n {
		out = append(out, event("GB", fmt.Sprintf("uk-%d", from+i), fmt.Sprint(from+i)))
	}
	return out
}

// TestLoopOneClusterDownOthersFlow: with cluster b unreachable, the
// regions of cluster a keep receiving events and committing up to b's
// oldest unacknowledged event per partition; past give_up b's regions are
// reported down (once in the log, the router stays up); b's events arrive
// when it is back, in order per key, and everything is committed.
func TestLoopOneClusterDownOthersFlow(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.GiveUp = 50 * time.Millisecond
	f.pb.set(true, "")
	f.produce(t, append(ukEvents(5, 0), usEvents(20, 100)...)...)
	r, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "cluster a's events", func() bool { return len(f.a.Records("pinned.us")) == 20 })
	text := f.waitState(t, r, "cluster b down")
	if !strings.Contains(text, "broker unreachable") {
		t.Errorf("state %q does not say why b is down", text)
	}
	if v := gauge(t, f.reg, "residency_router_region_ready", "region", "uk"); v != 0 {
		t.Errorf("region_ready{uk} = %v during b's outage, want 0", v)
	}
	if v := gauge(t, f.reg, "residency_router_region_ready", "region", "us"); v != 1 {
		t.Errorf("region_ready{us} = %v during b's outage, want 1", v)
	}
	if v := gauge(t, f.reg, "residency_router_backlog_events", "cluster", "b"); v != 5 {
		t.Errorf("backlog{b} = %v, want 5", v)
	}
	if n := f.committed(); n >= 25 {
		t.Fatalf("committed %d of 25 events while 5 were unacknowledged", n)
	}
	// More of a's events keep flowing during the outage.
	f.produce(t, usEvents(10, 200)...)
	testenv.Eventually(t, 10*time.Second, "cluster a's later events", func() bool { return len(f.a.Records("pinned.us")) == 30 })
	_, lines := f.logs.last()
	f.pb.set(false, "")
	testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 35 })
	f.waitState(t, r, "")
	if n := len(f.b.Records("pinned.uk")); n != 5 {
		t.Fatalf("pinned.uk has %d events, want 5", n)
	}
	if _, after := f.logs.last(); after > lines+2 {
		t.Errorf("%d readiness log lines after b came back, want at most 2 (its cause cleared, then ready)", after-lines)
	}
	f.logs.checkOncePerChange(t)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestLoopReadinessStates samples /readyz's text, the ready gauge and the
// log in each state the router can be in, and checks that it resumes by
// itself from each.
func TestLoopReadinessStates(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.GiveUp = 50 * time.Millisecond
	r, stop := f.start(t)
	f.waitState(t, r, "")
	states := []struct {
		want       string
		set, clear func()
	}{
		{"no ruleset", func() { f.rules.set(nil, fmt.Errorf("cache: %w", rules.ErrNoRuleset)) }, func() { f.rules.set(mustRules(t, 3), nil) }},
		{"ruleset stale", func() { f.rules.set(nil, rules.ErrStale) }, func() { f.rules.set(mustRules(t, 3), nil) }},
		{"ruleset content changed", func() { f.rules.set(nil, rules.ErrContentChanged) }, func() { f.rules.set(mustRules(t, 3), nil) }},
		{"pins stale", func() { f.pins.set(rules.ErrPinsStale) }, func() { f.pins.set(nil) }},
		{"not in the consumer group", func() { f.cons.notIn.Store(true) }, func() { f.cons.notIn.Store(false) }},
		{"ingest kafka: coordinator unreachable", func() { s := "coordinator unreachable"; f.cons.err.Store(&s) }, func() { f.cons.err.Store(nil) }},
		{"cluster b down", func() { f.pb.set(true, ""); f.produce(t, ukEvents(1, 0)...) }, func() { f.pb.set(false, "") }},
		{"topic pinned.uk missing on cluster b", func() { f.pb.set(false, "pinned.uk"); f.produce(t, ukEvents(1, 10)...) }, func() { f.pb.set(false, "") }},
	}
	for _, s := range states {
		s.set()
		f.waitState(t, r, s.want)
		s.clear()
		f.waitState(t, r, "")
	}
	testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 2 })
	f.logs.checkOncePerChange(t)
	if n := f.pins.calls.Load(); n != 0 {
		t.Errorf("%d pin lookups: the loop should read the in-memory view", n)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestLoopStaleRulesPausesFetching: without a valid ruleset or pins the
// fetch stage polls nothing; it resumes by itself.
func TestLoopStaleRulesPausesFetching(t *testing.T) {
	f := newLoopFixture(t)
	f.pins.set(rules.ErrPinsStale)
	f.produce(t, usEvents(3, 0)...)
	r, stop := f.start(t)
	f.waitState(t, r, "pins stale")
	time.Sleep(30 * time.Millisecond)
	if n := f.cons.polled.Load(); n != 0 {
		t.Fatalf("polled %d events with stale pins", n)
	}
	f.pins.set(nil)
	testenv.Eventually(t, 10*time.Second, "committed", func() bool { return f.committed() == 3 })
	f.rules.set(nil, rules.ErrStale)
	f.waitState(t, r, "ruleset stale")
	before := f.cons.polled.Load()
	f.produce(t, usEvents(3, 10)...)
	time.Sleep(30 * time.Millisecond)
	if n := f.cons.polled.Load() - before; n > 3 {
		t.Fatalf("polled %d events while stale", n)
	}
	f.rules.set(mustRules(t, 4), nil)
	testenv.Eventually(t, 10*time.Second, "committed", func() bool { return f.committed() == 6 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestLoopWindowBoundsInflight: with a cluster down, the fetch stage
// stops at max_inflight_events, and resumes when the cluster is back.
func TestLoopWindowBoundsInflight(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.MaxInflightEvents = 10
	f.cfg.BatchSize = 4
	f.pb.set(true, "")
	f.produce(t, ukEvents(50, 0)...)
	r, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "window full", func() bool { return f.cons.polled.Load() == 10 })
	time.Sleep(50 * time.Millisecond)
	if n := f.cons.polled.Load(); n != 10 {
		t.Fatalf("polled %d events with a window of 10", n)
	}
	_ = r
	f.pb.set(false, "")
	testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 50 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The wait is counted, under the bound that was reached.
	if s := counter(t, f.reg, "residency_router_window_full_seconds_total", "reason", "inflight"); s <= 0 {
		t.Errorf("window full (inflight) %v s, want > 0", s)
	}
	if s := counter(t, f.reg, "residency_router_window_full_seconds_total", "reason", "uncommitted"); s != 0 {
		t.Errorf("window full (uncommitted) %v s with commits succeeding, want 0", s)
	}
}

// counter returns the value of the counter name of reg with label=value
// (-1 when there is none).
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

// TestLoopWindowBoundsBytes: the byte bound stops fetching too (one batch
// may overshoot it).
func TestLoopWindowBoundsBytes(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.MaxInflightBytes = 100 // about 3 events
	f.cfg.BatchSize = 1
	f.pb.set(true, "")
	f.produce(t, ukEvents(20, 0)...)
	_, stop := f.start(t)
	// Wait for the first poll (a loaded host may take longer than any
	// fixed sleep to start the loop), then give the loop time to overshoot.
	testenv.Eventually(t, 10*time.Second, "a first event polled", func() bool { return f.cons.polled.Load() >= 1 })
	time.Sleep(100 * time.Millisecond)
	if n := f.cons.polled.Load(); n < 1 || n > 5 {
		t.Fatalf("polled %d events with a window of 100 bytes", n)
	}
	f.pb.set(false, "")
	testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 20 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// recLedger records the source offsets it was given; while fail is set,
// Record fails.
type recLedger struct {
	mu       sync.Mutex
	fail     bool
	recorded map[string]int // "topic/partition/offset" -> times
	calls    int
}

// AppendLeaf encodes the event's source coordinates; it fails for an
// event without its destination, its ruleset or the time it settled.
func (l *recLedger) AppendLeaf(dst []byte, s *router.Settled) ([]byte, error) {
	m := s.Event.Msg
	if s.Topic == "" || s.Cluster == "" || s.Ruleset == nil {
		return dst, fmt.Errorf("settled event without its destination: %+v", s)
	}
	if s.At.IsZero() || s.At.After(time.Now()) {
		return dst, fmt.Errorf("settled event without the time it settled: %v", s.At)
	}
	return fmt.Appendf(dst, "%s/%d/%d", m.Topic, m.Partition, m.Offset), nil
}

func (l *recLedger) Append(_ context.Context, rulesets []*rules.Ruleset, leaves [][]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.fail {
		return errors.New("audit topic unavailable")
	}
	if len(rulesets) == 0 {
		return errors.New("leaves without their rulesets")
	}
	for _, lf := range leaves {
		l.recorded[string(lf)]++
	}
	return nil
}

func (l *recLedger) has(topic string, partition int, offset int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.recorded[fmt.Sprintf("%s/%d/%d", topic, partition, offset)] > 0
}

// TestLoopWindowReleasedAtAck: an event leaves the window when its
// destination acknowledges it, not when its offset is committed: with
// every commit failing, a window of 10 still routes all 60 events (their
// leaves wait in the settled backlog), and nothing is committed until the
// commits succeed.
func TestLoopWindowReleasedAtAck(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.MaxInflightEvents = 10
	f.cfg.MaxUncommittedEvents = 1000
	f.cfg.BatchSize = 4
	led := &recLedger{recorded: map[string]int{}}
	f.cfg.Ledger = led
	var failing atomic.Bool
	failing.Store(true)
	f.cons.onCommit = func([]router.Offset) error {
		if failing.Load() {
			return errors.New("coordinator unavailable")
		}
		return nil
	}
	f.produce(t, ukEvents(60, 0)...)
	r, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "every event routed with commits failing",
		func() bool { return len(f.b.Records("pinned.uk")) == 60 })
	f.waitState(t, r, "commit")
	if n := f.committed(); n != 0 {
		t.Fatalf("committed %d events while every commit failed", n)
	}
	failing.Store(false)
	testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 60 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	if len(led.recorded) != 60 {
		t.Fatalf("ledger recorded %d events, want 60", len(led.recorded))
	}
}

// TestLoopUncommittedBound: the settled backlog has bounds of its own, in
// events and in leaf bytes: while commits fail, fetching stops once the
// backlog reaches them (passed by at most the window), and resumes when
// the commits succeed.
func TestLoopUncommittedBound(t *testing.T) {
	for _, tc := range []struct {
		name          string
		events, bytes int
		most          int64
		routed        int // routed for sure before fetching stops
	}{
		{"events", 20, 0, 20 + 10, 10},
		// A recLedger leaf is at least 10 bytes: fetching stops once 6 or
		// more have settled, perhaps with nothing else in flight.
		{"bytes", 0, 60, int64(60/len("ingest/0/0") + 1 + 10), 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newLoopFixture(t)
			f.cfg.MaxInflightEvents = 10
			f.cfg.MaxUncommittedEvents = tc.events
			f.cfg.MaxUncommittedBytes = tc.bytes
			f.cfg.BatchSize = 2
			f.cfg.Ledger = &recLedger{recorded: map[string]int{}}
			var failing atomic.Bool
			failing.Store(true)
			f.cons.onCommit = func([]router.Offset) error {
				if failing.Load() {
					return errors.New("coordinator unavailable")
				}
				return nil
			}
			f.produce(t, ukEvents(80, 0)...)
			_, stop := f.start(t)
			testenv.Eventually(t, 10*time.Second, "events routed", func() bool { return len(f.b.Records("pinned.uk")) >= tc.routed })
			time.Sleep(150 * time.Millisecond)
			if n := f.cons.polled.Load(); n > tc.most || n >= 80 {
				t.Fatalf("polled %d events with commits failing, want at most %d", n, tc.most)
			}
			failing.Store(false)
			testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 80 })
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if s := counter(t, f.reg, "residency_router_window_full_seconds_total", "reason", "uncommitted"); s <= 0 {
				t.Errorf("window full (uncommitted) %v s with commits failing, want > 0", s)
			}
		})
	}
}

// TestLoopCommitsAtHalfBacklog: with an hour's commit interval and a
// window that never fills, the committer still commits once the settled
// backlog passes half its bound.
func TestLoopCommitsAtHalfBacklog(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.CommitInterval = time.Hour
	f.cfg.MaxInflightEvents = 1000
	f.cfg.MaxUncommittedEvents = 20
	f.cfg.BatchSize = 2
	f.produce(t, ukEvents(60, 0)...)
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "all but the last half backlog committed", func() bool { return f.committed() >= 60-10 })
	// Stop only once the router holds every event: one not yet polled at
	// the stop is rightly left for the next run, and would not be committed.
	testenv.Eventually(t, 10*time.Second, "every event polled", func() bool { return f.cons.polled.Load() == 60 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := f.committed(); n != 60 {
		t.Fatalf("committed %d of 60 at shutdown", n)
	}
}

// TestLoopCoalescesQueuedChunks: while the producer has its most calls
// unacknowledged, the chunks that queue go together in one call; every
// event still arrives, in order per key, and is committed.
func TestLoopCoalescesQueuedChunks(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.BatchSize = 2
	f.pb.set(true, "")
	f.produce(t, ukEvents(60, 0)...)
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "every event polled", func() bool { return f.cons.polled.Load() == 60 })
	// Polled is not yet queued: open the producer only once b's sender
	// holds every chunk, so that the ones behind the held calls coalesce.
	testenv.Eventually(t, 10*time.Second, "every chunk queued at cluster b", func() bool {
		return gauge(t, f.reg, "residency_router_backlog_events", "cluster", "b") == 60
	})
	f.pb.set(false, "")
	testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 60 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	f.pb.mu.Lock()
	calls := f.pb.calls
	f.pb.mu.Unlock()
	if calls >= 30 {
		t.Fatalf("%d Produce calls for 30 chunks of 2 events with the producer held, want a few", calls)
	}
	last := map[string]int{}
	for _, m := range f.b.Records("pinned.uk") {
		var n int
		if _, err := fmt.Sscanf(string(m.Key), "uk-%d", &n); err != nil {
			t.Fatal(err)
		}
		if p, ok := last[string(m.Key)]; ok && p >= n {
			t.Fatalf("key %s out of order", m.Key)
		}
		last[string(m.Key)] = n
	}
	if len(f.b.Records("pinned.uk")) != 60 {
		t.Fatalf("%d records at pinned.uk, want 60", len(f.b.Records("pinned.uk")))
	}
}

// TestLoopCoalescedCallMissingTopic: a coalesced call refused at once for
// a missing topic does not hold back the chunks before the one that
// writes it: they are produced one per call, and the rest waits.
func TestLoopCoalescedCallMissingTopic(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.BatchSize = 2
	f.pa.set(true, "")
	calls := func() int {
		f.pa.mu.Lock()
		defer f.pa.mu.Unlock()
		return f.pa.calls
	}
	_, stop := f.start(t)
	for i := range 4 { // the sender's most calls, held by the producer
		f.produce(t, usEvents(1, i)...)
		testenv.Eventually(t, 10*time.Second, "a held call", func() bool { return calls() == i+1 })
	}
	f.produce(t, usEvents(10, 4)...)
	testenv.Eventually(t, 10*time.Second, "US events polled", func() bool { return f.cons.polled.Load() == 14 })
	f.pa.set(true, quarantine)
	f.produce(t, event("ZZ", "zz-1", "z1"), event("ZZ", "zz-2", "z2"))
	testenv.Eventually(t, 10*time.Second, "every event polled", func() bool { return f.cons.polled.Load() == 16 })
	// The quarantined chunk must be queued behind the US ones before the
	// held calls are acknowledged, or no coalesced call would write it.
	testenv.Eventually(t, 10*time.Second, "every chunk queued at cluster a", func() bool {
		return gauge(t, f.reg, "residency_router_backlog_events", "cluster", "a") == 16
	})
	f.pa.set(false, quarantine)
	testenv.Eventually(t, 10*time.Second, "the US events produced while quarantine is missing",
		func() bool { return len(f.a.Records("pinned.us")) == 14 })
	if n := len(f.a.Records(quarantine)); n != 0 {
		t.Fatalf("%d records in the missing quarantine topic", n)
	}
	f.pa.set(false, "")
	testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 16 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestLoopLedgerBeforeCommit: every committed offset's events were
// recorded first; a failing ledger blocks commits (and says so), and
// routing resumes when it is back.
func TestLoopLedgerBeforeCommit(t *testing.T) {
	f := newLoopFixture(t)
	led := &recLedger{recorded: map[string]int{}, fail: true}
	f.cfg.Ledger = led
	var bad atomic.Value
	f.cons.onCommit = func(offs []router.Offset) error {
		for _, o := range offs {
			for off := o.Next - 1; off >= 0 && off >= o.Next-50; off-- {
				if f.a.Committed(group, o.Topic, o.Partition) > off {
					break
				}
				if !led.has(o.Topic, o.Partition, off) {
					bad.Store(fmt.Sprintf("commit of %s[%d] up to %d before offset %d was recorded", o.Topic, o.Partition, o.Next, off))
				}
			}
		}
		return nil
	}
	f.produce(t, append(usEvents(10, 0), ukEvents(10, 100)...)...)
	r, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "events routed", func() bool {
		return len(f.a.Records("pinned.us")) == 10 && len(f.b.Records("pinned.uk")) == 10
	})
	f.waitState(t, r, "audit ledger")
	if n := f.committed(); n != 0 {
		t.Fatalf("committed %d events while the ledger failed", n)
	}
	led.mu.Lock()
	led.fail = false
	led.mu.Unlock()
	testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 20 })
	f.waitState(t, r, "")
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if b := bad.Load(); b != nil {
		t.Fatal(b)
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	if len(led.recorded) != 20 {
		t.Fatalf("ledger recorded %d events, want 20", len(led.recorded))
	}
}

// flakyLedger is a recLedger whose Append takes 0-2 ms and fails every
// fourth call (an audit topic under load).
type flakyLedger struct {
	*recLedger
	n atomic.Int32
}

func (l *flakyLedger) Append(ctx context.Context, rulesets []*rules.Ruleset, leaves [][]byte) error {
	n := l.n.Add(1)
	time.Sleep(time.Duration(n%3) * time.Millisecond)
	if n%4 == 0 {
		return errors.New("audit topic: not enough replicas")
	}
	return l.recLedger.Append(ctx, rulesets, leaves)
}

// TestLoopCommitNeverOvertakesLeaves: under load (300 events on two
// clusters whose acknowledgements interleave, one cluster held for a
// while, small batches, a commit every millisecond, a ledger that is slow
// and fails every fourth append), no commit ever covers an offset whose
// leaf is not durable yet: each commit is checked against every offset it
// newly covers, and in the end every event is committed and recorded.
func TestLoopCommitNeverOvertakesLeaves(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.BatchSize = 3
	// Fetching stops once the settled backlog reaches its bound, passed by
	// at most the window: no commit can take more than 12+12 events, so
	// 300 events take at least 13 commits however slow the committer is
	// on a loaded host (with 24 and 40 it once made only 7).
	f.cfg.MaxInflightEvents = 12
	f.cfg.MaxUncommittedEvents = 12
	f.cfg.CommitInterval = time.Millisecond
	led := &flakyLedger{recLedger: &recLedger{recorded: map[string]int{}}}
	f.cfg.Ledger = led
	var mu sync.Mutex
	covered := map[router.Partition]int64{} // offsets below are checked
	var bad []string
	commits := 0
	f.cons.onCommit = func(offs []router.Offset) error {
		mu.Lock()
		defer mu.Unlock()
		commits++
		for _, o := range offs {
			tp := router.Partition{Topic: o.Topic, Partition: o.Partition}
			for off := covered[tp]; off < o.Next; off++ {
				if !led.has(o.Topic, o.Partition, off) {
					bad = append(bad, fmt.Sprintf("commit of %s[%d] up to %d before offset %d was recorded", o.Topic, o.Partition, o.Next, off))
				}
			}
			covered[tp] = max(covered[tp], o.Next)
		}
		return nil
	}
	var evs []stream.Message
	for i := range 150 {
		evs = append(evs, usEvents(1, i)...)
		evs = append(evs, ukEvents(1, 1000+i)...)
	}
	f.produce(t, evs...)
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "a third routed", func() bool { return f.cons.polled.Load() >= 100 })
	f.pb.set(true, "") // cluster b holds its acknowledgements: a's settle behind them
	time.Sleep(30 * time.Millisecond)
	f.pb.set(false, "")
	testenv.Eventually(t, 20*time.Second, "everything committed", func() bool { return f.committed() == 300 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("%d offsets committed before their leaves, first: %s", len(bad), bad[0])
	}
	if commits < 10 {
		t.Fatalf("%d commits for 300 events, want many (the check needs them)", commits)
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	if len(led.recorded) != 300 {
		t.Fatalf("ledger recorded %d events, want 300", len(led.recorded))
	}
}

// TestLoopRevokeCommitsSettled: before partitions are given up, what
// settled is committed at once (no wait for the commit interval); what is
// still in flight is counted and left to the next owner.
func TestLoopRevokeCommitsSettled(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.CommitInterval = time.Hour // only the revoke commits
	f.produce(t, usEvents(12, 0)...)
	r, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "events routed", func() bool { return len(f.a.Records("pinned.us")) == 12 })
	if n := f.committed(); n != 0 {
		t.Fatalf("committed %d before the revoke with an hour's interval", n)
	}
	all := []router.Partition{{Topic: ingest, Partition: 0}, {Topic: ingest, Partition: 1}, {Topic: ingest, Partition: 2}}
	r.Revoked(context.Background(), all)
	if n := f.committed(); n != 12 {
		t.Fatalf("committed %d of 12 settled events at the revoke", n)
	}
	// Now with cluster b down: the revoke waits until its ctx ends, then
	// gives up the partitions with b's events uncommitted (counted).
	f.pb.set(true, "")
	f.produce(t, ukEvents(4, 100)...)
	// Polled is not yet in flight: the router decides and registers a batch
	// after Poll returns. Revoke once b's sender holds all four.
	testenv.Eventually(t, 10*time.Second, "uk events in flight at cluster b", func() bool {
		return gauge(t, f.reg, "residency_router_backlog_events", "cluster", "b") == 4
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	r.Revoked(ctx, all)
	cancel()
	if v := gauge(t, f.reg, "residency_router_revoked_inflight_events_total", "", ""); v != 4 {
		t.Fatalf("revoked_inflight_events_total = %v, want the 4 unacknowledged events", v)
	}
	if n := f.committed(); n != 12 {
		t.Fatalf("committed %d, want 12 (the 4 in flight are the next owner's)", n)
	}
	f.pb.set(false, "")
	// Their acks after the revoke commit nothing and free the window.
	testenv.Eventually(t, 10*time.Second, "uk events written", func() bool { return len(f.b.Records("pinned.uk")) == 4 })
	time.Sleep(20 * time.Millisecond)
	if n := f.committed(); n != 12 {
		t.Fatalf("committed %d after revoked events were acknowledged, want 12", n)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestLoopShutdownUncommitted: SIGTERM while a cluster is down returns
// ErrUncommitted after ShutdownTimeout, having committed what settled.
func TestLoopShutdownUncommitted(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.ShutdownTimeout = 100 * time.Millisecond
	f.pb.set(true, "")
	f.produce(t, ukEvents(3, 0)...)
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "fetched", func() bool { return f.cons.polled.Load() == 3 })
	err := stop()
	if !errors.Is(err, router.ErrUncommitted) || !strings.Contains(err.Error(), "3 events") {
		t.Fatalf("Run = %v, want ErrUncommitted with 3 events", err)
	}
	if n := f.committed(); n != 0 {
		t.Fatalf("committed %d unacknowledged events", n)
	}
}

// TestLoopResendKeepsKeyOrder: produce calls that fail are produced again
// before anything behind them: every key's events arrive in order, none
// lost.
func TestLoopResendKeepsKeyOrder(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.BatchSize = 3
	f.pb.mu.Lock()
	f.pb.failCalls = 4
	f.pb.mu.Unlock()
	var msgs []stream.Message
	for i := range 60 {
		msgs = append(msgs, event("GB", fmt.Sprintf("user-%d", i%4), fmt.Sprint(i)))
	}
	f.produce(t, msgs...)
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 60 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	last := map[string]int{}
	seen := map[string]bool{}
	for _, m := range f.b.Records("pinned.uk") {
		id := string(m.Value)
		if seen[id] {
			continue // a duplicate of a resent call
		}
		seen[id] = true
		var n int
		parts := strings.Split(id, "|")
		fmt.Sscan(parts[3], &n)
		if p, ok := last[string(m.Key)]; ok && n < p {
			t.Fatalf("key %s: event %d after %d", m.Key, n, p)
		}
		last[string(m.Key)] = n
	}
	if len(seen) != 60 {
		t.Fatalf("%d distinct events at the destination, want 60", len(seen))
	}
}

// TestLoopCopyingProducerResends: with producers that copy the records
// during Produce (router.RecordCopier), the router frees each chunk's
// records and headers as soon as the producer has them, so later batches
// reuse that memory, and builds them again for a resend. With an
// Attester, a cluster held unreachable (its calls waiting, as copies)
// and calls of the other failing as a whole: every event arrives, and
// every record written, first attempt or resend, is its own event's
// (producer headers, source coordinates, attestation over its key and
// value), not one whose memory was reused.
func TestLoopCopyingProducerResends(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.BatchSize = 5
	att := &fakeAttester{}
	f.cfg.Attester = att
	f.pa.copies, f.pb.copies = true, true
	f.pa.set(true, "")
	f.pb.mu.Lock()
	f.pb.failCalls = 6
	f.pb.mu.Unlock()
	var sent []stream.Message
	for i := range 200 {
		c := []string{"US", "DE", "GB", "IN", "-"}[i%5]
		sent = append(sent, event(c, fmt.Sprintf("user-%d", i%7), fmt.Sprintf("id%d", i)))
	}
	f.produce(t, sent...)
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "cluster b's events committed behind a's", func() bool {
		return f.cons.polled.Load() == 200 && len(f.b.Records("pinned.eu"))+len(f.b.Records("pinned.uk")) >= 80
	})
	f.pa.set(false, "")
	testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 200 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	_, seen := checkWritten(t, f.a, f.b)
	if len(seen) != 200 {
		t.Fatalf("%d distinct events written, want 200", len(seen))
	}
}

// rulesetLedger records, per source offset, the destination and the
// ruleset (version and digest) of each leaf it is given, and which
// rulesets each Append names.
type rulesetLedger struct {
	mu     sync.Mutex
	leaves map[string][]string // "topic/partition/offset" -> "cluster/topic version digest", one per leaf appended
	named  map[string]bool     // digests of the rulesets Append was given
}

func (l *rulesetLedger) AppendLeaf(dst []byte, s *router.Settled) ([]byte, error) {
	m := s.Event.Msg
	return fmt.Appendf(dst, "%s/%d/%d=%s/%s %d %s", m.Topic, m.Partition, m.Offset, s.Cluster, s.Topic,
		s.Ruleset.Version(), s.Ruleset.ShortDigest()), nil
}

func (l *rulesetLedger) Append(_ context.Context, rulesets []*rules.Ruleset, leaves [][]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, rs := range rulesets {
		l.named[rs.ShortDigest()] = true
	}
	for _, lf := range leaves {
		src, what, _ := strings.Cut(string(lf), "=")
		l.leaves[src] = append(l.leaves[src], what)
	}
	return nil
}

// TestLoopResendAcrossRulesetChange: a chunk decided under one ruleset and
// produced again after another one came into force (one that moves its
// region to the other cluster) is resent as it was first built, not as
// the new ruleset would place it: with a producer that copies the records
// (so the resend builds them again, in header builders the other
// cluster's sender used under the new ruleset meanwhile) and an Attester,
// each resent record goes to the old region's cluster and topic with the
// old version and digest in its headers and its attestation, and its
// audit leaf names the same destination and ruleset; the events decided
// after the change go where the new ruleset sends them.
func TestLoopResendAcrossRulesetChange(t *testing.T) {
	f := newLoopFixture(t)
	f.cfg.BatchSize = 5
	f.cfg.Attester = &fakeAttester{}
	led := &rulesetLedger{leaves: map[string][]string{}, named: map[string]bool{}}
	f.cfg.Ledger = led
	f.pa.copies, f.pb.copies = true, true
	f.a.CreateTopic("pinned.uk", 2)
	v3 := mustRules(t, 3)
	v4 := mustRulesFrom(t, strings.Replace(testRules, "{name: uk, cluster: b, topic: pinned.uk}",
		"{name: uk, cluster: a, topic: pinned.uk}", 1), 4)
	if v3.ShortDigest() == v4.ShortDigest() {
		t.Fatal("the two rulesets have one digest")
	}
	f.rules.set(v3, nil)
	const failing = 1 << 30
	f.pb.mu.Lock()
	f.pb.failCalls = failing
	f.pb.mu.Unlock()
	f.produce(t, ukEvents(20, 0)...)
	_, stop := f.start(t)
	// All 20 decided under v3 and handed to b's sender (its backlog), and
	// produced and failed a few times, before v4 comes into force.
	testenv.Eventually(t, 10*time.Second, "the first events decided and their produce failed on cluster b", func() bool {
		f.pb.mu.Lock()
		defer f.pb.mu.Unlock()
		return gauge(t, f.reg, "residency_router_backlog_events", "cluster", "b") == 20 && f.pb.failCalls < failing-2
	})
	f.rules.set(v4, nil)
	f.produce(t, ukEvents(20, 100)...)
	testenv.Eventually(t, 10*time.Second, "the events decided under v4 written to cluster a", func() bool {
		return len(f.a.Records("pinned.uk")) == 20
	})
	f.pb.mu.Lock()
	f.pb.failCalls = 0
	f.pb.mu.Unlock()
	testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 40 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	src := map[string]string{} // event id -> "topic/partition/offset"
	for _, m := range f.a.Records(ingest) {
		src[eventID(m)] = fmt.Sprintf("%s/%d/%d", m.Topic, m.Partition, m.Offset)
	}
	check := func(cluster string, b *streamtest.Broker, rs *rules.Ruleset, first int) {
		t.Helper()
		seen := map[string]bool{}
		for _, m := range b.Records("pinned.uk") {
			id := eventID(m)
			var n int
			fmt.Sscan(id, &n)
			if n < first || n >= first+20 {
				t.Errorf("%s/pinned.uk: event %s, decided under the other ruleset", cluster, id)
			}
			seen[id] = true
			if v, d := header(m, router.HeaderRulesetVersion), header(m, router.HeaderRulesetDigest); v != rs.VersionString() || d != rs.ShortDigest() {
				t.Errorf("%s/pinned.uk: event %s carries ruleset %s (%s), want %s (%s)", cluster, id, v, d, rs.VersionString(), rs.ShortDigest())
			}
			if got, want := header(m, router.HeaderAttestation), expectedTag(cluster, "pinned.uk", m); got != want {
				t.Errorf("%s/pinned.uk: event %s: attestation\n%q, want\n%q", cluster, id, got, want)
			}
			led.mu.Lock()
			leaves := led.leaves[src[id]]
			led.mu.Unlock()
			want := fmt.Sprintf("%s/pinned.uk %d %s", cluster, rs.Version(), rs.ShortDigest())
			if len(leaves) != 1 || leaves[0] != want {
				t.Errorf("event %s (%s): leaves %q, want one %q", id, src[id], leaves, want)
			}
		}
		if len(seen) != 20 {
			t.Errorf("%s/pinned.uk: %d distinct events, want 20", cluster, len(seen))
		}
	}
	check("b", f.b, v3, 0)
	check("a", f.a, v4, 100)
	led.mu.Lock()
	defer led.mu.Unlock()
	if !led.named[v3.ShortDigest()] || !led.named[v4.ShortDigest()] {
		t.Errorf("the ledger was given rulesets %v, want both %s and %s", led.named, v3.ShortDigest(), v4.ShortDigest())
	}
}

// blockingProducer is a gateProducer whose Produce waits, as a producer
// whose buffer is full does, until the test opens it or ctx ends (then it
// fails with ctx's error, nothing taken).
type blockingProducer struct {
	*gateProducer
	open   chan struct{}
	inside atomic.Int32 // Produce calls waiting
	calls  atomic.Int32 // Produce calls made
}

func (p *blockingProducer) Produce(ctx context.Context, msgs []stream.Message, done func(router.ProduceAck)) error {
	p.calls.Add(1)
	p.inside.Add(1)
	defer p.inside.Add(-1)
	select {
	case <-p.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return p.gateProducer.Produce(ctx, msgs, done)
}

// TestLoopBlockedProduceOthersFlow: a sender stuck inside Produce (cluster
// b's producer waiting for buffer space) holds nothing the other senders
// need: with an Attester (records are built under the router's build
// lock) and copying producers, cluster a's events keep being built,
// written and acknowledged; b's arrive once it takes them; and a router
// stopped while b's sender is stuck returns after its shutdown timeout,
// its sender out of Produce.
func TestLoopBlockedProduceOthersFlow(t *testing.T) {
	for _, stuck := range []bool{false, true} {
		t.Run(fmt.Sprintf("stuck_at_shutdown=%v", stuck), func(t *testing.T) {
			f := newLoopFixture(t)
			f.cfg.BatchSize = 4
			f.cfg.ShutdownTimeout = 100 * time.Millisecond
			f.cfg.Attester = &fakeAttester{}
			f.pa.copies, f.pb.copies = true, true
			pb := &blockingProducer{gateProducer: f.pb, open: make(chan struct{})}
			f.cfg.Producers["b"] = pb
			f.produce(t, append(ukEvents(6, 0), usEvents(20, 100)...)...)
			_, stop := f.start(t)
			testenv.Eventually(t, 10*time.Second, "cluster a's events while b's sender waits in Produce", func() bool {
				return len(f.a.Records("pinned.us")) == 20 && pb.inside.Load() == 1
			})
			f.produce(t, usEvents(20, 200)...)
			testenv.Eventually(t, 10*time.Second, "cluster a's later events", func() bool { return len(f.a.Records("pinned.us")) == 40 })
			if n := len(f.b.Records("pinned.uk")); n != 0 {
				t.Fatalf("pinned.uk has %d events while its producer took none", n)
			}
			if stuck {
				err := stop()
				if !errors.Is(err, router.ErrUncommitted) {
					t.Fatalf("Run = %v, want ErrUncommitted", err)
				}
				if n := pb.inside.Load(); n != 0 {
					t.Fatalf("%d Produce calls still waiting after Run returned", n)
				}
				calls := pb.calls.Load()
				time.Sleep(50 * time.Millisecond)
				if n := pb.calls.Load(); n != calls {
					t.Fatalf("%d Produce calls after Run returned", n-calls)
				}
				return
			}
			close(pb.open)
			testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == 46 })
			if n := len(f.b.Records("pinned.uk")); n != 6 {
				t.Fatalf("pinned.uk has %d events, want 6", n)
			}
			for _, m := range append(f.a.Records("pinned.us"), f.b.Records("pinned.uk")...) {
				topic, cluster := "pinned.us", "a"
				if header(m, router.HeaderRegion) == "uk" {
					topic, cluster = "pinned.uk", "b"
				}
				if got, want := header(m, router.HeaderAttestation), expectedTag(cluster, topic, m); got != want {
					t.Errorf("%s/%s: attestation\n%q, want\n%q", cluster, topic, got, want)
				}
			}
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
		})
	}
}

// TestLoopShutdownStopsPublishing: a router stopped while a cluster
// written through a Publisher (Config.Publishers) is down returns after its
// shutdown timeout and leaves nothing behind: no goroutine keeps calling
// the Publisher after Run returned (the caller closes it then).
func TestLoopShutdownStopsPublishing(t *testing.T) {
	f := newFixture(t)
	f.cfg.ShutdownTimeout = 100 * time.Millisecond
	pb := &flakyPub{Publisher: f.pubs["b"]}
	pb.failures.Store(1 << 30)
	f.cfg.Publishers = map[string]stream.Publisher{"a": f.pubs["a"], "b": pb}
	f.produce(t, ukEvents(3, 0)...)
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "cluster b's publisher called", func() bool { return pb.calls.Load() > 1 })
	if err := stop(); !errors.Is(err, router.ErrUncommitted) {
		t.Fatalf("Run = %v, want ErrUncommitted", err)
	}
	// A Publish under way when Run returned may still end; nothing starts
	// after it.
	time.Sleep(20 * time.Millisecond)
	calls := pb.calls.Load()
	time.Sleep(100 * time.Millisecond)
	if n := pb.calls.Load() - calls; n != 0 {
		t.Fatalf("the Publisher of cluster b was called %d times after Run returned", n)
	}
}

// asyncProducer is an AsyncProducer over an in-memory cluster that
// acknowledges each call from a goroutine of its own, 0-3 ms later,
// failing each record with probability failRate (the ack's Err set, its
// offset -1; the others are written). Unless copies, it checks that the
// records of a call are not changed while it may read them: until its
// done, and, when its ack says Retained (retain: each ack with a failure
// does), until the end of the test (check). With copies it copies them
// in Produce and says so (router.RecordCopier).
type asyncProducer struct {
	pub      *streamtest.Publisher
	failRate float64
	retain   bool
	copies   bool
	mu       sync.Mutex
	kept     [][2][]stream.Message // retained calls' records, and their copies
	bad      atomic.Pointer[string]
}

func (p *asyncProducer) Produce(_ context.Context, msgs []stream.Message, done func(router.ProduceAck)) error {
	given := streamtest.CloneMessages(msgs)
	go func() {
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		a := router.ProduceAck{Partitions: make([]int32, len(msgs)), Offsets: make([]int64, len(msgs))}
		var written []stream.Message
		for i := range msgs {
			if rand.Float64() < p.failRate {
				a.Offsets[i], a.Err = -1, errors.New("not enough replicas")
				continue
			}
			a.Offsets[i] = int64(i)
			written = append(written, given[i])
		}
		p.mu.Lock()
		if len(written) > 0 {
			if err := p.pub.Publish(context.Background(), written...); err != nil {
				panic(err) // the in-memory broker has every topic the tests write
			}
		}
		if !p.copies && !sameMessages(msgs, given) {
			why := "records changed while the producer could read them (before done)"
			p.bad.Store(&why)
		}
		a.Retained = p.retain && a.Err != nil
		if a.Retained {
			p.kept = append(p.kept, [2][]stream.Message{msgs, given})
		}
		p.mu.Unlock()
		done(a)
	}()
	return nil
}

func (p *asyncProducer) Err() error { return nil }

// check fails t if the records of a call were changed while the producer
// could read them.
func (p *asyncProducer) check(t *testing.T, cluster string) {
	t.Helper()
	if why := p.bad.Load(); why != nil {
		t.Errorf("cluster %s: %s", cluster, *why)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range p.kept {
		if !sameMessages(k[0], k[1]) {
			t.Errorf("cluster %s: records of a call whose ack said Retained changed after it", cluster)
			return
		}
	}
}

// copyingAsyncProducer is an asyncProducer that says it copies the records.
type copyingAsyncProducer struct{ *asyncProducer }

func (copyingAsyncProducer) CopiesRecords() bool { return true }

// sameMessages reports whether a and b hold the same records (topics,
// keys, values and headers; null apart from empty).
func sameMessages(a, b []stream.Message) bool {
	same := func(x, y []byte) bool { return (x == nil) == (y == nil) && bytes.Equal(x, y) }
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Topic != b[i].Topic || !same(a[i].Key, b[i].Key) || !same(a[i].Value, b[i].Value) || len(a[i].Headers) != len(b[i].Headers) {
			return false
		}
		for j := range a[i].Headers {
			if a[i].Headers[j].Key != b[i].Headers[j].Key || !same(a[i].Headers[j].Value, b[i].Headers[j].Value) {
				return false
			}
		}
	}
	return true
}

// TestLoopProducerMemoryContract: under acknowledgements that come from
// another goroutine, late and partly failed (so chunks are resent in part,
// and calls hold several chunks), the router keeps the AsyncProducer
// memory contract for each kind of producer: it reuses a call's records
// and headers only after the call's done (a producer that borrows them),
// never after an ack that says Retained (one that may keep reading them),
// and at once after Produce for a producer that copies them, which it
// gives records built again for each resend. Every event arrives, each
// record as its own event's (producer headers, source coordinates,
// attestation), with a leaf per event.
func TestLoopProducerMemoryContract(t *testing.T) {
	for _, kind := range []string{"borrowing", "retaining", "copying"} {
		t.Run(kind, func(t *testing.T) {
			f := newLoopFixture(t)
			f.cfg.BatchSize = 7
			f.cfg.Attester = &fakeAttester{}
			led := &recLedger{recorded: map[string]int{}}
			f.cfg.Ledger = led
			pa := &asyncProducer{pub: f.a.Publisher(), failRate: 0.1, retain: kind == "retaining", copies: kind == "copying"}
			pb := &asyncProducer{pub: f.b.Publisher(), failRate: 0.1, retain: kind == "retaining", copies: kind == "copying"}
			f.cfg.Producers = map[string]router.AsyncProducer{"a": pa, "b": pb}
			if kind == "copying" {
				f.cfg.Producers = map[string]router.AsyncProducer{"a": copyingAsyncProducer{pa}, "b": copyingAsyncProducer{pb}}
			}
			const n = 500
			var sent []stream.Message
			for i := range n {
				c := []string{"US", "DE", "GB", "IN", "-"}[i%5]
				sent = append(sent, event(c, fmt.Sprintf("user-%d", i%11), fmt.Sprintf("id%d", i)))
			}
			f.produce(t, sent...)
			_, stop := f.start(t)
			testenv.Eventually(t, 30*time.Second, "everything committed", func() bool { return f.committed() == n })
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			pa.check(t, "a")
			pb.check(t, "b")
			read, seen := checkWritten(t, f.a, f.b)
			if len(seen) != n {
				t.Errorf("%d distinct events written, want %d", len(seen), n)
			}
			for id, m := range read {
				if !led.has(m.Topic, m.Partition, m.Offset) {
					t.Errorf("event %s: no leaf", id)
				}
			}
		})
	}
}

// eventID is a test event's id: the last field of its value (event).
func eventID(m stream.Message) string {
	v := string(m.Value)
	return v[strings.LastIndexByte(v, '|')+1:]
}

// checkWritten checks every record written to the loop fixture's
// destinations (pinned.us, pinned.in and quarantine on cluster a,
// pinned.eu and pinned.uk on b): it carries its event's trace header, the
// source partition and offset the event was read at from the ingest topic,
// and the attestation expectedTag makes. It returns the ingest records by
// event id and the ids written.
func checkWritten(t *testing.T, a, b *streamtest.Broker) (read map[string]stream.Message, seen map[string]bool) {
	t.Helper()
	read = map[string]stream.Message{}
	for _, m := range a.Records(ingest) {
		read[eventID(m)] = m
	}
	seen = map[string]bool{}
	for _, c := range []struct {
		name   string
		b      *streamtest.Broker
		topics []string
	}{{"a", a, []string{"pinned.us", "pinned.in", quarantine}}, {"b", b, []string{"pinned.eu", "pinned.uk"}}} {
		for _, topic := range c.topics {
			for _, m := range c.b.Records(topic) {
				id := eventID(m)
				seen[id] = true
				if got := header(m, "trace"); got != "t-"+id {
					t.Errorf("%s/%s: event %s carries trace header %q", c.name, topic, id, got)
				}
				r := read[id]
				if p, o := header(m, router.HeaderSourcePartition), header(m, router.HeaderSourceOffset); p != fmt.Sprint(r.Partition) || o != fmt.Sprint(r.Offset) {
					t.Errorf("%s/%s: event %s says it was read at %s@%s, not %d@%d", c.name, topic, id, p, o, r.Partition, r.Offset)
				}
				if got, want := header(m, router.HeaderAttestation), expectedTag(c.name, topic, m); got != want {
					t.Errorf("%s/%s: attestation\n%q, want\n%q", c.name, topic, got, want)
				}
			}
		}
	}
	return read, seen
}

// overlap counts how many calls are inside a section at once, and the
// most there were.
type overlap struct{ inside, most atomic.Int32 }

func (o *overlap) enter() {
	n := o.inside.Add(1)
	for m := o.most.Load(); n > m && !o.most.CompareAndSwap(m, n); m = o.most.Load() {
	}
	time.Sleep(20 * time.Microsecond) // long enough for another goroutine to come in
}

func (o *overlap) leave() { o.inside.Add(-1) }

// overlapAttester is fakeAttester, counting concurrent calls.
type overlapAttester struct {
	fakeAttester
	overlap
}

func (a *overlapAttester) AppendAttestation(dst []byte, r *router.AttestedRecord) []byte {
	a.enter()
	defer a.leave()
	return a.fakeAttester.AppendAttestation(dst, r)
}

// overlapLedger is recLedger, counting concurrent AppendLeaf calls.
type overlapLedger struct {
	*recLedger
	overlap
}

func (l *overlapLedger) AppendLeaf(dst []byte, s *router.Settled) ([]byte, error) {
	l.enter()
	defer l.leave()
	return l.recLedger.AppendLeaf(dst, s)
}

// TestLoopAuditWorkOnSeveralGoroutines: a large chunk's attestation tags
// and decision leaves are made on several goroutines at once (one sender
// per cluster would otherwise bound the audit's throughput to one core),
// and each record still carries its own event's tag, each event its leaf.
func TestLoopAuditWorkOnSeveralGoroutines(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	}
	f := newLoopFixture(t)
	const n = 400
	f.cfg.BatchSize = n
	att := &overlapAttester{}
	led := &overlapLedger{recLedger: &recLedger{recorded: map[string]int{}}}
	f.cfg.Attester, f.cfg.Ledger = att, led
	f.pa.set(true, "") // hold cluster a until every event is polled: one chunk of n
	f.produce(t, usEvents(n, 0)...)
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "every event polled", func() bool { return f.cons.polled.Load() == n })
	f.pa.set(false, "")
	testenv.Eventually(t, 10*time.Second, "everything committed", func() bool { return f.committed() == n })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if m := att.most.Load(); m < 2 {
		t.Errorf("at most %d attestation at once for a chunk of %d records, want the work spread", m, n)
	}
	if m := led.most.Load(); m < 2 {
		t.Errorf("at most %d leaf encoded at once for a chunk of %d records, want the work spread", m, n)
	}
	recs := f.a.Records("pinned.us")
	if len(recs) != n {
		t.Fatalf("%d records at pinned.us, want %d", len(recs), n)
	}
	for _, m := range recs {
		if got, want := header(m, router.HeaderAttestation), expectedTag("a", "pinned.us", m); got != want {
			t.Fatalf("record %s: attestation\n%q, want\n%q", m.Key, got, want)
		}
		src := fmt.Sprintf("%s/%s/%s", ingest, header(m, router.HeaderSourcePartition), header(m, router.HeaderSourceOffset))
		if led.recorded[src] != 1 {
			t.Fatalf("event %s: recorded %d times, want once", src, led.recorded[src])
		}
	}
}
