package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/connectors/postgres"
)

// SinkConfig is one entry of the config's sinks section: a sink draining one
// region's pinned topic into one store. Exactly one of Postgres and
// ObjectStore is set. The rest of the file (kafka, redis, rules, schemas,
// http, log_level) is shared with `residency route`.
type SinkConfig struct {
	// Store is the store's name in the ruleset (stores[].name), and what
	// --store selects. Required.
	Store string `yaml:"store"`
	// Region is the region whose pinned topic is drained. Required.
	Region string `yaml:"region"`
	// Topic is the pinned topic. Default: the region's topic in the ruleset
	// in force at start (and it must stay that topic).
	Topic string `yaml:"topic"`
	// Cluster is the kafka.clusters entry holding the pinned topic.
	// Default: the region's cluster in the ruleset in force at start.
	Cluster string `yaml:"cluster"`
	// ConsumerGroup is the sink's consumer group. Default
	// "residency-sink-" + Store.
	ConsumerGroup string `yaml:"consumer_group"`
	// QuarantineTopic receives the events the store must not hold.
	// Default "residency.sink-quarantine".
	QuarantineTopic string `yaml:"quarantine_topic"`
	// QuarantineCluster is the kafka.clusters entry holding
	// QuarantineTopic. Default: kafka.ingest_cluster (quarantine stays on
	// the ingest cluster).
	QuarantineCluster string `yaml:"quarantine_cluster"`
	// StartOffset is where a new consumer group starts. Only "earliest" is
	// accepted: starting at the end would skip events already pinned.
	// Default "earliest".
	StartOffset string `yaml:"start_offset"`
	// BatchSize is the most events per write. Default 1000.
	BatchSize int `yaml:"batch_size"`
	// BatchTimeout is how long a batch waits to fill. Default 200ms.
	BatchTimeout time.Duration `yaml:"batch_timeout"`
	// DrainTimeout bounds writing and committing the batch in hand after
	// SIGINT/SIGTERM. Default 10s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// WriteTimeout bounds each write to the store; a write that takes
	// longer is cancelled and retried (nothing is committed). It must be
	// less than rules.staleness_bound. Default: 20s, or half of
	// rules.staleness_bound when that is 20s or less.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// RulesWait is how long to wait at start for the first ruleset before
	// exiting with code 3. Default 30s.
	RulesWait time.Duration `yaml:"rules_wait"`
	// Listen is the host:port of /metrics, /healthz and /readyz for this
	// sink, "off" to disable. Default: http.listen.
	Listen string `yaml:"listen"`
	// Postgres is the PostgreSQL store. Default: none.
	Postgres *postgres.Config `yaml:"postgres"`
	// ObjectStore is the object store. Default: none.
	ObjectStore *objectstore.Config `yaml:"objectstore"`
}

// validateSinks checks every sinks[] entry (after defaults), and that the
// one scope s runs exists.
func (c *Config) validateSinks(ps *problems, s Scope) {
	stores := map[string]int{}
	groups := map[string]string{c.Router.ConsumerGroup: "router.consumer_group"}
	// Topics of the ingest cluster a sink quarantine topic must not be.
	routerTopics := map[string]string{c.Router.QuarantineTopic: "router.quarantine_topic", c.Router.DeadLetterTopic: "router.dead_letter_topic"}
	for i, tp := range c.Router.IngestTopics {
		routerTopics[tp] = fmt.Sprintf("router.ingest_topics[%d]", i)
	}
	for i := range c.Sinks {
		sc := &c.Sinks[i]
		f := func(name string) string { return fmt.Sprintf("sinks[%d].%s", i, name) }
		dupStore := false
		switch j, dup := stores[sc.Store]; {
		case sc.Store == "":
			ps.add(f("store"), "required: the store's name in the ruleset (stores[].name)")
		case dup:
			ps.add(f("store"), "%q is also sinks[%d].store", sc.Store, j)
			dupStore = true
		default:
			stores[sc.Store] = i
		}
		if sc.Region == "" {
			ps.add(f("region"), "required")
		}
		if other, dup := groups[sc.ConsumerGroup]; dup && sc.ConsumerGroup != "" && !dupStore {
			ps.add(f("consumer_group"), "%q is also %s: each sink needs its own consumer group", sc.ConsumerGroup, other)
		} else if !dup {
			groups[sc.ConsumerGroup] = f("consumer_group")
		}
		// (A quarantine_cluster defaulted to a bad kafka.ingest_cluster is
		// reported once, there.)
		_, ingestKnown := c.Kafka.Clusters[c.Kafka.IngestCluster]
		if _, ok := c.Kafka.Clusters[sc.QuarantineCluster]; !ok && len(c.Kafka.Clusters) > 0 && (ingestKnown || sc.QuarantineCluster != c.Kafka.IngestCluster) {
			ps.add(f("quarantine_cluster"), "%q is not in kafka.clusters (set it or kafka.ingest_cluster)", sc.QuarantineCluster)
		}
		if _, ok := c.Kafka.Clusters[sc.Cluster]; !ok && sc.Cluster != "" && len(c.Kafka.Clusters) > 0 {
			ps.add(f("cluster"), "%q is not in kafka.clusters", sc.Cluster)
		}
		if other, clash := routerTopics[sc.QuarantineTopic]; clash && sc.QuarantineCluster == c.Kafka.IngestCluster {
			ps.add(f("quarantine_topic"), "%q is also %s on the ingest cluster: the sink quarantine needs its own topic", sc.QuarantineTopic, other)
		}
		switch strings.ToLower(sc.StartOffset) {
		case "earliest":
		case "latest":
			// A new sink group starting at the end would never store what the
			// pinned topic already holds.
			ps.add(f("start_offset"), "\"latest\" would skip every event already in the pinned topic when a new consumer group starts; only earliest is allowed")
		default:
			ps.add(f("start_offset"), "%q is not earliest", sc.StartOffset)
		}
		notNegative(ps, map[string]int{f("batch_size"): sc.BatchSize})
		notNegative(ps, map[string]time.Duration{f("batch_timeout"): sc.BatchTimeout, f("drain_timeout"): sc.DrainTimeout,
			f("rules_wait"): sc.RulesWait, f("write_timeout"): sc.WriteTimeout})
		if staleness := c.Rules.StalenessBound; sc.WriteTimeout >= staleness && staleness > 0 {
			ps.add(f("write_timeout"), "%s must be less than rules.staleness_bound (%s): a write could land after its approval went stale",
				sc.WriteTimeout, c.show("rules.staleness_bound", staleness))
		}
		checkListen(ps, f("listen"), sc.Listen)
		switch {
		case sc.Postgres == nil && sc.ObjectStore == nil:
			ps.add(f("postgres"), "one of sinks[%d].postgres and sinks[%d].objectstore is required", i, i)
		case sc.Postgres != nil && sc.ObjectStore != nil:
			ps.add(f("objectstore"), "set only one of sinks[%d].postgres and sinks[%d].objectstore", i, i)
		case sc.Postgres != nil:
			if err := sc.Postgres.Validate(); err != nil {
				ps.addErr(f("postgres"), err)
			}
		default:
			if err := sc.ObjectStore.Validate(); err != nil {
				ps.addErr(f("objectstore"), err)
			}
		}
	}
	if s.Sink != "" {
		if _, ok := stores[s.Sink]; !ok {
			var names []string
			for _, sc := range c.Sinks {
				if sc.Store != "" {
					names = append(names, sc.Store)
				}
			}
			ps.add("sinks", "no entry with store %q (have: %s)", s.Sink, cmp.Or(strings.Join(names, ", "), "none"))
		}
	}
}

// SinkQuarantineTopic is the sink quarantine topic a replay reads: topic if
// set, else the only one the config's sinks use (the default when none is
// configured). It must be on the ingest cluster, where replay reads.
func (cfg *Config) SinkQuarantineTopic(topic string) (string, error) {
	clusters := map[string]string{} // topic → cluster
	var topics []string
	for _, sc := range cfg.Sinks {
		t := cmp.Or(sc.QuarantineTopic, DefaultSinkQuarantineTopic)
		if _, ok := clusters[t]; !ok {
			topics = append(topics, t)
		}
		if cl := cmp.Or(sc.QuarantineCluster, cfg.Kafka.IngestCluster); clusters[t] == "" || cl != cfg.Kafka.IngestCluster {
			clusters[t] = cl
		}
	}
	if len(topics) == 0 {
		topics = []string{DefaultSinkQuarantineTopic}
		clusters[DefaultSinkQuarantineTopic] = cfg.Kafka.IngestCluster
	}
	switch {
	case topic == "" && len(topics) > 1:
		return "", fmt.Errorf("--topic: the config's sinks use %d quarantine topics %v; name one", len(topics), topics)
	case topic == "":
		topic = topics[0]
	case !slices.Contains(topics, topic):
		return "", fmt.Errorf("--topic %q is not the quarantine_topic of any sink %v", topic, topics)
	}
	if cl := clusters[topic]; cl != cfg.Kafka.IngestCluster {
		return "", fmt.Errorf("sink quarantine topic %q is on cluster %q, not the ingest cluster %q replay reads from", topic, cl, cfg.Kafka.IngestCluster)
	}
	return topic, nil
}
