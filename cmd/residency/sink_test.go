package main

import (
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
)

// sinkRules is a ruleset whose region us has pinned topic usTopic and whose
// store us-postgres is approved for the given regions.
func sinkRules(usTopic, regions string) string {
	return fmt.Sprintf(`
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE]}
regions:
  - {name: us, cluster: a, topic: %s}
  - {name: eu, cluster: a, topic: residency.eu}
stores:
  - {name: us-postgres, regions: [%s]}
`, usTopic, regions)
}

func pgRows(t *testing.T, dsn string) int {
	t.Helper()
	ctx := testenv.Context(t, 10*time.Second)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM residency_events`).Scan(&n); err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return 0
		}
		t.Fatal(err)
	}
	return n
}

// TestSinkCommand runs `residency sink` end to end on real Kafka, Redis and
// PostgreSQL: it writes, serves metrics and health, stops writing and turns
// not-ready when `rules apply` revokes the approval, exits 0 on shutdown,
// and refuses to start (exit 1, naming store, region and version) while
// the approval is missing.
func TestSinkCommand(t *testing.T) {
	a := testenv.KafkaA(t)
	r := testenv.NewRedis(t)
	pg := testenv.NewPostgres(t)
	ctx := testenv.Context(t, 120*time.Second)
	us := a.Topic(t, "us", 2)
	quarantine := a.Topic(t, "sinkquar", 1)
	addr := freeAddr(t)
	// log_level debug: on a failure the logs printed include kafka-go's
	// consumer-group messages (joins, assignments), which say why a sink
	// did not read (once in CI the restarted sink read nothing for 45s).
	cfg := fmt.Sprintf(`
log_level: debug
kafka:
  clusters:
    a: {brokers: [%s]}
  session_timeout: 6s
  rebalance_timeout: 5s
redis: {addr: "%s", prefix: "%s"}
rules: {poll_interval: 50ms}
sinks:
  - store: us-postgres
    region: us
    consumer_group: %s
    quarantine_topic: %s
    batch_size: 10
    batch_timeout: 50ms
    drain_timeout: 3s
    listen: "%s"
    postgres: {dsn: "%s"}
`, strings.Join(a.Brokers, ","), r.Addr, r.Prefix, testenv.Name(t, "g"), quarantine, addr, pg.DSN)
	cfgFile := writeFile(t, "residency.yaml", cfg)
	code, out, errs := rulesCLI(t, r, "apply", writeFile(t, "rules.yaml", sinkRules(us, "us")))
	mustCode(t, exitOK, code, out, errs)

	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "a", Brokers: a.Brokers}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	publish := func(from, to int) {
		t.Helper()
		var msgs []stream.Message
		for i := from; i < to; i++ {
			// Placed by version 1: the sink re-decides it under version 1,
			// loaded from Redis, whatever version is in force.
			msgs = append(msgs, sinktest.WithHeader(sinktest.Message(us, i, "US", "us", "US"), router.HeaderRulesetVersion, "1"))
		}
		if err := w.Publish(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	publish(0, 30)

	sk := start(t, "sink", "--config", cfgFile, "--store", "us-postgres")
	running := sk
	waitUntil := func(what string, cond func() bool) { t.Helper(); waitFor(t, 45*time.Second, what, cond, running) }
	waitUntil("30 rows", func() bool { return pgRows(t, pg.DSN) == 30 })
	waitUntil("/readyz", func() bool { code, _ := get(addr, "/readyz"); return code == http.StatusOK })
	if code, _ := get(addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	// The counters move after the commit, just after the rows appear.
	waitUntil("the written counter", func() bool {
		_, m := get(addr, "/metrics")
		return strings.Contains(m, `residency_sink_written_events_total{region="us",store="us-postgres"} 30`)
	})
	_, metrics := get(addr, "/metrics")
	for _, want := range []string{
		`residency_sink_written_events_total{region="us",store="us-postgres"} 30`,
		`residency_sink_quarantined_events_total{reason="sink_region_not_approved",store="us-postgres"} 0`,
		`residency_sink_batch_seconds_count{store="us-postgres"}`,
		`residency_rules_version 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// `rules apply` revokes the approval: writing stops, /readyz says why.
	code, out, errs = rulesCLI(t, r, "apply", writeFile(t, "rules2.yaml", sinkRules(us, "eu")))
	mustCode(t, exitOK, code, out, errs)
	waitUntil("/readyz to turn not ready", func() bool {
		code, body := get(addr, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "ruleset version 2") && strings.Contains(body, "us-postgres")
	})
	publish(30, 45)
	time.Sleep(time.Second)
	if n := pgRows(t, pg.DSN); n != 30 {
		t.Fatalf("%d rows after the approval was revoked, want 30", n)
	}
	sk.stopOK(t)

	// Restarting while the approval is missing fails at once.
	code, out, errs = cli(t, "sink", "--config", cfgFile, "--store", "us-postgres")
	mustCode(t, exitFailure, code, out, errs)
	for _, want := range []string{`"us-postgres"`, `"us"`, "ruleset version 2"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr does not name %s:\n%s", want, errs)
		}
	}
	if n := pgRows(t, pg.DSN); n != 30 {
		t.Fatalf("%d rows, want 30", n)
	}

	// `rules rollback`-style re-approval: a new sink drains the rest.
	code, out, errs = rulesCLI(t, r, "apply", writeFile(t, "rules3.yaml", sinkRules(us, "us")))
	mustCode(t, exitOK, code, out, errs)
	// And an event a pin placed: the sink checks the pin in Redis.
	code, out, errs = rulesCLI(t, r, "pin", sinktest.UserID(99), "US")
	mustCode(t, exitOK, code, out, errs)
	pinned := sinktest.WithHeader(sinktest.Message(us, 99, "US", "us", "DE"), router.HeaderDecidedBy, "pin")
	if err := w.Publish(ctx, sinktest.WithHeader(pinned, router.HeaderRulesetVersion, "3")); err != nil {
		t.Fatal(err)
	}
	running = start(t, "sink", "--config", cfgFile, "--store", "us-postgres", "--listen", "off")
	waitUntil("46 rows", func() bool { return pgRows(t, pg.DSN) == 46 })
	running.stopOK(t)
}

func TestSinkCommandConfigErrors(t *testing.T) {
	pg := "postgres://x@127.0.0.1:1/x"
	base := `
kafka:
  clusters:
    a: {brokers: ["127.0.0.1:1"]}
rules: {file: "%s"}
sinks:
%s`
	rulesFile := writeFile(t, "rules.yaml", sinkRules("residency.us", "us"))
	for name, tc := range map[string]struct {
		sinks, args, want string
		code              int
	}{
		"unknown store":    {"  - {store: other, region: us, postgres: {dsn: " + pg + "}}\n", "", `no entry with store "us-postgres"`, exitUsage},
		"no store section": {"  - {store: us-postgres, region: us}\n", "", "sinks[0].postgres", exitUsage},
		"two stores":       {"  - {store: us-postgres, region: us, postgres: {dsn: " + pg + "}, objectstore: {url: 'file:///tmp'}}\n", "", "sinks[0].objectstore", exitUsage},
		"no region":        {"  - {store: us-postgres, postgres: {dsn: " + pg + "}}\n", "", "sinks[0].region: required", exitUsage},
		"unknown field":    {"  - {store: us-postgres, region: us, colour: red, postgres: {dsn: " + pg + "}}\n", "", "colour", exitUsage},
		"write_timeout not below the staleness bound": {"  - {store: us-postgres, region: us, write_timeout: 30s, postgres: {dsn: " + pg + "}}\n", "",
			"sinks[0].write_timeout: 30s must be less than rules.staleness_bound (the default 30s)", exitUsage},
		"start at latest": {"  - {store: us-postgres, region: us, start_offset: latest, postgres: {dsn: " + pg + "}}\n", "",
			`sinks[0].start_offset: "latest" would skip every event already in the pinned topic`, exitUsage},
		"not approved": {"  - {store: us-postgres, region: eu, postgres: {dsn: " + pg + "}}\n", "", `ruleset version 0 does not approve store "us-postgres" for region "eu"`, exitFailure},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := writeFile(t, "residency.yaml", fmt.Sprintf(base, rulesFile, tc.sinks))
			code, out, errs := cli(t, "sink", "--config", cfg, "--store", "us-postgres", "--listen", "off")
			if code != tc.code || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q (stdout %q)", code, errs, tc.code, tc.want, out)
			}
		})
	}
	code, _, _ := cli(t, "sink", "--store", "x")
	if code != exitUsage {
		t.Errorf("without --config: exit %d", code)
	}
}

// TestSinkCommandObjectStore runs `residency sink` into a file:// bucket with
// a ruleset file: every event lands in an OCF object once.
func TestSinkCommandObjectStore(t *testing.T) {
	a := testenv.KafkaA(t)
	ctx := testenv.Context(t, 90*time.Second)
	us := a.Topic(t, "us", 2)
	quarantine := a.Topic(t, "sinkquar", 1)
	dir := t.TempDir()
	rulesFile := writeFile(t, "rules.yaml", strings.Replace(sinkRules(us, "us"), "us-postgres", "us-objects", 1))
	cfgFile := writeFile(t, "residency.yaml", fmt.Sprintf(`
kafka:
  clusters:
    a: {brokers: [%s]}
rules: {file: "%s"}
sinks:
  - store: us-objects
    region: us
    consumer_group: %s
    quarantine_topic: %s
    batch_timeout: 50ms
    listen: "off"
    objectstore: {url: "file://%s", prefix: "events/"}
`, strings.Join(a.Brokers, ","), rulesFile, testenv.Name(t, "g"), quarantine, dir))
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "a", Brokers: a.Brokers}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var msgs []stream.Message
	for i := range 12 {
		// A ruleset file has version 0.
		msgs = append(msgs, sinktest.WithHeader(sinktest.Message(us, i, "US", "us", "US"), router.HeaderRulesetVersion, "0"))
	}
	if err := w.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	sk := start(t, "sink", "--config", cfgFile, "--store", "us-objects")
	count := func() int {
		n := 0
		_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".avro") {
				return err
			}
			if !strings.HasPrefix(path, filepath.Join(dir, "events", "us")+string(filepath.Separator)) {
				t.Errorf("object outside events/us/: %s", path)
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			r, err := goavro.NewOCFReader(f)
			if err != nil {
				t.Errorf("%s: %v", path, err)
				return nil
			}
			for r.Scan() {
				if _, err := r.Read(); err == nil {
					n++
				}
			}
			return nil
		})
		return n
	}
	waitFor(t, 45*time.Second, "every record in the bucket", func() bool { return count() >= len(msgs) }, sk)
	sk.stopOK(t)
	if n := count(); n != len(msgs) {
		t.Fatalf("%d records in the bucket, want %d", n, len(msgs))
	}
}
