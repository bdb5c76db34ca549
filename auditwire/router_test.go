package auditwire_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/auditwire"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/routertest"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

const testRules = `
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE, FR]}
regions:
  - {name: us, cluster: a, topic: pinned.us}
  - {name: eu, cluster: b, topic: pinned.eu}
stores:
  - {name: eu-store, regions: [eu]}
`

func ruleset(t testing.TB, src string, version int64) *rules.Ruleset {
	t.Helper()
	rs, err := rules.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	rs.SetVersion(version)
	return rs
}

// memLog is an in-memory Log; fail makes the next Appends fail.
type memLog struct {
	mu   sync.Mutex
	recs [][]byte
	fail int
}

func (m *memLog) Append(_ context.Context, recs ...[]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail > 0 {
		m.fail--
		return errors.New("audit topic down")
	}
	for _, r := range recs {
		m.recs = append(m.recs, bytes.Clone(r))
	}
	return nil
}

func (m *memLog) leaves(t testing.TB) []audit.Leaf {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []audit.Leaf
	for _, r := range m.recs {
		ls, err := audit.DecodeWireRecord(r)
		if err != nil {
			t.Fatalf("decode audit record: %v", err)
		}
		out = append(out, ls...)
	}
	return out
}

func pseudonymizer(t testing.TB) *audit.Pseudonymizer {
	p, err := audit.NewPseudonymizer(bytes.Repeat([]byte("s"), 32))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func settledEvent(i int, d router.Decision, rs *rules.Ruleset, cluster, topic string) router.Settled {
	m := &stream.Message{Topic: "ingest", Partition: i % 3, Offset: int64(100 + i), Key: fmt.Appendf(nil, "key-%d", i),
		Value: fmt.Appendf(nil, "value-%d", i)}
	ev := &router.Event{Msg: m, Decision: d, Fields: schemas.Fields{UserID: fmt.Appendf(nil, "user-%d", i)}}
	return router.Settled{Event: ev, Ruleset: rs, Cluster: cluster, Topic: topic, Partition: int32(i % 2), Offset: int64(7000 + i)}
}

// TestLedgerLeafTime: a leaf's time is when its event settled, as the
// router says (Settled.At, one clock reading per produce result), and the
// Ledger's own clock only for an event that does not say.
func TestLedgerLeafTime(t *testing.T) {
	log := &memLog{}
	const clock int64 = 1764028800123
	l, err := auditwire.NewLedger(log, auditwire.LedgerConfig{Actor: "router-1",
		Now: func() time.Time { return time.UnixMilli(clock) }})
	if err != nil {
		t.Fatal(err)
	}
	rs := ruleset(t, testRules, 3)
	routed := router.Decision{Outcome: router.Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu"}
	said, unsaid := settledEvent(0, routed, rs, "b", "pinned.eu"), settledEvent(1, routed, rs, "b", "pinned.eu")
	said.At = time.UnixMilli(clock + 4567)
	if err := l.Record(context.Background(), []router.Settled{said, unsaid}); err != nil {
		t.Fatal(err)
	}
	times := map[int64]int64{}
	for _, lf := range log.leaves(t) {
		if lf.Kind == audit.KindRoute {
			times[lf.Src.Offset] = lf.Time
		}
	}
	if got := times[said.Event.Msg.Offset]; got != clock+4567 {
		t.Errorf("leaf of an event settled at %d has time %d", clock+4567, got)
	}
	if got := times[unsaid.Event.Msg.Offset]; got != clock {
		t.Errorf("leaf of an event without its settlement time has time %d, want the clock's %d", got, clock)
	}
}

// TestLedgerLeaves records settled events in three calls under two
// ruleset versions: each ruleset leaf comes once, at the head of the
// first Append holding a leaf decided under it (so before that leaf),
// with the policy and content of the ruleset; each
// decision leaf holds the event's source, digests, keyed subject,
// decision and destination, and no raw key, value or user id; a failed
// Append logs the ruleset leaf again on the retry.
func TestLedgerLeaves(t *testing.T) {
	log := &memLog{}
	subj := pseudonymizer(t)
	l, err := auditwire.NewLedger(log, auditwire.LedgerConfig{Actor: "router-1", Subjects: subj,
		Now: func() time.Time { return time.UnixMilli(1764028800123) }})
	if err != nil {
		t.Fatal(err)
	}
	rs3, rs4 := ruleset(t, testRules, 3), ruleset(t, testRules+"\n# v4\n", 4)
	routed := router.Decision{Outcome: router.Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu", Pinned: true}
	quar := router.Decision{Outcome: router.Quarantined, Reason: router.ReasonUnknownCountry}
	dead := router.Decision{Outcome: router.DeadLettered, Reason: "bad_magic"}
	ctx := context.Background()
	b1 := []router.Settled{settledEvent(0, routed, rs3, "b", "pinned.eu"), settledEvent(1, quar, rs3, "a", "quarantine")}
	log.fail = 1
	if err := l.Record(ctx, b1); err == nil {
		t.Fatal("Record with the Log failing returned nil")
	}
	if err := l.Record(ctx, b1); err != nil {
		t.Fatal(err)
	}
	b2 := []router.Settled{settledEvent(2, dead, rs3, "a", "dead-letter"), settledEvent(3, routed, rs4, "b", "pinned.eu")}
	if err := l.Record(ctx, b2); err != nil {
		t.Fatal(err)
	}
	if err := l.Record(ctx, []router.Settled{settledEvent(4, routed, rs4, "b", "pinned.eu")}); err != nil {
		t.Fatal(err)
	}
	got := log.leaves(t)
	var seq []string
	for _, x := range got {
		seq = append(seq, fmt.Sprintf("%s:%d", x.Kind, x.Ruleset.Version))
	}
	want := "ruleset:3 route:3 route:3 ruleset:4 route:3 route:4 route:4"
	if strings.Join(seq, " ") != want {
		t.Fatalf("leaves %v, want %s", seq, want)
	}
	rl := got[0]
	if rl.Policy == nil || rl.Content != string(rs3.Content()) || rl.Ruleset.Digest.String() != rs3.Digest() || len(rl.Policy.Regions) != 2 ||
		rl.Policy.Regions[0].Cluster != "b" || rl.Policy.Stores[0].Name != "eu-store" {
		t.Errorf("ruleset leaf %+v", rl)
	}
	all := []router.Settled{b1[0], b1[1], b2[0], b2[1]}
	for i, x := range []audit.Leaf{got[1], got[2], got[4], got[5]} {
		s := all[i]
		m := s.Event.Msg
		if x.Actor != "router-1" || x.Time != 1764028800123 || x.Src.Topic != "ingest" || x.Src.Partition != int32(m.Partition) ||
			x.Src.Offset != m.Offset || x.Value != audit.Sum(m.Value) || x.Key != audit.Sum(m.Key) || x.KeyNull ||
			x.Dest.Cluster != s.Cluster || x.Dest.Topic != s.Topic || x.Dest.Partition != s.Partition || x.Dest.Offset != s.Offset ||
			x.Decision != auditwire.Decision(s.Event.Decision.Outcome) || x.Reason != s.Event.Decision.Reason ||
			x.Jurisdiction != s.Event.Decision.Jurisdiction || x.Region != s.Event.Decision.Region ||
			x.Subject != subj.Subject(s.Event.Fields.UserID) {
			t.Errorf("leaf %d: %+v does not match its event", i, x)
		}
	}
	if got[1].DecidedBy != "pin" || got[2].DecidedBy != "" {
		t.Errorf("decided_by %q %q, want pin and none", got[1].DecidedBy, got[2].DecidedBy)
	}
	for _, r := range log.recs {
		for _, raw := range []string{"user-", "key-", "value-"} {
			if bytes.Contains(r, []byte(raw)) {
				t.Errorf("an audit record holds a raw %q", raw)
			}
		}
	}
}

// TestLedgerSplitsRecords records more leaves than one record holds:
// every record stays within MaxRecordBytes and, together, they hold every
// leaf in order.
func TestLedgerSplitsRecords(t *testing.T) {
	log := &memLog{}
	max := audit.MaxLeafSize + 100
	l, err := auditwire.NewLedger(log, auditwire.LedgerConfig{Actor: "r", MaxRecordBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	rs := ruleset(t, testRules, 1)
	d := router.Decision{Outcome: router.Routed, Jurisdiction: "US", Region: "us", Cluster: "a", Topic: "pinned.us"}
	var batch []router.Settled
	for i := range 1500 {
		batch = append(batch, settledEvent(i, d, rs, "a", "pinned.us"))
	}
	if err := l.Record(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if len(log.recs) < 2 {
		t.Fatalf("%d records, want several", len(log.recs))
	}
	for i, r := range log.recs {
		if len(r) > max {
			t.Errorf("record %d: %d bytes, more than %d", i, len(r), max)
		}
	}
	got := log.leaves(t)
	if len(got) != 1501 || got[0].Kind != audit.KindRuleset {
		t.Fatalf("%d leaves, want the ruleset leaf and 1500", len(got))
	}
	for i, x := range got[1:] {
		if x.Src.Offset != batch[i].Event.Msg.Offset {
			t.Fatalf("leaf %d has offset %d, want %d", i, x.Src.Offset, batch[i].Event.Msg.Offset)
		}
	}
}

// TestLedgerReusesRecords appends a large batch, a small one and a large
// one again through the same Ledger, whose record buffers are reused from
// call to call: every leaf is in the log once, in order, in records of at
// most MaxRecordBytes, as the calls gave them; and once warm, an Append
// allocates nothing (over a Log that copies nothing).
func TestLedgerReusesRecords(t *testing.T) {
	log := &memLog{}
	max := audit.MaxLeafSize + 100
	l, err := auditwire.NewLedger(log, auditwire.LedgerConfig{Actor: "r", MaxRecordBytes: max, Subjects: pseudonymizer(t)})
	if err != nil {
		t.Fatal(err)
	}
	rs := ruleset(t, testRules, 1)
	d := router.Decision{Outcome: router.Routed, Jurisdiction: "US", Region: "us", Cluster: "a", Topic: "pinned.us"}
	encode := func(from, n int) [][]byte {
		leaves := make([][]byte, n)
		for i := range leaves {
			s := settledEvent(from+i, d, rs, "a", "pinned.us")
			if leaves[i], err = l.AppendLeaf(nil, &s); err != nil {
				t.Fatal(err)
			}
		}
		return leaves
	}
	var want []int64
	for _, call := range []struct{ from, n int }{{0, 1500}, {1500, 7}, {2000, 1200}, {4000, 1}} {
		if err := l.Append(context.Background(), []*rules.Ruleset{rs}, encode(call.from, call.n)); err != nil {
			t.Fatal(err)
		}
		for i := range call.n {
			want = append(want, int64(100+call.from+i))
		}
	}
	for i, r := range log.recs {
		if len(r) > max {
			t.Errorf("record %d: %d bytes, more than %d", i, len(r), max)
		}
	}
	got := log.leaves(t)
	if len(got) != len(want)+1 || got[0].Kind != audit.KindRuleset {
		t.Fatalf("%d leaves, want the ruleset leaf and %d", len(got), len(want))
	}
	for i, x := range got[1:] {
		if x.Src.Offset != want[i] || x.Kind != audit.KindRoute || x.Subject.IsZero() {
			t.Fatalf("leaf %d: %s leaf of offset %d, want the route leaf of offset %d with its subject", i, x.Kind, x.Src.Offset, want[i])
		}
	}
	leaves := encode(0, 1500)
	warm, err := auditwire.NewLedger(&discardLog{}, auditwire.LedgerConfig{Actor: "r", MaxRecordBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(5, func() {
		if err := warm.Append(context.Background(), []*rules.Ruleset{rs}, leaves); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("a warm Append of 1500 leaves allocates %.0f times, want 0", allocs)
	}
}

// textFields reads values "E|country|user".
type textFields struct{}

func (textFields) Extract(_ context.Context, _ string, v []byte) (schemas.Fields, error) {
	if len(v) == 0 || v[0] != 'E' {
		return schemas.Fields{}, fmt.Errorf("fake: %w", schemas.ErrBadMagic)
	}
	p := bytes.Split(v, []byte("|"))
	if len(p) != 3 {
		return schemas.Fields{}, fmt.Errorf("fake: %w", schemas.ErrTruncated)
	}
	f := schemas.Fields{UserID: p[2]}
	if string(p[1]) != "-" {
		f.Country, f.HasCountry = p[1], true
	}
	return f, nil
}

type rulesOf struct{ rs *rules.Ruleset }

func (r rulesOf) Current() (*rules.Ruleset, error) { return r.rs, nil }

// TestRouterAttestationVerifies runs the router over in-memory clusters
// with this package's Attester and Ledger: every record written (pinned on
// both clusters, quarantined, dead-lettered, too_large without its body, a
// null key) passes audit.AttestVerifier with the input a sink and the
// verifier build (audit.AttestationInputOf), a tampered value or a record
// read as another topic's does not, and every ingest offset has one leaf.
func TestRouterAttestationVerifies(t *testing.T) {
	a, b := streamtest.NewBroker(), streamtest.NewBroker()
	a.CreateTopic("ingest", 2)
	for _, tp := range []string{"quarantine", "dead-letter", "pinned.us"} {
		a.CreateTopic(tp, 2)
	}
	b.CreateTopic("pinned.eu", 2)
	key := audit.AttestKey{ID: "k1", Secret: bytes.Repeat([]byte("a"), 32)}
	att, err := auditwire.NewAttester(key)
	if err != nil {
		t.Fatal(err)
	}
	log := &memLog{}
	led, err := auditwire.NewLedger(log, auditwire.LedgerConfig{Actor: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	var sent []stream.Message
	for i := range 60 {
		c := []string{"US", "DE", "-", "ZZ"}[i%4]
		sent = append(sent, stream.Message{Topic: "ingest", Key: fmt.Appendf(nil, "u%d", i%7), Value: fmt.Appendf(nil, "E|%s|u%d", c, i%7)})
	}
	sent = append(sent, stream.Message{Topic: "ingest", Value: []byte("E|US|nokey")}, stream.Message{Topic: "ingest", Key: []byte("k"), Value: []byte("X")},
		stream.Message{Topic: "ingest", Key: []byte("k"), Value: make([]byte, 2<<20)})
	if err := a.Publisher().Publish(context.Background(), sent...); err != nil {
		t.Fatal(err)
	}
	rt, err := router.New(router.Config{Subscriber: a.Subscriber("g", "ingest"),
		Publishers: map[string]stream.Publisher{"a": a.Publisher(), "b": b.Publisher()}, IngestCluster: "a",
		QuarantineTopic: "quarantine", DeadLetterTopic: "dead-letter", Fields: textFields{}, Rules: rulesOf{ruleset(t, testRules, 5)},
		Instance: "r1", BatchSize: 9, Logger: slog.New(slog.DiscardHandler), Ledger: led, Attester: att})
	if err != nil {
		t.Fatal(err)
	}
	stop := testenv.Start(t, 20*time.Second, rt.Run)
	testenv.Eventually(t, 10*time.Second, "every event committed", func() bool {
		return a.Committed("g", "ingest", 0)+a.Committed("g", "ingest", 1) == int64(len(sent))
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	v, err := audit.NewAttestVerifier(key)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range []struct {
		cluster, topic string
		role           audit.Role
		br             *streamtest.Broker
	}{{"a", "pinned.us", audit.RolePinned, a}, {"b", "pinned.eu", audit.RolePinned, b}, {"a", "quarantine", audit.RoleQuarantine, a},
		{"a", "dead-letter", audit.RoleDeadLetter, a}} {
		for _, m := range c.br.Records(c.topic) {
			n++
			hs := make([]audit.Header, len(m.Headers))
			for i, h := range m.Headers {
				hs[i] = audit.Header{Key: h.Key, Value: h.Value}
			}
			tag, _ := router.HeaderValue(m.Headers, router.HeaderAttestation)
			in := audit.AttestationInputOf(c.cluster, c.topic, c.role, m.Key, m.Value, hs)
			if err := v.Verify(tag, &in); err != nil {
				t.Errorf("%s/%s offset %d (reason %q): %v", c.cluster, c.topic, m.Offset, in.Reason, err)
			}
			bad := audit.AttestationInputOf(c.cluster, c.topic, c.role, m.Key, append(bytes.Clone(m.Value), 'x'), hs)
			if err := v.Verify(tag, &bad); !errors.Is(err, audit.ErrBadAttestation) {
				t.Errorf("%s/%s: a tampered value verifies: %v", c.cluster, c.topic, err)
			}
			other := audit.AttestationInputOf(c.cluster, "pinned.other", audit.RolePinned, m.Key, m.Value, hs)
			if err := v.Verify(tag, &other); err == nil {
				t.Errorf("%s/%s: the record verifies as another topic's", c.cluster, c.topic)
			}
		}
	}
	if n != len(sent) {
		t.Errorf("%d records written, want %d", n, len(sent))
	}
	// Each leaf digests the event as read, whether the attester shared its
	// digests (Event.Sums) or the record carried other bytes (too_large).
	src := map[string]stream.Message{}
	for _, m := range a.Records("ingest") {
		src[fmt.Sprintf("%d/%d", m.Partition, m.Offset)] = m
	}
	leaves := map[string]int{}
	for _, x := range log.leaves(t) {
		if x.Kind == audit.KindRoute {
			k := fmt.Sprintf("%d/%d", x.Src.Partition, x.Src.Offset)
			leaves[k]++
			m, ok := src[k]
			if !ok || x.Value != audit.Sum(m.Value) || x.KeyNull != (m.Key == nil) || (m.Key != nil && x.Key != audit.Sum(m.Key)) {
				t.Errorf("leaf of ingest %s: digests do not match the event", k)
			}
		}
	}
	for p := range 2 {
		for o := range a.Committed("g", "ingest", p) {
			if leaves[fmt.Sprintf("%d/%d", p, o)] == 0 {
				t.Errorf("ingest %d/%d committed without a leaf", p, o)
			}
		}
	}
}

// TestLedgerAppendLeafConcurrent: AppendLeaf is called from every sender
// at once: under the race detector, leaves built concurrently equal the
// ones built one at a time, and AppendLeaf allocates nothing when dst has
// room.
func TestLedgerAppendLeafConcurrent(t *testing.T) {
	l, err := auditwire.NewLedger(&memLog{}, auditwire.LedgerConfig{Actor: "r", Subjects: pseudonymizer(t),
		Now: func() time.Time { return time.UnixMilli(1764028800123) }})
	if err != nil {
		t.Fatal(err)
	}
	rs3, rs4 := ruleset(t, testRules, 3), ruleset(t, testRules+"\n# v4\n", 4)
	routed := router.Decision{Outcome: router.Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu"}
	var evs []router.Settled
	var want [][]byte
	for i := range 64 {
		rs := rs3
		if i%2 == 1 {
			rs = rs4
		}
		evs = append(evs, settledEvent(i, routed, rs, "b", "pinned.eu"))
		b, err := l.AppendLeaf(nil, &evs[i])
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, b)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for rep := range 20 {
				i := (g*17 + rep*5) % len(evs)
				b, err := l.AppendLeaf(nil, &evs[i])
				if err != nil || !bytes.Equal(b, want[i]) {
					t.Errorf("leaf %d built concurrently differs (%v)", i, err)
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkLedgerAppendLeaf is the audit's CPU per event on the senders'
// acknowledgement path (value and key digests, subject HMAC, wire leaf).
func BenchmarkLedgerAppendLeaf(b *testing.B) {
	l, err := auditwire.NewLedger(&memLog{}, auditwire.LedgerConfig{Actor: "router-1", Subjects: pseudonymizer(b)})
	if err != nil {
		b.Fatal(err)
	}
	s := settledEvent(1, router.Decision{Outcome: router.Routed, Jurisdiction: "EU", Region: "eu"}, ruleset(b, testRules, 3), "b", "pinned.eu")
	s.Event.Msg.Value = bytes.Repeat([]byte("v"), 300)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = l.AppendLeaf(buf[:0], &s)
	}
}

// TestLedgerConformance: Ledger passes the router.Ledger conformance check.
func TestLedgerConformance(t *testing.T) {
	log := &memLog{}
	l, err := auditwire.NewLedger(log, auditwire.LedgerConfig{Actor: "r", Subjects: pseudonymizer(t)})
	if err != nil {
		t.Fatal(err)
	}
	routertest.Ledger(t, l, ruleset(t, testRules, 3), func() [][]byte {
		log.mu.Lock()
		defer log.mu.Unlock()
		var out [][]byte
		for _, rec := range log.recs {
			if len(rec) == 0 || rec[0] != audit.WireFormat {
				t.Fatalf("record without the wire format byte")
			}
			leaves, err := audit.DecodeWireRecord(rec)
			if err != nil {
				t.Fatal(err)
			}
			for i := range leaves {
				e, err := audit.AppendWireEntry(nil, &leaves[i]) // as AppendLeaf encoded it
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, e)
			}
		}
		return out
	})
}
