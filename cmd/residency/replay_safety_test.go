package main

// Tests of the replay observations of issue 18, each on real Kafka and
// Redis through `residency replay`: replay refuses every destination the
// router refuses; a range replayed again under the same ruleset version
// writes nothing new; --rules-version of a version that does not exist is a
// usage error.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

// applyRules makes src (with the us and eu topics given) the current
// version.
func (s *replayStack) applyRules(t *testing.T, countries, usTopic string) {
	t.Helper()
	ctx := testenv.Context(t, 10*time.Second)
	cur, _ := s.store.LatestVersion(ctx)
	src := strings.Replace(fmt.Sprintf(replayRulesV1, usTopic, s.eu), "countries: [US]", "countries: ["+countries+"]", 1)
	if _, err := s.store.Apply(ctx, []byte(src), rules.ApplyOptions{Base: cur}); err != nil {
		t.Fatal(err)
	}
}

// TestReplayRefusesWhatTheRouterRefuses: a ruleset that pins a region to
// one of the router's ingest topics makes the router quarantine its events
// (no_rule); replay, reading the quarantine topic, must refuse that
// destination too, and leave the events where they are, instead of writing
// them into the ingest topic (where the router would quarantine them
// again, and again: the loop of observation 1).
func TestReplayRefusesWhatTheRouterRefuses(t *testing.T) {
	s := newReplayStack(t)
	ctx := testenv.Context(t, 60*time.Second)
	s.apply(t, "US")
	s.quarantineEvents(t, "ca", "CA", router.ReasonUnknownCountry, 3)
	s.applyRules(t, "US, CA", s.ingest) // region us pinned to the ingest topic
	before := s.ends(t)
	code, stdout, stderr := replayCmd(ctx, "--config", s.cfgFile, "--source", "quarantine", "--progress", "off")
	if code != exitOK {
		t.Fatalf("replay exit %d: %s\n%s", code, stdout, stderr)
	}
	after := s.ends(t)
	if after[s.ingest] != before[s.ingest] {
		t.Fatalf("replay wrote %d events into the ingest topic %s", after[s.ingest]-before[s.ingest], s.ingest)
	}
	if !strings.Contains(stdout, "quarantine (no_rule)") || after[s.quarantine] != before[s.quarantine] {
		t.Fatalf("want the events decided no_rule and left in quarantine (%d → %d):\n%s", before[s.quarantine], after[s.quarantine], stdout)
	}
}

// TestReplayTwiceWritesNothingNew: replaying a range again under the same
// ruleset version, with another replay id, writes nothing (observation 2):
// an ingest range, a dead-letter range whose events are now decodable but
// unplaceable, and a whole sink quarantine topic. --again writes them
// anyway.
func TestReplayTwiceWritesNothingNew(t *testing.T) {
	s := newReplayStack(t)
	ctx := testenv.Context(t, 120*time.Second)
	s.apply(t, "US")
	var in, sq []stream.Message
	for i := range 4 {
		v, err := s.enc.Encode(sampleEvent(fmt.Sprint("tw-", i), "US"))
		if err != nil {
			t.Fatal(err)
		}
		in = append(in, stream.Message{Topic: s.ingest, Key: []byte("u"), Value: v})
		sq = append(sq, stream.Message{Topic: s.sinkQuarantine, Key: []byte("u"), Value: v,
			Headers: []stream.Header{{Key: router.HeaderReason, Value: []byte("sink_region_not_approved")}}})
	}
	// A dead-letter record of an event that decodes now (a schema fix)
	// but has a country no jurisdiction holds.
	zz, err := s.enc.Encode(sampleEvent("dl-0", "ZZ"))
	if err != nil {
		t.Fatal(err)
	}
	dl := []stream.Message{{Topic: s.deadLetter, Key: []byte("u"), Value: zz,
		Headers: []stream.Header{{Key: router.HeaderReason, Value: []byte("unknown_schema")}}}}
	if err := s.writer.Publish(ctx, append(append(in, sq...), dl...)...); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		source, topic string // the topic the first replay writes
		want          int64
	}{
		{"ingest", s.us, 4},
		{"dead-letter", s.quarantine, 1},
		{"sink-quarantine", s.us, 4},
	} {
		for round := 1; round <= 2; round++ {
			before := s.ends(t)
			code, stdout, stderr := replayCmd(ctx, "--config", s.cfgFile, "--source", c.source, "--id", fmt.Sprintf("tw-%s-%d", c.source, round), "--progress", "off")
			if code != exitOK {
				t.Fatalf("%s round %d: exit %d: %s\n%s", c.source, round, code, stdout, stderr)
			}
			wrote := s.ends(t)[c.topic] - before[c.topic]
			switch {
			case round == 1 && wrote != c.want:
				t.Fatalf("%s: the first replay wrote %d events to %s, want %d:\n%s", c.source, wrote, c.topic, c.want, stdout)
			case round == 2 && wrote != 0:
				t.Fatalf("%s: replaying the same range again under the same ruleset version wrote %d events to %s, want none:\n%s", c.source, wrote, c.topic, stdout)
			case round == 2 && !strings.Contains(stdout, "already replayed under ruleset version 1 by tw-"+c.source+"-1"):
				t.Errorf("%s: the report does not say the range was already replayed:\n%s", c.source, stdout)
			}
		}
	}
	// --again replays the ingest range once more.
	before := s.ends(t)
	if code, stdout, stderr := replayCmd(ctx, "--config", s.cfgFile, "--source", "ingest", "--again", "--progress", "off"); code != exitOK || s.ends(t)[s.us]-before[s.us] != 4 {
		t.Fatalf("--again: exit %d, wrote %d:\n%s\n%s", code, s.ends(t)[s.us]-before[s.us], stdout, stderr)
	}
}

// TestReplayUnknownRulesVersionIsAUsageError: --rules-version of a version
// that was never applied exits 2, like every other bad flag (observation
// 3).
func TestReplayUnknownRulesVersionIsAUsageError(t *testing.T) {
	s := newReplayStack(t)
	ctx := testenv.Context(t, 30*time.Second)
	s.apply(t, "US")
	code, _, stderr := replayCmd(ctx, "--config", s.cfgFile, "--source", "quarantine", "--rules-version", "99", "--dry-run", "--progress", "off")
	if code != exitUsage || !strings.Contains(stderr, "--rules-version 99") {
		t.Fatalf("--rules-version 99: exit %d, stderr %q; want 2 naming the flag", code, stderr)
	}
}

// sampleEvent is event id of user "u" in country.
func sampleEvent(id, country string) sample.Event {
	return sample.Event{ID: id, UserID: "u", Country: country}
}
