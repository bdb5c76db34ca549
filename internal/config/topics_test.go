package config

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/residency-router/residency/router/rules"
)

func exampleRuleset(t *testing.T) *rules.Ruleset {
	t.Helper()
	data, err := os.ReadFile("../../deploy/examples/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestNeededTopicsOfTheExamples: the example config and ruleset need every
// topic the issue lists, each on its cluster with its settings, and
// nothing is missing from the config.
func TestNeededTopicsOfTheExamples(t *testing.T) {
	c, err := Load("../../deploy/examples/residency.yaml", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true}); err != nil {
		t.Fatal(err)
	}
	topics, ps := c.NeededTopics(exampleRuleset(t))
	if len(ps) > 0 {
		t.Fatalf("problems: %v", ps)
	}
	got := map[string]NeededTopic{}
	for _, nt := range topics {
		got[nt.Cluster+"/"+nt.Spec.Name] = nt
	}
	want := map[string]string{ // cluster/topic → kind
		"ingest/events.ingest": TopicIngest, "ingest/residency.us": TopicPinned, "eu/residency.eu": TopicPinned, "eu/residency.uk": TopicPinned,
		"ingest/residency.in": TopicPinned, "ingest/residency.jp": TopicPinned,
		"ingest/residency.quarantine": TopicQuarantine, "ingest/residency.dead-letter": TopicDeadLetter,
		"ingest/residency.sink-quarantine": TopicSinkQuarantine,
		"ingest/residency.hold.us":         TopicHold, "ingest/residency.hold.eu": TopicHold, "ingest/residency.hold.jp": TopicHold,
		"ingest/residency.rules-history": TopicRulesets, "ingest/residency.audit": TopicAudit,
	}
	for k, kind := range want {
		if got[k].Kind != kind {
			t.Errorf("%s: %+v, want kind %s", k, got[k], kind)
		}
	}
	if len(topics) != 1+8+2+1+8+2 {
		t.Errorf("%d topics, want 22: %v", len(topics), topics)
	}
	rf := c.Topics.ReplicationFactor
	for k, nt := range got {
		s := nt.Spec
		if s.ReplicationFactor != rf {
			t.Errorf("%s: replication factor %d", k, s.ReplicationFactor)
		}
		if nt.Kind == TopicIngest {
			if nt.Managed || len(s.Configs) != 0 || s.Partitions != 12 {
				t.Errorf("ingest topic %+v: created with 12 partitions, configs never managed", nt)
			}
			continue
		}
		if s.Configs["message.timestamp.type"] != "CreateTime" || s.Configs["min.insync.replicas"] != "1" {
			t.Errorf("%s: configs %v", k, s.Configs)
		}
		// Records keep the event's timestamp: topics residency writes into
		// must accept any, as the ingest topic may have (acc2: a CreateTime
		// two hours ahead stopped the router on INVALID_TIMESTAMP).
		routedInto := nt.Kind == TopicPinned || nt.Kind == TopicQuarantine || nt.Kind == TopicDeadLetter || nt.Kind == TopicHold || nt.Kind == TopicSinkQuarantine
		for _, key := range []string{"message.timestamp.before.max.ms", "message.timestamp.after.max.ms"} {
			if got := s.Configs[key]; routedInto && got != "9223372036854775807" {
				t.Errorf("%s (%s): %s=%q, want 9223372036854775807 (any timestamp)", k, nt.Kind, key, got)
			}
		}
	}
	for k, w := range map[string][3]string{ // partitions, cleanup.policy, retention.ms
		"ingest/residency.quarantine":    {"3", "delete", "2592000000"},
		"ingest/residency.dead-letter":   {"3", "delete", "2592000000"},
		"ingest/residency.hold.uk":       {"6", "delete", "2592000000"},
		"eu/residency.eu":                {"6", "delete", "604800000"},
		"ingest/residency.rules-history": {"1", "compact", ""},
		"ingest/residency.audit":         {"1", "delete", "2592000000"},
	} {
		s := got[k].Spec
		if p := s.Partitions; p != atoi(w[0]) || s.Configs["cleanup.policy"] != w[1] || s.Configs["retention.ms"] != w[2] {
			t.Errorf("%s: %d partitions, %v; want %v", k, p, s.Configs, w)
		}
	}
	// The pinned topic of uk is for region uk only; its hold topic is on
	// the ingest cluster whatever the region's cluster.
	if f := got["eu/residency.uk"].For; !slices.Equal(f, []string{"pinned topic of region uk"}) {
		t.Errorf("for: %v", f)
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestNeededTopicsSettings: replication factor 3 brings min.insync.replicas
// 2; retention, partitions and a larger max_value_bytes show in the specs.
func TestNeededTopicsSettings(t *testing.T) {
	c, err := Parse([]byte(`
kafka: {clusters: {a: {brokers: ["h:1"]}}}
router: {ingest_topics: [in], max_value_bytes: 2000000, max_batch_bytes: 4000000}
topics:
  replication_factor: 3
  quarantine: {retention: 2160h, partitions: 5}
  pinned: {partitions: 24}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true}); err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Parse([]byte("jurisdictions: [{name: US, region: us, countries: [US]}]\nregions: [{name: us, cluster: a, topic: p.us}]\nstores: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	topics, ps := c.NeededTopics(rs)
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	for _, nt := range topics {
		s := nt.Spec
		switch nt.Spec.Name {
		case "residency.quarantine":
			if s.Partitions != 5 || s.Configs["retention.ms"] != "7776000000" || s.Configs["min.insync.replicas"] != "2" || s.Configs["max.message.bytes"] != "2016384" {
				t.Errorf("quarantine %+v", s)
			}
		case "p.us":
			if s.Partitions != 24 || s.ReplicationFactor != 3 || s.Configs["max.message.bytes"] != "2016384" {
				t.Errorf("pinned %+v", s)
			}
		case "residency.audit":
			if _, ok := s.Configs["max.message.bytes"]; ok {
				t.Errorf("audit %+v: the router's events do not go there", s)
			}
		}
	}
}

// TestTopicsConfigErrors: every bad topics setting is named.
func TestTopicsConfigErrors(t *testing.T) {
	c, err := Parse([]byte(`
topics:
  replication_factor: 1
  min_insync_replicas: 2
  pinned: {partitions: -1}
  hold: {retention: -1h}
  ingest: {retention: 24h}
  audit: {partitions: 3}
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range c.Validate(Scope{}) {
		got = append(got, p.String())
	}
	for _, want := range []string{
		"topics.min_insync_replicas: 2 is more than topics.replication_factor (1)",
		"topics.pinned.partitions: must be at least 1",
		"topics.hold.retention: must not be negative",
		"topics.ingest.retention: the ingest topics' retention is the producers'",
		"topics.audit.partitions: 3: the audit topic has one partition",
	} {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("problems %q lack %q", got, want)
		}
	}
}

// TestRulesetWarnings: a ruleset naming a cluster the config lacks, a
// pinned topic that is the router's own, and sinks the ruleset does not
// match are each named, with what to add.
func TestRulesetWarnings(t *testing.T) {
	c, err := Parse([]byte(`
kafka: {clusters: {ingest: {brokers: ["h:1"]}}}
router: {ingest_topics: [events.ingest]}
sinks:
  - {store: us-postgres, region: us, postgres: {dsn: "postgres://h/db"}}
  - {store: eu-objectstore, region: mars, objectstore: {url: "file:///tmp/x"}}
  - {store: in-postgres, region: us, topic: other, postgres: {dsn: "postgres://h/db"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	c.file = "residency.yaml"
	if err := c.Finish(Scope{}); err != nil {
		t.Fatal(err)
	}
	rs := exampleRuleset(t)
	var got []string
	for _, p := range c.RulesetWarnings(rs) {
		got = append(got, p.String())
	}
	for _, want := range []string{
		`kafka.clusters: the ruleset puts region(s) eu, uk on cluster "eu", which residency.yaml does not have: add it (kafka: {clusters: {eu: {brokers: [HOST:PORT]}}})`,
		`sinks[1].region: "mars" is not a region of the ruleset`,
		`sinks[2].store: the ruleset does not approve store "in-postgres" for region us`,
		`sinks[2].topic: "other", but the ruleset's region us has pinned topic residency.us`,
	} {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("warnings %q lack %q", got, want)
		}
	}
	if len(got) != 4 {
		t.Errorf("%d warnings, want 4: %q", len(got), got)
	}
	// The same cluster is also what keeps the topics of eu and uk from
	// being planned.
	if _, ps := c.NeededTopics(rs); len(ps) != 1 || !strings.Contains(ps[0].Message, `cluster "eu"`) {
		t.Errorf("topic problems %v", ps)
	}
	// A pinned topic that is the router's quarantine.
	bad, err := rules.Parse([]byte("jurisdictions: [{name: US, region: us, countries: [US]}]\nregions: [{name: us, cluster: ingest, topic: residency.quarantine}]\nstores: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	ws := c.RulesetWarnings(bad)
	if !slices.ContainsFunc(ws, func(p Problem) bool {
		return p.Field == "regions" && strings.Contains(p.Message, "router.quarantine_topic")
	}) {
		t.Errorf("warnings %v", ws)
	}
}

// TestHoldPrefix: topics.hold_prefix names the hold topics `topics apply`
// plans and a pinned topic may not look like one; a prefix Kafka would not
// take is refused, naming the field.
func TestHoldPrefix(t *testing.T) {
	c, err := Load("../../deploy/examples/residency.yaml", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	c.Topics.HoldPrefix = "acme.parked-"
	if err := c.Finish(Scope{Route: true}); err != nil {
		t.Fatal(err)
	}
	if got := c.HoldTopic("us"); got != "acme.parked-us" {
		t.Fatalf("HoldTopic(us) = %q", got)
	}
	topics, ps := c.NeededTopics(exampleRuleset(t))
	if len(ps) > 0 {
		t.Fatalf("problems: %v", ps)
	}
	holds := 0
	for _, nt := range topics {
		if nt.Kind == TopicHold {
			holds++
			if !strings.HasPrefix(nt.Spec.Name, "acme.parked-") {
				t.Errorf("hold topic %s", nt.Spec.Name)
			}
		}
	}
	if holds == 0 {
		t.Error("no hold topic planned")
	}
	lookalike, err := rules.Parse([]byte("jurisdictions: [{name: US, region: us, countries: [US]}]\nregions: [{name: us, cluster: ingest, topic: acme.parked-x}]\nstores: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if ws := c.RulesetWarnings(lookalike); !slices.ContainsFunc(ws, func(p Problem) bool {
		return p.Field == "regions" && strings.Contains(p.Message, "named like a hold topic (acme.parked-<region>, topics.hold_prefix)")
	}) {
		t.Errorf("warnings %v", ws)
	}
	for _, bad := range []string{"bad prefix!", "ünicode.", strings.Repeat("x", 201)} {
		c, err := Parse([]byte("topics: {hold_prefix: \"" + bad + "\"}\n"))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range c.Validate(Scope{}) {
			got = append(got, p.String())
		}
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "topics.hold_prefix: ") }) {
			t.Errorf("hold_prefix %q: problems %q", bad, got)
		}
	}
}
