// Package config is the YAML configuration of every residency command that
// takes --config (route, sink, replay, explain): the model (Config), how it
// is read (Load: the file, then RESIDENCY_* environment variables), its one
// defaults table (defaults.go, applied once by Finish) and its one
// validation (Config.Validate), which returns every problem, each naming
// its field path (router.batch_size, kafka.clusters.eu.tls.ca_file,
// sinks[0].store), never a Go type. cmd/residency parses flags, calls
// Load and Finish, and wires.
//
// This package depends on the adapters whose settings it holds
// (connectors/kafka, connectors/redis, connectors/postgres,
// connectors/objectstore) and on the packages whose defaults it applies;
// none of them depends on it.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/schemas"
)

// ErrInvalid marks an invalid configuration (an *Error); the text names
// the field. Commands exit with code 2 on it.
var ErrInvalid = errors.New("invalid config")

// Config is the YAML configuration of the residency commands that take
// --config (route, sink, replay, explain; see deploy/examples/residency.yaml
// and docs/configuration.md). Values come from the file, then RESIDENCY_*
// environment variables, then flags. Every command checks the whole file
// (Finish: defaults, then Validate) before wiring anything.
type Config struct {
	// Instance names this router in the residency-router header and logs.
	// Default: the host name (route), "replay" (replay).
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
	Redis redis.Config `yaml:"redis"`
	// Rules configures the ruleset cache (or a fixed ruleset file).
	Rules RulesConfig `yaml:"rules"`
	// Schemas configures how event fields are read (framing, field paths,
	// schema registry); see schemas.ExtractorConfig for each field's default.
	Schemas schemas.ExtractorConfig `yaml:"schemas"`
	// Sinks are the sinks `residency sink --store NAME` can run (see
	// SinkConfig and docs/sinks.md). Default: none.
	Sinks []SinkConfig `yaml:"sinks"`
	// Topics configures the topics `residency topics` creates and checks.
	Topics TopicsConfig `yaml:"topics"`
	// Audit is the audit log (docs/audit.md). Default: off.
	Audit AuditConfig `yaml:"audit"`
	// Purge configures `residency purge` (docs/erasure.md).
	Purge PurgeConfig `yaml:"purge"`
	// Erasure configures `residency erase` (docs/erasure.md).
	Erasure ErasureConfig `yaml:"erasure"`
	// Residue configures `residency residue` (docs/erasure.md).
	Residue ResidueConfig `yaml:"residue"`

	file           string          // the file it was read from, for errors
	secretProblems []Problem       // the problems of reading the *_file secrets
	defaulted      map[string]bool // the fields Finish gave their default, by path
	finished       bool            // defaults applied
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
	// Compression of written batches (the pinned, quarantine and
	// dead-letter topics the router writes, the sinks' quarantine, replay):
	// none, gzip, snappy, lz4 or zstd. Default "none" (DefaultCompression;
	// lz4 is recommended where every reader supports it).
	Compression string `yaml:"compression"`
	// Partitioner puts a record's key on a partition of the topic written
	// (pinned, quarantine, dead-letter): "murmur2", the Java client's
	// partitioner (Kafka Streams, ksqlDB and Java producers place keys
	// alike), or "fnv1a", kafka-go's Hash, residency's placement before
	// murmur2 became the default (see docs/configuration.md before
	// switching a running deployment). Default "murmur2".
	Partitioner string `yaml:"partitioner"`
	// IsolationLevel is what the consumers read of transactional
	// producers' records: "read_uncommitted" (every record) or
	// "read_committed" (only committed transactions' records, up to the
	// last stable offset). Default "read_uncommitted".
	IsolationLevel string `yaml:"isolation_level"`
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
	// GiveUp is how long a destination cluster may leave records
	// unacknowledged before its regions are reported down (not ready,
	// residency_router_region_ready 0, logged once); the router keeps
	// retrying and never exits for it. Default 2m.
	GiveUp time.Duration `yaml:"give_up"`
	// MaxInflightEvents bounds the events between fetch and settlement
	// (acknowledged by every destination, with every earlier event of
	// their partition); fetching waits while it is reached. Default 10000.
	MaxInflightEvents int `yaml:"max_inflight_events"`
	// MaxInflightBytes bounds the key, value and header bytes of the events
	// between fetch and settlement; fetching waits while it is reached (one
	// batch may overshoot it by up to router.max_batch_bytes). Default
	// 16777216 (16 MiB).
	MaxInflightBytes int `yaml:"max_inflight_bytes"`
	// MaxUncommittedEvents bounds the settled events whose offsets are not
	// committed yet; fetching waits while it is reached, and the router
	// commits early once half of it is reached. Default 40000.
	MaxUncommittedEvents int `yaml:"max_uncommitted_events"`
	// MaxUncommittedBytes bounds the encoded audit leaves of the settled
	// events not committed yet (audit on), as max_uncommitted_events
	// bounds their number. Default 16777216 (16 MiB).
	MaxUncommittedBytes int `yaml:"max_uncommitted_bytes"`
	// MemoryLimit is the Go runtime's soft memory limit for `residency
	// route`, in bytes (runtime/debug.SetMemoryLimit, as GOMEMLIMIT): the
	// garbage collector works harder as the heap nears it instead of
	// letting it double (GOGC=100) over what is live. It is soft: a router
	// whose live memory exceeds it keeps running, spending more CPU on GC.
	// Default 0: the GOMEMLIMIT environment variable when set, otherwise
	// 90% of the container's memory limit (cgroup v2 memory.max or v1
	// memory.limit_in_bytes) less the binary's resident pages (RssFile at
	// start, about 25 MiB, which the container counts and the Go runtime
	// does not) when there is one, lowered once the pins are loaded by
	// the pin set's memory (held outside the Go heap, about 29 MB per
	// million pins), otherwise no limit. A limit set here or in GOMEMLIMIT
	// bounds the heap only: the pins come on top of it.
	MemoryLimit int64 `yaml:"memory_limit"`
	// ShutdownTimeout bounds the flush and commit after SIGINT/SIGTERM.
	// Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
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
	// Pins turns per-user pins on. Default true (ignored with File). Every
	// router and sink keeps the whole pin set in memory, following Redis
	// (see docs/rules.md); it fails closed past StalenessBound as the
	// ruleset does.
	Pins *bool `yaml:"pins"`
	// PinsResync is how often the whole pin set is read from Redis again,
	// besides after every re-subscription to its changes: the bound for a
	// pin written to Redis without its announcement. Default 5m.
	PinsResync time.Duration `yaml:"pins_resync"`
	// HistoryTopic is the compacted topic on the ingest cluster that keeps
	// every applied ruleset version outside Redis, written by `residency
	// rules apply` and `rollback` and read back by `rules restore` (see
	// docs/rules.md). Default "residency.rules-history".
	HistoryTopic string `yaml:"history_topic"`
}

// Parse decodes YAML. Every unknown field and every value of the wrong
// type is reported by its field path (an *Error), never by the Go type it
// was meant for. ${VAR} is not expanded (Load expands it). Call Finish
// before using the config.
func Parse(data []byte) (*Config, error) { return parse(data, nil) }

// parse decodes YAML, expanding ${VAR} in every value with lookup (nil: no
// expansion).
func parse(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{Problems: []Problem{{Message: OneLine(err.Error())}}}
	}
	var c Config
	if doc.Kind == 0 {
		return &c, nil // an empty file
	}
	var ps problems
	k := &checker{ps: &ps, lookup: lookup, orig: map[*yaml.Node]string{}}
	k.check(&doc, reflect.TypeFor[Config](), "")
	if len(ps) > 0 {
		return nil, &Error{Problems: ps}
	}
	// The checker has reported every unknown field and wrong type, and
	// expanded the values in place.
	if err := doc.Decode(&c); err != nil {
		return nil, &Error{Problems: []Problem{{Message: OneLine(err.Error())}}}
	}
	return &c, nil
}

// Deprecated returns a warning for every setting that is accepted but no
// longer has an effect.
func (c *Config) Deprecated() []Problem {
	var ps []Problem
	if c.Kafka.BatchTimeout != 0 {
		ps = append(ps, Problem{Field: "kafka.batch_timeout", Message: "is ignored: the writer sends each batch at once; remove it from the configuration"})
	}
	return ps
}

// WarnDeprecated logs a warning for every setting that is accepted but no
// longer has an effect (Deprecated).
func (c *Config) WarnDeprecated(log *slog.Logger) {
	for _, p := range c.Deprecated() {
		log.Warn(p.Field + " " + p.Message)
	}
}

// Load reads the config file, expands ${VAR} in its values (and $$ to $)
// and applies the RESIDENCY_* overrides, both from lookup (the
// environment: os.LookupEnv); call Finish after applying flags. Errors are
// *Error, every problem naming its field.
func Load(path string, lookup func(string) (string, bool)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Problems: []Problem{{Message: "cannot read the config: " + OneLine(err.Error())}}}
	}
	c, err := parse(data, lookup)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = path
		}
		return nil, err
	}
	c.file = path
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
			*dst = SplitList(v)
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

// SplitList splits a comma-separated list, trimming spaces and dropping
// empty items.
func SplitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// ParseLevel reads a log_level: debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not debug, info, warn or error", s)
	}
	return l, nil
}

// File is the file the config was read from ("" if none).
func (c *Config) File() string { return c.file }

// PinsEnabled reports whether per-user pins are looked up.
func (c *Config) PinsEnabled() bool {
	return c.Rules.File == "" && (c.Rules.Pins == nil || *c.Rules.Pins)
}
