package router_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/residency-router/residency/stream/streamtest"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

const testRules = `
jurisdictions:
  - {name: US, region: us, countries: [US, PR]}
  - {name: EU, region: eu, countries: [DE, FR, IE]}
  - {name: UK, region: uk, countries: [GB]}
  - {name: IN, region: in, countries: [IN]}
regions:
  - {name: us, cluster: a, topic: pinned.us}
  - {name: eu, cluster: b, topic: pinned.eu}
  - {name: uk, cluster: b, topic: pinned.uk}
  - {name: in, cluster: a, topic: pinned.in}
stores:
  - {name: us-postgres, regions: [us]}
`

func mustRules(t testing.TB, version int64) *rules.Ruleset {
	t.Helper()
	return mustRulesFrom(t, testRules, version)
}

func mustRulesFrom(t testing.TB, src string, version int64) *rules.Ruleset {
	t.Helper()
	rs, err := rules.Parse([]byte(src))
	if err != nil {
		t.Fatalf("parse rules: %v", err)
	}
	rs.SetVersion(version)
	return rs
}

// textFields is a FieldReader for values "E|country|user|id" ("-" for no
// country). Other first bytes are a bad magic; fewer parts are truncated.
type textFields struct {
	unavailable atomic.Int32 // while > 0, Extract fails as registry unavailable
}

func (f *textFields) Extract(_ context.Context, _ string, v []byte) (schemas.Fields, error) {
	if f.unavailable.Load() > 0 {
		f.unavailable.Add(-1)
		return schemas.Fields{}, fmt.Errorf("fake: %w", schemas.ErrRegistryUnavailable)
	}
	if v[0] != 'E' {
		return schemas.Fields{}, fmt.Errorf("fake: %w", schemas.ErrBadMagic)
	}
	parts := bytes.Split(v, []byte("|"))
	if len(parts) != 4 {
		return schemas.Fields{}, fmt.Errorf("fake: %w", schemas.ErrTruncated)
	}
	fs := schemas.Fields{UserID: parts[2]}
	if string(parts[1]) != "-" {
		fs.Country, fs.HasCountry = parts[1], true
	}
	return fs, nil
}

// rulesBox is a RulesSource whose answer the test sets.
type rulesBox struct {
	mu  sync.Mutex
	rs  *rules.Ruleset
	err error
}

func (b *rulesBox) Current() (*rules.Ruleset, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rs, b.err
}

func (b *rulesBox) set(rs *rules.Ruleset, err error) {
	b.mu.Lock()
	b.rs, b.err = rs, err
	b.mu.Unlock()
}

type pinMap struct {
	pins  map[string]string
	calls atomic.Int32
}

func (p *pinMap) Lookup(_ context.Context, ids [][]byte) ([]string, error) {
	p.calls.Add(1)
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = p.pins[string(id)]
	}
	return out, nil
}

// fixture is a router over two in-memory clusters: "a" (ingest, quarantine,
// dead-letter, pinned.us, pinned.in) and "b" (pinned.eu, pinned.uk).
type fixture struct {
	a, b   *streamtest.Broker
	sub    stream.Subscriber
	pubs   map[string]stream.Publisher
	fields *textFields
	rules  *rulesBox
	cfg    router.Config
}

const ingest, quarantine, deadLetter, group = "ingest", "quarantine", "dead-letter", "routers"

func newFixture(t *testing.T) *fixture {
	f := &fixture{a: streamtest.NewBroker(), b: streamtest.NewBroker(), fields: &textFields{}, rules: &rulesBox{}}
	f.a.CreateTopic(ingest, 3)
	for _, tp := range []string{quarantine, deadLetter, "pinned.us", "pinned.in"} {
		f.a.CreateTopic(tp, 2)
	}
	f.b.CreateTopic("pinned.eu", 2)
	f.b.CreateTopic("pinned.uk", 2)
	f.rules.set(mustRules(t, 3), nil)
	f.sub = f.a.Subscriber(group, ingest)
	f.pubs = map[string]stream.Publisher{"a": f.a.Publisher(), "b": f.b.Publisher()}
	f.cfg = router.Config{
		Subscriber: f.sub, Publishers: f.pubs, IngestCluster: "a",
		QuarantineTopic: quarantine, DeadLetterTopic: deadLetter,
		Fields: f.fields, Rules: f.rules, Instance: "test-router",
		Logger:    slog.New(slog.DiscardHandler),
		BatchSize: 50, RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond,
		RulesPoll: 5 * time.Millisecond, GiveUp: 5 * time.Second,
	}
	return f
}

func (f *fixture) produce(t *testing.T, msgs ...stream.Message) {
	t.Helper()
	for i := range msgs {
		msgs[i].Topic = ingest
	}
	if err := f.a.Publisher().Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

func event(country, user, id string) stream.Message {
	return stream.Message{
		Key:     []byte(user),
		Value:   fmt.Appendf(nil, "E|%s|%s|%s", country, user, id),
		Headers: []stream.Header{{Key: "trace", Value: []byte("t-" + id)}, {Key: "residency-region", Value: []byte("forged")}},
	}
}

// start runs the router until the test ends (or stop is called) and returns
// a function that stops it and returns Run's error.
func (f *fixture) start(t *testing.T) (*router.Router, func() error) {
	t.Helper()
	r, err := router.New(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, testenv.Start(t, 20*time.Second, r.Run)
}

// committed is the number of ingest records committed by the group.
func (f *fixture) committed() int64 {
	var n int64
	for p := range 3 {
		n += f.a.Committed(group, ingest, p)
	}
	return n
}

func header(m stream.Message, key string) string {
	v, _ := router.HeaderValue(m.Headers, key)
	return string(v)
}

func TestRouterPlacesEveryEvent(t *testing.T) {
	f := newFixture(t)
	want := map[string]string{} // id -> "cluster/topic"
	var sent []stream.Message
	countries := []struct{ country, topic string }{
		{"US", "a/pinned.us"}, {"PR", "a/pinned.us"}, {"de", "b/pinned.eu"}, {"FR", "b/pinned.eu"},
		{"GB", "b/pinned.uk"}, {"IN", "a/pinned.in"}, {"-", "a/quarantine"}, {"ZZ", "a/quarantine"},
	}
	for i := range 400 {
		c := countries[i%len(countries)]
		id := fmt.Sprintf("id%d", i)
		// users are per country so per-key order is checkable
		sent = append(sent, event(c.country, fmt.Sprintf("user-%s-%d", c.country, i%3), id))
		want[id] = c.topic
	}
	bad := []stream.Message{
		{Key: []byte("k"), Value: []byte("X|garbage")},
		{Key: []byte("k"), Value: []byte("E|US|u")},
		{Key: []byte("k"), Value: nil},
		{Key: []byte("k"), Value: bytes.Repeat([]byte("E"), 2<<20)},
	}
	f.produce(t, sent...)
	f.produce(t, bad...)
	_, stop := f.start(t)
	total := int64(len(sent) + len(bad))
	testenv.Eventually(t, 10*time.Second, "all events committed", func() bool { return f.committed() == total })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	found := map[string]string{}
	lastOffsetPerKey := map[string]int64{}
	check := func(cluster string, b *streamtest.Broker, topic string) {
		for _, m := range b.Records(topic) {
			if topic == deadLetter {
				continue
			}
			id := string(bytes.Split(m.Value, []byte("|"))[3])
			if prev, dup := found[id]; dup {
				t.Errorf("event %s in %s and %s", id, prev, cluster+"/"+topic)
			}
			found[id] = cluster + "/" + topic
			orig := sent[atoi(t, strings.TrimPrefix(id, "id"))]
			if !bytes.Equal(m.Value, orig.Value) || !bytes.Equal(m.Key, orig.Key) {
				t.Errorf("event %s: key/value changed", id)
			}
			if m.Headers[0].Key != "trace" || string(m.Headers[0].Value) != "t-"+id {
				t.Errorf("event %s: original header lost: %v", id, m.Headers)
			}
			if header(m, "residency-region") == "forged" {
				t.Errorf("event %s: forged residency header kept", id)
			}
			if header(m, router.HeaderSourceTopic) != ingest || header(m, router.HeaderRouter) != "test-router" ||
				header(m, router.HeaderRulesetVersion) != "3" || header(m, router.HeaderSourceOffset) == "" ||
				header(m, router.HeaderSourcePartition) == "" {
				t.Errorf("event %s: residency headers missing: %v", id, m.Headers)
			}
			if topic == quarantine {
				c := bytes.Split(m.Value, []byte("|"))[1]
				wantReason := router.ReasonUnknownCountry
				if string(c) == "-" {
					wantReason = router.ReasonNoCountry
				}
				if got := header(m, router.HeaderReason); got != wantReason {
					t.Errorf("event %s: reason %q, want %q", id, got, wantReason)
				}
			} else {
				if header(m, router.HeaderRegion) != strings.TrimPrefix(topic, "pinned.") || header(m, router.HeaderJurisdiction) == "" {
					t.Errorf("event %s: region/jurisdiction headers wrong: %v", id, m.Headers)
				}
				// per-key order: source offsets of a key rise in the pinned topic
				off := int64(atoi(t, header(m, router.HeaderSourceOffset)))
				k := string(m.Key)
				if last, ok := lastOffsetPerKey[k]; ok && off <= last {
					t.Errorf("key %s: source offset %d after %d", k, off, last)
				}
				lastOffsetPerKey[k] = off
			}
		}
	}
	for _, tp := range []string{"pinned.us", "pinned.in", quarantine, deadLetter} {
		check("a", f.a, tp)
	}
	for _, tp := range []string{"pinned.eu", "pinned.uk"} {
		check("b", f.b, tp)
	}
	for _, tp := range []string{"pinned.us", "pinned.in"} {
		if n := len(f.b.Records(tp)); n != 0 {
			t.Errorf("%d events on cluster b's %s", n, tp)
		}
	}
	for id, w := range want {
		if found[id] != w {
			t.Errorf("event %s went to %q, want %q", id, found[id], w)
		}
	}
	reasons := map[string]int{}
	for _, m := range f.a.Records(deadLetter) {
		reasons[header(m, router.HeaderReason)]++
		if header(m, router.HeaderError) == "" || header(m, router.HeaderSourceTopic) != ingest {
			t.Errorf("dead-letter record lacks error or source headers: %v", m.Headers)
		}
		if strings.Contains(header(m, router.HeaderError), "garbage") {
			t.Errorf("dead-letter error header leaks the payload")
		}
	}
	wantReasons := map[string]int{"bad_magic": 1, "truncated": 1, "empty_value": 1, "too_large": 1}
	if fmt.Sprint(reasons) != fmt.Sprint(wantReasons) {
		t.Errorf("dead-letter reasons %v, want %v", reasons, wantReasons)
	}
}

func atoi(t *testing.T, s string) int {
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

func TestRouterFailsClosedWithoutRuleset(t *testing.T) {
	f := newFixture(t)
	f.rules.set(nil, fmt.Errorf("cache: %w", rules.ErrNoRuleset))
	var fetches atomic.Int32
	f.cfg.Subscriber = countingSub{f.sub, &fetches}
	f.produce(t, event("US", "u1", "1"), event("GB", "u2", "2"))
	r, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "not ready with a reason", func() bool {
		err := r.Ready()
		return err != nil && strings.Contains(err.Error(), "no ruleset loaded")
	})
	time.Sleep(50 * time.Millisecond)
	if n := fetches.Load(); n != 0 {
		t.Fatalf("fetched %d events without a ruleset", n)
	}
	if !errors.Is(r.Ready(), router.ErrNotReady) {
		t.Fatalf("Ready = %v, want ErrNotReady", r.Ready())
	}
	// Rules come back: routing resumes by itself.
	f.rules.set(mustRules(t, 4), nil)
	testenv.Eventually(t, 10*time.Second, "events committed", func() bool { return f.committed() == 2 })
	if err := r.Ready(); err != nil {
		t.Fatalf("Ready after rules are back: %v", err)
	}
	// Rules go stale: routing stops again.
	f.rules.set(nil, rules.ErrStale)
	testenv.Eventually(t, 10*time.Second, "not ready again", func() bool { return r.Ready() != nil })
	f.produce(t, event("US", "u3", "3"))
	time.Sleep(50 * time.Millisecond)
	if got := len(f.a.Records("pinned.us")); got != 1 {
		t.Fatalf("%d events routed to pinned.us while stale, want 1", got)
	}
	// A poll already under way when the ruleset went stale may hold u3,
	// unrouted: Run then says it stopped with it uncommitted.
	if err := stop(); err != nil && !errors.Is(err, router.ErrUncommitted) {
		t.Fatalf("Run: %v", err)
	}
	if n := f.committed(); n != 2 {
		t.Fatalf("committed %d events, want the 2 routed before the ruleset went stale", n)
	}
	if m := f.a.Records("pinned.us")[0]; header(m, router.HeaderRulesetVersion) != "4" {
		t.Fatalf("version header %q, want 4", header(m, router.HeaderRulesetVersion))
	}
}

type countingSub struct {
	stream.Subscriber
	n *atomic.Int32
}

func (c countingSub) Fetch(ctx context.Context) (stream.Message, error) {
	m, err := c.Subscriber.Fetch(ctx)
	if err == nil {
		c.n.Add(1)
	}
	return m, err
}

// flakyPub fails its first failures calls; it records whether a commit
// happened while a publish was still unacknowledged.
type flakyPub struct {
	stream.Publisher
	failures atomic.Int32
	calls    atomic.Int32
}

func (p *flakyPub) Publish(ctx context.Context, msgs ...stream.Message) error {
	p.calls.Add(1)
	if p.failures.Load() != 0 {
		p.failures.Add(-1)
		return errors.New("broker down")
	}
	return p.Publisher.Publish(ctx, msgs...)
}

func TestRouterRetriesTransientFailures(t *testing.T) {
	f := newFixture(t)
	pb := &flakyPub{Publisher: f.pubs["b"]}
	pb.failures.Store(5)
	f.cfg.Publishers = map[string]stream.Publisher{"a": f.pubs["a"], "b": pb}
	f.fields.unavailable.Store(3)
	f.produce(t, event("GB", "u1", "1"), event("US", "u2", "2"))
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "events committed", func() bool { return f.committed() == 2 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := len(f.b.Records("pinned.uk")); n != 1 {
		t.Fatalf("pinned.uk has %d events, want 1", n)
	}
	if n := len(f.a.Records(deadLetter)); n != 0 {
		t.Fatalf("registry outage dead-lettered %d events", n)
	}
}

func TestRouterPins(t *testing.T) {
	f := newFixture(t)
	pins := &pinMap{pins: map[string]string{"alice": "EU", "bob": "XX"}}
	f.cfg.Pins = pins
	f.cfg.Linger = time.Second // one batch
	f.produce(t, event("US", "alice", "1"), event("-", "alice", "2"), event("US", "bob", "3"), event("US", "carol", "4"))
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "events committed", func() bool { return f.committed() == 4 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	eu := f.b.Records("pinned.eu")
	if len(eu) != 2 || header(eu[0], router.HeaderDecidedBy) != "pin" {
		t.Fatalf("pinned.eu = %d events (%v), want alice's 2 decided by pin", len(eu), eu)
	}
	q := f.a.Records(quarantine)
	if len(q) != 1 || header(q[0], router.HeaderReason) != router.ReasonNoRule {
		t.Fatalf("quarantine = %v, want bob's event with no_rule", q)
	}
	if us := f.a.Records("pinned.us"); len(us) != 1 || header(us[0], router.HeaderDecidedBy) != "country" {
		t.Fatalf("pinned.us = %v, want carol's event", us)
	}
	if n := pins.calls.Load(); n != 1 {
		t.Fatalf("%d pin lookups for one batch, want 1", n)
	}
}

func TestRouterUnknownClusterQuarantines(t *testing.T) {
	f := newFixture(t)
	f.cfg.Publishers = map[string]stream.Publisher{"a": f.pubs["a"]} // no "b"
	f.produce(t, event("GB", "u1", "1"), event("US", "u2", "2"))
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "events committed", func() bool { return f.committed() == 2 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	q := f.a.Records(quarantine)
	if len(q) != 1 || header(q[0], router.HeaderReason) != router.ReasonNoRule || header(q[0], router.HeaderJurisdiction) != "UK" {
		t.Fatalf("quarantine = %v, want the UK event with no_rule", q)
	}
}

// TestRouterShutdownFlushes: after Run returns nil, everything fetched has
// been published and committed.
func TestRouterShutdownFlushes(t *testing.T) {
	f := newFixture(t)
	var fetched atomic.Int32
	f.cfg.Subscriber = countingSub{f.sub, &fetched}
	f.cfg.Linger = 200 * time.Millisecond
	f.cfg.BatchSize = 1000
	var msgs []stream.Message
	for i := range 30 {
		msgs = append(msgs, event("FR", fmt.Sprintf("u%d", i), fmt.Sprint(i)))
	}
	f.produce(t, msgs...)
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "events fetched", func() bool { return fetched.Load() == 30 })
	if err := stop(); err != nil { // while the batch lingers
		t.Fatalf("Run: %v", err)
	}
	if n := f.committed(); n != 30 {
		t.Fatalf("committed %d of 30 fetched events at shutdown", n)
	}
	if n := len(f.b.Records("pinned.eu")); n != 30 {
		t.Fatalf("pinned.eu has %d events, want 30", n)
	}
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	_, err := router.New(router.Config{})
	if !errors.Is(err, router.ErrConfig) || !strings.Contains(err.Error(), "Consumer") {
		t.Fatalf("New(empty) = %v", err)
	}
	f := newFixture(t)
	f.cfg.IngestCluster = "zz"
	if _, err := router.New(f.cfg); !errors.Is(err, router.ErrConfig) {
		t.Fatalf("New with unknown ingest cluster = %v", err)
	}
}

// sizeLimitPub refuses a whole Publish call when one record is larger than
// limit, as kafka-go's writer does past its BatchBytes and a broker does past
// max.message.bytes.
type sizeLimitPub struct {
	stream.Publisher
	limit int
}

func (p sizeLimitPub) Publish(ctx context.Context, msgs ...stream.Message) error {
	for i := range msgs {
		n := len(msgs[i].Key) + len(msgs[i].Value)
		for _, h := range msgs[i].Headers {
			n += len(h.Key) + len(h.Value)
		}
		if n > p.limit {
			return fmt.Errorf("message too large: %d bytes", n)
		}
	}
	return p.Publisher.Publish(ctx, msgs...)
}

// TestRouterOversizedEventDoesNotBlock: an event larger than MaxValueBytes
// (key, value and headers counted) is dead-lettered as too_large without its
// value (and without key and producer headers when those are large too), so the dead-letter write cannot fail for the same reason and block
// the partition; the events around it are routed and everything commits.
func TestRouterOversizedEventDoesNotBlock(t *testing.T) {
	f := newFixture(t)
	const limit = 1 << 20
	f.cfg.Publishers = map[string]stream.Publisher{"a": sizeLimitPub{f.pubs["a"], limit}, "b": sizeLimitPub{f.pubs["b"], limit}}
	f.cfg.GiveUp = 2 * time.Second
	big := event("US", "u-big", "big")
	big.Value = append(big.Value, bytes.Repeat([]byte("x"), limit)...)
	// Value under the limit, but with a large producer header the record is
	// over it: headers count too.
	heavy := event("US", "u-heavy", "heavy")
	heavy.Headers = append(heavy.Headers, stream.Header{Key: "blob", Value: bytes.Repeat([]byte("h"), limit)})
	f.produce(t, event("US", "u1", "before"), big, heavy, event("GB", "u2", "after"))
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "all four events committed", func() bool { return f.committed() == 4 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	dl := f.a.Records(deadLetter)
	if len(dl) != 2 {
		t.Fatalf("%d dead-letter records, want 2", len(dl))
	}
	for _, m := range dl {
		if header(m, router.HeaderReason) != "too_large" {
			t.Errorf("dead-letter reason %q, want too_large", header(m, router.HeaderReason))
		}
		if m.Value != nil || header(m, "blob") != "" {
			t.Errorf("an oversized event's dead-letter record carries its value (%d bytes) or its oversized header", len(m.Value))
		}
		// A small key and small producer headers are kept for correlation;
		// with an oversized header, key and producer headers are dropped.
		switch string(m.Key) {
		case "u-big":
			if header(m, "trace") != "t-big" {
				t.Errorf("the oversized event lost its small producer header: %v", m.Headers)
			}
		case "":
			if header(m, "trace") != "" {
				t.Errorf("producer headers kept next to an oversized one: %v", m.Headers)
			}
		default:
			t.Errorf("unexpected key %q on a too_large record", m.Key)
		}
		if n := atoi(t, header(m, router.HeaderOmittedBytes)); n <= limit {
			t.Errorf("%s = %d, want the event's size (> %d)", router.HeaderOmittedBytes, n, limit)
		}
		if header(m, router.HeaderSourceTopic) != ingest || header(m, router.HeaderSourceOffset) == "" {
			t.Errorf("dead-letter record lacks its source coordinates: %v", m.Headers)
		}
	}
	if n := len(f.a.Records("pinned.us")) + len(f.b.Records("pinned.uk")); n != 2 {
		t.Errorf("%d events routed around the oversized ones, want 2", n)
	}
}

// TestRouterRefusesPinnedTopicOnIngestTopics: a region pinned to an ingest,
// quarantine or dead-letter topic of the ingest cluster would loop events
// back into the router or hide them among unplaced ones; its events are
// quarantined (no_rule) instead.
func TestRouterRefusesPinnedTopicOnIngestTopics(t *testing.T) {
	f := newFixture(t)
	looped := strings.Replace(testRules, "{name: in, cluster: a, topic: pinned.in}", "{name: in, cluster: a, topic: "+ingest+"}", 1)
	looped = strings.Replace(looped, "{name: us, cluster: a, topic: pinned.us}", "{name: us, cluster: a, topic: "+deadLetter+"}", 1)
	f.rules.set(mustRulesFrom(t, looped, 9), nil)
	f.cfg.IngestTopics = []string{ingest}
	f.produce(t, event("IN", "u1", "in"), event("US", "u2", "us"), event("GB", "u3", "uk"))
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "three events committed", func() bool { return f.committed() == 3 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := len(f.a.Records(ingest)); n != 3 {
		t.Errorf("the ingest topic holds %d records, want the 3 produced (nothing looped back)", n)
	}
	if n := len(f.a.Records(deadLetter)); n != 0 {
		t.Errorf("%d events routed into the dead-letter topic", n)
	}
	q := f.a.Records(quarantine)
	if len(q) != 2 {
		t.Fatalf("%d quarantined, want 2 (IN and US)", len(q))
	}
	for _, m := range q {
		if header(m, router.HeaderReason) != router.ReasonNoRule {
			t.Errorf("reason %q, want %s", header(m, router.HeaderReason), router.ReasonNoRule)
		}
	}
	if n := len(f.b.Records("pinned.uk")); n != 1 {
		t.Errorf("%d events on pinned.uk, want 1", n)
	}
}

// keepingPub fails its first call and keeps the messages it was given, as
// given (no copy), with a copy to compare them with: a publisher that may
// still read the messages after returning an error, as the Publisher
// memory contract allows.
type keepingPub struct {
	stream.Publisher
	mu             sync.Mutex
	failed         bool
	kept, keptCopy []stream.Message
}

func (p *keepingPub) Publish(ctx context.Context, msgs ...stream.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.failed {
		p.failed = true
		p.kept = msgs
		for _, m := range msgs {
			c := stream.Message{Topic: m.Topic, Key: bytes.Clone(m.Key), Value: bytes.Clone(m.Value)}
			for _, h := range m.Headers {
				c.Headers = append(c.Headers, stream.Header{Key: h.Key, Value: bytes.Clone(h.Value)})
			}
			p.keptCopy = append(p.keptCopy, c)
		}
		return errors.New("broker down")
	}
	return p.Publisher.Publish(ctx, msgs...)
}

// TestRouterLeavesFailedPublishIntact: the router reuses the memory of a
// batch's headers for the next batch only when every Publish of the batch
// returned nil. A batch whose first Publish failed (the retry succeeded) is
// followed by one in fresh memory: the messages the failed call was given
// stay exactly as they were, and both batches' events are routed with the
// right headers.
func TestRouterLeavesFailedPublishIntact(t *testing.T) {
	f := newFixture(t)
	pa := &keepingPub{Publisher: f.pubs["a"]}
	f.cfg.Publishers = map[string]stream.Publisher{"a": pa, "b": f.pubs["b"]}
	batch := func(n int) []stream.Message {
		var ms []stream.Message
		for i := range 20 {
			ms = append(ms, event([]string{"US", "DE", "IN", "ZZ"}[i%4], fmt.Sprintf("u%d", i), fmt.Sprintf("%d-%d", n, i)))
		}
		return ms
	}
	f.produce(t, batch(1)...)
	_, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "first batch committed", func() bool { return f.committed() == 20 })
	f.produce(t, batch(2)...) // same shape: it would fit in the first batch's memory
	testenv.Eventually(t, 10*time.Second, "second batch committed", func() bool { return f.committed() == 40 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	pa.mu.Lock()
	defer pa.mu.Unlock()
	if len(pa.kept) == 0 {
		t.Fatal("the failing publisher was not called")
	}
	for i := range pa.kept {
		g, w := &pa.kept[i], &pa.keptCopy[i]
		same := bytes.Equal(g.Key, w.Key) && bytes.Equal(g.Value, w.Value) && len(g.Headers) == len(w.Headers)
		for k := 0; same && k < len(w.Headers); k++ {
			same = g.Headers[k].Key == w.Headers[k].Key && bytes.Equal(g.Headers[k].Value, w.Headers[k].Value)
		}
		if !same {
			t.Fatalf("message %d of the failed publish was overwritten by a later batch: %v, was %v", i, g.Headers, w.Headers)
		}
	}
	// Every event routed once, with its own trace and source coordinates.
	source := map[string]string{} // value -> "partition/offset" in the ingest topic
	for _, m := range f.a.Records(ingest) {
		source[string(m.Value)] = fmt.Sprintf("%d/%d", m.Partition, m.Offset)
	}
	routed := append(f.a.Records("pinned.us"), f.a.Records("pinned.in")...)
	routed = append(routed, f.a.Records(quarantine)...)
	routed = append(routed, f.b.Records("pinned.eu")...)
	seen := map[string]bool{}
	for _, m := range routed {
		id := strings.TrimPrefix(header(m, "trace"), "t-")
		if seen[id] || !strings.HasSuffix(string(m.Value), "|"+id) {
			t.Fatalf("record %q with trace %q routed twice or with another event's headers", m.Value, header(m, "trace"))
		}
		seen[id] = true
		coords := header(m, router.HeaderSourcePartition) + "/" + header(m, router.HeaderSourceOffset)
		if header(m, router.HeaderSourceTopic) != ingest || coords != source[string(m.Value)] {
			t.Fatalf("record %q has source %s, want %s", m.Value, coords, source[string(m.Value)])
		}
	}
	if len(seen) != 40 {
		t.Fatalf("%d events routed, want 40", len(seen))
	}
}

// TestRouterRunsOnce: Run while running fails with ErrRunning, and so does
// Run after it returned (its senders, tracker and window belong to that
// run): a router that stopped is replaced by a new one, never restarted.
func TestRouterRunsOnce(t *testing.T) {
	f := newFixture(t)
	f.produce(t, event("US", "u1", "1"), event("DE", "u2", "2"))
	r, stop := f.start(t)
	testenv.Eventually(t, 10*time.Second, "events committed", func() bool { return f.committed() == 2 })
	if err := r.Run(context.Background()); !errors.Is(err, router.ErrRunning) {
		t.Fatalf("Run while running = %v, want ErrRunning", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Run(ctx); !errors.Is(err, router.ErrRunning) {
		t.Fatalf("Run after Run returned = %v, want ErrRunning", err)
	}
}
