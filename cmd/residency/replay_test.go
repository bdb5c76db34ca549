package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/redis"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/replay"
	"github.com/residency-router/residency/router/routertest"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

const replayRulesV1 = `
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE]}
regions:
  - {name: us, cluster: a, topic: %s}
  - {name: eu, cluster: b, topic: %s}
stores:
  - {name: us-postgres, regions: [us]}
`

// replayStack is a config file over real topics and a rules store.
type replayStack struct {
	cfgFile                                string
	ingest, quarantine, deadLetter, us, eu string
	sinkQuarantine                         string
	store                                  *redis.Rules
	admins                                 map[string]*kafka.Admin
	writer                                 *kafka.Writer
	enc                                    *sample.Encoder
}

func newReplayStack(t *testing.T) *replayStack {
	t.Helper()
	a, b := testenv.KafkaA(t), testenv.KafkaB(t)
	r := testenv.NewRedis(t)
	s := &replayStack{ingest: a.Topic(t, "ingest", 2), quarantine: a.Topic(t, "quarantine", 1), deadLetter: a.Topic(t, "deadletter", 1),
		us: a.Topic(t, "us", 1), eu: b.Topic(t, "eu", 1), sinkQuarantine: a.Topic(t, "sinkq", 1), admins: map[string]*kafka.Admin{}}
	s.store = redis.NewRules(r.Client(t), r.Prefix)
	cfg := fmt.Sprintf(`
kafka:
  clusters:
    a: {brokers: [%s]}
    b: {brokers: [%s]}
  ingest_cluster: a
router:
  ingest_topics: [%s]
  quarantine_topic: %s
  dead_letter_topic: %s
redis: {addr: "%s", prefix: "%s"}
rules: {poll_interval: 100ms}
sinks:
  - {store: us-postgres, region: us, quarantine_topic: %s, postgres: {dsn: "postgres://residency@127.0.0.1:1/unused"}}
`, strings.Join(a.Brokers, ","), strings.Join(b.Brokers, ","), s.ingest, s.quarantine, s.deadLetter, r.Addr, r.Prefix, s.sinkQuarantine)
	s.cfgFile = filepath.Join(t.TempDir(), "residency.yaml")
	if err := os.WriteFile(s.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range []*testenv.Kafka{a, b} {
		ad, err := kafka.NewAdmin(kafka.Cluster{Name: k.Name, Brokers: k.Brokers})
		if err != nil {
			t.Fatal(err)
		}
		s.admins[k.Name] = ad
	}
	var err error
	if s.writer, err = kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "a", Brokers: a.Brokers}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.writer.Close() })
	if s.enc, err = sample.NewEncoder(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *replayStack) apply(t *testing.T, countries string) {
	t.Helper()
	ctx := testenv.Context(t, 10*time.Second)
	cur, _ := s.store.LatestVersion(ctx)
	src := strings.Replace(fmt.Sprintf(replayRulesV1, s.us, s.eu), "countries: [US]", "countries: ["+countries+"]", 1)
	if _, err := s.store.Apply(ctx, []byte(src), rules.ApplyOptions{Base: cur}); err != nil {
		t.Fatal(err)
	}
}

// quarantine writes n events of country to quarantine as the router does.
func (s *replayStack) quarantineEvents(t *testing.T, prefix, country, reason string, n int) {
	t.Helper()
	// The router's records of these events under a ruleset that does not
	// place them: unknown country (no jurisdiction has it), or none.
	rs, err := rules.Parse([]byte(fmt.Sprintf(replayRulesV1, s.us, s.eu)))
	if err != nil {
		t.Fatal(err)
	}
	rs.SetVersion(1)
	var in []stream.Message
	for i := range n {
		v, err := s.enc.Encode(sample.Event{ID: fmt.Sprintf("%s-%d", prefix, i), UserID: fmt.Sprintf("u-%s-%d", prefix, i), Country: country})
		if err != nil {
			t.Fatal(err)
		}
		in = append(in, stream.Message{Topic: s.ingest, Partition: i % 2, Offset: int64(i), Key: []byte(fmt.Sprint(i)), Value: v})
	}
	var msgs []stream.Message
	for _, rec := range routertest.Records(t, rs, nil, in...) {
		if r, _ := router.HeaderValue(rec.Headers, router.HeaderReason); string(r) != reason {
			t.Fatalf("the router quarantines %s events for %s, not %s", country, r, reason)
		}
		msgs = append(msgs, stream.Message{Topic: s.quarantine, Key: rec.Key, Value: rec.Value, Headers: rec.Headers})
	}
	if err := s.writer.Publish(testenv.Context(t, 10*time.Second), msgs...); err != nil {
		t.Fatal(err)
	}
}

func (s *replayStack) ends(t *testing.T) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, tp := range [][2]string{{"a", s.ingest}, {"a", s.quarantine}, {"a", s.deadLetter}, {"a", s.us}, {"b", s.eu}} {
		off, err := s.admins[tp[0]].EndOffsets(testenv.Context(t, 10*time.Second), tp[1])
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, o := range off {
			n += o
		}
		out[tp[1]] = n
	}
	return out
}

func replayCmd(ctx context.Context, args ...string) (int, string, string) {
	var stdout, stderr testenv.SyncBuffer
	code := run(ctx, append([]string{"replay"}, args...), nil, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestReplayCommandUsage(t *testing.T) {
	s := newReplayStack(t)
	ctx := testenv.Context(t, 30*time.Second)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--source", "bogus"}, `--source "bogus" is not`},
		{[]string{}, "--source is required"},
		{[]string{"--source", "ingest", "--offsets", "0:1-2", "--from", "1h"}, "exclude each other"},
		{[]string{"--source", "ingest", "--reason", "no_country"}, "have no reason"},
		{[]string{"--source", "quarantine", "--output", "xml"}, "--output"},
		{[]string{"--source", "ingest", "--offsets", "9:0-1"}, "no partition 9"},
		{[]string{"--source", "ingest", "--offsets", "0:5-2"}, "bad end offset"},
		{[]string{"--source", "ingest", "--from", "yesterday"}, "--from"},
		{[]string{"--resume", "nope"}, "no checkpoint of that replay"},
		{[]string{"--resume", "x", "--source", "ingest"}, "not with --resume"},
		{[]string{"--source", "quarantine", "--id", "bad id!"}, "--id"},
		{[]string{"--source", "quarantine", "--rules", "../../deploy/examples/rules.yaml"}, "a real replay publishes only under the ruleset version in force"},
		{[]string{"--source", "sink-quarantine", "--topic", "nope"}, "not the quarantine_topic of any sink"},
		{[]string{"--source", "dead-letter", "--topic", "x"}, "--topic: only with --source ingest or sink-quarantine"},
	} {
		code, _, stderr := replayCmd(ctx, append([]string{"--config", s.cfgFile}, c.args...)...)
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("replay %v = %d, stderr %q; want exit 2 mentioning %q", c.args, code, stderr, c.want)
		}
	}
}

// TestReplayCommand runs `residency replay` end to end on real Kafka and
// Redis: a dry run in JSON, the real run with its text report and progress
// lines, a re-run of the finished replay, and an ingest dry run whose moves
// come from the baseline (the previous ruleset version).
func TestReplayCommand(t *testing.T) {
	s := newReplayStack(t)
	ctx := testenv.Context(t, 60*time.Second)
	s.apply(t, "US")
	s.quarantineEvents(t, "ca", "CA", router.ReasonUnknownCountry, 4)
	s.quarantineEvents(t, "nc", "", router.ReasonNoCountry, 1)
	s.apply(t, "US, CA")

	before := s.ends(t)
	code, stdout, stderr := replayCmd(ctx, "--config", s.cfgFile, "--source", "quarantine", "--dry-run", "--output", "json", "--progress", "off")
	if code != exitOK {
		t.Fatalf("dry run exit %d: %s", code, stderr)
	}
	var rep replay.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("dry run output is not a JSON report: %v\n%s", err, stdout)
	}
	if !rep.DryRun || rep.Routed["us"] != 4 || rep.Stayed != 1 || rep.Written[s.us] != 4 || rep.RulesetVersion != "2" {
		t.Fatalf("dry run report: %s", stdout)
	}
	if !maps.Equal(before, s.ends(t)) {
		t.Fatal("the dry run wrote")
	}

	code, stdout, stderr = replayCmd(ctx, "--config", s.cfgFile, "--source", "quarantine", "--id", "cli-1", "--progress", "lines")
	if code != exitOK {
		t.Fatalf("replay exit %d: %s", code, stderr)
	}
	for _, want := range []string{"Replay cli-1: quarantine topic", "quarantine:unknown_country → region:us: 4  e.g. ca-", "quarantine:no_country (was quarantine:no_country): 1"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "replay cli-1: 5/5 (100%) written 4 refused 0") {
		t.Errorf("no final progress line:\n%s", stderr)
	}
	if after := s.ends(t); after[s.us] != before[s.us]+4 || after[s.quarantine] != before[s.quarantine] {
		t.Fatalf("end offsets %v → %v", before, after)
	}

	code, _, stderr = replayCmd(ctx, "--config", s.cfgFile, "--resume", "cli-1", "--progress", "off")
	if code != exitOK || !strings.Contains(stderr, "already complete") {
		t.Fatalf("resume of a finished replay: %d %s", code, stderr)
	}

	// Ingest: CA events the router quarantined under v1 would now route to
	// us; the baseline defaults to the version before the current one.
	var msgs []stream.Message
	for i := range 3 {
		v, _ := s.enc.Encode(sample.Event{ID: fmt.Sprint("in-", i), UserID: "u", Country: []string{"CA", "US", "DE"}[i]})
		msgs = append(msgs, stream.Message{Topic: s.ingest, Key: []byte("u"), Value: v})
	}
	if err := s.writer.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = replayCmd(ctx, "--config", s.cfgFile, "--source", "ingest", "--from", "1h", "--dry-run", "--output", "json", "--progress", "off")
	if code != exitOK {
		t.Fatalf("ingest dry run exit %d: %s", code, stderr)
	}
	rep = replay.Report{}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	mv := rep.Moves()
	if rep.Read != 3 || len(mv) != 1 || mv[0].From != "quarantine:unknown_country" || mv[0].To != "region:us" || mv[0].Count != 1 || mv[0].Samples[0] != "in-0" {
		t.Fatalf("ingest dry run: %s", stdout)
	}
	// --only-moved writes only the CA event; US and DE stay where the
	// router put them.
	before = s.ends(t)
	code, stdout, stderr = replayCmd(ctx, "--config", s.cfgFile, "--source", "ingest", "--from", "1h", "--only-moved", "--progress", "off")
	if code != exitOK || !strings.Contains(stdout, "2 stay where they are") {
		t.Fatalf("ingest --only-moved: %d\n%s\n%s", code, stdout, stderr)
	}
	if after := s.ends(t); after[s.us] != before[s.us]+1 || after[s.eu] != before[s.eu] || after[s.quarantine] != before[s.quarantine] {
		t.Fatalf("--only-moved end offsets %v → %v", before, after)
	}
}

// TestReplayCommandInterruptAndResume stops a rate-limited replay midway
// (Ctrl-C), checks it says how to resume, and resumes it.
func TestReplayCommandInterruptAndResume(t *testing.T) {
	s := newReplayStack(t)
	s.apply(t, "US")
	s.quarantineEvents(t, "ca", "CA", router.ReasonUnknownCountry, 12)
	s.apply(t, "US, CA")
	before := s.ends(t)
	dir := t.TempDir()

	ctx, cancel := context.WithCancel(testenv.Context(t, 60*time.Second))
	time.AfterFunc(1200*time.Millisecond, cancel)
	code, stdout, stderr := replayCmd(ctx, "--config", s.cfgFile, "--source", "quarantine", "--id", "slow-1", "--rate", "4",
		"--checkpoint-dir", dir, "--progress", "lines")
	if code != exitFailure || !strings.Contains(stderr, "residency replay --config "+s.cfgFile+" --resume slow-1 --checkpoint-dir "+dir) {
		t.Fatalf("interrupted replay: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stdout, "(incomplete)") {
		t.Errorf("the partial report does not say it is incomplete:\n%s", stdout)
	}
	mid := s.ends(t)[s.us] - before[s.us]
	if mid == 0 || mid >= 12 {
		t.Fatalf("%d events written before the interrupt; want some, not all", mid)
	}
	code, stdout, stderr = replayCmd(testenv.Context(t, 60*time.Second), "--config", s.cfgFile, "--resume", "slow-1",
		"--checkpoint-dir", dir, "--progress", "off", "--output", "json")
	if code != exitOK {
		t.Fatalf("resume exit %d: %s", code, stderr)
	}
	var rep replay.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Complete || rep.Resumed != 1 || rep.Written[s.us] != 12 {
		t.Fatalf("resumed report: %s", stdout)
	}
	if got := s.ends(t)[s.us] - before[s.us]; got != 12 {
		t.Fatalf("%d events written in all, want 12 (nothing twice, nothing lost)", got)
	}
}

// TestReplayCommandRealRunFollowsRulesInForce: a real replay runs only
// under the ruleset version in force: --rules FILE and another
// --rules-version are refused without --dry-run (and allowed with it); a
// version applied while a replay runs stops it before its next batch, with
// the versions named, and its resume is refused while the new version is
// in force.
func TestReplayCommandRealRunFollowsRulesInForce(t *testing.T) {
	s := newReplayStack(t)
	s.apply(t, "US")
	s.quarantineEvents(t, "ca", "CA", router.ReasonUnknownCountry, 12)
	s.apply(t, "US, CA")
	ctx := testenv.Context(t, 60*time.Second)
	rulesFile := filepath.Join(t.TempDir(), "draft.yaml")
	draft := strings.Replace(fmt.Sprintf(replayRulesV1, s.us, s.eu), "countries: [US]", "countries: [US, CA]", 1)
	if err := os.WriteFile(rulesFile, []byte(draft), 0o600); err != nil {
		t.Fatal(err)
	}
	before := s.ends(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--rules", rulesFile}, "--rules " + rulesFile + ": a real replay publishes only under the ruleset version in force in Redis"},
		{[]string{"--rules-version", "1"}, "--rules-version 1: version 2 is in force"},
	} {
		args := append([]string{"--config", s.cfgFile, "--source", "quarantine", "--progress", "off"}, c.args...)
		code, _, stderr := replayCmd(ctx, args...)
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("replay %v = %d, %q; want exit 2 mentioning %q", c.args, code, stderr, c.want)
		}
		if code, _, stderr := replayCmd(ctx, append(args, "--dry-run")...); code != exitOK {
			t.Errorf("replay %v --dry-run = %d, %s; want 0", c.args, code, stderr)
		}
	}
	if !maps.Equal(before, s.ends(t)) {
		t.Fatal("a refused replay or a dry run wrote")
	}

	// Version 3 is applied while a rate-limited replay under version 2 runs.
	dir := t.TempDir()
	applied := make(chan error, 1)
	time.AfterFunc(1200*time.Millisecond, func() { // s.apply would t.Fatal off the test goroutine
		src := strings.Replace(fmt.Sprintf(replayRulesV1, s.us, s.eu), "countries: [US]", "countries: [US, CA, MX]", 1)
		_, err := s.store.Apply(ctx, []byte(src), rules.ApplyOptions{Base: 2})
		applied <- err
	})
	code, stdout, stderr := replayCmd(ctx, "--config", s.cfgFile, "--source", "quarantine", "--id", "moving-1", "--rate", "4",
		"--checkpoint-dir", dir, "--progress", "off")
	if code != exitFailure || !strings.Contains(stderr, "the ruleset in force changed from version 2 to 3") ||
		!strings.Contains(stderr, "Plan a new replay under version 3") {
		t.Fatalf("replay across a rules change: exit %d\n%s", code, stderr)
	}
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "(incomplete)") {
		t.Errorf("the partial report does not say it is incomplete:\n%s", stdout)
	}
	t.Logf("stderr of the stopped replay:\n%s", stderr)
	mid := s.ends(t)[s.us] - before[s.us]
	if mid == 0 || mid >= 12 {
		t.Fatalf("%d events written before the change; want some, not all", mid)
	}
	// The partial report counts what was published, not the batch dropped.
	if !regexp.MustCompile(fmt.Sprintf(`region us +%d\n`, mid)).MatchString(stdout) {
		t.Errorf("the partial report does not count %d events routed to us:\n%s", mid, stdout)
	}
	code, _, stderr = replayCmd(ctx, "--config", s.cfgFile, "--resume", "moving-1", "--checkpoint-dir", dir, "--progress", "off")
	if code != exitUsage || !strings.Contains(stderr, "planned under ruleset version 2 but version 3 is in force") {
		t.Fatalf("resume under a newer ruleset: exit %d\n%s", code, stderr)
	}
	if got := s.ends(t)[s.us] - before[s.us]; got != mid {
		t.Fatalf("the refused resume wrote %d events", got-mid)
	}
}

// TestReplayCommandSinkQuarantine: events a sink refused are replayed from
// the sinks' quarantine topic to their region's pinned topic.
func TestReplayCommandSinkQuarantine(t *testing.T) {
	s := newReplayStack(t)
	s.apply(t, "US")
	ctx := testenv.Context(t, 60*time.Second)
	rs, err := rules.Parse([]byte(fmt.Sprintf(replayRulesV1, s.us, s.eu)))
	if err != nil {
		t.Fatal(err)
	}
	rs.SetVersion(1)
	var in []stream.Message
	for i := range 3 {
		v, err := s.enc.Encode(sample.Event{ID: fmt.Sprint("sq-", i), UserID: "u", Country: "US"})
		if err != nil {
			t.Fatal(err)
		}
		in = append(in, stream.Message{Topic: s.ingest, Partition: 1, Offset: int64(10 + i), Key: []byte("u"), Value: v})
	}
	// The router's records (routed to us), as a sink quarantined them.
	var msgs []stream.Message
	for _, rec := range routertest.Records(t, rs, nil, in...) {
		hs := append(rec.Headers, stream.Header{Key: router.HeaderReason, Value: []byte("region_moved")})
		msgs = append(msgs, stream.Message{Topic: s.sinkQuarantine, Key: rec.Key, Value: rec.Value, Headers: hs})
	}
	if err := s.writer.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	before := s.ends(t)
	code, stdout, stderr := replayCmd(ctx, "--config", s.cfgFile, "--source", "sink-quarantine", "--reason", "region_moved", "--progress", "off")
	if code != exitOK || !strings.Contains(stdout, "sink-quarantine:region_moved → region:us: 3") {
		t.Fatalf("sink-quarantine replay: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if got := s.ends(t)[s.us] - before[s.us]; got != 3 {
		t.Fatalf("%d events written to %s, want 3", got, s.us)
	}
}
