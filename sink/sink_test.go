package sink_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

const (
	usTopic    = "residency.us"
	euTopic    = "residency.eu"
	quarTopic  = "residency.sink-quarantine"
	storeName  = "us-store"
	groupName  = "sink-us-store"
	batchSize  = 5
	waitWithin = 10 * time.Second
)

// memStore is an in-memory Store keyed on event id that records each batch.
type memStore struct {
	mu      sync.Mutex
	rows    map[string]sink.Record
	batches [][]sink.Record
	onWrite func(n int) // called after the n-th successful write (1-based)
	failN   int         // fail this many writes first
}

func newMemStore() *memStore { return &memStore{rows: map[string]sink.Record{}} }

func (m *memStore) Write(_ context.Context, batch []sink.Record) error {
	m.mu.Lock()
	if m.failN > 0 {
		m.failN--
		m.mu.Unlock()
		return errors.New("store unavailable")
	}
	for _, r := range batch {
		if _, ok := m.rows[r.EventID]; !ok {
			m.rows[r.EventID] = r
		}
	}
	m.batches = append(m.batches, batch)
	n := len(m.batches)
	hook := m.onWrite
	m.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return nil
}

func (m *memStore) Close(context.Context) error { return nil }

func (m *memStore) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.rows)
}

type harness struct {
	broker *streamtest.Broker
	store  *memStore
	rules  *sinktest.Rules
	reg    *prometheus.Registry
	sink   *sink.Sink
	cfg    sink.Config
}

func newHarness(t *testing.T, approved ...string) *harness {
	t.Helper()
	h := &harness{broker: streamtest.NewBroker(), store: newMemStore(), reg: prometheus.NewRegistry()}
	h.broker.CreateTopic(usTopic, 3)
	h.broker.CreateTopic(quarTopic, 1)
	h.rules = sinktest.NewRules(sinktest.Ruleset(7, usTopic, euTopic, storeName, approved...))
	h.cfg = sink.Config{Store: storeName, Region: "us", Topic: usTopic, QuarantineTopic: quarTopic,
		BatchSize: batchSize, BatchTimeout: 20 * time.Millisecond, RetryBackoff: 5 * time.Millisecond,
		RulesPoll: 10 * time.Millisecond, Registerer: h.reg, Logger: slog.New(slog.DiscardHandler), Rulesets: h.rules}
	return h
}

func (h *harness) newSink(t *testing.T) *sink.Sink {
	t.Helper()
	dec, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sink.New(h.cfg, h.broker.Subscriber(groupName, usTopic), h.store, h.broker.Publisher(), h.rules, dec)
	if err != nil {
		t.Fatal(err)
	}
	h.sink = s
	return s
}

func (h *harness) publish(t *testing.T, msgs ...stream.Message) {
	t.Helper()
	if err := h.broker.Publisher().Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// start runs s until the test ends and returns a channel with Run's result.
func start(t *testing.T, s *sink.Sink) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitWithin):
			t.Error("sink did not stop")
		}
	})
	return done
}

func committed(h *harness) int64 {
	var n int64
	for p := range 3 {
		n += h.broker.Committed(groupName, usTopic, p)
	}
	return n
}

func TestConfigErrorsNameTheField(t *testing.T) {
	h := newHarness(t, "us")
	for field, mut := range map[string]func(*sink.Config){
		"store":            func(c *sink.Config) { c.Store = "" },
		"region":           func(c *sink.Config) { c.Region = "" },
		"topic":            func(c *sink.Config) { c.Topic = "" },
		"quarantine_topic": func(c *sink.Config) { c.QuarantineTopic = usTopic },
		"batch_size":       func(c *sink.Config) { c.BatchSize = -1 },
		"write_timeout":    func(c *sink.Config) { c.WriteTimeout = -time.Second },
	} {
		cfg := h.cfg
		cfg.Registerer = nil
		mut(&cfg)
		_, err := sink.New(cfg, h.broker.Subscriber(groupName, usTopic), h.store, h.broker.Publisher(), h.rules, nil)
		if !errors.Is(err, sink.ErrConfig) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v, want ErrConfig naming the field", field, err)
		}
	}
}

func TestRefusesToStartWhenNotApproved(t *testing.T) {
	for name, tc := range map[string]struct {
		approved []string
		topic    string
		want     []string
	}{
		"store approved for another region": {[]string{"eu"}, usTopic, []string{`"us-store"`, `"us"`, "version 7"}},
		"store not in the ruleset":          {nil, usTopic, []string{`"us-store"`, `"us"`, "version 7"}},
		"topic is not the region's topic":   {[]string{"us"}, "residency.us.old", []string{`"us-store"`, `"us"`, "version 7", "residency.us.old"}},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, tc.approved...)
			h.cfg.Topic = tc.topic
			h.broker.CreateTopic(tc.topic, 1)
			h.publish(t, sinktest.Message(tc.topic, 1, "US", "us", "US"))
			s := h.newSink(t)
			err := s.Run(context.Background())
			if !errors.Is(err, sink.ErrNotApproved) {
				t.Fatalf("Run = %v, want ErrNotApproved", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
			if h.store.count() != 0 || h.broker.Committed(groupName, tc.topic, 0) != 0 {
				t.Error("a refused sink wrote or committed")
			}
			if r := s.Ready(); !errors.Is(r, sink.ErrNotApproved) {
				t.Errorf("Ready = %v, want ErrNotApproved", r)
			}
		})
	}
}

func TestRefusesToStartWithoutRuleset(t *testing.T) {
	h := newHarness(t, "us")
	h.rules.Set(nil)
	err := h.newSink(t).Run(context.Background())
	if !errors.Is(err, sink.ErrNoRuleset) {
		t.Fatalf("Run = %v, want ErrNoRuleset", err)
	}
}

func TestWritesCommitsAndQuarantines(t *testing.T) {
	h := newHarness(t, "us")
	var msgs []stream.Message
	for i := range 12 {
		msgs = append(msgs, sinktest.Message(usTopic, i, "US", "us", "US"))
	}
	bad := []stream.Message{
		sinktest.Message(usTopic, 100, "EU", "eu", "DE"), // region the store is not approved for
		sinktest.Message(usTopic, 101, "", "", "US"),     // no region header
		undecodable(sinktest.Message(usTopic, 102, "US", "us", "US")),
	}
	msgs = append(msgs, bad...)
	msgs = append(msgs, sinktest.Message(usTopic, 3, "US", "us", "US")) // the router's duplicate of event 3
	h.publish(t, msgs...)
	s := h.newSink(t)
	start(t, s)
	testenv.Eventually(t, waitWithin, "all offsets committed", func() bool { return committed(h) == int64(len(msgs)) })

	if n := h.store.count(); n != 12 {
		t.Fatalf("store holds %d events, want 12", n)
	}
	for _, b := range h.store.batches {
		if len(b) > batchSize {
			t.Errorf("batch of %d events, BatchSize is %d", len(b), batchSize)
		}
		for _, r := range b {
			if r.Region != "us" {
				t.Errorf("store received region %q", r.Region)
			}
		}
	}
	r := h.store.rows[sinktest.EventID(4)]
	if r.UserID != sinktest.UserID(4) || !r.OccurredAt.Equal(sinktest.OccurredAt(4)) || r.Jurisdiction != "US" ||
		r.RulesetVersion != "7" || r.SourceTopic != "events" || r.SourcePartition != 1 || r.SourceOffset != 10_004 ||
		r.Topic != usTopic || string(r.Raw) != string(msgs[4].Value) {
		r.Event, r.Raw = nil, nil
		t.Errorf("record of event 4 = %+v", r)
	}
	var doc map[string]any
	if err := json.Unmarshal(r.Event, &doc); err != nil || doc["event_id"] != sinktest.EventID(4) {
		t.Errorf("decoded event = %s (%v)", r.Event, err)
	}

	q := h.broker.Records(quarTopic)
	if len(q) != 3 {
		t.Fatalf("quarantine holds %d events, want 3", len(q))
	}
	want := map[string]string{
		sinktest.UserID(100): sink.ReasonRegionNotApproved,
		sinktest.UserID(101): sink.ReasonNoRegion,
		"k":                  sink.ReasonUndecodable,
	}
	for _, m := range q {
		reason, _ := router.HeaderValue(m.Headers, router.HeaderReason)
		store, _ := router.HeaderValue(m.Headers, sink.HeaderStore)
		if string(reason) != want[string(m.Key)] || string(store) != storeName {
			t.Errorf("quarantined %s: reason %q store %q, want %q", m.Key, reason, store, want[string(m.Key)])
		}
	}
	if v := metric(t, h.reg, "residency_sink_written_events_total", "region", "us"); v != 12 && v != 13 {
		// 13 when the duplicate of event 3 came in another batch: the store
		// got it again (and kept one copy).
		t.Errorf("written metric = %v, want 12 or 13", v)
	}
	if v := metric(t, h.reg, "residency_sink_quarantined_events_total", "reason", sink.ReasonRegionNotApproved); v != 1 {
		t.Errorf("quarantined metric = %v, want 1", v)
	}
	if err := s.Ready(); err != nil {
		t.Errorf("Ready = %v", err)
	}
}

// undecodable returns m with key "k" and a value that is not Avro.
func undecodable(m stream.Message) stream.Message {
	m.Key, m.Value = []byte("k"), []byte("not avro")
	return m
}

// metric returns the value of one labelled counter or gauge series in reg.
func metric(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
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
					if m.Gauge != nil {
						return m.GetGauge().GetValue()
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

func TestRevocationStopsWritingWithinOneBatch(t *testing.T) {
	h := newHarness(t, "us")
	h.cfg.BatchTimeout = time.Hour // batches are cut by size only
	revoked := sinktest.Ruleset(8, usTopic, euTopic, storeName, "eu")
	h.store.onWrite = func(n int) {
		if n == 1 {
			h.rules.Set(revoked) // `rules apply` lands while batch 1 is written
		}
	}
	var msgs []stream.Message
	for i := range 4 * batchSize {
		msgs = append(msgs, sinktest.Message(usTopic, i, "US", "us", "US"))
	}
	h.publish(t, msgs...)
	s := h.newSink(t)
	start(t, s)
	testenv.Eventually(t, waitWithin, "not-ready", func() bool { return errors.Is(s.Ready(), sink.ErrNotApproved) })
	// Batch 1 was being written when the revocation landed: wait for it to
	// be stored and committed (a loaded host may take longer than any fixed
	// sleep), then give a faulty sink time to write more.
	testenv.Eventually(t, waitWithin, "batch 1 stored and committed", func() bool {
		return h.store.count() >= batchSize && committed(h) >= batchSize
	})
	time.Sleep(100 * time.Millisecond)
	if n := h.store.count(); n != batchSize {
		t.Fatalf("store holds %d events after the revocation, want %d (one batch)", n, batchSize)
	}
	if c := committed(h); c != batchSize {
		t.Fatalf("%d offsets committed, want %d", c, batchSize)
	}
	if err := s.Ready(); !strings.Contains(err.Error(), "version 8") {
		t.Errorf("Ready = %v, want it to name ruleset version 8", err)
	}
	if v := metric(t, h.reg, "residency_sink_ready", "store", storeName); v != 0 {
		t.Errorf("ready gauge = %v", v)
	}

	// Approval given back (e.g. `rules rollback`): writing resumes.
	h.rules.Set(sinktest.Ruleset(9, usTopic, euTopic, storeName, "us"))
	testenv.Eventually(t, waitWithin, "all events written", func() bool { return h.store.count() == 4*batchSize })
	testenv.Eventually(t, waitWithin, "ready", func() bool { return s.Ready() == nil })
}

func TestRegionRevokedPerRecordUnderNewRuleset(t *testing.T) {
	// The store stays approved for us but loses eu: eu events arriving
	// after the change are quarantined, not written.
	h := newHarness(t, "us", "eu")
	h.publish(t, sinktest.Message(usTopic, 1, "EU", "eu", "DE"))
	s := h.newSink(t)
	start(t, s)
	testenv.Eventually(t, waitWithin, "first event written", func() bool { return h.store.count() == 1 })
	h.rules.Set(sinktest.Ruleset(8, usTopic, euTopic, storeName, "us"))
	h.publish(t, sinktest.Message(usTopic, 2, "EU", "eu", "DE"))
	testenv.Eventually(t, waitWithin, "quarantined", func() bool { return len(h.broker.Records(quarTopic)) == 1 })
	if h.store.count() != 1 {
		t.Errorf("store holds %d events, want 1", h.store.count())
	}
}

func TestStoreFailureIsRetriedNotCommitted(t *testing.T) {
	h := newHarness(t, "us")
	h.store.failN = 3
	h.publish(t, sinktest.Message(usTopic, 1, "US", "us", "US"))
	s := h.newSink(t)
	start(t, s)
	testenv.Eventually(t, waitWithin, "committed", func() bool { return committed(h) == 1 })
	if h.store.count() != 1 {
		t.Fatalf("store holds %d", h.store.count())
	}
	if err := s.Ready(); err != nil {
		t.Errorf("Ready after recovery = %v", err)
	}
}

func TestCloseWaitsForRun(t *testing.T) {
	h := newHarness(t, "us")
	s := h.newSink(t)
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	testenv.Eventually(t, waitWithin, "ready", func() bool { return s.Ready() == nil })
	h.publish(t, sinktest.Message(usTopic, 1, "US", "us", "US"))
	testenv.Eventually(t, waitWithin, "written", func() bool { return committed(h) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), waitWithin)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Close returns once Run's cleanup is over: Run has already reported
	// itself stopped (not ready), which it does last, just before it
	// returns. Had Close not waited, the sink would still be ready here.
	if err := s.Ready(); !errors.Is(err, sink.ErrNotReady) || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("Ready right after Close = %v, want not ready: stopped", err)
	}
	// Run then returns at once; its goroutine may still need a moment to be
	// scheduled and deliver the result (a bare default case here mistook
	// that for Close not waiting, once in CI).
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return within 1s of Close")
	}
}

func TestReadinessFollowsTheRulesetWhileIdle(t *testing.T) {
	h := newHarness(t, "us")
	s := h.newSink(t)
	start(t, s)
	testenv.Eventually(t, waitWithin, "ready", func() bool { return s.Ready() == nil })
	h.rules.Set(sinktest.Ruleset(8, usTopic, euTopic, storeName, "eu"))
	testenv.Eventually(t, waitWithin, "not ready without a batch", func() bool { return errors.Is(s.Ready(), sink.ErrNotApproved) })
	if v := metric(t, h.reg, "residency_sink_approved", "store", storeName); v != 0 {
		t.Errorf("approved gauge = %v", v)
	}
	h.rules.Set(nil)
	testenv.Eventually(t, waitWithin, "not ready without a ruleset", func() bool { return errors.Is(s.Ready(), sink.ErrNoRuleset) })
	h.rules.Set(sinktest.Ruleset(9, usTopic, euTopic, storeName, "us"))
	testenv.Eventually(t, waitWithin, "ready again", func() bool { return s.Ready() == nil })
}

func TestRefusesWhenThePinnedTopicIsOnAnotherCluster(t *testing.T) {
	h := newHarness(t, "us")
	h.cfg.Cluster = "us-local"
	err := h.newSink(t).Run(context.Background())
	if !errors.Is(err, sink.ErrNotApproved) || !strings.Contains(err.Error(), `cluster "ingest"`) {
		t.Fatalf("Run = %v, want ErrNotApproved naming the region's cluster", err)
	}
}

// nativeOnly hides schemas.Extractor's DecodeJSONFastRef: the sink falls
// back to goavro's native form and renders it.
type nativeOnly struct{ e *schemas.Extractor }

func (n nativeOnly) DecodeRef(ctx context.Context, ref schemas.WriterRef, value []byte) (any, string, error) {
	return n.e.DecodeRef(ctx, ref, value)
}

func (n nativeOnly) ExtractRef(ctx context.Context, ref schemas.WriterRef, value []byte) (schemas.Fields, error) {
	return n.e.ExtractRef(ctx, ref, value)
}

func TestNativeDecoderFallback(t *testing.T) {
	h := newHarness(t, "us")
	e, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	h.cfg.Registerer = nil
	s, err := sink.New(h.cfg, h.broker.Subscriber(groupName, usTopic), h.store, h.broker.Publisher(), h.rules, nativeOnly{e})
	if err != nil {
		t.Fatal(err)
	}
	corrupt := sinktest.Message(usTopic, 9, "US", "us", "US")
	corrupt.Key, corrupt.Value = []byte("k"), corrupt.Value[:20]
	h.publish(t, sinktest.Message(usTopic, 8, "US", "us", "US"), corrupt)
	start(t, s)
	testenv.Eventually(t, waitWithin, "committed", func() bool { return committed(h) == 2 })
	r := h.store.rows[sinktest.EventID(8)]
	var doc map[string]any
	if err := json.Unmarshal(r.Event, &doc); err != nil || doc["country"] != "US" || r.UserID != sinktest.UserID(8) ||
		!r.OccurredAt.Equal(sinktest.OccurredAt(8)) {
		t.Fatalf("record %+v (%v)", doc, err)
	}
	if q := h.broker.Records(quarTopic); len(q) != 1 {
		t.Fatalf("quarantined %d, want the undecodable event", len(q))
	}
}

// hangingStore blocks its first hang writes until their context ends, as a
// hung COPY or PUT would, then behaves like its memStore.
type hangingStore struct {
	*memStore
	mu        sync.Mutex
	hang      int
	deadlines []time.Duration // time left to each write's deadline
}

func (s *hangingStore) Write(ctx context.Context, batch []sink.Record) error {
	s.mu.Lock()
	if d, ok := ctx.Deadline(); ok {
		s.deadlines = append(s.deadlines, time.Until(d))
	} else {
		s.deadlines = append(s.deadlines, -1)
	}
	hang := s.hang > 0
	if hang {
		s.hang--
	}
	s.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.memStore.Write(ctx, batch)
}

func TestHungWriteTimesOutAndIsRetried(t *testing.T) {
	h := newHarness(t, "us")
	h.cfg.WriteTimeout = 50 * time.Millisecond
	hs := &hangingStore{memStore: h.store, hang: 2}
	dec, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sink.New(h.cfg, h.broker.Subscriber(groupName, usTopic), hs, h.broker.Publisher(), h.rules, dec)
	if err != nil {
		t.Fatal(err)
	}
	h.publish(t, sinktest.Message(usTopic, 1, "US", "us", "US"))
	start(t, s)
	testenv.Eventually(t, waitWithin, "not ready while the write hangs", func() bool {
		err := s.Ready()
		return err != nil && strings.Contains(err.Error(), "timed out")
	})
	if c := committed(h); c != 0 {
		t.Fatalf("%d offsets committed while the write timed out", c)
	}
	testenv.Eventually(t, waitWithin, "committed after the retry", func() bool { return committed(h) == 1 })
	if n := h.store.count(); n != 1 {
		t.Fatalf("store holds %d events, want 1", n)
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if len(hs.deadlines) != 3 {
		t.Errorf("%d writes, want 3 (two timed out)", len(hs.deadlines))
	}
	for i, d := range hs.deadlines {
		if d <= 0 || d > h.cfg.WriteTimeout {
			t.Errorf("write %d: deadline in %v, want within WriteTimeout %v", i, d, h.cfg.WriteTimeout)
		}
	}
	if v := metric(t, h.reg, "residency_sink_retries_total", "op", "write"); v != 2 {
		t.Errorf("write retries = %v, want 2", v)
	}
}
