package sink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

const (
	apacTopic = "residency.apac"
	inTopic   = "residency.in"
	apacStore = "apac-store"
	apacGroup = "sink-apac-store"
)

// apacRuleset returns a ruleset where jurisdiction IN maps to inRegion
// ("apac" or "in") and the store apac-store is approved for apac only.
func apacRuleset(t *testing.T, version int64, inRegion string) *rules.Ruleset {
	t.Helper()
	rs, err := rules.Parse(fmt.Appendf(nil, `
jurisdictions:
  - {name: SG, region: apac, countries: [SG]}
  - {name: IN, region: %s, countries: [IN]}
regions:
  - {name: apac, cluster: ingest, topic: %q}
  - {name: in, cluster: ingest, topic: %q}
stores:
  - {name: %s, regions: [apac]}
`, inRegion, apacTopic, inTopic, apacStore))
	if err != nil {
		t.Fatal(err)
	}
	rs.SetVersion(version)
	return rs
}

// apacHarness is a sink of apac-store draining the apac pinned topic.
func apacHarness(t *testing.T, rs *rules.Ruleset) *harness {
	t.Helper()
	h := &harness{broker: streamtest.NewBroker(), store: newMemStore(), reg: prometheus.NewRegistry(), rules: sinktest.NewRules(rs)}
	h.broker.CreateTopic(apacTopic, 1)
	h.broker.CreateTopic(quarTopic, 1)
	h.cfg = sink.Config{Store: apacStore, Region: "apac", Topic: apacTopic, QuarantineTopic: quarTopic,
		// Batches are cut by size; the last, short one after 200ms.
		BatchSize: batchSize, BatchTimeout: 200 * time.Millisecond, RetryBackoff: 5 * time.Millisecond,
		RulesPoll: 10 * time.Millisecond, Registerer: h.reg, Logger: slog.New(slog.DiscardHandler), Rulesets: h.rules}
	dec, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sink.New(h.cfg, h.broker.Subscriber(apacGroup, apacTopic), h.store, h.broker.Publisher(), h.rules, dec)
	if err != nil {
		t.Fatal(err)
	}
	h.sink = s
	return h
}

// quarantined returns the quarantined events by key, checking that each
// records its reason (one of the sink's), what was wrong and the store.
func quarantined(t *testing.T, h *harness, topic string) map[string]stream.Message {
	t.Helper()
	out := map[string]stream.Message{}
	for _, m := range h.broker.Records(quarTopic) {
		reason, _ := router.HeaderValue(m.Headers, router.HeaderReason)
		why, _ := router.HeaderValue(m.Headers, router.HeaderError)
		store, _ := router.HeaderValue(m.Headers, sink.HeaderStore)
		if !strings.HasPrefix(string(reason), "sink_") || len(why) == 0 || len(why) > 200 || string(store) != h.cfg.Store {
			t.Errorf("quarantined %s: reason %q, error %q, store %q: every refusal must say why", m.Key, reason, why, store)
		}
		out[string(m.Key)] = m
	}
	return out
}

func header(m stream.Message, key string) string {
	v, _ := router.HeaderValue(m.Headers, key)
	return string(v)
}

// TestRegionMovedByRulesetChangeIsQuarantined: IN events routed to apac
// under v7 still wait in the apac pinned topic when v8 maps IN to region
// in. The apac store stays approved for apac, but must not receive them.
// An IN event claiming apac under v8 is no such event: it was never routed
// that way, and is refused as a content mismatch, not as moved.
func TestRegionMovedByRulesetChangeIsQuarantined(t *testing.T) {
	h := apacHarness(t, apacRuleset(t, 7, "apac"))
	h.store.onWrite = func(n int) {
		if n == 1 {
			h.rules.Set(apacRuleset(t, 8, "in")) // `rules apply` lands while batch 1 is written
		}
	}
	var msgs []stream.Message
	for i := range 2 * batchSize {
		msgs = append(msgs, sinktest.Message(apacTopic, i, "IN", "apac", "IN")) // routed under v7
	}
	msgs = append(msgs, sinktest.Message(apacTopic, 100, "SG", "apac", "SG"))                                                        // still apac under v8
	msgs = append(msgs, sinktest.WithHeader(sinktest.Message(apacTopic, 101, "IN", "apac", "IN"), router.HeaderRulesetVersion, "8")) // forged
	h.publish(t, msgs...)
	start(t, h.sink)
	testenv.Eventually(t, waitWithin, "all offsets committed", func() bool {
		return h.broker.Committed(apacGroup, apacTopic, 0) == int64(len(msgs))
	})
	if n := h.store.count(); n != batchSize+1 {
		t.Fatalf("store holds %d events, want %d (batch 1 under v7, and the SG event)", n, batchSize+1)
	}
	for i := range batchSize {
		if _, ok := h.store.rows[sinktest.EventID(batchSize+i)]; ok {
			t.Errorf("IN event %d written to the apac store under v8", batchSize+i)
		}
	}
	q := quarantined(t, h, quarTopic)
	if len(q) != batchSize+1 {
		t.Fatalf("quarantined %d events, want %d", len(q), batchSize+1)
	}
	for i := range batchSize {
		m := q[sinktest.UserID(batchSize+i)]
		if r := header(m, router.HeaderReason); r != sink.ReasonRegionMoved {
			t.Errorf("IN event %d quarantined as %q, want %q", batchSize+i, r, sink.ReasonRegionMoved)
		}
		if e := header(m, router.HeaderError); !strings.Contains(e, `version 8`) || !strings.Contains(e, `region "in"`) {
			t.Errorf("IN event %d: residency-error %q does not say where it belongs now", batchSize+i, e)
		}
	}
	if r := header(q[sinktest.UserID(101)], router.HeaderReason); r != sink.ReasonContentMismatch {
		t.Errorf("IN event claiming apac under v8 quarantined as %q, want %q", r, sink.ReasonContentMismatch)
	}
	if v := metric(t, h.reg, "residency_sink_quarantined_events_total", "reason", sink.ReasonRegionMoved); v != batchSize {
		t.Errorf("quarantined metric = %v, want %d", v, batchSize)
	}
	if err := h.sink.Ready(); err != nil {
		t.Errorf("Ready = %v: the store is still approved for apac", err)
	}
}

// refusalHarness is a sink of us-store (approved for us) whose decoder
// knows the schemas of a registry, with pins, and ruleset versions 6 and 7
// known (7 in force).
type refusalHarness struct {
	*harness
	registry *sinktest.Registry
	pins     *sinktest.Pins
	userID   uint32 // registry id of the UserEvent schema
	miniID   uint32 // registry id of a schema without event_id
}

func newRefusalHarness(t *testing.T) *refusalHarness {
	t.Helper()
	h := &refusalHarness{harness: newHarness(t, "us"), registry: sinktest.NewRegistry(t), pins: sinktest.NewPins()}
	h.userID = h.registry.Register(schemas.UserEventSchema)
	h.miniID = h.registry.Register(miniSchema)
	h.rules.Add(sinktest.Ruleset(6, usTopic, euTopic, storeName, "us"))
	h.cfg.Pins = h.pins
	// The topic's own framing says confluent: the sink must not care.
	dec, err := schemas.NewExtractor(schemas.ExtractorConfig{Framings: map[string]schemas.Framing{usTopic: schemas.FramingConfluent},
		Registry: schemas.RegistryConfig{URL: h.registry.URL, Retries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sink.New(h.cfg, h.broker.Subscriber(groupName, usTopic), h.store, h.broker.Publisher(), h.rules, dec)
	if err != nil {
		t.Fatal(err)
	}
	h.sink = s
	return h
}

// miniSchema has the placement fields but no event_id.
const miniSchema = `{"type": "record", "name": "Mini", "namespace": "t.sink", "fields": [
  {"name": "user_id", "type": "string"}, {"name": "country", "type": ["null", "string"]}]}`

func miniEvent(t *testing.T, id uint32, user, country string) []byte {
	t.Helper()
	c, err := goavro.NewCodec(miniSchema)
	if err != nil {
		t.Fatal(err)
	}
	body, err := c.BinaryFromNative(nil, map[string]any{"user_id": user, "country": goavro.Union("string", country)})
	if err != nil {
		t.Fatal(err)
	}
	return schemas.AppendConfluent(nil, id, body)
}

// TestEveryRefusalHasItsReason: every way an event can be refused, each
// with its own reason and a residency-error saying exactly what was wrong;
// and the events that pass, in every framing, stored and decoded right.
func TestEveryRefusalHasItsReason(t *testing.T) {
	h := newRefusalHarness(t)
	us := func(i int) stream.Message { return sinktest.Message(usTopic, i, "US", "us", "US") }
	with := sinktest.WithHeader
	without := sinktest.WithoutHeader
	pinned := func(m stream.Message) stream.Message { return with(m, router.HeaderDecidedBy, "pin") }
	h.pins.Pin(sinktest.UserID(40), "US") // a DE user pinned to US
	h.pins.Pin(sinktest.UserID(41), "US")
	h.pins.Pin(sinktest.UserID(42), "EU") // a US user pinned to EU, since
	h.pins.Pin(sinktest.UserID(43), "EU") // pinned to EU, the headers say US by pin
	h.pins.Pin(sinktest.UserID(44), "EU") // pinned to EU, routed there by pin
	mini := us(30)
	mini.Value = miniEvent(t, h.miniID, sinktest.UserID(30), "US")
	mini = with(mini, router.HeaderSchema, sinktest.Confluent(h.miniID).String())
	wrongFraming := us(22)
	wrongFraming.Value = sinktest.Framed(sinktest.Raw(), 22, "US")
	truncated := us(23)
	truncated.Value = truncated.Value[:len(truncated.Value)-3]
	notMine := with(with(us(24), router.HeaderReason, "forged"), router.HeaderError, "forged")
	inForce, _ := h.rules.Current()

	type refusal struct {
		m           stream.Message
		reason, err string
	}
	var cases []refusal
	add := func(m stream.Message, reason, errPart string) { cases = append(cases, refusal{m, reason, errPart}) }
	stored := []stream.Message{
		us(1),
		sinktest.MessageAs(sinktest.Raw(), usTopic, 2, "US", "us", "US"),
		sinktest.MessageAs(sinktest.Confluent(h.userID), usTopic, 3, "US", "us", "US"),
		with(us(4), router.HeaderRulesetVersion, "6"),           // placed by an older version that agrees
		pinned(sinktest.Message(usTopic, 40, "US", "us", "DE")), // placed by a pin that is still there
		notMine,
		with(us(5), router.HeaderRulesetDigest, inForce.ShortDigest()),                                    // the content in force
		with(with(us(6), router.HeaderRulesetVersion, "6"), router.HeaderRulesetDigest, inForce.Digest()), // version 6, full digest
	}
	add(without(us(10), router.HeaderRegion), sink.ReasonNoRegion, "no residency-region header")
	add(without(us(11), router.HeaderJurisdiction), sink.ReasonNoJurisdiction, "no residency-jurisdiction header")
	add(without(us(12), router.HeaderSchema), sink.ReasonNoSchemaHeader, "no residency-schema header")
	add(with(us(13), router.HeaderSchema, "avro:0123456789abcdef"), sink.ReasonNoSchemaHeader, "framing is not one of")
	add(with(us(14), router.HeaderSchema, "single-object:0000000000000001"), sink.ReasonUnknownSchema, "fingerprint 0000000000000001")
	add(with(us(15), router.HeaderSchema, "confluent:7"), sink.ReasonUndecodable, "") // the value is single-object
	add(func() stream.Message {
		m := sinktest.MessageAs(sinktest.Confluent(9), usTopic, 16, "US", "us", "US")
		return m
	}(), sink.ReasonUnknownSchema, "schema id 9")
	add(with(wrongFraming, router.HeaderSchema, sinktest.SingleObject().String()), sink.ReasonUndecodable, "")
	add(truncated, sink.ReasonUndecodable, "")
	add(mini, sink.ReasonMissingField, "event_id")
	add(without(us(31), router.HeaderRulesetVersion), sink.ReasonUnknownRuleset, "no residency-ruleset-version header")
	add(with(us(32), router.HeaderRulesetVersion, "07"), sink.ReasonUnknownRuleset, "not a version number")
	add(with(us(33), router.HeaderRulesetVersion, "99"), sink.ReasonUnknownRuleset, "version 99")
	// Version 7 with other content (Redis lost its data and the number was
	// reused): not the content this sink knows as version 7.
	add(with(us(34), router.HeaderRulesetDigest, "0123456789abcdef"), sink.ReasonUnknownRuleset, "digest "+inForce.ShortDigest()+", not 0123456789abcdef")
	add(with(us(35), router.HeaderRulesetDigest, "v7"), sink.ReasonUnknownRuleset, "is not a ruleset digest")
	add(sinktest.Message(usTopic, 50, "US", "us", "DE"), sink.ReasonContentMismatch, `jurisdiction "EU", region "eu"`) // forged: an EU user
	add(sinktest.Message(usTopic, 51, "XX", "us", "US"), sink.ReasonContentMismatch, `jurisdiction "US", region "us"`)
	add(sinktest.Message(usTopic, 52, "US", "us", ""), sink.ReasonContentMismatch, "no_country")
	add(without(us(53), router.HeaderDecidedBy), sink.ReasonContentMismatch, "no residency-decided-by header")
	add(with(us(54), router.HeaderDecidedBy, "admin"), sink.ReasonContentMismatch, "neither country nor pin")
	add(pinned(sinktest.Message(usTopic, 55, "US", "us", "DE")), sink.ReasonContentMismatch, "has no pin")
	add(pinned(sinktest.Message(usTopic, 43, "US", "us", "US")), sink.ReasonContentMismatch, `pinned to "EU" now`)
	add(sinktest.Message(usTopic, 60, "EU", "eu", "DE"), sink.ReasonRegionNotApproved, `region "eu"`)
	add(pinned(sinktest.Message(usTopic, 44, "EU", "eu", "US")), sink.ReasonRegionNotApproved, `region "eu"`)
	add(sinktest.Message(usTopic, 42, "US", "us", "US"), sink.ReasonRegionMoved, `jurisdiction "EU", region "eu"`)

	var msgs []stream.Message
	msgs = append(msgs, stored...)
	for _, c := range cases {
		msgs = append(msgs, c.m)
	}
	h.publish(t, msgs...)
	start(t, h.sink)
	testenv.Eventually(t, waitWithin, "all offsets committed", func() bool { return committed(h.harness) == int64(len(msgs)) })

	if n := h.store.count(); n != len(stored) {
		t.Errorf("store holds %d events, want %d", n, len(stored))
	}
	for _, m := range stored {
		i := eventNumber(t, m)
		r, ok := h.store.rows[sinktest.EventID(i)]
		if !ok {
			t.Errorf("event %d (%s) not stored", i, header(m, router.HeaderSchema))
			continue
		}
		var doc map[string]any
		if err := json.Unmarshal(r.Event, &doc); err != nil || doc["event_id"] != sinktest.EventID(i) || doc["user_id"] != sinktest.UserID(i) {
			t.Errorf("event %d decoded as %s (%v)", i, r.Event, err)
		}
		if string(r.Raw) != string(m.Value) || r.Jurisdiction != "US" || r.Region != "us" {
			t.Errorf("event %d: record %q/%q, raw kept %v", i, r.Jurisdiction, r.Region, string(r.Raw) == string(m.Value))
		}
	}
	q := quarantined(t, h.harness, quarTopic)
	if len(q) != len(cases) {
		t.Errorf("quarantined %d events, want %d", len(q), len(cases))
	}
	counts := map[string]float64{}
	for _, w := range cases {
		m := w.m
		got, ok := q[string(m.Key)]
		if !ok {
			t.Errorf("%s (want %s) not quarantined", m.Key, w.reason)
			continue
		}
		counts[w.reason]++
		if r, e := header(got, router.HeaderReason), header(got, router.HeaderError); r != w.reason || !strings.Contains(e, w.err) {
			t.Errorf("%s: quarantined as %q (%s), want %q (%s)", m.Key, r, e, w.reason, w.err)
		}
		if string(got.Value) != string(m.Value) {
			t.Errorf("%s: the quarantined value is not the original", m.Key)
		}
	}
	if r := header(q[sinktest.UserID(24)], router.HeaderReason); r != "" {
		t.Errorf("event 24 carried a forged residency-reason and was quarantined as %q", r)
	}
	for reason, n := range counts {
		if v := metric(t, h.reg, "residency_sink_quarantined_events_total", "reason", reason); v != n {
			t.Errorf("quarantined{reason=%q} = %v, want %v", reason, v, n)
		}
	}
}

// eventNumber recovers i from the key sinktest gives event i.
func eventNumber(t *testing.T, m stream.Message) int {
	t.Helper()
	var i int
	if _, err := fmt.Sscanf(string(m.Key), "u-%d", &i); err != nil {
		t.Fatalf("key %q: %v", m.Key, err)
	}
	return i - 1000
}

// TestPinnedEventFollowsItsPin: an event placed by a pin is stored while
// the pin is there, and refused as a content mismatch once it is removed
// (the sink cannot tell a removed pin from a forged header: fail closed).
// One pin lookup per batch.
func TestPinnedEventFollowsItsPin(t *testing.T) {
	h := newRefusalHarness(t)
	h.pins.Pin(sinktest.UserID(1), "US")
	pinned := func(i int) stream.Message {
		return sinktest.WithHeader(sinktest.Message(usTopic, i, "US", "us", "DE"), router.HeaderDecidedBy, "pin")
	}
	h.publish(t, pinned(1))
	start(t, h.sink)
	testenv.Eventually(t, waitWithin, "stored", func() bool { return h.store.count() == 1 })
	lookups := h.pins.Lookups()
	if lookups != 1 {
		t.Errorf("%d pin lookups for one batch, want 1", lookups)
	}
	h.pins.Pin(sinktest.UserID(1), "")
	m := pinned(1)
	m.Key = []byte("again")
	h.publish(t, m)
	testenv.Eventually(t, waitWithin, "quarantined", func() bool { return len(h.broker.Records(quarTopic)) == 1 })
	q := quarantined(t, h.harness, quarTopic)["again"]
	if r := header(q, router.HeaderReason); r != sink.ReasonContentMismatch {
		t.Errorf("unpinned event quarantined as %q, want %q", r, sink.ReasonContentMismatch)
	}
}

// flakyVersions fails its first fail calls with rules.ErrUnavailable.
type flakyVersions struct {
	mu    sync.Mutex
	fail  int
	calls int
	sink.RulesetVersions
}

func (f *flakyVersions) Ruleset(ctx context.Context, v int64, digest string) (*rules.Ruleset, error) {
	f.mu.Lock()
	f.calls++
	fail := f.fail > 0
	if fail {
		f.fail--
	}
	f.mu.Unlock()
	if fail {
		return nil, fmt.Errorf("rules: read version %d: %w: connection refused", v, rules.ErrUnavailable)
	}
	return f.RulesetVersions.Ruleset(ctx, v, digest)
}

// TestTransientFailuresAreRetriedNotQuarantined: a registry, rules store or
// pin lookup that fails is waited for, never turned into a refusal.
func TestTransientFailuresAreRetriedNotQuarantined(t *testing.T) {
	h := newRefusalHarness(t)
	flaky := &flakyVersions{fail: 3, RulesetVersions: h.rules}
	h.cfg.Rulesets = flaky
	h.cfg.Registerer = prometheus.NewRegistry()
	h.reg = h.cfg.Registerer.(*prometheus.Registry)
	dec, err := schemas.NewExtractor(schemas.ExtractorConfig{Registry: schemas.RegistryConfig{URL: h.registry.URL, Retries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := sink.New(h.cfg, h.broker.Subscriber(groupName, usTopic), h.store, h.broker.Publisher(), h.rules, dec)
	if err != nil {
		t.Fatal(err)
	}
	h.registry.SetDown(true)
	h.pins.FailNext(3)
	h.publish(t,
		sinktest.MessageAs(sinktest.Confluent(h.userID), usTopic, 1, "US", "us", "US"),
		sinktest.WithHeader(sinktest.Message(usTopic, 2, "US", "us", "US"), router.HeaderRulesetVersion, "6"))
	start(t, s)
	testenv.Eventually(t, waitWithin, "registry retried", func() bool {
		return metric(t, h.reg, "residency_sink_retries_total", "op", "decode") >= 2
	})
	if c := committed(h.harness); c != 0 || h.store.count() != 0 {
		t.Fatalf("committed %d, stored %d while the registry is down", c, h.store.count())
	}
	h.registry.SetDown(false)
	testenv.Eventually(t, waitWithin, "both stored", func() bool { return h.store.count() == 2 && committed(h.harness) == 2 })
	if q := h.broker.Records(quarTopic); len(q) != 0 {
		t.Errorf("quarantined %d events for transient failures", len(q))
	}
	for _, op := range []string{"rules", "pins"} {
		if v := metric(t, h.reg, "residency_sink_retries_total", "op", op); v != 3 {
			t.Errorf("retries{op=%q} = %v, want 3", op, v)
		}
	}
}

// TestOnlyTheRulesetInForceWithoutRulesets: without Config.Rulesets the
// sink knows the ruleset in force only, and refuses events placed under
// any other version (fail closed) with the reason saying so.
func TestOnlyTheRulesetInForceWithoutRulesets(t *testing.T) {
	h := newHarness(t, "us")
	h.cfg.Rulesets = nil
	h.rules.Set(sinktest.Ruleset(8, usTopic, euTopic, storeName, "us"))
	h.publish(t, sinktest.Message(usTopic, 1, "US", "us", "US"),
		sinktest.WithHeader(sinktest.Message(usTopic, 2, "US", "us", "US"), router.HeaderRulesetVersion, "8"))
	start(t, h.newSink(t))
	testenv.Eventually(t, waitWithin, "committed", func() bool { return committed(h) == 2 })
	if _, ok := h.store.rows[sinktest.EventID(2)]; !ok || h.store.count() != 1 {
		t.Fatalf("store holds %d events, want event 2 only", h.store.count())
	}
	q := quarantined(t, h, quarTopic)[sinktest.UserID(1)]
	if r, e := header(q, router.HeaderReason), header(q, router.HeaderError); r != sink.ReasonUnknownRuleset || !strings.Contains(e, "version 7") {
		t.Errorf("event 1 quarantined as %q (%s)", r, e)
	}
}

// TestConfluentHeaderWithoutRegistry: a confluent residency-schema header
// reaching a sink without a schema registry is an unknown schema.
func TestConfluentHeaderWithoutRegistry(t *testing.T) {
	h := newHarness(t, "us")
	h.publish(t, sinktest.MessageAs(sinktest.Confluent(100), usTopic, 1, "US", "us", "US"))
	start(t, h.newSink(t))
	testenv.Eventually(t, waitWithin, "committed", func() bool { return committed(h) == 1 })
	q := quarantined(t, h, quarTopic)[sinktest.UserID(1)]
	if r := header(q, router.HeaderReason); r != sink.ReasonUnknownSchema {
		t.Errorf("quarantined as %q, want %q", r, sink.ReasonUnknownSchema)
	}
}

func TestCheckContent(t *testing.T) {
	rs := sinktest.Ruleset(7, usTopic, euTopic, storeName, "us")
	fields := func(country string) schemas.Fields {
		return schemas.Fields{Country: []byte(country), HasCountry: country != "", UserID: []byte("u-1")}
	}
	hs := func(jur, region, by string) []stream.Header {
		return []stream.Header{{Key: router.HeaderJurisdiction, Value: []byte(jur)}, {Key: router.HeaderRegion, Value: []byte(region)},
			{Key: router.HeaderDecidedBy, Value: []byte(by)}}
	}
	for name, c := range map[string]struct {
		hs      []stream.Header
		country string
		pin     string
		ok      bool
	}{
		"by country":                    {hs("US", "us", "country"), "US", "", true},
		"by country, pinned since":      {hs("US", "us", "country"), "US", "EU", true},
		"by pin":                        {hs("EU", "eu", "pin"), "US", "EU", true},
		"forged jurisdiction":           {hs("US", "us", "country"), "DE", "", false},
		"forged region":                 {hs("EU", "us", "country"), "DE", "", false},
		"by pin, no pin":                {hs("EU", "eu", "pin"), "US", "", false},
		"by pin, another pin":           {hs("EU", "eu", "pin"), "US", "US", false},
		"by pin, pin not in the rules":  {hs("XX", "us", "pin"), "US", "XX", false},
		"no country":                    {hs("US", "us", "country"), "", "", false},
		"unknown country":               {hs("US", "us", "country"), "ZZ", "", false},
		"no decided-by":                 {hs("US", "us", "country")[:2], "US", "", false},
		"lower-case country is allowed": {hs("US", "us", "country"), "us", "", true},
	} {
		t.Run(name, func(t *testing.T) {
			d, err := sink.CheckContent(c.hs, fields(c.country), c.pin, rs)
			if (err == nil) != c.ok || (err != nil && !errors.Is(err, sink.ErrContentMismatch)) {
				t.Fatalf("CheckContent = %+v, %v; want ok %v", d, err, c.ok)
			}
			if err != nil && strings.Contains(err.Error(), "u-1") {
				t.Errorf("error %q names the user", err)
			}
		})
	}
}

// TestShutdownWhileLookingUpPins: a sink stopped while its pin lookups fail
// stops cleanly, and neither writes, quarantines nor commits the batch it
// could not check: the next member of the group reads it again.
func TestShutdownWhileLookingUpPins(t *testing.T) {
	h := newRefusalHarness(t)
	h.pins.FailNext(1 << 30)
	h.publish(t, sinktest.Message(usTopic, 1, "US", "us", "US"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.sink.Run(ctx) }()
	testenv.Eventually(t, waitWithin, "pin lookups retried", func() bool { return h.pins.Lookups() >= 3 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(waitWithin):
		t.Fatal("the sink did not stop")
	}
	if c, n, q := committed(h.harness), h.store.count(), len(h.broker.Records(quarTopic)); c != 0 || n != 0 || q != 0 {
		t.Errorf("committed %d, stored %d, quarantined %d; want nothing", c, n, q)
	}
}
