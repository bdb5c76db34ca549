package replay_test

// Acceptance tests of issue 7 against real Kafka, Redis and PostgreSQL
// (the dev stack under `make test`).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/redis"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/replay"
	"github.com/residency-router/residency/router/routertest"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// TestReplayQuarantinedUnknownCountry: events quarantined for an unknown
// country are replayed after a ruleset that assigns the country is applied.
// The dry run writes nothing and reports what the real run then does; the
// events reach the region's pinned topic and its store once (also after a
// second replay); events still unplaceable stay in quarantine, uncopied.
func TestReplayQuarantinedUnknownCountry(t *testing.T) {
	e := newEnv(t)
	e.apply(t, rulesV1)
	vals := map[string][]byte{}
	for i := range 10 {
		vals[fmt.Sprintf("ca-%d", i)] = e.event(t, eventID("0ca0", i), fmt.Sprintf("ca-%d", i), "CA")
	}
	for i := range 6 {
		vals[fmt.Sprintf("us-%d", i)] = e.event(t, eventID("0050", i), fmt.Sprintf("us-%d", i), "US")
	}
	for i := range 3 {
		vals[fmt.Sprintf("de-%d", i)] = e.event(t, eventID("00de", i), fmt.Sprintf("de-%d", i), "DE")
	}
	for i := range 2 {
		vals[fmt.Sprintf("nc-%d", i)] = e.event(t, eventID("0000", i), fmt.Sprintf("nc-%d", i), "")
	}
	e.produce(t, vals)
	fx := fields(t, schemas.ExtractorConfig{})
	e.route(t, fx)
	quarantined := e.readAll(t, "a", e.quarantine)
	if got := len(quarantined); got != 12 {
		t.Fatalf("quarantine holds %d events after routing under v1, want 12", got)
	}
	// The router says how it read each event; replay says the same.
	schemaHeader := fmt.Sprintf("single-object:%016x", e.enc.Fingerprint())
	for _, m := range quarantined {
		if header(m, router.HeaderSchema) != schemaHeader {
			t.Fatalf("quarantined event's %s header %q, want %q", router.HeaderSchema, header(m, router.HeaderSchema), schemaHeader)
		}
	}
	v2 := e.apply(t, rulesV2)

	before := e.ends(t)
	dry := e.config(e.plan(t, "dry-1", replay.SourceQuarantine, e.quarantine), v2, fx)
	dry.DryRun = true
	dryRep := run(t, dry)
	if after := e.ends(t); !maps.Equal(before, after) {
		t.Fatalf("the dry run wrote: end offsets %v → %v", before, after)
	}
	if dryRep.Routed["us"] != 10 || dryRep.Quarantined["no_country"] != 2 || dryRep.Stayed != 2 || dryRep.Written[e.us] != 10 || len(dryRep.Written) != 1 {
		t.Fatalf("dry run report: %+v", dryRep)
	}
	mv := dryRep.Moves()
	if len(mv) != 1 || mv[0].From != "quarantine:unknown_country" || mv[0].To != "region:us" || mv[0].Count != 10 || len(mv[0].Samples) != 5 {
		t.Fatalf("moves = %+v", mv)
	}
	for _, id := range mv[0].Samples {
		if !strings.HasPrefix(id, "6f1c2a4e-0ca0-") {
			t.Errorf("sample %q is not the event id of a CA event", id)
		}
	}
	var text strings.Builder
	dryRep.WriteText(&text)
	if !strings.Contains(text.String(), "quarantine:unknown_country → region:us: 10") || !strings.Contains(text.String(), "would write") {
		t.Errorf("text report:\n%s", text.String())
	}

	real := e.config(e.plan(t, "real-1", replay.SourceQuarantine, e.quarantine), v2, fx)
	rep := run(t, real)
	if comparable(rep) != comparable(dryRep) {
		t.Fatalf("the real run differs from its dry run:\n dry  %s\n real %s", comparable(dryRep), comparable(rep))
	}
	after := e.ends(t)
	if after[e.us] != before[e.us]+10 || after[e.quarantine] != before[e.quarantine] || after[e.eu] != before[e.eu] ||
		after[e.deadLetter] != before[e.deadLetter] || after[e.ingest] != before[e.ingest] {
		t.Fatalf("end offsets %v → %v: want exactly 10 more on the us topic", before, after)
	}
	var replayed int
	for _, m := range e.readAll(t, "a", e.us) {
		if header(m, router.HeaderReplayID) == "" {
			continue
		}
		replayed++
		if header(m, router.HeaderReplayID) != "real-1" || header(m, router.HeaderReplayCount) != "1" ||
			header(m, router.HeaderReplayTopic) != e.quarantine || header(m, router.HeaderSourceTopic) != e.ingest ||
			header(m, router.HeaderRegion) != "us" || header(m, router.HeaderJurisdiction) != "US" ||
			header(m, router.HeaderRulesetVersion) != v2.VersionString() || header(m, router.HeaderReason) != "" ||
			header(m, router.HeaderSchema) != schemaHeader {
			t.Fatalf("replayed event headers: %v", m.Headers)
		}
	}
	if replayed != 10 {
		t.Fatalf("%d replayed events on the us topic, want 10", replayed)
	}

	store := e.usSink(t, v2)
	waitRows(t, store, 16) // 6 US routed by the router + 10 CA replayed
	// A second replay of the same quarantine republishes; the store still
	// holds every event once.
	rep2 := run(t, e.config(e.plan(t, "real-2", replay.SourceQuarantine, e.quarantine), v2, fx))
	if rep2.Routed["us"] != 10 {
		t.Fatalf("second replay: %+v", rep2)
	}
	waitRows(t, store, 16)
	var ca int
	if err := store.Pool().QueryRow(context.Background(), `SELECT count(*) FROM `+store.Table()+` WHERE event_id LIKE '6f1c2a4e-0ca0-%' AND source_topic = $1`, e.ingest).Scan(&ca); err != nil || ca != 10 {
		t.Fatalf("CA rows with their ingest coordinates = %d (%v), want 10", ca, err)
	}
}

// TestReplayDeadLetterAfterSchemaAvailable: events dead-lettered because
// their writer schema was unknown route once the schema is made available.
func TestReplayDeadLetterAfterSchemaAvailable(t *testing.T) {
	e := newEnv(t)
	v1 := e.apply(t, rulesV1)
	vals := map[string][]byte{}
	for i := range 8 {
		country := []string{"US", "DE"}[i%2]
		vals[fmt.Sprintf("u-%d", i)] = variantEvent(t, eventID("0d1e", i), fmt.Sprintf("u-%d", i), country)
	}
	vals["junk"] = []byte("not avro at all")
	e.produce(t, vals)
	e.route(t, fields(t, schemas.ExtractorConfig{})) // the variant schema is unknown here
	dl := e.readAll(t, "a", e.deadLetter)
	if len(dl) != 9 {
		t.Fatalf("dead-letter holds %d events, want 9", len(dl))
	}
	// An unknown schema's dead-letter record names the fingerprint the
	// value carries (goavro's, here); junk that was never unframed, none.
	variantCodec, err := goavro.NewCodec(variantSchema)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range dl {
		want := fmt.Sprintf("single-object:%016x", variantCodec.Rabin)
		if header(m, router.HeaderReason) == "bad_magic" {
			want = ""
		}
		if header(m, router.HeaderSchema) != want {
			t.Fatalf("dead-letter %s: %s header %q, want %q", header(m, router.HeaderReason), router.HeaderSchema, header(m, router.HeaderSchema), want)
		}
	}
	variantFP, err := schemas.Fingerprint(variantSchema)
	if err != nil {
		t.Fatal(err)
	}

	fx := fields(t, schemas.ExtractorConfig{CatalogueDir: catalogue(t)})
	before := e.ends(t)
	dry := e.config(e.plan(t, "dl-dry", replay.SourceDeadLetter, e.deadLetter), v1, fx)
	dry.DryRun = true
	dryRep := run(t, dry)
	if !maps.Equal(before, e.ends(t)) {
		t.Fatal("the dry run wrote")
	}
	rep := run(t, e.config(e.plan(t, "dl-1", replay.SourceDeadLetter, e.deadLetter), v1, fx))
	if comparable(rep) != comparable(dryRep) {
		t.Fatalf("the real run differs from its dry run:\n dry  %s\n real %s", comparable(dryRep), comparable(rep))
	}
	if rep.Routed["us"] != 4 || rep.Routed["eu"] != 4 || rep.Stayed != 1 || rep.DeadLettered["bad_magic"] != 1 {
		t.Fatalf("report: %+v", rep)
	}
	for _, tr := range rep.Moves() {
		if tr.From != "dead-letter:unknown_schema" {
			t.Errorf("move from %s", tr.From)
		}
	}
	after := e.ends(t)
	if after[e.us]-before[e.us] != 4 || after[e.eu]-before[e.eu] != 4 || after[e.deadLetter] != before[e.deadLetter] {
		t.Fatalf("end offsets %v → %v", before, after)
	}
	for _, m := range e.readAll(t, "b", e.eu) {
		if header(m, router.HeaderRegion) != "eu" || header(m, router.HeaderReplayID) != "dl-1" || header(m, router.HeaderError) != "" ||
			header(m, router.HeaderSchema) != fmt.Sprintf("single-object:%016x", variantFP) {
			t.Fatalf("eu event headers: %v", m.Headers)
		}
	}
}

// TestReplayInterruptedAndResumed: a replay interrupted midway and resumed
// from its Redis checkpoint leaves every event in its store exactly once.
func TestReplayInterruptedAndResumed(t *testing.T) {
	e := newEnv(t)
	e.apply(t, rulesV1)
	const total = 60
	vals := map[string][]byte{}
	for i := range total {
		vals[fmt.Sprintf("ca-%d", i)] = e.event(t, eventID("0ca1", i), fmt.Sprintf("ca-%d", i), "CA")
	}
	e.produce(t, vals)
	fx := fields(t, schemas.ExtractorConfig{})
	e.route(t, fx)
	v2 := e.apply(t, rulesV2)
	store := e.usSink(t, v2)

	plan := e.plan(t, "resume-1", replay.SourceQuarantine, e.quarantine)
	cps := redis.NewCheckpoints(e.redis.Client(t), e.redis.Prefix, time.Hour)
	ctx, cancel := context.WithCancel(testenv.Context(t, 60*time.Second))
	cfg := e.config(plan, v2, fx)
	cfg.Checkpoints = cps
	cfg.Progress = func(p replay.Progress) {
		if p.Done >= total/2 {
			cancel() // Ctrl-C midway
		}
	}
	r1, err := replay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = r1.Run(ctx)
	if !errors.Is(err, replay.ErrInterrupted) {
		t.Fatalf("Run = %v, want ErrInterrupted", err)
	}
	first := r1.Report()
	if first.Complete || first.Read < total/2 || first.Read >= total {
		t.Fatalf("interrupted report: read %d, complete %v", first.Read, first.Complete)
	}
	cp, err := cps.Load(context.Background(), "resume-1")
	if err != nil || cp.Report.Read != first.Read {
		t.Fatalf("checkpoint: %v, %+v", err, cp)
	}

	// A resume with another plan is refused.
	other := e.config(plan, v2, fx)
	other.Plan.Ranges = slices.Clone(plan.Ranges)
	other.Plan.Ranges[0].Start++
	other.Checkpoints = cps
	ro, err := replay.New(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := ro.Run(testenv.Context(t, 10*time.Second)); !errors.Is(err, replay.ErrPlanMismatch) {
		t.Fatalf("resume with another range: %v, want ErrPlanMismatch", err)
	}

	cfg.Progress = nil
	r2, err := replay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Run(testenv.Context(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	rep := r2.Report()
	if !rep.Complete || rep.Resumed != 1 || rep.Read != total || rep.Routed["us"] != total || rep.Written[e.us] != total {
		t.Fatalf("resumed report: %+v", rep)
	}
	waitRows(t, store, total)
	// Running the finished replay again does nothing.
	r3, _ := replay.New(cfg)
	before := e.ends(t)
	if err := r3.Run(testenv.Context(t, 20*time.Second)); err != nil || !r3.AlreadyComplete() {
		t.Fatalf("re-run of a complete replay: %v, complete %v", err, r3.AlreadyComplete())
	}
	if !maps.Equal(before, e.ends(t)) {
		t.Fatal("re-running a complete replay wrote")
	}
}

// TestLoopGuard: an event already replayed MaxReplays times is refused,
// with a clear message, and nothing is written for it.
func TestLoopGuard(t *testing.T) {
	e := newEnv(t)
	v2 := e.apply(t, rulesV2)
	fx := fields(t, schemas.ExtractorConfig{})
	var msgs []stream.Message
	// Records the router quarantined (CA unknown) under version 1.
	v1, err := rules.Parse([]byte(fmt.Sprintf(rulesV1, e.us, e.eu)))
	if err != nil {
		t.Fatal(err)
	}
	v1.SetVersion(1)
	given := []string{"", "1", "2", "3", "7", "x"}
	var in []stream.Message
	for i := range given {
		in = append(in, stream.Message{Topic: e.ingest, Partition: 0, Offset: int64(100 + i), Key: []byte("k"),
			Value: e.event(t, eventID("0100", i), "u", "CA")})
	}
	for i, rec := range routertest.Records(t, v1, fx, in...) {
		hs := rec.Headers
		if given[i] != "" {
			hs = append(hs, stream.Header{Key: router.HeaderReplayCount, Value: []byte(given[i])})
		}
		msgs = append(msgs, stream.Message{Topic: e.quarantine, Key: rec.Key, Value: rec.Value, Headers: hs})
	}
	if err := e.pubs["a"].Publish(testenv.Context(t, 10*time.Second), msgs...); err != nil {
		t.Fatal(err)
	}
	cfg := e.config(e.plan(t, "guard-1", replay.SourceQuarantine, e.quarantine), v2, fx)
	rep := run(t, cfg)
	if rep.LoopGuard.Refused != 3 || rep.LoopGuard.Limit != 3 || rep.Routed["us"] != 3 || rep.Written[e.us] != 3 {
		t.Fatalf("report: %+v", rep)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "has already been replayed 3 times (limit 3); not replaying it again") ||
		!strings.Contains(logs, "has already been replayed 7 times") || !strings.Contains(logs, "is not a count") {
		t.Fatalf("loop guard messages missing from the log:\n%s", logs)
	}
	var text strings.Builder
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "Loop guard: 3 events already replayed 3 times were refused") {
		t.Errorf("text report:\n%s", text.String())
	}
	counts := map[string]bool{}
	for _, m := range e.readAll(t, "a", e.us) {
		counts[header(m, router.HeaderReplayCount)] = true
	}
	if !maps.Equal(counts, map[string]bool{"1": true, "2": true, "3": true}) {
		t.Fatalf("replay counts written: %v, want 1, 2 and 3", counts)
	}
	// A limit of 1 refuses everything replayed before.
	cfg = e.config(e.plan(t, "guard-2", replay.SourceQuarantine, e.quarantine), v2, fx)
	cfg.Plan.MaxReplays = 1
	if rep := run(t, cfg); rep.LoopGuard.Refused != 5 || rep.Routed["us"] != 1 {
		t.Fatalf("limit 1: %+v", rep)
	}
}
