package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/redis"

	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

// freeAddr returns a loopback address no one listens on, for a command's
// operations endpoint. The port comes from below the kernel's ephemeral
// range (ip_local_port_range), where no outgoing connection takes it
// between this check and the command's listen, and is never handed out
// twice in one test process. Where the range is unusual it falls back to
// a port the kernel picks.
func freeAddr(t *testing.T) string {
	t.Helper()
	freePorts.Lock()
	defer freePorts.Unlock()
	lo, hi := freePortRange()
	for range 200 {
		if hi <= lo {
			break
		}
		p := lo + rand.IntN(hi-lo)
		if freePorts.given[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // taken by another process
		}
		ln.Close()
		freePorts.given[p] = true
		return ln.Addr().String()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// freePorts are the ports freeAddr handed out.
var freePorts = struct {
	sync.Mutex
	given map[int]bool
}{given: map[int]bool{}}

// freePortRange is where freeAddr picks ports: 20000 up to the start of
// the ephemeral range, at most 29000 (the dev stack's fixed ports are
// below 20000 or at 29092).
func freePortRange() (lo, hi int) {
	lo, hi = 20000, 29000
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, lo // not Linux: the kernel picks
	}
	var first, last int
	if _, err := fmt.Sscan(string(b), &first, &last); err != nil {
		return lo, lo
	}
	return lo, min(hi, first)
}

func get(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRouteCommand runs `residency route` end to end: not ready (and not
// consuming) without a ruleset, routing once one is applied, metrics, and a
// clean exit 0 on shutdown.
func TestRouteCommand(t *testing.T) {
	a, b := testenv.KafkaA(t), testenv.KafkaB(t)
	r := testenv.NewRedis(t)
	ctx := testenv.Context(t, 90*time.Second)
	ingest := a.Topic(t, "ingest", 2)
	quarantine := a.Topic(t, "quarantine", 1)
	deadLetter := a.Topic(t, "deadletter", 1)
	us := a.Topic(t, "us", 2)
	eu := b.Topic(t, "eu", 2)
	group := testenv.Name(t, "g")
	addr := freeAddr(t)
	cfgFile := writeEventFile(t, "residency.yaml", []byte("log_level: debug\n"+routeYAML{Listen: addr, A: a.Brokers, B: b.Brokers,
		Ingest: ingest, Group: group, Quarantine: quarantine, DeadLetter: deadLetter,
		Rest: fmt.Sprintf("redis: {addr: %q, prefix: %q}\nrules: {poll_interval: 50ms}\n", r.Addr, r.Prefix)}.String()))

	// Events first: the router must not touch them until a ruleset exists.
	enc, err := sample.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "a", Brokers: a.Brokers}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var msgs []stream.Message
	for i, c := range []string{"US", "DE", "US", "FR", "", "ZZ"} {
		v, _ := enc.Encode(sample.Event{ID: fmt.Sprint(i), UserID: fmt.Sprint("u", i), Country: c})
		msgs = append(msgs, stream.Message{Topic: ingest, Key: []byte(fmt.Sprint(i)), Value: v})
	}
	if err := w.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	rt := start(t, "route", "--config", cfgFile)
	waitUntil := func(what string, cond func() bool) { t.Helper(); waitFor(t, 30*time.Second, what, cond, rt) }
	waitUntil("/healthz", func() bool { code, _ := get(addr, "/healthz"); return code == 200 })
	waitUntil("/readyz to say why not", func() bool {
		code, body := get(addr, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "ruleset")
	})
	admin, err := kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: a.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if lag, err := admin.Lag(ctx, group, ingest); err != nil || lag != int64(len(msgs)) {
		t.Fatalf("lag without a ruleset = %d, %v; want %d (nothing consumed)", lag, err, len(msgs))
	}

	client := goredis.NewClient(&goredis.Options{Addr: r.Addr})
	defer client.Close()
	rs := twoRegionRules(us, "b", eu, "DE, FR")
	if _, err := redis.NewRules(client, r.Prefix).Apply(ctx, []byte(rs), rules.ApplyOptions{Author: "test"}); err != nil {
		t.Fatal(err)
	}
	waitUntil("everything committed", func() bool { lag, err := admin.Lag(ctx, group, ingest); return err == nil && lag == 0 })
	if code, body := get(addr, "/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	// The router sets the lag gauge once its commit returns, a moment after
	// the broker has it.
	lagZero := `residency_router_consumer_lag{topic="` + ingest + `"} 0`
	var metrics string
	waitUntil("the lag gauge at 0", func() bool { _, metrics = get(addr, "/metrics"); return strings.Contains(metrics, lagZero) })
	for _, want := range []string{
		`residency_router_routed_events_total{jurisdiction="US",region="us"} 2`,
		`residency_router_routed_events_total{jurisdiction="EU",region="eu"} 2`,
		`residency_router_quarantined_events_total{reason="no_country"} 1`,
		`residency_router_quarantined_events_total{reason="unknown_country"} 1`,
		`residency_router_ruleset_version 1`,
		`residency_router_ready 1`,
		"residency_router_end_to_end_seconds_bucket",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	bAdmin, _ := kafka.NewAdmin(kafka.Cluster{Name: "b", Brokers: b.Brokers})
	if got, err := bAdmin.ReadAll(ctx, eu); err != nil || len(got) != 2 {
		t.Fatalf("eu pinned topic: %d events, %v", len(got), err)
	}
	rt.stopOK(t)
	logs := rt.stderr.String()
	if !strings.Contains(logs, `"msg":"routing stopped cleanly"`) {
		t.Errorf("no clean-stop log line:\n%s", logs)
	}
	for _, leak := range []string{"u0", "u1", `"US"`} {
		if strings.Contains(logs, leak) {
			t.Errorf("logs contain %q (a user id or payload)", leak)
		}
	}
}

func TestRouteCommandBadConfig(t *testing.T) {
	f := writeEventFile(t, "bad.yaml", []byte("kafka: {clusters: {eu: {}}}\n"))
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"route", "--config", f}, nil, &out, &errOut); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if !strings.Contains(errOut.String(), "kafka.clusters.eu.brokers: required") {
		t.Fatalf("stderr %q does not name the field", errOut.String())
	}
	if code := run(context.Background(), []string{"route"}, nil, &out, &errOut); code != exitUsage {
		t.Fatalf("no --config: exit %d", code)
	}
}

// TestRouteExitsThreeWithEventsUncommitted: with a region's cluster
// unreachable, `residency route` keeps routing the other region, says
// which cluster is down on /readyz, and on SIGTERM exits 3 after logging
// what stays uncommitted.
func TestRouteExitsThreeWithEventsUncommitted(t *testing.T) {
	a := testenv.KafkaA(t)
	ctx := testenv.Context(t, 90*time.Second)
	ingest := a.Topic(t, "ingest", 1)
	quarantine := a.Topic(t, "quarantine", 1)
	deadLetter := a.Topic(t, "deadletter", 1)
	us := a.Topic(t, "us", 1)
	addr := freeAddr(t)
	rulesFile := writeEventFile(t, "rules.yaml", []byte(fmt.Sprintf(`
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE]}
regions:
  - {name: us, cluster: a, topic: %s}
  - {name: eu, cluster: down, topic: pinned-eu}
stores:
  - {name: us-postgres, regions: [us]}
`, us)))
	cfgFile := routeYAML{Listen: addr, A: a.Brokers, Clusters: []string{`down: {brokers: ["127.0.0.1:1"]}`}, Ingest: ingest,
		Group: testenv.Name(t, "g"), Quarantine: quarantine, DeadLetter: deadLetter, ShutdownTimeout: "500ms",
		Router: []string{"retry_min: 10ms", "retry_max: 100ms", "give_up: 300ms"}, Rest: "rules: {file: " + rulesFile + "}\n"}.write(t)
	enc, err := sample.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "a", Brokers: a.Brokers}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var msgs []stream.Message
	for i, c := range []string{"DE", "US", "US"} {
		v, _ := enc.Encode(sample.Event{ID: fmt.Sprint(i), UserID: fmt.Sprint("u", i), Country: c})
		msgs = append(msgs, stream.Message{Topic: ingest, Key: []byte(fmt.Sprint(i)), Value: v})
	}
	if err := w.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	rt := start(t, "route", "--config", cfgFile)
	stderr := rt.stderr
	waitFor(t, 30*time.Second, "/readyz to say cluster down is down", func() bool {
		code, body := get(addr, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "cluster down") && !strings.Contains(body, "not ready: not ready")
	}, rt)
	// The other region flows meanwhile.
	admin, err := kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: a.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the us events during the other cluster's outage", func() bool { return topicLen(ctx, admin, us) >= 2 }, rt)
	if code := rt.halt(t); code != exitNotReady {
		t.Fatalf("route exited %d, want 3; logs:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "uncommitted") || !strings.Contains(stderr.String(), `"partition":0`) {
		t.Errorf("the log does not say what stays uncommitted per partition:\n%s", stderr.String())
	}
}

// TestFreeAddr: the addresses are distinct, below the ephemeral range
// (where the range allows), and free.
func TestFreeAddr(t *testing.T) {
	lo, hi := freePortRange()
	seen := map[string]bool{}
	for range 20 {
		a := freeAddr(t)
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
		_, port, _ := net.SplitHostPort(a)
		var p int
		fmt.Sscan(port, &p)
		if hi > lo && (p < lo || p >= hi) {
			t.Errorf("%s is outside %d-%d", a, lo, hi)
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s is not free: %v", a, err)
		}
		ln.Close()
	}
}
