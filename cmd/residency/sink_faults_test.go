package main

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
)

// TestSinkReadinessOneTruth runs `residency sink` on a private Kafka broker,
// with Redis and PostgreSQL behind proxies, and takes each away in turn
// while events arrive: Redis (past the staleness bound), the store, the
// Kafka cluster. In each state /readyz and residency_sink_ready agree in
// every sample, the log says the state once, the sink never exits, and
// once the service returns it is ready again and every event is stored
// once.
func TestSinkReadinessOneTruth(t *testing.T) {
	t.Parallel()
	a := testenv.NewPrivateKafka(t, "a")
	r := testenv.NewRedis(t)
	rp := testenv.NewProxy(t, r.Addr)
	pg := testenv.NewPostgres(t)
	u, err := url.Parse(pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	pp := testenv.NewProxy(t, u.Host)
	u.Host = pp.Addr
	ctx := testenv.Context(t, 180*time.Second)
	us := a.Topic(t, "us", 1)
	quarantine := a.Topic(t, "sinkquar", 1)
	addr := freeAddr(t)
	cfgFile := writeFile(t, "residency.yaml", fmt.Sprintf(`
kafka:
  clusters:
    a: {brokers: [%s]}
  session_timeout: 6s
  rebalance_timeout: 5s
redis: {addr: "%s", prefix: "%s"}
rules: {poll_interval: 50ms, staleness_bound: 2s}
sinks:
  - store: us-postgres
    region: us
    consumer_group: %s
    quarantine_topic: %s
    batch_size: 10
    batch_timeout: 50ms
    drain_timeout: 3s
    write_timeout: 500ms
    listen: "%s"
    postgres: {dsn: "%s"}
`, a.Brokers[0], rp.Addr, r.Prefix, testenv.Name(t, "g"), quarantine, addr, u.String()))
	code, out, errs := rulesCLI(t, r, "apply", writeFile(t, "rules.yaml", sinkRules(us, "us")))
	mustCode(t, exitOK, code, out, errs)

	next := 0
	publish := func(n int) {
		t.Helper()
		w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "a", Brokers: a.Brokers}})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		var msgs []stream.Message
		for i := next; i < next+n; i++ {
			msgs = append(msgs, sinktest.WithHeader(sinktest.Message(us, i, "US", "us", "US"), router.HeaderRulesetVersion, "1"))
		}
		next += n
		if err := w.Publish(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}

	sk := start(t, "sink", "--config", cfgFile, "--store", "us-postgres")
	stderr := sk.stderr
	take := func() (int, string, string) {
		code, body := get(addr, "/readyz")
		_, m := get(addr, "/metrics")
		return code, body, gauge(m, `residency_sink_ready{store="us-postgres"}`)
	}
	stateLogs := func() int {
		return strings.Count(stderr.String(), `"msg":"sink not ready"`) + strings.Count(stderr.String(), `"msg":"sink ready"`)
	}
	reach := func(state string, want int, contains string) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			c, body, ready := take()
			if c == want && strings.Contains(body, contains) && (ready == "1") == (want == 200) {
				break
			}
			sk.alive(t)
			if time.Now().After(deadline) {
				t.Fatalf("%s: never reached (last %d %q ready=%s); logs:\n%s", state, c, body, ready, stderr.String())
			}
		}
		before := stateLogs()
		n := 0
		for end := time.Now().Add(time.Second); time.Now().Before(end); n++ {
			c, body, ready := take()
			if (c == 200) != (ready == "1") {
				t.Errorf("%s: /readyz %d %q but residency_sink_ready %s", state, c, body, ready)
			}
			if strings.Contains(body, "not ready: sink not ready") {
				t.Errorf("%s: /readyz repeats itself: %q", state, body)
			}
			if c != want {
				t.Errorf("%s: /readyz left the state while held: %d %q", state, c, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if extra := stateLogs() - before; extra > 3 {
			t.Errorf("%s: %d readiness log lines while the state held (%d samples)", state, extra, n)
		}
		t.Logf("%-28s %2d samples agree; readiness log lines so far %d", state, n, stateLogs())
	}
	waitRows := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); pgRows(t, pg.DSN) != n; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("rows %d, want %d; logs:\n%s", pgRows(t, pg.DSN), n, stderr.String())
			}
		}
	}

	publish(10)
	waitRows(10)
	reach("ready", 200, "")

	// Redis down past the staleness bound (and for as long as a router's
	// give_up would allow): not ready, never an exit.
	rp.Cut()
	publish(10)
	reach("redis down", 503, "")
	time.Sleep(2 * time.Second)
	rp.Restore()
	waitRows(20)
	reach("ready after redis", 200, "")

	// The store down.
	pp.Cut()
	publish(10)
	reach("store down", 503, "store")
	pp.Restore()
	waitRows(30)
	reach("ready after the store", 200, "")

	// The Kafka cluster down.
	a.Kill()
	reach("kafka down", 503, "")
	a.Start()
	publish(10)
	waitRows(40)
	reach("ready after kafka", 200, "")

	sk.stopOK(t)
}
