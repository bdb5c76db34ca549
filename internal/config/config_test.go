package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
)

func TestExampleConfigIsValid(t *testing.T) {
	c, err := Load("../../deploy/examples/residency.yaml", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true}); err != nil {
		t.Fatal(err)
	}
	if c.Kafka.IngestCluster != "ingest" || len(c.Kafka.Clusters) != 2 || c.Router.Linger != 5*time.Millisecond ||
		c.Router.IngestTopics[0] != "events.ingest" || c.Kafka.Clusters["eu"].Name != "eu" {
		t.Fatalf("config %+v", c)
	}
	// The same file serves every command.
	for _, s := range []Scope{{Sink: "us-postgres"}, {Sink: "eu-objectstore"}, {}} {
		if err := c.Finish(s); err != nil {
			t.Errorf("scope %+v: %v", s, err)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Parse([]byte("kafka: {clusters: {main: {brokers: ['h:9092']}}}\nrouter: {ingest_topics: [in]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true}); err != nil {
		t.Fatal(err)
	}
	if c.Kafka.IngestCluster != "main" || c.Router.ConsumerGroup != "residency-router" || c.Router.QuarantineTopic != "residency.quarantine" ||
		c.HTTP.Listen != ":9090" || c.Redis.Prefix != "residency:" || !c.PinsEnabled() ||
		c.Kafka.Partitioner != "murmur2" || c.Kafka.IsolationLevel != "read_uncommitted" {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	tests := []struct {
		yaml string
		want []string
	}{
		{"kafka: {clusters: {eu: {}}}\n", []string{"kafka.clusters.eu.brokers: required", "router.ingest_topics: required"}},
		{"kafka: {clusters: {a: {brokers: ['h:1']}, b: {brokers: ['h:2']}}}\nrouter: {ingest_topics: [x]}\n", []string{"kafka.ingest_cluster: required"}},
		{"kafka: {clusters: {a: {brokers: ['h:1']}}, ingest_cluster: z}\nrouter: {ingest_topics: [x]}\n", []string{`kafka.ingest_cluster: "z" is not in kafka.clusters`}},
		{"kafka: {clusters: {a: {brokers: ['h:1'], sasl: {mechanism: kerberos}}}}\nrouter: {ingest_topics: [x]}\n", []string{"kafka.clusters.a.sasl.mechanism"}},
		{"kafka: {clusters: {a: {brokers: ['h:1']}}}\nrouter: {ingest_topics: [x], quarantine_topic: x, linger: -1s, start_offset: middle}\nlog_level: loud\n",
			[]string{"router.quarantine_topic: \"x\" is also router.ingest_topics[0]", "router.linger: must not be negative", "router.start_offset", "log_level"}},
		{"kafka: {clusters: {a: {brokers: ['h:1']}}}\nrouter: {ingest_topics: [x], start_offset: latest}\n",
			[]string{"router.start_offset: \"latest\" would skip every event already in the ingest topics"}},
		{"kafka: {clusters: {a: {brokers: ['h:1']}}, partitioner: crc32, isolation_level: serializable}\nrouter: {ingest_topics: [x]}\n",
			[]string{`kafka.partitioner: "crc32" is not murmur2 or fnv1a`, `kafka.isolation_level: "serializable" is not read_uncommitted or read_committed`}},
	}
	for _, tt := range tests {
		c, err := Parse([]byte(tt.yaml))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Finish(Scope{Route: true})
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("finish(%q) = %v, want ErrInvalid", tt.yaml, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	}
	if _, err := Parse([]byte("router: {ingest_topic: [x]}\n")); err == nil || !strings.Contains(err.Error(), "ingest_topic") {
		t.Errorf("unknown field: %v", err)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestConfigEnvOverrides(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, p, "kafka: {clusters: {eu-west: {brokers: ['h:1']}}}\nrouter: {ingest_topics: [x]}\n")
	env := map[string]string{
		"RESIDENCY_KAFKA_EU_WEST_BROKERS":       "b1:9092, b2:9092",
		"RESIDENCY_KAFKA_EU_WEST_SASL_PASSWORD": "secret",
		"RESIDENCY_ROUTER_INGEST_TOPICS":        "t1,t2",
		"RESIDENCY_REDIS_ADDR":                  "r:6379",
		"RESIDENCY_LOG_LEVEL":                   "debug",
	}
	c, err := Load(p, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Kafka.Clusters["eu-west"]
	if strings.Join(cl.Brokers, ",") != "b1:9092,b2:9092" || cl.SASL.Password != "secret" ||
		strings.Join(c.Router.IngestTopics, ",") != "t1,t2" || c.Redis.Addr != "r:6379" || c.LogLevel != "debug" {
		t.Fatalf("env not applied: %+v", c)
	}
	if _, err := Load("/nonexistent.yaml", os.LookupEnv); !errors.Is(err, ErrInvalid) {
		t.Fatalf("missing file: %v", err)
	}
}

// TestConfigDeprecatedBatchTimeout: a configuration written for an earlier
// version, with kafka.batch_timeout, still loads, and says the setting is
// ignored.
func TestConfigDeprecatedBatchTimeout(t *testing.T) {
	c, err := Parse([]byte("kafka: {clusters: {main: {brokers: ['h:9092']}}, batch_timeout: 1ms}\nrouter: {ingest_topics: [in]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true}); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	c.WarnDeprecated(slog.New(slog.NewTextHandler(&out, nil)))
	if !strings.Contains(out.String(), "kafka.batch_timeout is ignored") {
		t.Fatalf("no warning: %q", out.String())
	}
	out.Reset()
	c.Kafka.BatchTimeout = 0
	c.WarnDeprecated(slog.New(slog.NewTextHandler(&out, nil)))
	if out.Len() != 0 {
		t.Fatalf("warning without the setting: %q", out.String())
	}
}

// TestRedisTLSConfig: redis.tls is `true` or a mapping; the client route,
// sink, replay and explain build from it trusts the CA file, presents the
// client certificate and checks the server name.
func TestRedisTLSConfig(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeTestCerts(t, dir)
	c, err := Parse([]byte(fmt.Sprintf("redis: {addr: \"r:6380\", username: u, password: p, tls: {enabled: true, ca_file: %s, cert_file: %s, key_file: %s, server_name: redis.internal}}\n", ca, cert, key)))
	if err != nil {
		t.Fatal(err)
	}
	client, err := redis.NewClient(c.Redis, redis.ClientOptions{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	o := client.Options()
	if o.TLSConfig == nil || o.TLSConfig.RootCAs == nil || len(o.TLSConfig.Certificates) != 1 || o.TLSConfig.ServerName != "redis.internal" ||
		o.Username != "u" || o.Password != "p" || o.Addr != "r:6380" {
		t.Fatalf("client options %+v, TLS %+v", o, o.TLSConfig)
	}
	short, err := Parse([]byte("redis: {tls: true}\n"))
	if err != nil || !short.Redis.TLS.Enabled {
		t.Fatalf("tls: true = %+v, %v", short.Redis.TLS, err)
	}
	if client, err := redis.NewClient(short.Redis, redis.ClientOptions{}); err != nil || client.Options().TLSConfig == nil {
		t.Fatalf("tls: true: %v", err)
	}
	off, err := Parse([]byte("redis: {tls: false}\n"))
	if err != nil || off.Redis.TLS.Enabled {
		t.Fatalf("tls: false = %+v, %v", off.Redis.TLS, err)
	}
	if client, err := redis.NewClient(off.Redis, redis.ClientOptions{}); err != nil || client.Options().TLSConfig != nil {
		t.Fatalf("tls: false: %v", err)
	}
	if _, err := redis.NewClient(redis.Config{TLS: redis.TLSConfig{Enabled: true, CAFile: cert + ".missing"}}, redis.ClientOptions{}); err == nil ||
		!strings.Contains(err.Error(), "redis.tls.ca_file") {
		t.Fatalf("missing CA file: %v", err)
	}
}

// writeTestCerts writes a self-signed CA and a client certificate and key
// signed by it, as PEM files in dir.
func writeTestCerts(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	clKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "residency"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	clDER, err := x509.CreateCertificate(rand.Reader, clTmpl, caTmpl, &clKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(clKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("client.pem", "CERTIFICATE", clDER), write("client-key.pem", "EC PRIVATE KEY", keyDER)
}

// TestKafkaTLSFilesCheckedAtStart: a cluster's TLS files are read by the
// config's validation, so a good set passes and a bad one names its field.
func TestKafkaTLSFilesCheckedAtStart(t *testing.T) {
	ca, cert, key := writeTestCerts(t, t.TempDir())
	good := fmt.Sprintf("kafka: {clusters: {eu: {brokers: ['h:1'], tls: {enabled: true, ca_file: %s, cert_file: %s, key_file: %s}}}}\nrouter: {ingest_topics: [x]}\n", ca, cert, key)
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true}); err != nil {
		t.Fatalf("good TLS files: %v", err)
	}
	c, err = Parse([]byte(strings.Replace(good, "key_file: "+key, "key_file: "+ca, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true}); err == nil || !strings.Contains(err.Error(), "kafka.clusters.eu.tls.cert_file") {
		t.Fatalf("a CA as the key: %v", err)
	}
}

// TestConfigErrorsKeepSecretsOut: a DSN's password does not reach the error.
func TestConfigErrorsKeepSecretsOut(t *testing.T) {
	c, err := Parse([]byte("kafka: {clusters: {a: {brokers: ['h:1']}}}\nsinks: [{store: s, region: us, postgres: {dsn: \"postgres://u:hunter2@h:nope/db\"}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Finish(Scope{Sink: "s"})
	if err == nil || !strings.Contains(err.Error(), "sinks[0].postgres.dsn") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("check = %v; want the dsn named, without its password", err)
	}
}

// TestConfigProblemsAreAllListed: the validator returns every problem of a
// config, each with its field path, so `config lint` can print them all.
func TestConfigProblemsAreAllListed(t *testing.T) {
	c, err := Parse([]byte(`
kafka: {clusters: {ingest: {brokers: [nohost]}}, compression: brotli}
router: {ingest_topics: [x], batch_size: -1, retry_min: 5s, retry_max: 1s}
rules: {poll_interval: 1m}
log_level: loud
`))
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, p := range c.Validate(Scope{Route: true}) {
		fields = append(fields, p.Field)
	}
	for _, want := range []string{"kafka.clusters.ingest.brokers[0]", "kafka.compression", "router.batch_size", "router.retry_min", "rules.poll_interval", "log_level"} {
		if !slices.Contains(fields, want) {
			t.Errorf("problems %v lack %s", fields, want)
		}
	}
	err = c.Finish(Scope{Route: true})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "6 problems") {
		t.Errorf("check = %v, want one line counting 6 problems", err)
	}
	// Structural problems (unknown fields, wrong types) are all listed too.
	_, err = Parse([]byte("router: {batchsize: 1, linger: 5}\nredis: {db: zero}\nrouting: {}\n"))
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != 4 {
		t.Fatalf("parseConfig = %v, want 4 problems", err)
	}
}

// TestDefaultsTable: Finish gives every unset field the default of the
// package the setting feeds, keeps what is set, and names a defaulted value
// as the default in messages.
func TestDefaultsTable(t *testing.T) {
	c, err := Parse([]byte("kafka: {clusters: {main: {brokers: ['h:9092']}}}\nrouter: {ingest_topics: [in], linger: 7ms}\nsinks: [{store: s, region: us, postgres: {dsn: 'postgres://h/db'}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true}); err != nil {
		t.Fatal(err)
	}
	r, sc := c.Router, c.Sinks[0]
	if r.BatchSize != router.DefaultBatchSize || r.MaxValueBytes != router.DefaultMaxValueBytes || r.GiveUp != router.DefaultGiveUp ||
		r.Linger != 7*time.Millisecond || c.Rules.StalenessBound != rules.DefaultStalenessBound ||
		c.Schemas.Registry.Backoff != schemas.DefaultRegistryBackoff || c.Kafka.SessionTimeout != kafka.DefaultSessionTimeout {
		t.Fatalf("router %+v, rules %+v, registry %+v", r, c.Rules, c.Schemas.Registry)
	}
	if sc.BatchSize != sink.DefaultBatchSize || sc.WriteTimeout != sink.DefaultWriteTimeout || sc.ConsumerGroup != "residency-sink-s" ||
		sc.QuarantineCluster != "main" || sc.Listen != DefaultListen {
		t.Fatalf("sink %+v", sc)
	}
	if got := c.show("router.linger", r.Linger); got != "7ms" {
		t.Errorf("a set value shows as %q", got)
	}
	if got := c.show("router.retry_max", r.RetryMax); got != "the default 2s" {
		t.Errorf("a defaulted value shows as %q", got)
	}
}

// TestInflightBoundsValidated: the router's in-flight bounds are refused
// negative or below what one batch (or the largest event) needs, each
// problem naming its field; unset, they take the router's defaults.
func TestInflightBoundsValidated(t *testing.T) {
	c, err := Parse([]byte(`
kafka: {clusters: {ingest: {brokers: ["h:1"]}}}
router: {ingest_topics: [x], max_inflight_events: -1, max_inflight_bytes: -5, max_uncommitted_events: -1, max_uncommitted_bytes: -1, memory_limit: -1}
rules: {file: r.yaml}
`))
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, p := range c.Validate(Scope{Route: true}) {
		fields = append(fields, p.Field)
	}
	for _, want := range []string{"router.max_inflight_events", "router.max_inflight_bytes", "router.max_uncommitted_events",
		"router.max_uncommitted_bytes", "router.memory_limit"} {
		if !slices.Contains(fields, want) {
			t.Errorf("problems %v lack %s", fields, want)
		}
	}
	c, err = Parse([]byte(`
kafka: {clusters: {ingest: {brokers: ["h:1"]}}}
router: {ingest_topics: [x], batch_size: 100, max_inflight_events: 50, max_value_bytes: 2000, max_inflight_bytes: 1000}
rules: {file: r.yaml}
`))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, p := range c.Validate(Scope{Route: true}) {
		msgs = append(msgs, p.Field+": "+p.Message)
	}
	joined := strings.Join(msgs, "\n")
	if !strings.Contains(joined, "router.max_inflight_events: 50 is less than router.batch_size") ||
		!strings.Contains(joined, "router.max_inflight_bytes: 1000 is less than router.max_value_bytes") {
		t.Errorf("problems:\n%s\nwant both conflicts named", joined)
	}
	c, err = Parse([]byte("kafka: {clusters: {ingest: {brokers: [\"h:1\"]}}}\nrouter: {ingest_topics: [x]}\nrules: {file: r.yaml}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Finish(Scope{Route: true})
	if c.Router.MaxInflightEvents != 10000 || c.Router.MaxInflightBytes != 16<<20 || c.Router.MaxUncommittedEvents != 40000 ||
		c.Router.MaxUncommittedBytes != 16<<20 {
		t.Errorf("defaults: max_inflight_events %d, max_inflight_bytes %d, max_uncommitted_events %d, max_uncommitted_bytes %d",
			c.Router.MaxInflightEvents, c.Router.MaxInflightBytes, c.Router.MaxUncommittedEvents, c.Router.MaxUncommittedBytes)
	}
}
