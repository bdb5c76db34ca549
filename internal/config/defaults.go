package config

import (
	"cmp"
	"fmt"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
)

// Defaults of the config's own settings (the others are the defaults of
// the packages the settings feed: router, sink, rules, schemas, kafka).
const (
	// DefaultListen is http.listen's default.
	DefaultListen = ":9090"
	// DefaultRedisAddr is redis.addr's default.
	DefaultRedisAddr = "127.0.0.1:6379"
	// DefaultConsumerGroup is router.consumer_group's default.
	DefaultConsumerGroup = "residency-router"
	// DefaultQuarantineTopic is router.quarantine_topic's default.
	DefaultQuarantineTopic = "residency.quarantine"
	// DefaultDeadLetterTopic is router.dead_letter_topic's default.
	DefaultDeadLetterTopic = "residency.dead-letter"
	// DefaultSinkQuarantineTopic is sinks[].quarantine_topic's default.
	DefaultSinkQuarantineTopic = "residency.sink-quarantine"
	// DefaultRulesWait is sinks[].rules_wait's default.
	DefaultRulesWait = 30 * time.Second
	// DefaultIsolationLevel is kafka.isolation_level's default.
	DefaultIsolationLevel = "read_uncommitted"
	// DefaultCompression is kafka.compression's default: none, as Kafka's
	// own producers, so that every consumer of the pinned topics reads
	// them whatever its client (some need a codec library installed for
	// lz4 or snappy). lz4 is recommended where every reader supports it:
	// the router's records carry about 300 bytes of residency headers
	// each, mostly the same on every record of a batch, and lz4 cuts the
	// bytes the brokers write and answer for (docs/performance.md,
	// "Compression on the router's produce path").
	DefaultCompression = "none"
)

// fieldDefault is one entry of the defaults table: a field by its YAML
// path, and how to give it its default when it is unset (its zero value).
type fieldDefault struct {
	field string
	apply func() bool // sets the default if the field is unset; reports whether it did
}

// def is the entry of field, at p, whose default is v.
func def[T comparable](field string, p *T, v T) fieldDefault {
	return derived(field, p, func() T { return v })
}

// derived is the entry of field, at p, whose default v computes from the
// fields above it in the table.
func derived[T comparable](field string, p *T, v func() T) fieldDefault {
	return fieldDefault{field: field, apply: func() bool {
		var zero T
		if *p != zero {
			return false
		}
		*p = v()
		return *p != zero
	}}
}

// table is the one defaults table of the config: every field that has a
// default, in the order they are applied (a derived default reads only
// fields above it). The values are the owning packages' exported defaults,
// so a limit has one default whether it is set here or in Go (and `config
// print` shows the values in force).
func (c *Config) table() []fieldDefault {
	r, reg := &c.Router, &c.Schemas.Registry
	t := []fieldDefault{
		def("log_level", &c.LogLevel, "info"),
		def("http.listen", &c.HTTP.Listen, DefaultListen),
		derived("kafka.ingest_cluster", &c.Kafka.IngestCluster, func() string {
			if len(c.Kafka.Clusters) != 1 {
				return ""
			}
			for name := range c.Kafka.Clusters {
				return name
			}
			return ""
		}),
		def("kafka.compression", &c.Kafka.Compression, DefaultCompression),
		def("kafka.partitioner", &c.Kafka.Partitioner, kafka.DefaultPartitioner),
		def("kafka.isolation_level", &c.Kafka.IsolationLevel, DefaultIsolationLevel),
		def("kafka.session_timeout", &c.Kafka.SessionTimeout, kafka.DefaultSessionTimeout),
		def("kafka.rebalance_timeout", &c.Kafka.RebalanceTimeout, kafka.DefaultRebalanceTimeout),
		def("router.consumer_group", &r.ConsumerGroup, DefaultConsumerGroup),
		def("router.quarantine_topic", &r.QuarantineTopic, DefaultQuarantineTopic),
		def("router.dead_letter_topic", &r.DeadLetterTopic, DefaultDeadLetterTopic),
		def("router.start_offset", &r.StartOffset, "earliest"),
		def("router.batch_size", &r.BatchSize, router.DefaultBatchSize),
		def("router.linger", &r.Linger, router.DefaultLinger),
		def("router.max_batch_bytes", &r.MaxBatchBytes, router.DefaultMaxBatchBytes),
		def("router.max_value_bytes", &r.MaxValueBytes, router.DefaultMaxValueBytes),
		def("router.retry_min", &r.RetryMin, router.DefaultRetryMin),
		def("router.retry_max", &r.RetryMax, router.DefaultRetryMax),
		def("router.give_up", &r.GiveUp, router.DefaultGiveUp),
		def("router.shutdown_timeout", &r.ShutdownTimeout, router.DefaultShutdownTimeout),
		def("router.max_inflight_events", &r.MaxInflightEvents, router.DefaultMaxInflightEvents),
		def("router.max_inflight_bytes", &r.MaxInflightBytes, router.DefaultMaxInflightBytes),
		def("router.max_uncommitted_events", &r.MaxUncommittedEvents, router.DefaultMaxUncommittedEvents),
		def("router.max_uncommitted_bytes", &r.MaxUncommittedBytes, router.DefaultMaxUncommittedBytes),
		def("redis.addr", &c.Redis.Addr, DefaultRedisAddr),
		def("redis.prefix", &c.Redis.Prefix, rules.DefaultPrefix),
		def("rules.staleness_bound", &c.Rules.StalenessBound, rules.DefaultStalenessBound),
		def("rules.poll_interval", &c.Rules.PollInterval, rules.DefaultPollInterval),
		def("rules.pins", &c.Rules.Pins, ptr(true)),
		def("rules.pins_resync", &c.Rules.PinsResync, rules.DefaultResyncInterval),
		def("rules.history_topic", &c.Rules.HistoryTopic, rules.DefaultHistoryTopic),
		def("schemas.country_field", &c.Schemas.CountryField, schemas.DefaultCountryField),
		def("schemas.user_id_field", &c.Schemas.UserIDField, schemas.DefaultUserIDField),
		def("schemas.default_framing", &c.Schemas.DefaultFraming, schemas.FramingSingleObject),
		def("schemas.max_value_size", &c.Schemas.MaxValueSize, schemas.DefaultMaxValueSize),
		def("schemas.registry.timeout", &reg.Timeout, schemas.DefaultRegistryTimeout),
		def("schemas.registry.retries", &reg.Retries, schemas.DefaultRegistryRetries),
		def("schemas.registry.backoff", &reg.Backoff, schemas.DefaultRegistryBackoff),
		def("schemas.registry.max_backoff", &reg.MaxBackoff, schemas.DefaultRegistryMaxBackoff),
		def("schemas.registry.unknown_ttl", &reg.UnknownTTL, schemas.DefaultRegistryUnknownTTL),
		def("purge.max_scan", &c.Purge.MaxScan, erasure.DefaultMaxScan),
		def("erasure.list_topics", &c.Erasure.ListTopics, ptr(true)),
		def("residue.max_listed", &c.Residue.MaxListed, erasure.DefaultMaxListed),
	}
	t = append(t, c.topicsDefaults()...)
	for _, name := range c.ClusterNames() {
		cl := c.Kafka.Clusters[name]
		if cl.Name == "" { // the key names the cluster
			cl.Name = name
		}
		cl.ClientID = cmp.Or(cl.ClientID, kafka.DefaultClientID)
		cl.DialTimeout = cmp.Or(cl.DialTimeout, kafka.DefaultDialTimeout)
		c.Kafka.Clusters[name] = cl
	}
	for i := range c.Sinks {
		sc := &c.Sinks[i]
		f := func(name string) string { return fmt.Sprintf("sinks[%d].%s", i, name) }
		t = append(t,
			derived(f("consumer_group"), &sc.ConsumerGroup, func() string {
				if sc.Store == "" {
					return ""
				}
				return "residency-sink-" + sc.Store
			}),
			def(f("quarantine_topic"), &sc.QuarantineTopic, DefaultSinkQuarantineTopic),
			derived(f("quarantine_cluster"), &sc.QuarantineCluster, func() string { return c.Kafka.IngestCluster }),
			def(f("start_offset"), &sc.StartOffset, "earliest"),
			def(f("batch_size"), &sc.BatchSize, sink.DefaultBatchSize),
			def(f("batch_timeout"), &sc.BatchTimeout, sink.DefaultBatchTimeout),
			def(f("drain_timeout"), &sc.DrainTimeout, sink.DefaultDrainTimeout),
			// A write may land up to write_timeout after its approval was
			// checked: keep that below the time an unconfirmed ruleset
			// stays in force.
			derived(f("write_timeout"), &sc.WriteTimeout, func() time.Duration {
				if sink.DefaultWriteTimeout >= c.Rules.StalenessBound {
					return c.Rules.StalenessBound / 2
				}
				return sink.DefaultWriteTimeout
			}),
			def(f("rules_wait"), &sc.RulesWait, DefaultRulesWait),
			derived(f("listen"), &sc.Listen, func() string { return c.HTTP.Listen }),
		)
		if pg := sc.Postgres; pg != nil {
			t = append(t,
				def(f("postgres.table"), &pg.Table, postgres.DefaultTable),
				def(f("postgres.max_conns"), &pg.MaxConns, postgres.DefaultMaxConns),
				def(f("postgres.connect_timeout"), &pg.ConnectTimeout, postgres.DefaultConnectTimeout))
		}
		if ob := sc.ObjectStore; ob != nil {
			t = append(t, def(f("objectstore.codec"), &ob.Codec, objectstore.DefaultCodec))
		}
	}
	// An erasure's second pass waits out every sink's longest write.
	t = append(t, derived("erasure.settle", &c.Erasure.Settle, func() time.Duration {
		settle := erasure.DefaultSettle
		for _, sc := range c.Sinks {
			settle = max(settle, sc.WriteTimeout+10*time.Second)
		}
		return settle
	}))
	return t
}

// applyDefaults applies the defaults table, once.
func (c *Config) applyDefaults() {
	if c.finished {
		return
	}
	c.finished = true
	c.secretProblems = c.readSecretFiles()
	c.defaulted = map[string]bool{}
	for _, d := range c.table() {
		if d.apply() {
			c.defaulted[d.field] = true
		}
	}
}

func ptr[T any](v T) *T { return &v }
