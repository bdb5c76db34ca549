package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
)

// historyConfig writes a config naming Redis (the test's prefix) and the
// ingest cluster A holding the test's own ruleset history topic, created
// compacted.
func historyConfig(t *testing.T, r *testenv.Redis, k *testenv.Kafka) (cfg, topic string) {
	t.Helper()
	topic = testenv.Name(t, "rules-history")
	k.DeleteAfter(t, topic)
	h, err := kafka.NewHistoryTopic(kafka.Cluster{Name: "ingest", Brokers: k.Brokers}, topic)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Create(testenv.Context(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	cfg = writeFile(t, "residency.yaml", fmt.Sprintf(`
kafka:
  clusters: {ingest: {brokers: [%q]}}
  ingest_cluster: ingest
redis: {addr: %q, prefix: %q}
rules: {history_topic: %q}
`, k.Brokers[0], r.Addr, r.Prefix, topic))
	return cfg, topic
}

// TestRulesHistoryTopic (real Redis and Kafka): with --config, apply and
// rollback write every version to the ruleset history topic; after Redis
// loses its data, apply refuses to reuse a version number (Redis behind
// the topic) until `rules restore` copies every version back; then apply
// continues above the highest version ever applied. Without --config,
// apply warns that the version is not kept outside Redis.
func TestRulesHistoryTopic(t *testing.T) {
	r := testenv.NewRedis(t)
	k := testenv.KafkaA(t)
	cfg, topic := historyConfig(t, r, k)
	rcli := func(sub string, args ...string) (int, string, string) {
		return cli(t, append(append([]string{"rules", sub}, args...), "--config", cfg)...)
	}

	code, out, errs := rcli("apply", example, "--author", "alice")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "as version 1") || !strings.Contains(out, "written to the ruleset history topic "+topic+" (cluster ingest)") {
		t.Fatalf("apply: %s", out)
	}
	code, out, errs = rcli("apply", exampleNext, "--author", "bob")
	mustCode(t, exitOK, code, out, errs)
	code, out, errs = rcli("rollback", "1", "--author", "carol")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "version 3 has the content of version 1") {
		t.Fatalf("rollback: %s", out)
	}
	for _, p := range [][]string{{"user-a", "EU"}, {"user-b", "US"}, {"user-c", "IN"}} {
		code, out, errs = rcli("pin", p[0], p[1])
		mustCode(t, exitOK, code, out, errs)
	}
	code, out, errs = rcli("unpin", "user-c")
	mustCode(t, exitOK, code, out, errs)
	code, out, errs = rcli("pin", "user-b", "UK") // pinned again elsewhere
	mustCode(t, exitOK, code, out, errs)
	if strings.Contains(errs, "warning") {
		t.Fatalf("a warning with --config: %s", errs)
	}

	// Redis loses its data.
	r.DeleteKeys(t)
	data, _ := os.ReadFile(example)
	withoutFR := writeFile(t, "no-fr.yaml", strings.Replace(string(data), "FR, ", "", 1))
	code, out, errs = rcli("apply", withoutFR)
	mustCode(t, exitFailure, code, out, errs)
	if !strings.Contains(errs, "Redis lost ruleset history: Redis at 0, history at 3: run `residency rules restore`") {
		t.Fatalf("apply after Redis lost its data: %s", errs)
	}
	code, out, errs = rulesCLI(t, r, "history")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "no version has been applied") {
		t.Fatalf("the refused apply wrote something: %s", out)
	}

	code, out, errs = rcli("restore")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "restored 3 versions (1, 2, 3)") || !strings.Contains(out, "restored 2 pins") || !strings.Contains(out, "current version: 3 (digest ") {
		t.Fatalf("restore: %s", out)
	}
	code, out, errs = rulesCLI(t, r, "pins", "--json")
	mustCode(t, exitOK, code, out, errs)
	if strings.TrimSpace(out) != `[{"user_id":"user-a","jurisdiction":"EU"},{"user_id":"user-b","jurisdiction":"UK"}]` {
		t.Fatalf("pins after restore: %s", out)
	}
	code, out, errs = rulesCLI(t, r, "history")
	mustCode(t, exitOK, code, out, errs)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 4 || !strings.Contains(lines[1], "carol") || !strings.Contains(lines[1], "rollback to 1") ||
		!strings.Contains(lines[2], "bob") || !strings.Contains(lines[3], "alice") {
		t.Fatalf("history after restore:\n%s", out)
	}
	code, out, errs = rcli("restore")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "nothing to restore: Redis holds the 3 versions and 2 pins") {
		t.Fatalf("restore again: %s", out)
	}

	code, out, errs = rcli("apply", withoutFR, "--author", "dave")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "as version 4") || !strings.Contains(out, "country FR: jurisdiction EU, region eu → unassigned") {
		t.Fatalf("apply after restore: %s", out)
	}

	// Without --config: today's behaviour, with a warning; the next apply
	// with --config writes the version it missed to the topic.
	code, out, errs = rulesCLI(t, r, "rollback", "2")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(errs, "warning: no --config, so the new version is not written to the ruleset history topic") {
		t.Fatalf("no warning: %s", errs)
	}
	code, out, errs = rulesCLI(t, r, "pin", "user-quiet", "EU")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(errs, "warning: no --config, so the change is not written to the ruleset history topic") {
		t.Fatalf("no warning: %s", errs)
	}
	r.DeleteKeys(t)
	code, out, errs = rcli("restore")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "restored 4 versions (1, 2, 3, 4)") || !strings.Contains(out, "current version: 4") {
		t.Fatalf("restore without version 5 in the topic: %s", out)
	}
	code, out, errs = rulesCLI(t, r, "pins")
	mustCode(t, exitOK, code, out, errs)
	if strings.Contains(out, "user-quiet") || !strings.Contains(out, "user-a") {
		t.Fatalf("pins after the second restore: %s", out)
	}

	// Redis lost its data and someone applied without --config: version 1
	// now names other content in Redis than in the topic. apply refuses;
	// restore reports it and leaves it, unless --replace.
	r.DeleteKeys(t)
	code, out, errs = rulesCLI(t, r, "apply", withoutFR)
	mustCode(t, exitOK, code, out, errs)
	code, out, errs = rcli("apply", exampleNext)
	mustCode(t, exitFailure, code, out, errs)
	if !strings.Contains(errs, "version 1 has other content in Redis than in the history topic") {
		t.Fatalf("apply over a reused version number: %s", errs)
	}
	code, out, errs = rcli("restore")
	mustCode(t, exitFailure, code, out, errs)
	if !strings.Contains(out, "written to the history topic first: version 1 as Redis holds it") ||
		!strings.Contains(out, "restored 3 versions (2, 3, 4)") || !strings.Contains(errs, "Redis holds other content than the history topic under version [1]") {
		t.Fatalf("restore over a reused version number:\n%s\n%s", out, errs)
	}
	code, out, errs = rcli("restore", "--replace")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "restored 1 versions (1)") {
		t.Fatalf("restore --replace: %s", out)
	}
	code, out, errs = rulesCLI(t, r, "show", "1")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "by alice") {
		t.Fatalf("version 1 after restore --replace is not alice's: %s", out)
	}
	code, out, errs = rcli("apply", exampleNext)
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "as version 5") {
		t.Fatalf("apply after restore --replace: %s", out)
	}

	code, out, errs = rulesCLI(t, r, "restore")
	mustCode(t, exitUsage, code, out, errs)
}

// TestRulesHistoryTopicUnreachable: with --config, a history topic out of
// reach stops apply before anything is written (exit 3).
func TestRulesHistoryTopicUnreachable(t *testing.T) {
	r := testenv.NewRedis(t)
	cfg := writeFile(t, "residency.yaml", fmt.Sprintf(`
kafka: {clusters: {ingest: {brokers: ["127.0.0.1:1"]}}}
redis: {addr: %q, prefix: %q}
`, r.Addr, r.Prefix))
	code, out, errs := cli(t, "rules", "apply", example, "--config", cfg)
	mustCode(t, exitNotReady, code, out, errs)
	if !strings.Contains(errs, "ruleset history topic: ") {
		t.Fatalf("stderr: %s", errs)
	}
	code, out, errs = rulesCLI(t, r, "history")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "no version has been applied") {
		t.Fatalf("applied although the history topic is out of reach: %s", out)
	}
}

// TestRulesHistoryTopicMissing: residency creates no topic; apply with a
// config naming a history topic that does not exist refuses, saying how to
// create it, and writes nothing.
func TestRulesHistoryTopicMissing(t *testing.T) {
	r := testenv.NewRedis(t)
	k := testenv.KafkaA(t)
	cfg := writeFile(t, "residency.yaml", fmt.Sprintf(`
kafka: {clusters: {ingest: {brokers: [%q]}}}
redis: {addr: %q, prefix: %q}
rules: {history_topic: %q}
`, k.Brokers[0], r.Addr, r.Prefix, testenv.Name(t, "no-such-topic")))
	code, out, errs := cli(t, "rules", "apply", example, "--config", cfg)
	mustCode(t, exitFailure, code, out, errs)
	if !strings.Contains(errs, "the ruleset history topic does not exist") || !strings.Contains(errs, "cleanup.policy=compact") {
		t.Fatalf("stderr: %s", errs)
	}
	code, out, errs = rulesCLI(t, r, "history")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "no version has been applied") {
		t.Fatalf("applied without the history topic: %s", out)
	}
}
