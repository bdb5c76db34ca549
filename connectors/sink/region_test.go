package sink_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/connectors/sink"
	"github.com/residency-router/residency/connectors/sink/sinktest"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/routertest"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
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
	h := &harness{broker: routertest.NewBroker(), store: newMemStore(), reg: prometheus.NewRegistry(), rules: sinktest.NewRules(rs)}
	h.broker.CreateTopic(apacTopic, 1)
	h.broker.CreateTopic(quarTopic, 1)
	h.cfg = sink.Config{Store: apacStore, Region: "apac", Topic: apacTopic, QuarantineTopic: quarTopic,
		// Batches are cut by size; the last, short one after 200ms.
		BatchSize: batchSize, BatchTimeout: 200 * time.Millisecond, RetryBackoff: 5 * time.Millisecond,
		RulesPoll: 10 * time.Millisecond, Registerer: h.reg, Logger: slog.New(slog.DiscardHandler)}
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

// quarantineReasons returns the reason of each quarantined event, by key.
func quarantineReasons(h *harness) map[string]string {
	out := map[string]string{}
	for _, m := range h.broker.Records(quarTopic) {
		r, _ := router.HeaderValue(m.Headers, router.HeaderReason)
		out[string(m.Key)] = string(r)
	}
	return out
}

// TestRegionMovedByRulesetChangeIsQuarantined: IN events routed to apac
// under v7 still wait in the apac pinned topic when v8 maps IN to region
// in. The apac store stays approved for apac, but must not receive them.
func TestRegionMovedByRulesetChangeIsQuarantined(t *testing.T) {
	h := apacHarness(t, apacRuleset(t, 7, "apac"))
	h.store.onWrite = func(n int) {
		if n == 1 {
			h.rules.Set(apacRuleset(t, 8, "in")) // `rules apply` lands while batch 1 is written
		}
	}
	var msgs []router.Message
	for i := range 2 * batchSize {
		msgs = append(msgs, sinktest.Message(apacTopic, i, "IN", "apac", "IN")) // routed under v7
	}
	msgs = append(msgs, sinktest.Message(apacTopic, 100, "SG", "apac", "SG")) // still apac under v8
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
	reasons := quarantineReasons(h)
	if len(reasons) != batchSize {
		t.Fatalf("quarantined %d events, want %d", len(reasons), batchSize)
	}
	for i := range batchSize {
		if r := reasons[sinktest.UserID(batchSize+i)]; r != sink.ReasonRegionMoved {
			t.Errorf("IN event %d quarantined as %q, want %q", batchSize+i, r, sink.ReasonRegionMoved)
		}
	}
	if v := metric(t, h.reg, "residency_sink_quarantined_events_total", "reason", sink.ReasonRegionMoved); v != batchSize {
		t.Errorf("quarantined metric = %v, want %d", v, batchSize)
	}
	if err := h.sink.Ready(); err != nil {
		t.Errorf("Ready = %v: the store is still approved for apac", err)
	}
}

// TestJurisdictionMustMapToTheRegionHeader: under one ruleset, an event
// whose jurisdiction header does not map to its region header, or which has
// no (known) jurisdiction, is quarantined; pinned events are checked alike.
func TestJurisdictionMustMapToTheRegionHeader(t *testing.T) {
	h := apacHarness(t, apacRuleset(t, 8, "in"))
	pinned := sinktest.Message(apacTopic, 3, "SG", "apac", "IN") // a pin put this IN-country user in SG
	pinned.Headers = append(pinned.Headers, router.Header{Key: router.HeaderDecidedBy, Value: []byte("pin")})
	pinnedAway := sinktest.Message(apacTopic, 4, "IN", "apac", "SG") // pinned to IN, labelled apac
	pinnedAway.Headers = append(pinnedAway.Headers, router.Header{Key: router.HeaderDecidedBy, Value: []byte("pin")})
	msgs := []router.Message{
		sinktest.Message(apacTopic, 1, "SG", "apac", "SG"), // placed right
		sinktest.Message(apacTopic, 2, "IN", "apac", "IN"), // IN maps to in
		pinned,
		pinnedAway,
		sinktest.Message(apacTopic, 5, "", "apac", "SG"),   // no jurisdiction header
		sinktest.Message(apacTopic, 6, "XX", "apac", "SG"), // a jurisdiction the ruleset does not define
	}
	h.publish(t, msgs...)
	start(t, h.sink)
	testenv.Eventually(t, waitWithin, "all offsets committed", func() bool {
		return h.broker.Committed(apacGroup, apacTopic, 0) == int64(len(msgs))
	})
	if n := h.store.count(); n != 2 {
		t.Fatalf("store holds %d events, want 2", n)
	}
	for _, i := range []int{1, 3} {
		if r, ok := h.store.rows[sinktest.EventID(i)]; !ok || r.Region != "apac" || r.Jurisdiction != "SG" {
			t.Errorf("event %d: stored %v, region %q, jurisdiction %q", i, ok, r.Region, r.Jurisdiction)
		}
	}
	want := map[string]string{
		sinktest.UserID(2): sink.ReasonRegionMoved,
		sinktest.UserID(4): sink.ReasonRegionMoved,
		sinktest.UserID(5): sink.ReasonNoJurisdiction,
		sinktest.UserID(6): sink.ReasonNoJurisdiction,
	}
	got := quarantineReasons(h)
	if len(got) != len(want) {
		t.Errorf("quarantined %v, want %v", got, want)
	}
	for k, r := range want {
		if got[k] != r {
			t.Errorf("%s quarantined as %q, want %q", k, got[k], r)
		}
	}
}
