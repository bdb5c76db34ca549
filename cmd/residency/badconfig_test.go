package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/config"
)

// outcome is what one in-process run of the binary's run function did.
type outcome struct {
	code           int
	stdout, stderr string
	panicked       any
	stack          string
}

// runCaught runs the residency command line args in process, with stdin,
// and turns a panic into part of the outcome (a test then fails instead of
// crashing).
func runCaught(args []string, stdin string) (o outcome) {
	var out, errOut bytes.Buffer
	defer func() {
		if p := recover(); p != nil {
			o.panicked, o.stack = p, string(debug.Stack())
		}
		o.stdout, o.stderr = out.String(), errOut.String()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o.code = run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return o
}

// goTypeName matches a package-qualified Go type name (kafka.Cluster,
// schemas.ExtractorConfig, time.Duration, main.RouterConfig), which an
// error meant for a user must never show.
var goTypeName = regexp.MustCompile(`\b(main|kafka|schemas|rules|router|sink|postgres|objectstore|time|yaml)\.[A-Z][A-Za-z]+\b`)

// checkOneLineError fails unless o is a clean usage failure: exit 2, no
// panic, nothing on stdout, exactly one line on stderr that contains every
// want, no Go type name and no stack trace.
func checkOneLineError(t *testing.T, what string, o outcome, want ...string) {
	t.Helper()
	if o.panicked != nil {
		t.Fatalf("%s: panic: %v\n%s", what, o.panicked, o.stack)
	}
	if o.code != exitUsage {
		t.Errorf("%s: exit %d, want %d; stderr: %s", what, o.code, exitUsage, o.stderr)
	}
	if o.stdout != "" {
		t.Errorf("%s: stdout %q, want nothing", what, o.stdout)
	}
	msg := strings.TrimSuffix(o.stderr, "\n")
	if msg == "" || strings.Contains(msg, "\n") {
		t.Errorf("%s: stderr is not one line:\n%s", what, o.stderr)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: error %q does not name %q", what, msg, w)
		}
	}
	if m := goTypeName.FindString(msg); m != "" {
		t.Errorf("%s: error %q shows the Go type name %q", what, msg, m)
	}
	for _, bad := range []string{"panic", "goroutine ", ".go:"} {
		if strings.Contains(msg, bad) {
			t.Errorf("%s: error %q looks like a stack trace (%q)", what, msg, bad)
		}
	}
}

// brokenFixtures writes the files the broken configs refer to and returns
// their paths by name.
func brokenFixtures(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rulesText, err := os.ReadFile("../../deploy/examples/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f := map[string]string{
		"rules":        write("rules.yaml", string(rulesText)),
		"badrules":     write("bad-rules.yaml", "jurisdictions:\n  - {name: US, region: nowhere, countries: [US, XX1]}\n  - {name: US, region: us}\nregions: []\n"),
		"notpem":       write("not-a-ca.pem", "this is not a certificate\n"),
		"badavscdir":   filepath.Dir(write("badcat/broken.avsc", `{"type": "record", "name": "Broken", "fields": [{"name": "x", "type": "nosuchtype"}]}`)),
		"nocountrydir": filepath.Dir(write("nocountry/e.avsc", `{"type": "record", "name": "NoCountry", "namespace": "t", "fields": [{"name": "country", "type": "int"}]}`)),
		"emptydir":     t.TempDir(),
		"event":        write("event.json", `{"country": "US", "user_id": "u-1"}`),
		"subjectkey":   write("subject.key", strings.Repeat("s", 40)),
	}
	unreadable := write("unreadable.yaml", "log_level: info\n")
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	f["unreadable"] = unreadable
	return f
}

// validBase is a config every command accepts up to the point where it
// connects to something: the broken configs each change one part of it.
// RULES is replaced by a valid ruleset file.
const validBase = `
kafka:
  clusters:
    ingest: {brokers: ["127.0.0.1:1"]}
router: {ingest_topics: [events.in]}
redis: {addr: "127.0.0.1:1"}
rules: {file: RULES}
audit: {subject_key_file: SUBJECTKEY}
sinks:
  - {store: us-postgres, region: us, postgres: {dsn: "postgres://x@127.0.0.1:1/db"}}
`

// validConfig is validBase with the fixtures' files put in.
func validConfig(fx map[string]string) string {
	return strings.NewReplacer("RULES", fx["rules"], "SUBJECTKEY", fx["subjectkey"]).Replace(validBase)
}

// brokenConfig is one broken configuration and what the error must name.
type brokenConfig struct {
	name string
	yaml string   // the whole file; RULES and the fixture names in {…} are replaced
	want []string // substrings of the one-line error
	only []string // the commands it applies to (default: every one)
}

// brokenConfigs lists every class of broken configuration: a bad value,
// a missing required field, a wrong type, an unknown field, an unreadable
// file, a conflict between two fields. Every command that takes --config
// must refuse each with one line naming the field, exit 2 and no panic.
func brokenConfigs() []brokenConfig {
	kafka := func(cluster string) string {
		return "kafka:\n  clusters:\n    ingest: " + cluster + "\nrouter: {ingest_topics: [events.in]}\nrules: {file: RULES}\n" +
			"sinks: [{store: us-postgres, region: us, postgres: {dsn: \"postgres://x@127.0.0.1:1/db\"}}]\n"
	}
	base := func(extra string) string { return validBase + extra }
	return []brokenConfig{
		// Observation 6 of issue 12: each of these panicked in route.
		{name: "catalogue dir missing", yaml: base("schemas: {catalogue_dir: /nonexistent/schemas}\n"), want: []string{"schemas.catalogue_dir"}},
		{name: "catalogue file bad", yaml: base("schemas: {catalogue_dir: {badavscdir}}\n"), want: []string{"schemas.catalogue_dir", "broken.avsc"}},
		{name: "catalogue schema without a readable country", yaml: base("schemas: {catalogue_dir: {nocountrydir}}\n"), want: []string{"schemas.catalogue_dir"}},
		{name: "rules file missing", yaml: strings.Replace(validBase, "RULES", "/nonexistent/rules.yaml", 1), want: []string{"rules.file", "/nonexistent/rules.yaml"}},
		{name: "rules file invalid", yaml: strings.Replace(validBase, "RULES", "{badrules}", 1), want: []string{"rules.file", "invalid ruleset"}},
		{name: "kafka ca file missing", yaml: kafka(`{brokers: ["h:1"], tls: {enabled: true, ca_file: /nonexistent/ca.pem}}`), want: []string{"kafka.clusters.ingest.tls.ca_file", "/nonexistent/ca.pem"}},
		{name: "confluent framing without registry", yaml: base("schemas: {default_framing: confluent}\n"), want: []string{"schemas.registry.url"}},
		{name: "unknown default framing", yaml: base("schemas: {default_framing: avro}\n"), want: []string{"schemas.default_framing", `"avro"`}},
		// Schemas.
		{name: "unknown topic framing", yaml: base("schemas: {framings: {events.in: protobuf}}\n"), want: []string{`schemas.framings["events.in"]`}},
		{name: "raw topic without schema", yaml: base("schemas: {framings: {events.in: raw}}\n"), want: []string{`schemas.raw_schemas["events.in"]`}},
		{name: "raw schema missing", yaml: base("schemas: {default_framing: raw, raw_schemas: {\"*\": /nonexistent/e.avsc}}\n"), want: []string{`schemas.raw_schemas["*"]`}},
		{name: "country and user id one field", yaml: base("schemas: {country_field: id, user_id_field: id}\n"), want: []string{"schemas.user_id_field", "country_field"}},
		{name: "bad field path", yaml: base("schemas: {country_field: \"geo..country\"}\n"), want: []string{"schemas.country_field"}},
		{name: "registry url not http", yaml: base("schemas: {registry: {url: \"ftp://r\"}}\n"), want: []string{"schemas.registry.url"}},
		{name: "registry token and user", yaml: base("schemas: {registry: {url: \"http://r:1\", username: u, bearer_token: t}}\n"), want: []string{"schemas.registry.bearer_token"}},
		{name: "registry backoff above max", yaml: base("schemas: {registry: {url: \"http://r:1\", backoff: 5s, max_backoff: 1s}}\n"), want: []string{"schemas.registry.backoff", "schemas.registry.max_backoff"}},
		{name: "negative max value size", yaml: base("schemas: {max_value_size: -1}\n"), want: []string{"schemas.max_value_size"}},
		// Kafka clusters: TLS and SASL.
		{name: "kafka ca file not PEM", yaml: kafka(`{brokers: ["h:1"], tls: {enabled: true, ca_file: {notpem}}}`), want: []string{"kafka.clusters.ingest.tls.ca_file", "no PEM certificate"}},
		{name: "kafka client cert missing", yaml: kafka(`{brokers: ["h:1"], tls: {enabled: true, cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}}`), want: []string{"kafka.clusters.ingest.tls.cert_file"}},
		{name: "kafka cert without key", yaml: kafka(`{brokers: ["h:1"], tls: {enabled: true, cert_file: {notpem}}}`), want: []string{"kafka.clusters.ingest.tls", "key_file"}},
		{name: "kafka tls settings but tls off", yaml: kafka(`{brokers: ["h:1"], tls: {ca_file: {notpem}}}`), want: []string{"kafka.clusters.ingest.tls.enabled", "kafka.clusters.ingest.tls.ca_file"}},
		{name: "kafka sasl mechanism unknown", yaml: kafka(`{brokers: ["h:1"], sasl: {mechanism: kerberos, username: u, password: p}}`), want: []string{"kafka.clusters.ingest.sasl.mechanism", "kerberos"}},
		{name: "kafka sasl password missing", yaml: kafka(`{brokers: ["h:1"], sasl: {mechanism: scram-sha-512, username: u}}`), want: []string{"kafka.clusters.ingest.sasl.password"}},
		{name: "kafka brokers missing", yaml: kafka(`{client_id: x}`), want: []string{"kafka.clusters.ingest.brokers: required"}},
		{name: "kafka broker not host:port", yaml: kafka(`{brokers: [localhost]}`), want: []string{"kafka.clusters.ingest.brokers[0]"}},
		{name: "kafka cluster name differs", yaml: kafka(`{name: other, brokers: ["h:1"]}`), want: []string{"kafka.clusters.ingest.name"}},
		{name: "kafka negative dial timeout", yaml: kafka(`{brokers: ["h:1"], dial_timeout: -1s}`), want: []string{"kafka.clusters.ingest.dial_timeout"}},
		{name: "ingest cluster unknown", yaml: base("") + "", want: nil}, // replaced below
		{name: "two clusters, no ingest cluster", yaml: "kafka:\n  clusters: {a: {brokers: [\"h:1\"]}, b: {brokers: [\"h:2\"]}}\nrouter: {ingest_topics: [x]}\nrules: {file: RULES}\n", want: []string{"kafka.ingest_cluster"}},
		{name: "compression unknown", yaml: base("") + "", want: nil}, // replaced below
		// Redis.
		{name: "redis ca file missing", yaml: base("") + "", want: nil}, // replaced below
		{name: "redis addr not host:port", yaml: strings.Replace(validBase, `addr: "127.0.0.1:1"`, `addr: "localhost"`, 1), want: []string{"redis.addr"}},
		{name: "redis db wrong type", yaml: strings.Replace(validBase, `addr: "127.0.0.1:1"`, `addr: "127.0.0.1:1", db: zero`, 1), want: []string{"redis.db", `"zero"`}},
		{name: "redis db negative", yaml: strings.Replace(validBase, `addr: "127.0.0.1:1"`, `addr: "127.0.0.1:1", db: -1`, 1), want: []string{"redis.db"}},
		{name: "redis tls settings but tls off", yaml: strings.Replace(validBase, `addr: "127.0.0.1:1"`, `addr: "127.0.0.1:1", tls: {server_name: redis.internal}`, 1), want: []string{"redis.tls.enabled", "redis.tls.server_name"}},
		{name: "redis tls cert missing", yaml: strings.Replace(validBase, `addr: "127.0.0.1:1"`, `addr: "127.0.0.1:1", tls: {enabled: true, cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}`, 1), want: []string{"redis.tls.cert_file"}},
		{name: "redis tls wrong type", yaml: strings.Replace(validBase, `addr: "127.0.0.1:1"`, `addr: "127.0.0.1:1", tls: maybe`, 1), want: []string{"redis.tls", `"maybe"`}},
		// Types, unknown fields, durations, YAML itself.
		{name: "unknown top-level field", yaml: base("routing: {batch_size: 1}\n"), want: []string{"routing: unknown field"}},
		{name: "unknown nested field", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", "ingest_topics: [events.in], batchsize: 10", 1), want: []string{"router.batchsize: unknown field", "batch_size"}},
		{name: "unknown sink field", yaml: strings.Replace(validBase, "region: us,", "region: us, table: t,", 1), want: []string{"sinks[0].table: unknown field"}},
		{name: "int field given text", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", "ingest_topics: [events.in], batch_size: lots", 1), want: []string{"router.batch_size", `"lots"`}},
		{name: "duration without unit", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", "ingest_topics: [events.in], linger: 5", 1), want: []string{"router.linger", "duration"}},
		{name: "duration not a duration", yaml: strings.Replace(validBase, "rules: {file: RULES}", "rules: {file: RULES, staleness_bound: soon}", 1), want: []string{"rules.staleness_bound", `"soon"`}},
		{name: "bool field given text", yaml: strings.Replace(validBase, "rules: {file: RULES}", "rules: {file: RULES, pins: sometimes}", 1), want: []string{"rules.pins", `"sometimes"`}},
		{name: "clusters given a list", yaml: "kafka: {clusters: [a, b]}\nrouter: {ingest_topics: [x]}\nrules: {file: RULES}\n", want: []string{"kafka.clusters", "list"}},
		{name: "cluster given a string", yaml: kafka(`"127.0.0.1:9092"`), want: []string{"kafka.clusters.ingest"}},
		{name: "topics given a string", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", "ingest_topics: events.in", 1), want: []string{"router.ingest_topics", "list"}},
		{name: "sinks given a mapping", yaml: "kafka: {clusters: {ingest: {brokers: [\"h:1\"]}}}\nrules: {file: RULES}\nsinks: {store: x}\n", want: []string{"sinks", "list"}},
		{name: "top level a list", yaml: "- a\n- b\n", want: []string{"list"}},
		{name: "yaml syntax", yaml: "kafka:\n  clusters: {ingest: {brokers: [\"h:1\"]}\nrouter: [\n", want: []string{"yaml", "line"}},
		{name: "duplicate key", yaml: base("log_level: info\nlog_level: debug\n"), want: []string{"log_level"}},
		{name: "bad log level", yaml: base("log_level: loud\n"), want: []string{"log_level", `"loud"`}},
		// Router values and conflicts.
		{name: "negative batch size", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", "ingest_topics: [events.in], batch_size: -1", 1), want: []string{"router.batch_size"}},
		{name: "start offset latest", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", "ingest_topics: [events.in], start_offset: latest", 1), want: []string{"router.start_offset"}},
		{name: "quarantine is an ingest topic", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", "ingest_topics: [events.in], quarantine_topic: events.in", 1), want: []string{"router.quarantine_topic", "router.ingest_topics[0]"}},
		{name: "quarantine is dead-letter", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", "ingest_topics: [events.in], quarantine_topic: q, dead_letter_topic: q", 1), want: []string{"router.dead_letter_topic", "router.quarantine_topic"}},
		{name: "retry min above max", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", "ingest_topics: [events.in], retry_min: 5s, retry_max: 1s", 1), want: []string{"router.retry_min", "router.retry_max"}},
		{name: "retry min above default max", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", "ingest_topics: [events.in], retry_min: 3s", 1), want: []string{"router.retry_min", "router.retry_max", "default"}},
		{name: "give up before first retry", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", "ingest_topics: [events.in], give_up: 10ms", 1), want: []string{"router.give_up", "router.retry_min"}},
		{name: "max value above max batch", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", "ingest_topics: [events.in], max_value_bytes: 2000000, max_batch_bytes: 1000000", 1), want: []string{"router.max_value_bytes", "router.max_batch_bytes"}},
		{name: "poll slower than staleness", yaml: strings.Replace(validBase, "rules: {file: RULES}", "rules: {file: RULES, poll_interval: 1m, staleness_bound: 30s}", 1), want: []string{"rules.poll_interval", "rules.staleness_bound"}},
		// Sinks.
		{name: "sink without a store", yaml: strings.Replace(validBase, "store: us-postgres, ", "", 1), want: []string{"sinks[0].store: required"}},
		{name: "sink without a region", yaml: strings.Replace(validBase, "region: us, ", "", 1), want: []string{"sinks[0].region: required"}},
		{name: "sink without postgres or objectstore", yaml: strings.Replace(validBase, `, postgres: {dsn: "postgres://x@127.0.0.1:1/db"}`, "", 1), want: []string{"sinks[0]", "postgres", "objectstore"}},
		{name: "sink with both stores", yaml: strings.Replace(validBase, `postgres: {dsn: "postgres://x@127.0.0.1:1/db"}`, `postgres: {dsn: "postgres://x@127.0.0.1:1/db"}, objectstore: {url: "file:///tmp/x"}`, 1), want: []string{"sinks[0].objectstore"}},
		{name: "sink dsn empty", yaml: strings.Replace(validBase, `dsn: "postgres://x@127.0.0.1:1/db"`, `dsn: ""`, 1), want: []string{"sinks[0].postgres.dsn: required"}},
		{name: "sink dsn bad", yaml: strings.Replace(validBase, `dsn: "postgres://x@127.0.0.1:1/db"`, `dsn: "postgres://x:secret@h:notaport/db"`, 1), want: []string{"sinks[0].postgres.dsn"}},
		{name: "sink table bad", yaml: strings.Replace(validBase, `dsn: "postgres://x@127.0.0.1:1/db"`, `dsn: "postgres://x@127.0.0.1:1/db", table: "drop table; --"`, 1), want: []string{"sinks[0].postgres.table"}},
		{name: "sink objectstore codec", yaml: strings.Replace(validBase, `postgres: {dsn: "postgres://x@127.0.0.1:1/db"}`, `objectstore: {url: "file:///tmp/x", codec: zip}`, 1), want: []string{"sinks[0].objectstore.codec", `"zip"`}},
		{name: "sink objectstore url", yaml: strings.Replace(validBase, `postgres: {dsn: "postgres://x@127.0.0.1:1/db"}`, `objectstore: {url: "not a url"}`, 1), want: []string{"sinks[0].objectstore.url"}},
		{name: "sink store twice", yaml: validBase + "  - {store: us-postgres, region: us, postgres: {dsn: \"postgres://x@127.0.0.1:1/db\"}}\n", want: []string{"sinks[1].store", "sinks[0].store"}},
		{name: "sink write timeout over staleness", yaml: strings.Replace(validBase, "region: us,", "region: us, write_timeout: 40s,", 1), want: []string{"sinks[0].write_timeout", "rules.staleness_bound"}},
		{name: "sink negative batch", yaml: strings.Replace(validBase, "region: us,", "region: us, batch_size: -3,", 1), want: []string{"sinks[0].batch_size"}},
		{name: "sink quarantine cluster unknown", yaml: strings.Replace(validBase, "region: us,", "region: us, quarantine_cluster: nowhere,", 1), want: []string{"sinks[0].quarantine_cluster", `"nowhere"`}},
		{name: "sink cluster unknown", yaml: strings.Replace(validBase, "region: us,", "region: us, cluster: nowhere,", 1), want: []string{"sinks[0].cluster", `"nowhere"`}},
		{name: "sink start offset latest", yaml: strings.Replace(validBase, "region: us,", "region: us, start_offset: latest,", 1), want: []string{"sinks[0].start_offset"}},
		{name: "sink in the router's group", yaml: strings.Replace(validBase, "region: us,", "region: us, consumer_group: residency-router,", 1), want: []string{"sinks[0].consumer_group", "router.consumer_group"}},
		{name: "sink quarantine is the router's", yaml: strings.Replace(validBase, "region: us,", "region: us, quarantine_topic: residency.quarantine,", 1), want: []string{"sinks[0].quarantine_topic", "router.quarantine_topic"}},
		// ${VAR}, *_file secrets, Kafka conventions, topics.
		{name: "unset variable", yaml: strings.Replace(validBase, `addr: "127.0.0.1:1"`, `addr: "${T17_SURELY_UNSET_VARIABLE}"`, 1), want: []string{"redis.addr", "T17_SURELY_UNSET_VARIABLE is not set"}},
		{name: "unterminated variable", yaml: strings.Replace(validBase, "ingest_topics: [events.in]", `ingest_topics: ["${EVENTS"]`, 1), want: []string{"router.ingest_topics[0]", "without its closing }"}},
		{name: "redis password file missing", yaml: strings.Replace(validBase, `addr: "127.0.0.1:1"`, `addr: "127.0.0.1:1", password_file: /nonexistent/redis-pw`, 1), want: []string{"redis.password_file", "/nonexistent/redis-pw"}},
		{name: "redis password twice", yaml: strings.Replace(validBase, `addr: "127.0.0.1:1"`, `addr: "127.0.0.1:1", password: p, password_file: {notpem}`, 1), want: []string{"redis.password_file", "redis.password"}},
		{name: "sasl password file missing", yaml: kafka(`{brokers: ["h:1"], sasl: {mechanism: plain, username: u, password_file: /nonexistent/sasl-pw}}`), want: []string{"kafka.clusters.ingest.sasl.password_file"}},
		{name: "registry token file missing", yaml: base("schemas: {registry: {url: \"http://r:1\", bearer_token_file: /nonexistent/token}}\n"), want: []string{"schemas.registry.bearer_token_file"}},
		{name: "partitioner unknown", yaml: strings.Replace(validBase, "kafka:\n", "kafka:\n  partitioner: crc32\n", 1), want: []string{"kafka.partitioner", `"crc32"`}},
		{name: "isolation level unknown", yaml: strings.Replace(validBase, "kafka:\n", "kafka:\n  isolation_level: serializable\n", 1), want: []string{"kafka.isolation_level", `"serializable"`}},
		{name: "read_committed with kafka-go's reader (sink; route's batch consumer and replay's range reader honour it)", yaml: strings.Replace(validBase, "kafka:\n", "kafka:\n  isolation_level: read_committed\n", 1), want: []string{"kafka.isolation_level", "read_committed"}, only: []string{"sink"}},
		{name: "min insync above replication", yaml: base("topics: {replication_factor: 2, min_insync_replicas: 3}\n"), want: []string{"topics.min_insync_replicas", "topics.replication_factor"}},
		{name: "audit topic partitions", yaml: base("topics: {audit: {partitions: 4}}\n"), want: []string{"topics.audit.partitions"}},
		{name: "history topic is the quarantine", yaml: strings.Replace(validBase, "rules: {file: RULES}", "rules: {file: RULES, history_topic: residency.quarantine}", 1), want: []string{"rules.history_topic", "router.quarantine_topic"}},
		// Missing required parts, per command.
		{name: "no ingest topics", yaml: "kafka: {clusters: {ingest: {brokers: [\"h:1\"]}}}\nrules: {file: RULES}\n", want: []string{"router.ingest_topics: required"}, only: []string{"route", "replay", "purge", "erase", "residue", "topics", "config"}},
		{name: "no kafka clusters", yaml: "router: {ingest_topics: [x]}\nrules: {file: RULES}\nsinks: [{store: us-postgres, region: us, postgres: {dsn: \"postgres://x@h:1/db\"}}]\n", want: []string{"kafka.clusters: required"}, only: []string{"route", "replay", "sink", "purge", "erase", "residue", "topics", "config"}},
		{name: "empty file", yaml: "", want: []string{"kafka.clusters: required"}, only: []string{"route", "replay", "sink", "purge", "erase", "residue", "topics", "config"}},
		// Purge, erase, residue.
		{name: "purge negative min age", yaml: base("purge: {min_age: -1h}\n"), want: []string{"purge.min_age: must not be negative"}},
		{name: "erasure settle below a write timeout", yaml: strings.Replace(validBase, "region: us,", "region: us, write_timeout: 10s,", 1) + "erasure: {settle: 10s}\n", want: []string{"erasure.settle", "sinks[0].write_timeout"}},
		{name: "subject key too short", yaml: strings.Replace(validBase, "SUBJECTKEY", "{notpem}", 1), want: []string{"audit.subject_key_file", "at least 32"}},
		{name: "sink audit without verify keys", yaml: strings.Replace(validBase, "audit: {subject_key_file: SUBJECTKEY}", "audit: {enabled: true, subject_key_file: SUBJECTKEY}", 1), want: []string{"audit.attestation.verify_keys", "required"}, only: []string{"sink"}},
		{name: "sink audit verify key file missing", yaml: strings.Replace(validBase, "audit: {subject_key_file: SUBJECTKEY}", "audit: {enabled: true, subject_key_file: SUBJECTKEY, attestation: {verify_keys: [{id: k1, file: /nonexistent/k1}]}}", 1), want: []string{"audit.attestation.verify_keys[0]", "/nonexistent/k1"}, only: []string{"sink"}},
		{name: "residue max listed negative", yaml: base("residue: {max_listed: -1}\n"), want: []string{"residue.max_listed"}},
		{name: "store not configured", yaml: strings.Replace(validBase, "store: us-postgres", "store: eu-objectstore", 1), want: []string{"sinks", `"us-postgres"`}, only: []string{"sink"}},
	}
}

// fixBroken fills in the cases built from others and the fixture paths.
func fixBroken(cs []brokenConfig, fx map[string]string) []brokenConfig {
	for i := range cs {
		switch cs[i].name {
		case "ingest cluster unknown":
			cs[i].yaml = strings.Replace(validBase, "kafka:\n", "kafka:\n  ingest_cluster: elsewhere\n", 1)
			cs[i].want = []string{"kafka.ingest_cluster", `"elsewhere"`}
		case "compression unknown":
			cs[i].yaml = strings.Replace(validBase, "kafka:\n", "kafka:\n  compression: brotli\n", 1)
			cs[i].want = []string{"kafka.compression", `"brotli"`}
		case "redis ca file missing":
			cs[i].yaml = strings.Replace(validBase, `addr: "127.0.0.1:1"`, `addr: "127.0.0.1:1", tls: {enabled: true, ca_file: /nonexistent/redis-ca.pem}`, 1)
			cs[i].want = []string{"redis.tls.ca_file", "/nonexistent/redis-ca.pem"}
		}
		cs[i].yaml = strings.ReplaceAll(cs[i].yaml, "RULES", fx["rules"])
		cs[i].yaml = strings.ReplaceAll(cs[i].yaml, "SUBJECTKEY", fx["subjectkey"])
		for name, p := range fx {
			cs[i].yaml = strings.ReplaceAll(cs[i].yaml, "{"+name+"}", p)
		}
	}
	return cs
}

// configCommands are the subcommands that take --config, each with the
// arguments that make it get as far as wiring.
func configCommands(fx map[string]string) map[string][]string {
	return map[string][]string{
		"route":   {"route", "--listen", "off"},
		"sink":    {"sink", "--store", "us-postgres", "--listen", "off"},
		"replay":  {"replay", "--source", "quarantine", "--dry-run", "--checkpoint-dir", os.TempDir()},
		"explain": {"explain", fx["event"]},
		"purge":   {"purge", "--dry-run", "--checkpoint-dir", os.TempDir()},
		"erase":   {"erase", "--user", "u-1", "--dry-run"},
		"residue": {"residue", "scan", "--jurisdiction", "US"},
		"rules":   {"rules", "show"},
		"topics":  {"topics", "check"},
		"config":  {"config", "print", "--for", "route"},
	}
}

// TestEveryCommandRefusesBrokenConfigs runs every subcommand that takes
// --config with every broken configuration: each must exit 2 with one line
// naming the field (both fields, for a conflict), never panic and never show
// a Go type name or a stack trace.
func TestEveryCommandRefusesBrokenConfigs(t *testing.T) {
	fx := brokenFixtures(t)
	cmds := configCommands(fx)
	for _, bc := range fixBroken(brokenConfigs(), fx) {
		t.Run(bc.name, func(t *testing.T) {
			cfg := writeEventFile(t, "broken.yaml", []byte(bc.yaml))
			for name, args := range cmds {
				if bc.only != nil && !contains(bc.only, name) {
					continue
				}
				o := runCaught(append(append([]string(nil), args...), "--config", cfg), "")
				checkOneLineError(t, name, o, bc.want...)
			}
		})
	}
	// The config file itself: missing, a directory, unreadable.
	for what, path := range map[string]string{"missing": "/nonexistent/residency.yaml", "a directory": t.TempDir(), "unreadable": fx["unreadable"]} {
		if what == "unreadable" && os.Geteuid() == 0 {
			continue // root reads everything; the other two still run
		}
		for name, args := range cmds {
			o := runCaught(append(append([]string(nil), args...), "--config", path), "")
			checkOneLineError(t, name+" with a config file that is "+what, o, path)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestBrokenConfigsAreValidOtherwise guards the table above: the base
// config it breaks is accepted by the validation of every command, so each
// case fails for the reason it names.
func TestBrokenConfigsAreValidOtherwise(t *testing.T) {
	fx := brokenFixtures(t)
	c, err := config.Parse([]byte(validConfig(fx)))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []config.Scope{{Route: true}, {Sink: "us-postgres"}, {Route: true, Erase: true}, {}} {
		c2 := *c
		if err := c2.Finish(s); err != nil {
			t.Errorf("scope %+v: the base config is refused: %v", s, err)
		}
	}
}

// TestBadInputNeverPanics gives every subcommand bad flags, bad arguments,
// missing files and malformed events: each fails with a non-zero exit code
// and an error, never a panic.
func TestBadInputNeverPanics(t *testing.T) {
	fx := brokenFixtures(t)
	dir := t.TempDir()
	file := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := file("ok.yaml", validConfig(fx))
	rulesArgs := []string{"--rules", fx["rules"]}
	cases := []struct {
		args  []string
		stdin string
		code  int // 0: any non-zero
	}{
		{args: []string{"nosuchcommand"}, code: exitUsage},
		{args: []string{}, code: exitUsage},
		{args: []string{"route", "--nope"}, code: exitUsage},
		{args: []string{"route", "--config"}, code: exitUsage},
		{args: []string{"route", "--config", cfg, "extra"}, code: exitUsage},
		{args: []string{"sink", "--config", cfg}, code: exitUsage},
		{args: []string{"sink", "--store"}, code: exitUsage},
		{args: []string{"replay", "--config", cfg}, code: exitUsage},
		{args: []string{"replay", "--config", cfg, "--source", "nowhere"}, code: exitUsage},
		{args: []string{"replay", "--config", cfg, "--source", "ingest", "--from", "yesterday"}, code: exitUsage},
		{args: []string{"replay", "--config", cfg, "--source", "quarantine", "--batch", "0"}, code: exitUsage},
		{args: []string{"replay", "--config", cfg, "--resume", "../../etc"}, code: exitUsage},
		{args: []string{"replay", "--config", cfg, "--source", "ingest", "--topic", "other", "--dry-run"}, code: exitUsage},
		{args: []string{"explain"}, code: exitUsage},
		{args: []string{"explain", "--nope"}, code: exitUsage},
		{args: append([]string{"explain", "/nonexistent/e.json"}, rulesArgs...), code: exitUsage},
		{args: append([]string{"explain", dir}, rulesArgs...), code: exitUsage},
		{args: append([]string{"explain", file("bad.json", "{")}, rulesArgs...), code: exitUsage},
		{args: append([]string{"explain", file("arr.json", "[1, 2]")}, rulesArgs...), code: exitUsage},
		{args: append([]string{"explain", file("null.json", "null")}, rulesArgs...), code: exitUsage},
		{args: append([]string{"explain", file("num.json", `{"country": 5}`)}, rulesArgs...), code: exitUsage},
		{args: append([]string{"explain", file("deep.json", `{"country": {"a": {"b": 1}}, "user_id": []}`)}, rulesArgs...), code: exitUsage},
		{args: append([]string{"explain", file("empty.json", "")}, rulesArgs...), code: exitUsage},
		{args: append([]string{"explain", "-"}, rulesArgs...), stdin: "not json and not avro", code: exitFailure},
		{args: append([]string{"explain", file("e.json", `{"country": "US"}`), "--format", "yaml"}, rulesArgs...), code: exitUsage},
		{args: append([]string{"explain", file("e2.json", `{"country": "US"}`), "--framing", "thrift"}, rulesArgs...), code: exitUsage},
		{args: append([]string{"explain", file("v.bin", "\x00\x01"), "--framing", "raw", "--schema", "/nonexistent.avsc"}, rulesArgs...), code: exitUsage},
		{args: append([]string{"explain", file("c.avro", "Obj\x01garbage")}, rulesArgs...), code: exitUsage},
		{args: []string{"explain", fx["event"], "--rules", fx["badrules"]}, code: exitUsage},
		{args: []string{"explain", fx["event"], "--topic", "events.in"}, code: exitUsage},
		{args: []string{"explain", fx["event"], "--config", cfg, "--topic", "not.an.ingest.topic"}, code: exitUsage},
		{args: []string{"explain", fx["event"], "--config", cfg, "--rules", fx["rules"], "--redis", "127.0.0.1:1"}, code: exitUsage},
		{args: []string{"rules"}, code: exitUsage},
		{args: []string{"rules", "nosuch"}, code: exitUsage},
		{args: []string{"rules", "validate"}, code: exitUsage},
		{args: []string{"rules", "validate", "/nonexistent.yaml"}, code: exitUsage},
		{args: []string{"rules", "validate", fx["badrules"]}, code: exitFailure},
		{args: []string{"rules", "apply"}, code: exitUsage},
		{args: []string{"rules", "show", "notaversion", "--redis", "127.0.0.1:1"}},
		{args: []string{"rules", "pin", "only-one-arg"}, code: exitUsage},
		{args: []string{"schemas"}, code: exitUsage},
		{args: []string{"schemas", "fingerprint", "/nonexistent.avsc"}, code: exitUsage},
		{args: []string{"schemas", "fingerprint", fx["notpem"]}, code: exitFailure},
		{args: []string{"schemas", "check", "/nonexistent.avsc"}},
		{args: []string{"schemas", "show", "extra"}, code: exitUsage},
		{args: []string{"bench", "--nope"}, code: exitUsage},
		{args: []string{"demo", "--events", "many"}, code: exitUsage},
		{args: []string{"version", "--nope"}, code: exitUsage},
		{args: []string{"purge", "--config", cfg, "--min-age", "-1h"}, code: exitUsage},
		{args: []string{"purge", "--config", cfg, "--every", "often"}, code: exitUsage},
		{args: []string{"purge", "--config", cfg, "--every", "-5m"}, code: exitUsage},
		{args: []string{"purge", "--config", cfg, "--output", "yaml"}, code: exitUsage},
		{args: []string{"purge", "--config", cfg, "--topic", "not.a.topic", "--dry-run"}, code: exitUsage},
		{args: []string{"purge", "--config", cfg, "--every", "5m", "--dry-run"}, code: exitUsage},
		{args: []string{"erase", "--config", cfg}, code: exitUsage},
		{args: []string{"erase", "--config", cfg, "--user", ""}, code: exitUsage},
		{args: []string{"erase", "--config", cfg, "--user", "u-1", "--store", "nope"}, code: exitUsage},
		{args: []string{"erase", "--config", cfg, "--user", "u-1", "--output", "xml"}, code: exitUsage},
		{args: []string{"residue"}, code: exitUsage},
		{args: []string{"residue", "sweep"}, code: exitUsage},
		{args: []string{"residue", "scan", "--config", cfg}, code: exitUsage},
		{args: []string{"residue", "scan", "--config", cfg, "--jurisdiction", "ATLANTIS"}, code: exitUsage},
		{args: []string{"residue", "clean", "--config", cfg, "--jurisdiction", "ATLANTIS", "--dry-run"}, code: exitUsage},
	}
	for _, c := range cases {
		o := runCaught(c.args, c.stdin)
		what := strings.Join(c.args, " ")
		if o.panicked != nil {
			t.Errorf("%s: panic: %v\n%s", what, o.panicked, o.stack)
			continue
		}
		if (c.code == 0 && o.code == exitOK) || (c.code != 0 && o.code != c.code) {
			t.Errorf("%s: exit %d, want %v (0: any failure); stderr: %s", what, o.code, c.code, o.stderr)
		}
		if strings.Contains(o.stderr, "goroutine ") {
			t.Errorf("%s: stderr has a stack trace:\n%s", what, o.stderr)
		}
	}
}

// TestBinaryRefusesBrokenConfigs builds the residency binary and runs it as
// a subprocess with a few broken configs: a panic anywhere (in any
// goroutine) prints "panic:" and "goroutine" to stderr, which must never
// happen; the error is one line naming the field, exit 2.
func TestBinaryRefusesBrokenConfigs(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "residency")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fx := brokenFixtures(t)
	pick := map[string]bool{"catalogue dir missing": true, "rules file missing": true, "kafka ca file missing": true,
		"confluent framing without registry": true, "unknown default framing": true, "retry min above max": true,
		"unknown nested field": true, "sink without a store": true}
	n := 0
	for _, bc := range fixBroken(brokenConfigs(), fx) {
		if !pick[bc.name] {
			continue
		}
		n++
		cfg := writeEventFile(t, "broken.yaml", []byte(bc.yaml))
		for name, args := range configCommands(fx) {
			cmd := exec.Command(bin, append(append([]string(nil), args...), "--config", cfg)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := cmd.ProcessState.ExitCode()
			if err != nil && code < 0 {
				t.Fatalf("%s %s: %v", name, bc.name, err)
			}
			what := fmt.Sprintf("%s (%s)", name, bc.name)
			if strings.Contains(stderr.String(), "panic:") || strings.Contains(stderr.String(), "goroutine") {
				t.Errorf("%s: panicked:\n%s", what, stderr.String())
				continue
			}
			checkOneLineError(t, what, outcome{code: code, stdout: stdout.String(), stderr: stderr.String()}, bc.want...)
		}
	}
	if n != len(pick) {
		t.Fatalf("ran %d of the %d picked configs: a name changed", n, len(pick))
	}
}

// TestSinkWiringErrorNamesTheField: a problem only the ruleset reveals
// (the region's pinned topic is on a cluster the config lacks) is found
// while wiring the sink, and is still one line naming the field, exit 2.
func TestSinkWiringErrorNamesTheField(t *testing.T) {
	fx := brokenFixtures(t)
	cfg := writeEventFile(t, "residency.yaml", []byte(fmt.Sprintf(`
kafka: {clusters: {ingest: {brokers: ["127.0.0.1:1"]}}}
rules: {file: %s}
sinks:
  - {store: eu-objectstore, region: eu, objectstore: {url: "file://%s"}}
`, fx["rules"], t.TempDir())))
	o := runCaught([]string{"sink", "--config", cfg, "--store", "eu-objectstore", "--listen", "off", "--log-level", "error"}, "")
	checkOneLineError(t, "sink", o, "sinks[0].cluster", `cluster "eu"`, "kafka.clusters")
}
