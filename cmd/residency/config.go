package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// errConfig marks an invalid configuration; the text names the field.
var errConfig = errors.New("invalid config")

// Config is the YAML configuration of `residency route` (see
// deploy/examples/residency.yaml and docs/configuration.md). Values come
// from the file, then RESIDENCY_* environment variables, then flags.
type Config struct {
	// Instance names this router in the residency-router header and logs.
	// Default: the host name.
	Instance string `yaml:"instance"`
	// LogLevel is debug, info, warn or error. Default "info".
	LogLevel string `yaml:"log_level"`
	// HTTP is the operations endpoint (/metrics, /healthz, /readyz).
	HTTP HTTPConfig `yaml:"http"`
	// Kafka names the clusters the router reads from and writes to.
	Kafka KafkaConfig `yaml:"kafka"`
	// Router configures consumption, topics, batching and retries.
	Router RouterConfig `yaml:"router"`
	// Redis is where the ruleset versions and pins live.
	Redis RedisConfig `yaml:"redis"`
	// Rules configures the ruleset cache (or a fixed ruleset file).
	Rules RulesConfig `yaml:"rules"`
	// Schemas configures how event fields are read (framing, field paths,
	// schema registry); see schemas.ExtractorConfig for each field's default.
	Schemas schemas.ExtractorConfig `yaml:"schemas"`
	// Sinks are the sinks `residency sink --store NAME` can run (see
	// sink.go and docs/sinks.md). Default: none.
	Sinks []SinkConfig `yaml:"sinks"`
}

// HTTPConfig configures the operations endpoint.
type HTTPConfig struct {
	// Listen is the host:port of /metrics, /healthz and /readyz; "off"
	// disables the endpoint. Default ":9090".
	Listen string `yaml:"listen"`
}

// KafkaConfig lists the Kafka clusters by name.
type KafkaConfig struct {
	// Clusters maps a cluster name (the names rulesets use in
	// regions[].cluster) to how to reach it. Required: at least the ingest
	// cluster.
	Clusters map[string]kafka.Cluster `yaml:"clusters"`
	// IngestCluster is the cluster holding the ingest, quarantine and
	// dead-letter topics. Required (it may be omitted when there is only
	// one cluster).
	IngestCluster string `yaml:"ingest_cluster"`
	// BatchTimeout is ignored, and kept so that configuration files written
	// for earlier versions still load: the writer no longer waits to fill
	// batches. A warning says so when it is set. Default 0.
	BatchTimeout time.Duration `yaml:"batch_timeout"`
	// Compression of written batches: none, gzip, snappy, lz4 or zstd.
	// Default "none".
	Compression string `yaml:"compression"`
	// SessionTimeout is the consumer-group session timeout. Default 10s.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// RebalanceTimeout is how long members get to rejoin in a rebalance.
	// Default 10s.
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"`
}

// RouterConfig configures the routing pipeline.
type RouterConfig struct {
	// IngestTopics are the topics producers write events to. Required.
	IngestTopics []string `yaml:"ingest_topics"`
	// ConsumerGroup is the routers' consumer group. Default
	// "residency-router".
	ConsumerGroup string `yaml:"consumer_group"`
	// QuarantineTopic (on the ingest cluster) receives events that cannot
	// be placed. Default "residency.quarantine".
	QuarantineTopic string `yaml:"quarantine_topic"`
	// DeadLetterTopic (on the ingest cluster) receives events that cannot
	// be decoded. Default "residency.dead-letter".
	DeadLetterTopic string `yaml:"dead_letter_topic"`
	// StartOffset is where a new consumer group starts. Only "earliest" is
	// accepted: starting at the end would skip events already ingested.
	// Default "earliest".
	StartOffset string `yaml:"start_offset"`
	// BatchSize is the most events routed per batch. Default 500.
	BatchSize int `yaml:"batch_size"`
	// Linger is how long a batch waits for more events. Default 5ms.
	Linger time.Duration `yaml:"linger"`
	// MaxBatchBytes bounds the bytes of one batch in flight. Default
	// 16777216 (16 MiB).
	MaxBatchBytes int `yaml:"max_batch_bytes"`
	// MaxValueBytes is the largest event routed, counting key, value and
	// headers; larger ones are dead-lettered as too_large without their
	// body. Keep it 16 KiB below the destination topics' max.message.bytes.
	// Default 1032192 (1 MiB - 16 KiB, within Kafka's default limits).
	MaxValueBytes int `yaml:"max_value_bytes"`
	// RetryMin is the first backoff after a transient failure. Default 50ms.
	RetryMin time.Duration `yaml:"retry_min"`
	// RetryMax caps the backoff. Default 2s.
	RetryMax time.Duration `yaml:"retry_max"`
	// GiveUp is how long a transient failure (publish, commit, Redis,
	// registry) is retried before the router exits with an error, leaving
	// the events uncommitted. Default 2m.
	GiveUp time.Duration `yaml:"give_up"`
	// ShutdownTimeout bounds the flush and commit after SIGINT/SIGTERM.
	// Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// RedisConfig says where the rules store is.
type RedisConfig struct {
	// Addr is Redis's host:port. Default "127.0.0.1:6379".
	Addr string `yaml:"addr"`
	// Prefix starts every key residency uses. Default "residency:".
	Prefix string `yaml:"prefix"`
	// Username for Redis ACLs. Default "": none.
	Username string `yaml:"username"`
	// Password for Redis. Default "": none. Prefer RESIDENCY_REDIS_PASSWORD.
	Password string `yaml:"password"`
	// DB is the Redis database number. Default 0.
	DB int `yaml:"db"`
	// TLS connects to Redis over TLS. Default false.
	TLS bool `yaml:"tls"`
}

// RulesConfig configures how the ruleset is followed.
type RulesConfig struct {
	// File, if set, is a ruleset YAML file used instead of Redis (for
	// development; its version is 0 and pins are not available). Default
	// "": the rules come from Redis.
	File string `yaml:"file"`
	// StalenessBound is how long the last good ruleset stays in force when
	// Redis cannot be reached; after it the router stops (fails closed).
	// Default 30s.
	StalenessBound time.Duration `yaml:"staleness_bound"`
	// PollInterval is how often Redis is checked besides change
	// announcements. Default 500ms.
	PollInterval time.Duration `yaml:"poll_interval"`
	// Pins turns per-user pins on. Default true (ignored with File).
	Pins *bool `yaml:"pins"`
}

// parseConfig decodes YAML, refusing unknown fields.
func parseConfig(data []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %v", errConfig, err)
	}
	return &c, nil
}

// loadConfig reads, decodes and env-overrides the config file; call finish
// after applying flags.
// warnDeprecated logs a warning for every setting that is accepted but no
// longer has an effect.
func (c *Config) warnDeprecated(log *slog.Logger) {
	if c.Kafka.BatchTimeout != 0 {
		log.Warn("kafka.batch_timeout is ignored: the writer sends each batch at once; remove it from the configuration")
	}
}

func loadConfig(path string, lookup func(string) (string, bool)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errConfig, err)
	}
	c, err := parseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.applyEnv(lookup)
	return c, nil
}

var envUnsafe = regexp.MustCompile(`[^A-Z0-9]+`)

// envName is the variable overriding a per-cluster field, e.g.
// RESIDENCY_KAFKA_EU_WEST_BROKERS for cluster "eu-west".
func envName(cluster, field string) string {
	return "RESIDENCY_KAFKA_" + envUnsafe.ReplaceAllString(strings.ToUpper(cluster), "_") + "_" + field
}

// applyEnv applies the RESIDENCY_* overrides documented in
// docs/configuration.md.
func (c *Config) applyEnv(lookup func(string) (string, bool)) {
	str := func(name string, dst *string) {
		if v, ok := lookup(name); ok {
			*dst = v
		}
	}
	list := func(name string, dst *[]string) {
		if v, ok := lookup(name); ok {
			*dst = splitList(v)
		}
	}
	str("RESIDENCY_INSTANCE", &c.Instance)
	str("RESIDENCY_LOG_LEVEL", &c.LogLevel)
	str("RESIDENCY_HTTP_LISTEN", &c.HTTP.Listen)
	str("RESIDENCY_REDIS_ADDR", &c.Redis.Addr)
	str("RESIDENCY_REDIS_PREFIX", &c.Redis.Prefix)
	str("RESIDENCY_REDIS_PASSWORD", &c.Redis.Password)
	str("RESIDENCY_RULES_FILE", &c.Rules.File)
	str("RESIDENCY_ROUTER_CONSUMER_GROUP", &c.Router.ConsumerGroup)
	list("RESIDENCY_ROUTER_INGEST_TOPICS", &c.Router.IngestTopics)
	str("RESIDENCY_SCHEMAS_REGISTRY_URL", &c.Schemas.Registry.URL)
	str("RESIDENCY_SCHEMAS_REGISTRY_PASSWORD", &c.Schemas.Registry.Password)
	for name, cl := range c.Kafka.Clusters {
		list(envName(name, "BROKERS"), &cl.Brokers)
		str(envName(name, "SASL_USERNAME"), &cl.SASL.Username)
		str(envName(name, "SASL_PASSWORD"), &cl.SASL.Password)
		c.Kafka.Clusters[name] = cl
	}
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// setDefault sets *dst to v if it is empty.
func setDefault(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// sharedDefaults fills in the defaults of the parts of the config that
// route and sink share: log level, listen address, Redis, ingest cluster.
func (c *Config) sharedDefaults() {
	setDefault(&c.LogLevel, "info")
	setDefault(&c.HTTP.Listen, ":9090")
	setDefault(&c.Redis.Addr, "127.0.0.1:6379")
	setDefault(&c.Redis.Prefix, rules.DefaultPrefix)
	if c.Kafka.IngestCluster == "" && len(c.Kafka.Clusters) == 1 {
		for name := range c.Kafka.Clusters {
			c.Kafka.IngestCluster = name
		}
	}
}

// finish fills in defaults and validates; errors name the field.
func (c *Config) finish() error {
	c.sharedDefaults()
	setDefault(&c.Router.ConsumerGroup, "residency-router")
	setDefault(&c.Router.QuarantineTopic, "residency.quarantine")
	setDefault(&c.Router.DeadLetterTopic, "residency.dead-letter")
	setDefault(&c.Router.StartOffset, "earliest")

	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("log_level", "%v", err)
	}
	if len(c.Kafka.Clusters) == 0 {
		bad("kafka.clusters", "required: at least the ingest cluster")
	}
	names := make([]string, 0, len(c.Kafka.Clusters))
	for name := range c.Kafka.Clusters {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		cl := c.Kafka.Clusters[name]
		if cl.Name != "" && cl.Name != name {
			bad("kafka.clusters."+name+".name", "%q differs from the key %q (leave it out)", cl.Name, name)
		}
		cl.Name = name
		c.Kafka.Clusters[name] = cl
		if err := cl.Validate("kafka.clusters." + name); err != nil {
			for _, e := range unjoin(err) {
				errs = append(errs, errors.New(strings.TrimPrefix(e.Error(), kafka.ErrConfig.Error()+": ")))
			}
		}
	}
	if c.Kafka.IngestCluster == "" {
		bad("kafka.ingest_cluster", "required with more than one cluster")
	} else if _, ok := c.Kafka.Clusters[c.Kafka.IngestCluster]; !ok && len(c.Kafka.Clusters) > 0 {
		bad("kafka.ingest_cluster", "%q is not in kafka.clusters (%s)", c.Kafka.IngestCluster, strings.Join(names, ", "))
	}
	switch strings.ToLower(c.Kafka.Compression) {
	case "", "none", "gzip", "snappy", "lz4", "zstd":
	default:
		bad("kafka.compression", "%q is not none, gzip, snappy, lz4 or zstd", c.Kafka.Compression)
	}
	if len(c.Router.IngestTopics) == 0 {
		bad("router.ingest_topics", "required")
	}
	topics := map[string]string{}
	for i, tp := range c.Router.IngestTopics {
		topics[tp] = fmt.Sprintf("router.ingest_topics[%d]", i)
	}
	for field, tp := range map[string]string{"router.quarantine_topic": c.Router.QuarantineTopic, "router.dead_letter_topic": c.Router.DeadLetterTopic} {
		if other, dup := topics[tp]; dup {
			bad(field, "%q is also %s", tp, other)
		}
		topics[tp] = field
	}
	switch strings.ToLower(c.Router.StartOffset) {
	case "earliest":
	case "latest":
		// Every ingested offset must be accounted for: a new group starting
		// at the end would skip what is already in the ingest topics.
		bad("router.start_offset", "\"latest\" would skip every event already in the ingest topics when a new consumer group starts; "+
			"only earliest is allowed (to start a group later on purpose, reset its offsets with Kafka's consumer-groups tool)")
	default:
		bad("router.start_offset", "%q is not earliest", c.Router.StartOffset)
	}
	for field, v := range map[string]int{"router.batch_size": c.Router.BatchSize, "router.max_batch_bytes": c.Router.MaxBatchBytes,
		"router.max_value_bytes": c.Router.MaxValueBytes, "redis.db": c.Redis.DB} {
		if v < 0 {
			bad(field, "must not be negative")
		}
	}
	for field, v := range map[string]time.Duration{"router.linger": c.Router.Linger, "router.retry_min": c.Router.RetryMin,
		"router.retry_max": c.Router.RetryMax, "router.give_up": c.Router.GiveUp, "router.shutdown_timeout": c.Router.ShutdownTimeout,
		"rules.staleness_bound": c.Rules.StalenessBound, "rules.poll_interval": c.Rules.PollInterval,
		"kafka.session_timeout": c.Kafka.SessionTimeout, "kafka.rebalance_timeout": c.Kafka.RebalanceTimeout} {
		if v < 0 {
			bad(field, "must not be negative")
		}
	}
	if c.Rules.File == "" && c.Redis.Addr == "" {
		bad("redis.addr", "required unless rules.file is set")
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", errConfig, errors.Join(errs...))
	}
	return nil
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
	}
	return l, nil
}

// pinsEnabled reports whether per-user pins are looked up.
func (c *Config) pinsEnabled() bool {
	return c.Rules.File == "" && (c.Rules.Pins == nil || *c.Rules.Pins)
}
