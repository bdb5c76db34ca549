package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
)

// TestResidueScanAndCleanUp is issue 15's residue acceptance on the dev
// stack. Seeded residue: a US event in the EU pinned topic, EU rows in the
// US store (a copy of an event the EU store holds, and a stray one nothing
// else holds), and the US and EU events left in the ingest topic after
// routing. `residue scan` finds exactly those and exits 1; then the EU
// sink refuses the stray US event into its quarantine, replay moves it to
// the US pinned topic, `purge --pinned` trims the ingest topic, the
// replayed sink quarantine and the pinned topics up to what their sinks
// stored, `residue clean` removes the EU copy left in the US store, and
// `erase` the stray user's row: both scans exit 0.
func TestResidueScanAndCleanUp(t *testing.T) {
	s := newErasureStack(t, 2)
	pg := testenv.NewPostgres(t)
	euURL := "file://" + t.TempDir()
	s.addSink(t, "us-postgres", "us", fmt.Sprintf("postgres: {dsn: %q}", pg.DSN))
	s.addSink(t, "eu-files", "eu", fmt.Sprintf("objectstore: {url: %q}", euURL))
	cfg := s.writeConfig(t, "")
	usStore := openStore(t, pg.DSN, "")

	// Routed events: 4 US, 3 EU; the US sink stores its own; the EU sink
	// is not running yet.
	now := time.Now()
	var recs []*kgo.Record
	for i := range 7 {
		country, user := "US", fmt.Sprintf("us-user-%d", i)
		if i >= 4 {
			country, user = "DE", fmt.Sprintf("eu-user-%d", i)
		}
		recs = append(recs, s.record(t, int32(i%2), fmt.Sprintf("ev-%d", i), user, country, now))
	}
	s.produce(t, recs...)
	router1 := start(t, "route", "--config", cfg, "--listen", "off")
	usSink := start(t, "sink", "--config", cfg, "--store", "us-postgres")
	waitFor(t, 60*time.Second, "routing and the US store", func() bool {
		return s.lag(t, "a", s.group, s.ingest) == 0 && len(rows(t, usStore)) == 4
	}, router1, usSink)

	// Residue: a US event in the EU pinned topic (headers claiming EU), and
	// two EU rows in the US store.
	stray := sinktest.WithHeader(sinktest.Message(s.eu, 900, "EU", "eu", "US"), router.HeaderRulesetVersion, "1")
	var hs []kgo.RecordHeader
	for _, h := range stray.Headers {
		hs = append(hs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	s.produce(t, &kgo.Record{Topic: s.eu, Partition: 1, Key: stray.Key, Value: stray.Value, Headers: hs, Timestamp: now})
	_, euHigh := s.watermarks(t, "b", s.eu)
	strayOffset := euHigh[1] - 1
	euDoc := func(id, user string) []byte {
		return []byte(fmt.Sprintf(`{"event_id": %q, "user_id": %q, "country": "DE"}`, id, user))
	}
	if err := usStore.(sink.Store).Write(testenv.Context(t, 20*time.Second), []sink.Record{
		{EventID: "ev-5", UserID: "eu-user-5", Jurisdiction: "EU", Region: "us", OccurredAt: now, RulesetVersion: "1", SourcePartition: -1, SourceOffset: -1,
			Topic: s.us, Partition: 0, Offset: 9000, Time: now, Event: euDoc("ev-5", "eu-user-5"), Raw: []byte("copy")},
		{EventID: "ev-stray", UserID: "eu-gone", Jurisdiction: "EU", Region: "us", OccurredAt: now, RulesetVersion: "1", SourcePartition: -1, SourceOffset: -1,
			Topic: s.us, Partition: 0, Offset: 9001, Time: now, Event: euDoc("ev-stray", "eu-gone"), Raw: []byte("stray")},
	}); err != nil {
		t.Fatal(err)
	}

	scan := func(j string) (int, *erasure.ResidueReport, string) {
		t.Helper()
		code, out, errs := cmd(t, "residue", "scan", "--config", cfg, "--jurisdiction", j, "--output", "json")
		var rep erasure.ResidueReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("residue scan %s: exit %d, %v:\n%s%s", j, code, err, out, errs)
		}
		return code, &rep, errs
	}
	// places renders where residue was found: topic partitions and
	// offsets, store event ids.
	places := func(rep *erasure.ResidueReport) string {
		var out []string
		for _, p := range rep.Places {
			if p.Residue == 0 {
				continue
			}
			if p.Kind == "topic" {
				for _, pr := range p.Partitions {
					out = append(out, fmt.Sprintf("%s/%d%v", p.Topic.Name, pr.Partition, pr.Ranges))
				}
				continue
			}
			for _, r := range p.Rows {
				out = append(out, p.Store+":"+r.EventID)
			}
		}
		return strings.Join(out, " ")
	}
	code, us, errs := scan("US")
	// The ingest topic: ev-0..3 (partitions 0, 1: offsets 0, 1 each).
	if want := fmt.Sprintf("%s/0[{0 2}] %s/1[{0 2}] %s/1[{%d %d}]", s.ingest, s.ingest, s.eu, strayOffset, strayOffset+1); code != exitFailure ||
		us.Verdict != erasure.VerdictResidue || places(us) != want || us.Residue != 5 {
		t.Fatalf("scan US: exit %d, verdict %s, %d residue at\n %s\nwant\n %s\n%s", code, us.Verdict, us.Residue, places(us), want, errs)
	}
	if !strings.Contains(errs, "reading ") {
		t.Errorf("no progress on stderr:\n%s", errs)
	}
	code, eu, _ := scan("EU")
	// The ingest topic: ev-4 (partition 0, offset 2), ev-5 (1/2), ev-6 (0/3).
	if want := fmt.Sprintf("%s/0[{2 4}] %s/1[{2 3}] us-postgres:ev-5 us-postgres:ev-stray", s.ingest, s.ingest); code != exitFailure || places(eu) != want {
		t.Fatalf("scan EU: exit %d, residue at\n %s\nwant\n %s", code, places(eu), want)
	}

	// The EU sink stores the EU events and refuses the stray US event
	// into its quarantine; replay routes it to the US pinned topic.
	euSink := start(t, "sink", "--config", cfg, "--store", "eu-files")
	running := []*bg{router1, usSink, euSink}
	waitFor(t, 60*time.Second, "the EU sink", func() bool {
		return s.lag(t, "b", s.sinks["eu-files"].group, s.eu) == 0 && len(s.keys(t, "a", s.sinkQuarantine)) == 1
	}, running...)
	if code, out, errs := cmd(t, "replay", "--config", cfg, "--source", "sink-quarantine", "--progress", "off"); code != exitOK {
		t.Fatalf("replay: exit %d\n%s%s", code, out, errs)
	}
	waitFor(t, 60*time.Second, "the US sink to store the replayed event", func() bool {
		return s.lag(t, "a", s.sinks["us-postgres"].group, s.us) == 0
	}, running...)

	// residue clean: the EU copy in the US store goes (the EU store holds
	// ev-5), the stray row stays (nothing else holds it).
	if code, out, errs := cmd(t, "residue", "clean", "--config", cfg, "--jurisdiction", "EU", "--dry-run"); code != exitFailure ||
		!strings.Contains(out, "would remove 1 rows, kept 1") {
		t.Fatalf("residue clean --dry-run: exit %d\n%s%s", code, out, errs)
	}
	if got := rows(t, usStore); got["ev-5"].UserID == "" || got["ev-stray"].UserID == "" {
		t.Fatal("the dry run removed rows")
	}
	if code, out, errs := cmd(t, "residue", "clean", "--config", cfg, "--jurisdiction", "EU"); code != exitFailure ||
		!strings.Contains(out, "removed 1 rows, kept 1") {
		t.Fatalf("residue clean: exit %d\n%s%s", code, out, errs)
	}
	// purge: ingest (routed), the sink quarantine (replayed) and the
	// pinned topics (stored) go.
	if code, out, errs := cmd(t, "purge", "--config", cfg, "--pinned"); code != exitOK {
		t.Fatalf("purge --pinned: exit %d\n%s%s", code, out, errs)
	}
	for _, tp := range []struct{ cluster, topic string }{{"a", s.ingest}, {"a", s.sinkQuarantine}, {"b", s.eu}} {
		if low, high := s.watermarks(t, tp.cluster, tp.topic); fmt.Sprint(low) != fmt.Sprint(high) {
			t.Errorf("%s after purge: start offsets %v, high-water marks %v", tp.topic, low, high)
		}
	}
	if code, out, errs := cmd(t, "erase", "--config", cfg, "--user", "eu-gone", "--no-topics"); code != exitOK {
		t.Fatalf("erase: exit %d\n%s%s", code, out, errs)
	}
	for _, j := range []string{"US", "EU"} {
		if code, rep, errs := scan(j); code != exitOK || rep.Verdict != erasure.VerdictClean || rep.Residue != 0 {
			t.Errorf("scan %s after purge and erase: exit %d, %s at %s\n%s", j, code, rep.Verdict, places(rep), errs)
		}
	}
	// The US store still holds its own events, and the replayed one.
	got := rows(t, usStore)
	for _, id := range []string{"ev-0", "ev-1", "ev-2", "ev-3", sinktest.EventID(900)} {
		if got[id].UserID == "" {
			t.Errorf("the US store lost %s", id)
		}
	}
	if len(got) != 5 {
		t.Errorf("the US store holds %d rows, want 5", len(got))
	}
}

// TestErasureCommandsRefuseBadInput: purge, erase and residue refuse bad
// input with one line naming what is wrong, exit 2, and change nothing:
// no record deleted, no marker recorded, no row removed.
func TestErasureCommandsRefuseBadInput(t *testing.T) {
	s := newErasureStack(t, 1)
	pg := testenv.NewPostgres(t)
	s.addSink(t, "us-postgres", "us", fmt.Sprintf("postgres: {dsn: %q}", pg.DSN))
	cfg := s.writeConfig(t, "")
	store := openStore(t, pg.DSN, "")
	now := time.Now()
	if err := store.(sink.Store).Write(testenv.Context(t, 20*time.Second), []sink.Record{{EventID: "e1", UserID: "u1", Jurisdiction: "US", Region: "us",
		OccurredAt: now, SourcePartition: -1, SourceOffset: -1, Topic: s.us, Time: now, Event: []byte(`{"country": "US"}`), Raw: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	s.produce(t, s.record(t, 0, "e1", "u1", "US", now))
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"erase", "--user", ""}, []string{"--user", "empty user id"}},
		{[]string{"erase"}, []string{"--user is required"}},
		{[]string{"erase", "--user", "u1", "--store", "eu-nowhere"}, []string{"--store", `"eu-nowhere"`, "us-postgres"}},
		{[]string{"residue", "scan", "--jurisdiction", "ATLANTIS"}, []string{"--jurisdiction", `"ATLANTIS"`, "US, EU"}},
		{[]string{"residue", "clean", "--jurisdiction", "ATLANTIS"}, []string{"--jurisdiction", `"ATLANTIS"`}},
		{[]string{"residue", "scan"}, []string{"--jurisdiction is required"}},
		{[]string{"purge", "--min-age", "-2h"}, []string{"--min-age", "negative"}},
		{[]string{"purge", "--every", "soon"}, []string{"-every", `"soon"`}},
		{[]string{"purge", "--topic", "nope"}, []string{"--topic", `"nope"`, s.ingest}},
		{[]string{"purge", "--output", "yaml"}, []string{"--output", `"yaml"`}},
	} {
		code, out, errs := cmd(t, append(c.args, "--config", cfg)...)
		what := strings.Join(c.args, " ")
		if code != exitUsage || out != "" {
			t.Errorf("%s: exit %d, stdout %q; want 2 and nothing on stdout; stderr:\n%s", what, code, out, errs)
		}
		first, _, _ := strings.Cut(strings.TrimSpace(errs), "\nUsage:")
		if strings.Contains(first, "\n") && !strings.HasPrefix(errs, "invalid value") {
			t.Errorf("%s: the error is not one line:\n%s", what, errs)
		}
		for _, w := range c.want {
			if !strings.Contains(errs, w) {
				t.Errorf("%s: stderr does not say %q:\n%s", what, w, errs)
			}
		}
	}
	if low, _ := s.watermarks(t, "a", s.ingest); low[0] != 0 {
		t.Errorf("a refused purge deleted records: log start %d", low[0])
	}
	if got := rows(t, store); len(got) != 1 {
		t.Errorf("a refused erase removed rows: %d left", len(got))
	}
	rdb := s.r.Client(t)
	if n, err := rdb.Exists(testenv.Context(t, 5*time.Second), s.r.Prefix+"erasure:subjects").Result(); err != nil || n != 0 {
		t.Errorf("a refused erase recorded a marker (%d, %v)", n, err)
	}
}
