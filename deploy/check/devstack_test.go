package check

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/linkedin/goavro/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// The dev stack's addresses (deploy/dev/up; see README, "The dev stack").
const (
	envKafkaA   = "RESIDENCY_TEST_KAFKA_A"
	envKafkaB   = "RESIDENCY_TEST_KAFKA_B"
	envRedis    = "RESIDENCY_TEST_REDIS"
	envPostgres = "RESIDENCY_TEST_POSTGRES"
)

// need returns the dev stack variable name, failing the test when it is not
// set: these tests have no stand-in.
func need(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: this test runs on the dev stack; start it with `eval \"$(deploy/dev/up)\"` (or run `make test`)", name)
	}
	return v
}

// uniqueID names this run's topics, groups, key prefix and schema.
func uniqueID(t *testing.T) string {
	t.Helper()
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "check_" + hex.EncodeToString(b[:])
}

// createTopics creates topics on the cluster at brokers, waits for their
// leaders, and deletes them when the test ends.
func createTopics(t *testing.T, brokers string, partitions int, names ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(strings.Split(brokers, ",")...), Timeout: 10 * time.Second}
	req := &kafka.CreateTopicsRequest{}
	for _, n := range names {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: n, NumPartitions: partitions, ReplicationFactor: 1})
	}
	resp, err := c.CreateTopics(ctx, req)
	if err == nil {
		for _, e := range resp.Errors {
			err = errors.Join(err, e)
		}
	}
	if err != nil {
		t.Fatalf("create topics %v: %v", names, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: names})
	})
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
		led := err == nil && len(md.Topics) == len(names)
		for _, tp := range md.Topics {
			led = led && tp.Error == nil && len(tp.Partitions) == partitions
			for _, p := range tp.Partitions {
				led = led && p.Leader.Host != ""
			}
		}
		if led {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topics %v: no leaders: %v", names, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a process's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// pod is one Deployment's container, run as a process.
type pod struct {
	name  string
	addr  string // its ops endpoint
	grace time.Duration
	probe struct{ live, ready string }
	cmd   *exec.Cmd
	logs  *syncBuffer
	done  chan error
}

func (p *pod) get(path string) (int, string) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + p.addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape returns the pod's /metrics, parsed.
func (p *pod) scrape() (map[string]*dto.MetricFamily, error) {
	code, body := p.get("/metrics")
	if code != http.StatusOK {
		return nil, fmt.Errorf("%s /metrics: %d %s", p.name, code, body)
	}
	tp := expfmt.NewTextParser(model.UTF8Validation)
	return tp.TextToMetricFamilies(strings.NewReader(body))
}

// value returns the value of the sample of family name whose labels include
// want, and whether there is one.
func value(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// The reasons each counter must export from the start, at zero (docs/router.md,
// docs/sinks.md).
var reasonsAtStart = map[string][]string{
	"residency_router_quarantined_events_total":   {"no_country", "unknown_country", "no_rule"},
	"residency_router_dead_lettered_events_total": {"empty_value", "too_large", "bad_magic", "unknown_schema", "truncated", "corrupt"},
	"residency_sink_quarantined_events_total": {"sink_no_region", "sink_region_not_approved", "sink_no_jurisdiction",
		"sink_region_moved", "sink_undecodable", "sink_missing_field"},
}

// TestDevStack runs every Deployment of deploy/kubernetes on the dev stack
// as its container would run: the binary built as the Dockerfile builds it,
// the container's args, its environment (secrets as the example Secret
// gives them, empty), and the ConfigMap's residency.yaml with only the
// addresses and names put in that are this machine's (brokers and Redis
// through the RESIDENCY_* variables the binary reads; in the file: the
// consumer groups, the router's and sinks' quarantine and dead-letter
// topics, the PostgreSQL DSN, and the object store's URL, a file:// one
// instead of the S3 bucket). The ruleset is deploy/examples/rules.yaml with
// this run's pinned topics, applied to Redis with `residency rules apply`.
//
// It checks that: the router's quarantined and dead-lettered counters and
// each sink's refusal counters are exported at start, at zero, for every
// reason; events go through (routed, quarantined, dead-lettered, written by
// both sinks); every pod answers its liveness and readiness probes' paths
// with 200; on SIGTERM each exits 0 within its terminationGracePeriodSeconds;
// and every metric the alert rules and the dashboard name is one these
// processes exported.
func TestDevStack(t *testing.T) {
	brokersA, brokersB := need(t, envKafkaA), need(t, envKafkaB)
	redisAddr, pgURL := need(t, envRedis), need(t, envPostgres)
	bin, _, _ := residency(t)
	m := loadManifests(t)
	id := uniqueID(t)
	topic := func(s string) string { return "check." + id + "." + s }
	ingest, quarantine, deadLetter, sinkQuarantine := topic("ingest"), topic("quarantine"), topic("dead-letter"), topic("sink-quarantine")
	usTopic, euTopic := topic("us"), topic("eu")
	dir := t.TempDir()

	// The ruleset: the example's, with this run's pinned topics (edited as
	// text: a YAML 1.1 round trip would turn Norway's NO into false).
	b, err := os.ReadFile(filepath.Join(root, "deploy", "examples", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Every region's pinned topic exists on its cluster (the router is not
	// ready while one is missing); events go to us and eu only.
	onA, onB := []string{ingest, quarantine, deadLetter, sinkQuarantine}, []string(nil)
	b = regexp.MustCompile(`cluster: (\w+), topic: residency\.(\w+)\}`).ReplaceAllFunc(b, func(m []byte) []byte {
		sm := regexp.MustCompile(`cluster: (\w+), topic: residency\.(\w+)\}`).FindSubmatch(m)
		cluster, region := string(sm[1]), string(sm[2])
		name := topic(region)
		if cluster == "ingest" {
			onA = append(onA, name)
		} else {
			onB = append(onB, name)
		}
		return []byte("cluster: " + cluster + ", topic: " + name + "}")
	})
	if !bytes.Contains(b, []byte(usTopic)) || !bytes.Contains(b, []byte(euTopic)) {
		t.Fatalf("deploy/examples/rules.yaml: no regions us and eu with topics residency.us and residency.eu")
	}
	createTopics(t, brokersA, 2, onA...)
	createTopics(t, brokersB, 2, onB...)
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	prefix := id + ":"
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		keys, _ := rdb.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})
	if out, err := exec.Command(bin, "rules", "apply", rulesFile, "--redis", redisAddr, "--prefix", prefix, "--author", "deploy-check").CombinedOutput(); err != nil {
		t.Fatalf("residency rules apply: %v\n%s", err, out)
	}

	// PostgreSQL: a schema of this run's own.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatalf("PostgreSQL (%s): %v", envPostgres, err)
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+id); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = conn.Exec(ctx, "DROP SCHEMA "+id+" CASCADE")
		conn.Close(ctx)
	})
	dsn, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	q := dsn.Query()
	q.Set("search_path", id)
	dsn.RawQuery = q.Encode()

	// The ConfigMap's config, with this machine's names and addresses.
	var cfg map[string]any
	if err := yaml.Unmarshal(m.config, &cfg); err != nil {
		t.Fatal(err)
	}
	router := cfg["router"].(map[string]any)
	router["quarantine_topic"], router["dead_letter_topic"] = quarantine, deadLetter
	for _, s := range cfg["sinks"].([]any) {
		s := s.(map[string]any)
		s["consumer_group"] = id + "-sink-" + s["store"].(string)
		s["quarantine_topic"] = sinkQuarantine
		if pg, ok := s["postgres"].(map[string]any); ok {
			pg["dsn"] = dsn.String()
		}
		if os, ok := s["objectstore"].(map[string]any); ok {
			os["url"] = "file://" + filepath.Join(dir, "objectstore-"+s["store"].(string))
		}
	}
	cfgFile := writeYAML(t, dir, "residency.yaml", cfg)
	clusters := m.residencyConfig(t).Kafka
	overrides := map[string]string{
		"RESIDENCY_REDIS_ADDR":            redisAddr,
		"RESIDENCY_REDIS_PREFIX":          prefix,
		"RESIDENCY_ROUTER_INGEST_TOPICS":  ingest,
		"RESIDENCY_ROUTER_CONSUMER_GROUP": id + "-router",
	}
	for name := range clusters.Clusters {
		addr := brokersB
		if name == clusters.IngestCluster {
			addr = brokersA
		}
		overrides["RESIDENCY_KAFKA_"+strings.ToUpper(name)+"_BROKERS"] = addr
	}
	for _, s := range cfg["sinks"].([]any) {
		if s.(map[string]any)["objectstore"] != nil {
			if err := os.MkdirAll(filepath.Join(dir, "objectstore-"+s.(map[string]any)["store"].(string)), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Start every Deployment's container.
	var pods []*pod
	for _, d := range m.deployments {
		p := startPod(t, bin, d, m, cfgFile, overrides)
		pods = append(pods, p)
	}
	defer func() {
		for _, p := range pods {
			if p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
	}()
	waitFor := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(timeout); !cond(); time.Sleep(100 * time.Millisecond) {
			for _, p := range pods {
				select {
				case err := <-p.done:
					t.Fatalf("%s exited (%v) while waiting for %s; logs:\n%s", p.name, err, what, p.logs.String())
				default:
				}
			}
			if time.Now().After(deadline) {
				var logs strings.Builder
				for _, p := range pods {
					fmt.Fprintf(&logs, "--- %s\n%s", p.name, p.logs.String())
				}
				t.Fatalf("timed out waiting for %s; logs:\n%s", what, logs.String())
			}
		}
	}

	// At start, before any event: every reason's counter, at zero.
	for _, p := range pods {
		waitFor(p.name+" /metrics", 90*time.Second, func() bool { code, _ := p.get("/metrics"); return code == http.StatusOK })
		mfs, err := p.scrape()
		if err != nil {
			t.Fatal(err)
		}
		for name, reasons := range reasonsAtStart {
			if !strings.HasPrefix(name, "residency_"+p.component()+"_") {
				continue
			}
			for _, r := range reasons {
				if v, ok := value(mfs, name, map[string]string{"reason": r}); !ok || v != 0 {
					t.Errorf("%s at start: %s{reason=%q} = %v (exported: %v), want 0", p.name, name, r, v, ok)
				}
			}
		}
	}

	// Events: US and DE ones to route and sink, two without a country, one
	// of an unknown country, one that is not Avro.
	values := encodeEvents(t, map[string]int{"US": 7, "DE": 5, "": 2, "ZZ": 1})
	values = append(values, []byte("not an avro event"))
	w := &kafka.Writer{Addr: kafka.TCP(strings.Split(brokersA, ",")...), Topic: ingest, RequiredAcks: kafka.RequireAll, BatchTimeout: 10 * time.Millisecond}
	var msgs []kafka.Message
	for i, v := range values {
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint("k", i)), Value: v})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	w.Close()

	want := map[string]map[string]float64{
		"residency-router": {
			`residency_router_routed_events_total{region="us"}`:                   7,
			`residency_router_routed_events_total{region="eu"}`:                   5,
			`residency_router_quarantined_events_total{reason="no_country"}`:      2,
			`residency_router_quarantined_events_total{reason="unknown_country"}`: 1,
			`residency_router_dead_lettered_events_total{reason="bad_magic"}`:     1,
		},
		"residency-sink-us-postgres":    {`residency_sink_written_events_total{region="us"}`: 7},
		"residency-sink-eu-objectstore": {`residency_sink_written_events_total{region="eu"}`: 5},
		// The purge service's first run, at start (the next one is 5
		// minutes later).
		"residency-purge": {`residency_purge_runs_total{result="ok"}`: 1},
	}
	exported := map[string]bool{}
	for _, p := range pods {
		wants, ok := want[p.name]
		if !ok {
			t.Fatalf("no expectations for Deployment %s: extend TestDevStack", p.name)
		}
		var mfs map[string]*dto.MetricFamily
		waitFor(p.name+" to count every event", 90*time.Second, func() bool {
			if mfs, err = p.scrape(); err != nil {
				return false
			}
			for sel, n := range wants {
				name, lbl, _ := strings.Cut(strings.TrimSuffix(sel, "}"), "{")
				k, v, _ := strings.Cut(lbl, "=")
				if got, _ := value(mfs, name, map[string]string{k: strings.Trim(v, `"`)}); got != n {
					return false
				}
			}
			return true
		})
		waitFor(p.name+" "+p.probe.ready, 30*time.Second, func() bool { code, _ := p.get(p.probe.ready); return code == http.StatusOK })
		if code, body := p.get(p.probe.live); code != http.StatusOK {
			t.Errorf("%s %s: %d %s", p.name, p.probe.live, code, body)
		}
		for name, mf := range mfs {
			if mf.GetType() == dto.MetricType_HISTOGRAM {
				exported[name+"_bucket"], exported[name+"_sum"], exported[name+"_count"] = true, true, true
			} else {
				exported[name] = true
			}
		}
	}

	// SIGTERM, as the kubelet sends it: each exits 0 within its grace period.
	for _, p := range pods {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range pods {
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("%s exited with %v on SIGTERM; logs:\n%s", p.name, err, p.logs.String())
			}
		case <-time.After(p.grace):
			t.Errorf("%s did not exit within its terminationGracePeriodSeconds (%s) after SIGTERM", p.name, p.grace)
		}
	}

	t.Logf("ran %d Deployments; they exported %d metric names", len(pods), len(exported))
	checkNamedAreExported(t, exported)
}

// component is "router", "sink" or "purge".
func (p *pod) component() string {
	switch p.cmd.Args[1] {
	case "route":
		return "router"
	case "purge":
		return "purge"
	}
	return "sink"
}

// startPod runs d's residency container: its args (the config path mapped to
// cfgFile), its environment (field references as the pod's name, secrets
// from secret.example.yaml), overrides, and the ops endpoint on a free
// loopback port (RESIDENCY_HTTP_LISTEN; TestKubernetesManifests checks the
// real port).
func startPod(t *testing.T, bin string, d *appsv1.Deployment, m *manifests, cfgFile string, overrides map[string]string) *pod {
	t.Helper()
	c := residencyContainer(t, d)
	p := &pod{name: d.Name, logs: &syncBuffer{}, done: make(chan error, 1), grace: 30 * time.Second}
	if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		p.grace = time.Duration(*g) * time.Second
	}
	p.probe.live, p.probe.ready = c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path
	args := append([]string(nil), c.Args...)
	for i, a := range args {
		if a == flagValue(c.Args, "config") {
			args[i] = cfgFile
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	ln.Close()
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil:
			env = append(env, e.Name+"="+d.Name+"-check")
		case e.ValueFrom.SecretKeyRef != nil:
			env = append(env, e.Name+"="+m.secrets[0].StringData[e.ValueFrom.SecretKeyRef.Key])
		default:
			t.Fatalf("%s: env %s: a source this test does not provide", d.Name, e.Name)
		}
	}
	for k, v := range overrides {
		env = append(env, k+"="+v)
	}
	env = append(env, "RESIDENCY_HTTP_LISTEN="+p.addr)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p
}

func writeYAML(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// encodeEvents returns n user events per country ("" for none) in the
// single-object framing, with the repository's UserEvent schema.
func encodeEvents(t *testing.T, n map[string]int) [][]byte {
	t.Helper()
	schema, err := os.ReadFile(filepath.Join(root, "schemas", "avro", "user_event.avsc"))
	if err != nil {
		t.Fatal(err)
	}
	codec, err := goavro.NewCodec(string(schema))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	i := 0
	for country, count := range n {
		for range count {
			i++
			var c any
			if country != "" {
				c = goavro.Union("string", country)
			}
			v, err := codec.SingleFromNative(nil, map[string]any{
				"event_id":    fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
				"user_id":     fmt.Sprint("user-", i),
				"occurred_at": time.Now().UTC(),
				"event_type":  "VIDEO_VIEW",
				"device":      map[string]any{"device_id": "d", "os": "ANDROID", "app_version": "1.0"},
				"country":     c,
			})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
	}
	return out
}
