package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// goTypeSyntax matches Go type syntax in a message ([]string,
// map[string]..., int64, struct), besides goTypeName's qualified names.
var goTypeSyntax = regexp.MustCompile(`\[\]string|map\[string\]|\bint64\b|\bstruct\b`)

// TestConfigLint is issue 17's acceptance for config lint: a set of broken
// configs, each reported with every problem at once, named by field path,
// never by a Go type; exit 1 with problems, 0 clean, 2 for usage (no file,
// a missing file, a bad flag).
func TestConfigLint(t *testing.T) {
	fx := brokenFixtures(t)
	for _, bc := range fixBroken(brokenConfigs(), fx) {
		if bc.only != nil && !contains(bc.only, "route") {
			continue
		}
		t.Run(bc.name, func(t *testing.T) {
			cfg := writeEventFile(t, "broken.yaml", []byte(bc.yaml))
			code, out, errs := cli(t, "config", "lint", cfg)
			if code != exitFailure {
				t.Fatalf("exit %d, want 1\nstdout: %s\nstderr: %s", code, out, errs)
			}
			for _, w := range bc.want {
				if !strings.Contains(out, w) {
					t.Errorf("lint output lacks %q:\n%s", w, out)
				}
			}
			if m := goTypeName.FindString(out) + goTypeSyntax.FindString(out); m != "" {
				t.Errorf("a Go type name (%s) in:\n%s", m, out)
			}
			if errs != "" {
				t.Errorf("stderr: %s", errs)
			}
		})
	}

	// Every problem of one file, at once, each on its line with its path.
	many := writeFile(t, "many.yaml", `
log_level: loud
kafka: {clusters: {ingest: {brokers: [nohost], sasl: {mechanism: plain}}}, compression: brotli, partitioner: crc32}
router: {ingest_topics: [x], batch_size: -1, retry_min: 5s, retry_max: 1s, start_offset: latest}
redis: {addr: nohost, password: a, password_file: /nonexistent/pw}
rules: {poll_interval: 1m}
topics: {replication_factor: -1, audit: {partitions: 2}}
sinks: [{region: us, postgres: {dsn: ""}}]
`)
	code, out, _ := cli(t, "config", "lint", many)
	wantFields := []string{"log_level", "kafka.clusters.ingest.brokers[0]", "kafka.clusters.ingest.sasl.username", "kafka.clusters.ingest.sasl.password",
		"kafka.compression", "kafka.partitioner", "router.batch_size", "router.retry_min", "router.start_offset", "redis.addr", "redis.password_file",
		"rules.poll_interval", "topics.replication_factor", "topics.audit.partitions", "sinks[0].store", "sinks[0].postgres.dsn"}
	if code != exitFailure {
		t.Fatalf("many: exit %d\n%s", code, out)
	}
	for _, f := range wantFields {
		if !strings.Contains(out, many+": "+f+": ") {
			t.Errorf("lint lacks %s:\n%s", f, out)
		}
	}
	code, out, _ = cli(t, "config", "lint", many, "--output", "json")
	var r lintReport
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != exitFailure || r.OK || len(r.Problems) < len(wantFields) {
		t.Fatalf("json: exit %d, %v, %+v", code, err, r)
	}
	for _, p := range r.Problems {
		if p.Field == "" || strings.Contains(p.Message, "\n") {
			t.Errorf("problem without a field, or on several lines: %+v", p)
		}
	}

	// Clean: exit 0, "ok"; the example config, for every command.
	for _, forCmd := range []string{"route", "replay", "sink:us-postgres", "explain", "rules", "topics"} {
		code, out, errs := cli(t, "config", "lint", "../../deploy/examples/residency.yaml", "--for", forCmd, "--rules", example)
		if code != exitOK || !strings.HasSuffix(strings.TrimSpace(out), ": ok") {
			t.Errorf("example config for %s: exit %d\n%s%s", forCmd, code, out, errs)
		}
	}
	// With a ruleset the config lacks a cluster for: a problem.
	oneCluster := writeFile(t, "one.yaml", "kafka: {clusters: {ingest: {brokers: [\"h:1\"]}}}\nrouter: {ingest_topics: [in]}\n")
	code, out, _ = cli(t, "config", "lint", oneCluster, "--rules", example)
	if code != exitFailure || !strings.Contains(out, `kafka.clusters: the ruleset puts region(s) eu, uk on cluster "eu"`) {
		t.Errorf("lint --rules: exit %d\n%s", code, out)
	}
	// A deprecated setting is a warning, not a problem.
	old := writeFile(t, "old.yaml", "kafka: {clusters: {ingest: {brokers: [\"h:1\"]}}, batch_timeout: 1ms}\nrouter: {ingest_topics: [in]}\n")
	code, out, _ = cli(t, "config", "lint", old)
	if code != exitOK || !strings.Contains(out, "warning: kafka.batch_timeout: is ignored") {
		t.Errorf("deprecated: exit %d\n%s", code, out)
	}

	// Usage: no file, a missing file, a directory, a bad flag.
	t.Setenv(envConfig, "")
	for _, args := range [][]string{{"config", "lint"}, {"config", "lint", "/nonexistent/r.yaml"}, {"config", "lint", t.TempDir()},
		{"config", "lint", many, "--output", "xml"}, {"config", "lint", many, "--for", "nothing"}, {"config", "frob"}} {
		if code, out, errs := cli(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want 2\n%s%s", args, code, out, errs)
		}
	}
	// --config and $RESIDENCY_CONFIG name the file too.
	if code, _, _ := cli(t, "config", "lint", "--config", many); code != exitFailure {
		t.Errorf("--config: exit %d", code)
	}
	t.Setenv(envConfig, many)
	if code, _, _ := cli(t, "config", "lint"); code != exitFailure {
		t.Errorf("$RESIDENCY_CONFIG: exit %d", code)
	}
}

// TestConfigPrint: the effective config, after defaults, ${VAR}, the
// RESIDENCY_* variables and *_file secrets, with every secret redacted;
// YAML by default, JSON on request; a config with problems is not printed.
func TestConfigPrint(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("file-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("T17_BROKER", "broker-from-env:9092")
	t.Setenv("T17_SASL", "var-secret")
	t.Setenv("RESIDENCY_SCHEMAS_REGISTRY_PASSWORD", "env-secret")
	cfg := writeFile(t, "residency.yaml", `
kafka: {clusters: {ingest: {brokers: ["${T17_BROKER}"], sasl: {mechanism: plain, username: u, password: "${T17_SASL}"}}}}
router: {ingest_topics: [in]}
redis: {password_file: `+pw+`}
schemas: {registry: {url: "http://r:8081", username: reg}}
sinks: [{store: s, region: us, postgres: {dsn: "postgres://pg:dsn-secret@h:5432/db"}}]
`)
	code, out, errs := cli(t, "config", "print", cfg)
	mustCode(t, exitOK, code, out, errs)
	for _, s := range []string{"broker-from-env:9092", "consumer_group: residency-router", "batch_size: 500", "linger: 5ms",
		"partitioner: murmur2", "replication_factor: 3", "password_file: " + pw, "pg:<redacted>@h:5432", "table: residency_events"} {
		if !strings.Contains(out, s) {
			t.Errorf("print lacks %q:\n%s", s, out)
		}
	}
	code, js, _ := cli(t, "config", "print", cfg, "--output", "json")
	var v map[string]any
	if err := json.Unmarshal([]byte(js), &v); err != nil || code != exitOK {
		t.Fatalf("json: %v\n%s", err, js)
	}
	for _, secret := range []string{"file-secret", "var-secret", "env-secret", "dsn-secret"} {
		if strings.Contains(out+js, secret) {
			t.Errorf("%s is printed", secret)
		}
	}
	bad := writeFile(t, "bad.yaml", "router: {batch_size: -1}\n")
	if code, out, errs := cli(t, "config", "print", bad); code != exitUsage || out != "" || !strings.Contains(errs, "router.batch_size") {
		t.Errorf("print of a bad config: exit %d, %q, %q", code, out, errs)
	}
}
