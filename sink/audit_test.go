package sink_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

// keyAttestation accepts a record unless its key is in bad; it records the
// cluster and topic it was asked about.
type keyAttestation struct {
	mu     sync.Mutex
	bad    map[string]bool
	where  map[string]bool
	checks int
}

func (a *keyAttestation) Check(cluster, topic string, msg *stream.Message, _ *router.RecordSums) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checks++
	if a.where == nil {
		a.where = map[string]bool{}
	}
	a.where[cluster+"/"+topic] = true
	if a.bad[string(msg.Key)] {
		return errors.New("tag does not match the record")
	}
	return nil
}

// memLedger records entries; while fail is set, Record fails.
type memLedger struct {
	mu      sync.Mutex
	fail    bool
	calls   int
	entries []sink.Entry
}

func (l *memLedger) Record(_ context.Context, entries []sink.Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.fail {
		return errors.New("audit topic unavailable")
	}
	for _, e := range entries {
		m := *e.Msg // borrowed: keep a copy
		e.Msg = &m
		l.entries = append(l.entries, e)
	}
	return nil
}

func (l *memLedger) setFail(v bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fail = v
}

func (l *memLedger) snapshot() ([]sink.Entry, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sink.Entry(nil), l.entries...), l.calls
}

// placingPublisher is the in-memory publisher that says where records went.
type placingPublisher struct {
	*streamtest.Publisher
	b *streamtest.Broker
}

func (p placingPublisher) PublishPlaced(ctx context.Context, msgs []stream.Message) ([]int32, []int64, error) {
	before := len(p.b.Records(msgs[0].Topic))
	if err := p.Publish(ctx, msgs...); err != nil {
		return nil, nil, err
	}
	parts, offs := make([]int32, len(msgs)), make([]int64, len(msgs))
	for i := range msgs {
		offs[i] = int64(before + i) // one partition
	}
	return parts, offs, nil
}

func TestAttestationConfigNeedsCluster(t *testing.T) {
	h := newHarness(t, "us")
	h.cfg.Registerer = nil
	h.cfg.Attestation = &keyAttestation{}
	_, err := sink.New(h.cfg, h.broker.Subscriber(groupName, usTopic), h.store, h.broker.Publisher(), h.rules, nil)
	if !errors.Is(err, sink.ErrConfig) || !strings.Contains(err.Error(), "cluster") {
		t.Fatalf("New = %v, want ErrConfig naming cluster", err)
	}
}

// TestAttestationCheckedFirst: a record whose attestation the check refuses
// is quarantined as sink_bad_attestation, before any of its headers is
// believed (even one that would be refused for another reason), and is
// counted; the others are written.
func TestAttestationCheckedFirst(t *testing.T) {
	h := newHarness(t, "us")
	att := &keyAttestation{bad: map[string]bool{sinktest.UserID(3): true, sinktest.UserID(101): true}}
	h.cfg.Cluster, h.cfg.Attestation = "ingest", att
	var msgs []stream.Message
	for i := range 6 {
		msgs = append(msgs, sinktest.Message(usTopic, i, "US", "us", "US"))
	}
	msgs = append(msgs, sinktest.Message(usTopic, 101, "", "", "US")) // no region header, and a bad tag
	h.publish(t, msgs...)
	s := h.newSink(t)
	start(t, s)
	testenv.Eventually(t, waitWithin, "all offsets committed", func() bool { return committed(h) == int64(len(msgs)) })
	if n := h.store.count(); n != 5 {
		t.Fatalf("store holds %d events, want 5", n)
	}
	if _, ok := h.store.rows[sinktest.EventID(3)]; ok {
		t.Error("the record with a bad attestation was stored")
	}
	q := h.broker.Records(quarTopic)
	if len(q) != 2 {
		t.Fatalf("quarantine holds %d events, want 2", len(q))
	}
	for _, m := range q {
		reason, _ := router.HeaderValue(m.Headers, router.HeaderReason)
		msg, _ := router.HeaderValue(m.Headers, router.HeaderError)
		if string(reason) != sink.ReasonBadAttestation || !strings.Contains(string(msg), "attestation") {
			t.Errorf("quarantined %s: reason %q error %q", m.Key, reason, msg)
		}
	}
	if v := metric(t, h.reg, "residency_sink_quarantined_events_total", "reason", sink.ReasonBadAttestation); v != 2 {
		t.Errorf("quarantined metric = %v, want 2", v)
	}
	att.mu.Lock()
	defer att.mu.Unlock()
	if att.checks < len(msgs) || len(att.where) != 1 || !att.where["ingest/"+usTopic] {
		t.Errorf("attestation checked %d times, at %v; want every record, at ingest/%s", att.checks, att.where, usTopic)
	}
}

// TestLedgerBeforeCommit: the ledger gets an entry per record stored and per
// record refused (with its quarantine coordinates) before the offsets are
// committed; while it fails nothing is committed and the sink is not ready,
// and it resumes when the ledger does.
func TestLedgerBeforeCommit(t *testing.T) {
	h := newHarness(t, "us")
	led := &memLedger{fail: true}
	h.cfg.Ledger = led
	var msgs []stream.Message
	for i := range 4 {
		msgs = append(msgs, sinktest.Message(usTopic, i, "US", "us", "US"))
	}
	msgs = append(msgs, sinktest.Message(usTopic, 100, "EU", "eu", "DE")) // not approved here
	h.publish(t, msgs...)
	dec := newDecoder(t)
	s, err := sink.New(h.cfg, h.broker.Subscriber(groupName, usTopic), h.store, placingPublisher{h.broker.Publisher(), h.broker}, h.rules, dec)
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	testenv.Eventually(t, waitWithin, "the ledger failing", func() bool {
		_, calls := led.snapshot()
		return calls >= 3
	})
	if err := s.Ready(); !errors.Is(err, sink.ErrNotReady) || !strings.Contains(err.Error(), "audit ledger") {
		t.Errorf("Ready while the ledger fails = %v, want not ready naming the audit ledger", err)
	}
	if c := committed(h); c != 0 {
		t.Fatalf("%d offsets committed while the ledger failed", c)
	}
	if v := metric(t, h.reg, "residency_sink_retries_total", "op", "ledger"); v < 1 {
		t.Errorf("ledger retries = %v", v)
	}
	led.setFail(false)
	testenv.Eventually(t, waitWithin, "all offsets committed", func() bool { return committed(h) == int64(len(msgs)) })
	testenv.Eventually(t, waitWithin, "ready again", func() bool { return s.Ready() == nil })
	entries, _ := led.snapshot()
	written, refused := 0, 0
	for _, e := range entries {
		if e.Ruleset == nil || e.Ruleset.Version() != 7 {
			t.Errorf("entry without the ruleset in force: %+v", e)
		}
		if e.Written {
			written++
			if e.EventID == "" || e.UserID == "" || e.Msg.Topic != usTopic {
				t.Errorf("written entry %+v", e)
			}
			continue
		}
		refused++
		if e.Reason != sink.ReasonRegionNotApproved || e.QuarantineTopic != quarTopic || e.QuarantineOffset < 0 || string(e.Msg.Key) != sinktest.UserID(100) {
			t.Errorf("refused entry: reason %q quarantine %s/%d@%d key %s", e.Reason, e.QuarantineTopic, e.QuarantinePartition, e.QuarantineOffset, e.Msg.Key)
		}
		q := h.broker.Records(quarTopic)
		if int(e.QuarantineOffset) >= len(q) || string(q[e.QuarantineOffset].Key) != string(e.Msg.Key) {
			t.Errorf("the refusal's quarantine offset %d does not hold its record", e.QuarantineOffset)
		}
	}
	if written != 4 || refused < 1 {
		t.Errorf("ledger got %d written and %d refused entries, want 4 and at least 1", written, refused)
	}
}

func newDecoder(t *testing.T) sink.Decoder {
	t.Helper()
	dec, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return dec
}
