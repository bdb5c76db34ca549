package replay_test

// Tests of what a replay trusts: the residency-* headers of its source
// (M5), the ruleset in force (M3), and the sink quarantine source (S8).
// They run on in-memory fakes.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/residency-router/residency/stream/streamtest"

	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/replay"
	"github.com/residency-router/residency/router/routertest"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

const guardRules = `
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE]}
regions:
  - {name: us, cluster: a, topic: t.us}
  - {name: eu, cluster: a, topic: t.eu}
`

func guardRuleset(t *testing.T, version int64) *rules.Ruleset {
	t.Helper()
	rs, err := rules.Parse([]byte(guardRules))
	if err != nil {
		t.Fatal(err)
	}
	rs.SetVersion(version)
	return rs
}

// guardBroker is an in-memory broker with the topics of guardRules, the
// ingest topic "in" and the quarantine topics.
func guardBroker(t *testing.T) (*streamtest.Broker, *sample.Encoder) {
	t.Helper()
	b := streamtest.NewBroker()
	for _, tp := range []string{"in", "q", "dl", "sq", "t.us", "t.eu"} {
		b.CreateTopic(tp, 1)
	}
	enc, err := sample.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	return b, enc
}

func guardConfig(t *testing.T, b *streamtest.Broker, source replay.SourceKind, topic string, rs *rules.Ruleset, end int64) replay.Config {
	return replay.Config{Plan: replay.Plan{ID: "g-1", Source: source, Topic: topic, Ranges: []replay.Range{{Partition: 0, End: end}}},
		Rules: rs, InForce: fixed(rs), Reader: sliceReader{b}, Publishers: map[string]stream.Publisher{"a": b.Publisher()}, IngestCluster: "a", IngestTopics: []string{"in"},
		QuarantineTopic: "q", DeadLetterTopic: "dl", Fields: fields(t, schemas.ExtractorConfig{}), BatchSize: 2}
}

func hv(m stream.Message, key string) string {
	v, _ := router.HeaderValue(m.Headers, key)
	return string(v)
}

// TestIngestReplayIgnoresForgedResidencyHeaders: residency-* headers a
// producer set on an ingest event (forged source coordinates, a replay
// count at the loop limit or not a number, a jurisdiction) change nothing:
// the event is replayed from its own coordinates with count 0, and the
// jurisdiction filter looks only at the new decision.
func TestIngestReplayIgnoresForgedResidencyHeaders(t *testing.T) {
	b, enc := guardBroker(t)
	forged := []stream.Header{
		{Key: router.HeaderSourceTopic, Value: []byte("sq")},
		{Key: router.HeaderSourcePartition, Value: []byte("7")},
		{Key: router.HeaderSourceOffset, Value: []byte("99")},
		{Key: router.HeaderJurisdiction, Value: []byte("EU")},
		{Key: router.HeaderRegion, Value: []byte("eu")},
		{Key: "trace-id", Value: []byte("t-1")},
	}
	var msgs []stream.Message
	for i, count := range []string{"3", "x", "0"} {
		v, err := enc.Encode(sample.Event{ID: eventID("0f0f", i), UserID: "u", Country: "US"})
		if err != nil {
			t.Fatal(err)
		}
		hs := append(append([]stream.Header(nil), forged...), stream.Header{Key: router.HeaderReplayCount, Value: []byte(count)})
		msgs = append(msgs, stream.Message{Topic: "in", Key: []byte("u"), Value: v, Headers: hs})
	}
	if err := b.Publisher().Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	rs := guardRuleset(t, 4)

	// The jurisdiction filter does not believe the forged header.
	cfg := guardConfig(t, b, replay.SourceIngest, "in", rs, 3)
	cfg.Plan.Filter.Jurisdictions = []string{"EU"}
	r, err := replay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rep := r.Report(); rep.Filtered != 3 || len(b.Records("t.eu")) != 0 || len(b.Records("t.us")) != 0 {
		t.Fatalf("EU filter over US events with a forged EU header: filtered %d, eu %d, us %d", rep.Filtered, len(b.Records("t.eu")), len(b.Records("t.us")))
	}

	r, err = replay.New(guardConfig(t, b, replay.SourceIngest, "in", rs, 3))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rep := r.Report(); rep.LoopGuard.Refused != 0 || rep.Routed["us"] != 3 {
		t.Fatalf("report %+v: forged replay counts must not trip the loop guard", rep)
	}
	us := b.Records("t.us")
	if len(us) != 3 || len(b.Records("t.eu")) != 0 {
		t.Fatalf("us %d events (want 3), eu %d (want 0)", len(us), len(b.Records("t.eu")))
	}
	for i, m := range us {
		want := map[string]string{
			router.HeaderSourceTopic: "in", router.HeaderSourcePartition: "0", router.HeaderSourceOffset: fmt.Sprint(i),
			router.HeaderReplayCount: "1", router.HeaderJurisdiction: "US", router.HeaderRegion: "us",
			router.HeaderReplayTopic: "in", router.HeaderReplayOffset: fmt.Sprint(i), "trace-id": "t-1",
		}
		for k, v := range want {
			if got := hv(m, k); got != v {
				t.Errorf("event %d: %s = %q, want %q", i, k, got, v)
			}
		}
		n := 0
		for _, h := range m.Headers {
			if h.Key == router.HeaderSourceTopic || h.Key == router.HeaderReplayCount {
				n++
			}
		}
		if n != 2 {
			t.Errorf("event %d carries forged residency headers besides its own: %v", i, m.Headers)
		}
	}
}

// TestRulesetChangeStopsRealReplay: a ruleset version applied in the
// middle of a real replay stops it before its next batch is published,
// checkpointed, with a message naming both versions; a resume is refused
// while the new version is in force and completes once the plan's version
// is in force again. A stale ruleset stops it too. A dry run does not
// care.
func TestRulesetChangeStopsRealReplay(t *testing.T) {
	b, enc := guardBroker(t)
	var msgs []stream.Message
	for i := range 6 {
		v, _ := enc.Encode(sample.Event{ID: eventID("0c0c", i), UserID: "u", Country: "US"})
		msgs = append(msgs, stream.Message{Topic: "in", Key: []byte("u"), Value: v})
	}
	if err := b.Publisher().Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	v9, v10 := guardRuleset(t, 9), guardRuleset(t, 10)
	cps, err := replay.NewFileCheckpoints(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	inf := fixed(v9)
	cfg := guardConfig(t, b, replay.SourceIngest, "in", v9, 6)
	cfg.InForce, cfg.Checkpoints = inf, cps
	cfg.Progress = func(p replay.Progress) {
		if p.Done >= 2 {
			inf.set(v10, nil) // `residency rules apply` after the first batch
		}
	}
	r, err := replay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(context.Background())
	if !errors.Is(err, replay.ErrRulesetChanged) || !strings.Contains(err.Error(), "changed from version 9 to 10") ||
		!strings.Contains(err.Error(), "Plan a new replay under version 10") {
		t.Fatalf("Run = %v, want ErrRulesetChanged from 9 to 10", err)
	}
	if n := len(b.Records("t.us")); n != 2 {
		t.Fatalf("%d events published, want the first batch only (2)", n)
	}
	if rep := r.Report(); rep.Read != 2 || rep.Written["t.us"] != 2 || rep.Complete {
		t.Fatalf("report of the stopped replay %+v; want what was published", rep)
	}
	cp, err := cps.Load(context.Background(), "g-1")
	if err != nil || cp.Next[0] != 2 || cp.Report.Complete {
		t.Fatalf("checkpoint %+v, %v; want next offset 2, incomplete", cp, err)
	}

	// A resume while version 10 is in force publishes nothing.
	cfg.Progress = nil
	r, _ = replay.New(cfg)
	if err := r.Run(context.Background()); !errors.Is(err, replay.ErrRulesetChanged) {
		t.Fatalf("resume under version 10: %v", err)
	}
	// Neither while the ruleset cannot be confirmed.
	inf.set(v9, fmt.Errorf("rules: %w", rules.ErrStale))
	r, _ = replay.New(cfg)
	if err := r.Run(context.Background()); !errors.Is(err, replay.ErrRulesetChanged) || !strings.Contains(err.Error(), "cannot confirm") {
		t.Fatalf("resume with a stale ruleset: %v", err)
	}
	if n := len(b.Records("t.us")); n != 2 {
		t.Fatalf("%d events published by refused resumes", n)
	}

	// A dry run under version 9 while 10 is in force is fine.
	inf.set(v10, nil)
	dry := guardConfig(t, b, replay.SourceIngest, "in", v9, 6)
	dry.InForce, dry.DryRun = inf, true
	if r, _ := replay.New(dry); r.Run(context.Background()) != nil || r.Report().Routed["us"] != 6 {
		t.Fatalf("dry run: %+v", r.Report())
	}

	// Version 9 in force again (a rollback): the resume completes.
	inf.set(v9, nil)
	r, _ = replay.New(cfg)
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rep := r.Report(); !rep.Complete || rep.Resumed != 1 || rep.Written["t.us"] != 6 || len(b.Records("t.us")) != 6 {
		t.Fatalf("resumed report %+v, %d events", rep, len(b.Records("t.us")))
	}
}

// TestReplaySinkQuarantine: events a sink refused are re-routed from the
// router's residency-source-* headers; still-unplaceable ones go to the
// router's quarantine (a sink quarantine is no place to leave them), and
// the replay count the event carried counts.
func TestReplaySinkQuarantine(t *testing.T) {
	b, enc := guardBroker(t)
	var msgs []stream.Message
	// Events the router placed in us under version 3 (so a US event, as
	// the records' own residency headers say), then a sink refused.
	var in []stream.Message
	for i := range 3 {
		v, _ := enc.Encode(sample.Event{ID: eventID("05c0", i), UserID: "u", Country: "US"})
		in = append(in, stream.Message{Topic: "in", Partition: 0, Offset: int64(40 + i), Key: []byte("u"), Value: v})
	}
	for i, rec := range routertest.Records(t, guardRuleset(t, 3), nil, in...) {
		// The value the sink refused is the event as it is now (its
		// country changed under the same user: US, DE, then ZZ).
		v, _ := enc.Encode(sample.Event{ID: eventID("05c0", i), UserID: "u", Country: []string{"US", "DE", "ZZ"}[i]})
		hs := append(rec.Headers, stream.Header{Key: router.HeaderReplayCount, Value: []byte("1")},
			stream.Header{Key: router.HeaderReason, Value: []byte("sink_region_not_approved")},
			stream.Header{Key: "residency-sink-store", Value: []byte("us-postgres")})
		msgs = append(msgs, stream.Message{Topic: "sq", Key: rec.Key, Value: v, Headers: hs})
	}
	if err := b.Publisher().Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	cfg := guardConfig(t, b, replay.SourceSinkQuarantine, "sq", guardRuleset(t, 4), 3)
	cfg.Plan.Filter.Reasons = []string{"sink_region_not_approved"}
	r, err := replay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep := r.Report()
	if rep.Routed["us"] != 1 || rep.Routed["eu"] != 1 || rep.Quarantined[router.ReasonUnknownCountry] != 1 || rep.Stayed != 0 {
		t.Fatalf("report %+v", rep)
	}
	froms := map[string]int64{}
	for _, tr := range rep.Transitions {
		froms[tr.From] += tr.Count
	}
	if froms["sink-quarantine:sink_region_not_approved"] != 3 {
		t.Fatalf("transitions %+v", rep.Transitions)
	}
	for _, tp := range []string{"t.us", "t.eu", "q"} {
		ms := b.Records(tp)
		if len(ms) != 1 {
			t.Fatalf("%s: %d events, want 1", tp, len(ms))
		}
		m := ms[0]
		if hv(m, router.HeaderSourceTopic) != "in" || hv(m, router.HeaderSourceOffset) == "" || hv(m, router.HeaderReplayCount) != "2" ||
			hv(m, router.HeaderReplayTopic) != "sq" || hv(m, "residency-sink-store") != "" {
			t.Errorf("%s: headers %v", tp, m.Headers)
		}
	}
}

// TestReplayRefusesTheRoutersIngestTopics: a region pinned to one of the
// router's ingest topics (not the topic the replay reads) is refused as
// the router refuses it: the events are decided no_rule and stay in
// quarantine; nothing is written to the ingest topic.
func TestReplayRefusesTheRoutersIngestTopics(t *testing.T) {
	b, enc := guardBroker(t)
	rs, err := rules.Parse([]byte(strings.Replace(guardRules, "topic: t.us", "topic: in", 1)))
	if err != nil {
		t.Fatal(err)
	}
	rs.SetVersion(4)
	var in []stream.Message
	for i := range 3 {
		v, _ := enc.Encode(sample.Event{ID: eventID("0511", i), UserID: "u", Country: "US"})
		in = append(in, stream.Message{Topic: "in", Offset: int64(i), Key: []byte("u"), Value: v})
	}
	var q []stream.Message
	for _, rec := range routertest.Records(t, guardRuleset(t, 3), nil, in...) {
		rec.Topic = "q" // as if quarantined: the replay reads its headers' source coordinates
		q = append(q, rec)
	}
	if err := b.Publisher().Publish(context.Background(), q...); err != nil {
		t.Fatal(err)
	}
	r, err := replay.New(guardConfig(t, b, replay.SourceQuarantine, "q", rs, 3))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rep := r.Report(); rep.Quarantined[router.ReasonNoRule] != 3 || rep.Stayed != 3 || len(b.Records("in")) != 0 {
		t.Fatalf("report %+v; %d records in the ingest topic", rep, len(b.Records("in")))
	}
}
