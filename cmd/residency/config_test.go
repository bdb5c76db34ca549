package main

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigIsValid(t *testing.T) {
	c, err := loadConfig("../../deploy/examples/residency.yaml", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.finish(); err != nil {
		t.Fatal(err)
	}
	if c.Kafka.IngestCluster != "ingest" || len(c.Kafka.Clusters) != 2 || c.Router.Linger != 5*time.Millisecond ||
		c.Router.IngestTopics[0] != "events.ingest" || c.Kafka.Clusters["eu"].Name != "eu" {
		t.Fatalf("config %+v", c)
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := parseConfig([]byte("kafka: {clusters: {main: {brokers: ['h:9092']}}}\nrouter: {ingest_topics: [in]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.finish(); err != nil {
		t.Fatal(err)
	}
	if c.Kafka.IngestCluster != "main" || c.Router.ConsumerGroup != "residency-router" || c.Router.QuarantineTopic != "residency.quarantine" ||
		c.HTTP.Listen != ":9090" || c.Redis.Prefix != "residency:" || !c.pinsEnabled() {
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
	}
	for _, tt := range tests {
		c, err := parseConfig([]byte(tt.yaml))
		if err != nil {
			t.Fatal(err)
		}
		err = c.finish()
		if !errors.Is(err, errConfig) {
			t.Fatalf("finish(%q) = %v, want errConfig", tt.yaml, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	}
	if _, err := parseConfig([]byte("router: {ingest_topic: [x]}\n")); err == nil || !strings.Contains(err.Error(), "ingest_topic") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestConfigEnvOverrides(t *testing.T) {
	p := writeEventFile(t, "c.yaml", []byte("kafka: {clusters: {eu-west: {brokers: ['h:1']}}}\nrouter: {ingest_topics: [x]}\n"))
	env := map[string]string{
		"RESIDENCY_KAFKA_EU_WEST_BROKERS":       "b1:9092, b2:9092",
		"RESIDENCY_KAFKA_EU_WEST_SASL_PASSWORD": "secret",
		"RESIDENCY_ROUTER_INGEST_TOPICS":        "t1,t2",
		"RESIDENCY_REDIS_ADDR":                  "r:6379",
		"RESIDENCY_LOG_LEVEL":                   "debug",
	}
	c, err := loadConfig(p, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Kafka.Clusters["eu-west"]
	if strings.Join(cl.Brokers, ",") != "b1:9092,b2:9092" || cl.SASL.Password != "secret" ||
		strings.Join(c.Router.IngestTopics, ",") != "t1,t2" || c.Redis.Addr != "r:6379" || c.LogLevel != "debug" {
		t.Fatalf("env not applied: %+v", c)
	}
	if _, err := loadConfig("/nonexistent.yaml", os.LookupEnv); !errors.Is(err, errConfig) {
		t.Fatalf("missing file: %v", err)
	}
}

// TestConfigDeprecatedBatchTimeout: a configuration written for an earlier
// version, with kafka.batch_timeout, still loads, and says the setting is
// ignored.
func TestConfigDeprecatedBatchTimeout(t *testing.T) {
	c, err := parseConfig([]byte("kafka: {clusters: {main: {brokers: ['h:9092']}}, batch_timeout: 1ms}\nrouter: {ingest_topics: [in]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.finish(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	c.warnDeprecated(slog.New(slog.NewTextHandler(&out, nil)))
	if !strings.Contains(out.String(), "kafka.batch_timeout is ignored") {
		t.Fatalf("no warning: %q", out.String())
	}
	out.Reset()
	c.Kafka.BatchTimeout = 0
	c.warnDeprecated(slog.New(slog.NewTextHandler(&out, nil)))
	if out.Len() != 0 {
		t.Fatalf("warning without the setting: %q", out.String())
	}
}
