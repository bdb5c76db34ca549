package config

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/router/rules"
)

// Defaults of the topics section and the names of the topics residency
// derives without a field of its own.
const (
	// DefaultReplicationFactor is topics.replication_factor's default.
	DefaultReplicationFactor = 3
	// DefaultIngestPartitions is topics.ingest.partitions' default.
	DefaultIngestPartitions = 12
	// DefaultPinnedPartitions is topics.pinned.partitions' default.
	DefaultPinnedPartitions = 6
	// DefaultPinnedRetention is topics.pinned.retention's default: 7 days,
	// Kafka's own, for sinks to catch up after an outage.
	DefaultPinnedRetention = 7 * 24 * time.Hour
	// DefaultQuarantinePartitions is the default partitions of
	// topics.quarantine, topics.dead_letter.
	DefaultQuarantinePartitions = 3
	// DefaultReplayRetention is the default retention of
	// topics.quarantine, topics.dead_letter, topics.hold and topics.audit:
	// 30 days. Quarantined and dead-lettered events wait there for a fix
	// (a ruleset change through review, a producer's release) and a
	// replay; held events for their region's cluster to come back; audit
	// records for the integrator. 30 days outlasts a monthly release cycle
	// plus the time to notice the alert, and the ingest cluster already
	// holds the same data (the same residency).
	DefaultReplayRetention = 30 * 24 * time.Hour
	// DefaultHoldPartitions is topics.hold.partitions' default.
	DefaultHoldPartitions = 6
	// DefaultHoldTopicPrefix starts the hold topic of every region
	// (residency.hold.<region>, on the ingest cluster), where the router
	// parks a region's events while its cluster is down.
	DefaultHoldTopicPrefix = "residency.hold."
	// DefaultRulesetTopic is rules.history_topic's default: the ruleset
	// history topic (compacted, on the ingest cluster), every ruleset
	// version ever applied, by number.
	DefaultRulesetTopic = rules.DefaultHistoryTopic
	// DefaultAuditTopic is audit.topic's default: the audit topic (one
	// partition, on the ingest cluster), see docs/audit.md.
	DefaultAuditTopic = "residency.audit"
	// kafkaMaxMessageBytes is Kafka's default max.message.bytes.
	kafkaMaxMessageBytes = 1048588
)

// TopicsConfig configures the topics `residency topics plan|apply|check`
// derives from the config and the ruleset (see docs/operations.md).
type TopicsConfig struct {
	// ReplicationFactor of every topic created. Default 3; set 1 only for
	// a single-broker development cluster.
	ReplicationFactor int `yaml:"replication_factor"`
	// MinInsyncReplicas is min.insync.replicas of every topic created or
	// checked (routers and sinks write with acks=all). Default: 2 when
	// replication_factor is 3 or more, else 1.
	MinInsyncReplicas int `yaml:"min_insync_replicas"`
	// Ingest: the partitions of an ingest topic `topics apply` creates
	// when it is missing (its configs are the producers' and are never
	// changed). Default 12.
	Ingest TopicSettings `yaml:"ingest"`
	// Pinned: the regions' pinned topics. Defaults: 6 partitions, 168h.
	Pinned TopicSettings `yaml:"pinned"`
	// Quarantine: router.quarantine_topic and the sinks' quarantine
	// topics. Defaults: 3 partitions, 720h (30 days).
	Quarantine TopicSettings `yaml:"quarantine"`
	// DeadLetter: router.dead_letter_topic. Defaults: 3 partitions, 720h.
	DeadLetter TopicSettings `yaml:"dead_letter"`
	// Hold: the regions' hold topics (HoldPrefix followed by the region's
	// name). Defaults: 6 partitions, 720h.
	Hold TopicSettings `yaml:"hold"`
	// HoldPrefix starts every region's hold topic name (on the ingest
	// cluster), for deployments whose topic names follow a convention:
	// letters, digits, '.', '_' and '-', at most 200 of them. Default
	// "residency.hold." (DefaultHoldTopicPrefix).
	HoldPrefix string `yaml:"hold_prefix"`
	// Audit: the audit topic (always one partition). Default retention
	// 720h.
	Audit TopicSettings `yaml:"audit"`
}

// TopicSettings are the partitions and retention of one kind of topic.
type TopicSettings struct {
	// Partitions is the fewest partitions (those created have this many).
	// Default: per kind (see TopicsConfig).
	Partitions int `yaml:"partitions"`
	// Retention is retention.ms: how long records are kept (a topic
	// keeping them longer, or for ever, is fine). Default: per kind.
	Retention time.Duration `yaml:"retention"`
}

func (c *Config) topicsDefaults() []fieldDefault {
	t := &c.Topics
	return []fieldDefault{
		def("rules.history_topic", &c.Rules.HistoryTopic, DefaultRulesetTopic),
		def("audit.topic", &c.Audit.Topic, DefaultAuditTopic),
		def("topics.replication_factor", &t.ReplicationFactor, DefaultReplicationFactor),
		derived("topics.min_insync_replicas", &t.MinInsyncReplicas, func() int {
			if t.ReplicationFactor >= 3 {
				return 2
			}
			return 1
		}),
		def("topics.ingest.partitions", &t.Ingest.Partitions, DefaultIngestPartitions),
		def("topics.pinned.partitions", &t.Pinned.Partitions, DefaultPinnedPartitions),
		def("topics.pinned.retention", &t.Pinned.Retention, DefaultPinnedRetention),
		def("topics.quarantine.partitions", &t.Quarantine.Partitions, DefaultQuarantinePartitions),
		def("topics.quarantine.retention", &t.Quarantine.Retention, DefaultReplayRetention),
		def("topics.dead_letter.partitions", &t.DeadLetter.Partitions, DefaultQuarantinePartitions),
		def("topics.dead_letter.retention", &t.DeadLetter.Retention, DefaultReplayRetention),
		def("topics.hold.partitions", &t.Hold.Partitions, DefaultHoldPartitions),
		def("topics.hold.retention", &t.Hold.Retention, DefaultReplayRetention),
		def("topics.hold_prefix", &t.HoldPrefix, DefaultHoldTopicPrefix),
		def("topics.audit.partitions", &t.Audit.Partitions, 1),
		def("topics.audit.retention", &t.Audit.Retention, DefaultReplayRetention),
	}
}

func (c *Config) validateTopics(ps *problems) {
	t := &c.Topics
	if t.ReplicationFactor < 1 {
		ps.add("topics.replication_factor", "must be at least 1")
	}
	switch {
	case t.MinInsyncReplicas < 1:
		ps.add("topics.min_insync_replicas", "must be at least 1")
	case t.MinInsyncReplicas > t.ReplicationFactor && t.ReplicationFactor >= 1:
		ps.add("topics.min_insync_replicas", "%d is more than topics.replication_factor (%s): every write with acks=all would fail",
			t.MinInsyncReplicas, c.show("topics.replication_factor", t.ReplicationFactor))
	}
	for _, k := range []struct {
		field string
		s     TopicSettings
	}{{"ingest", t.Ingest}, {"pinned", t.Pinned}, {"quarantine", t.Quarantine}, {"dead_letter", t.DeadLetter}, {"hold", t.Hold}, {"audit", t.Audit}} {
		if k.s.Partitions < 1 {
			ps.add("topics."+k.field+".partitions", "must be at least 1")
		}
		if k.s.Retention < 0 {
			ps.add("topics."+k.field+".retention", "must not be negative")
		} else if k.s.Retention > 0 && k.s.Retention < time.Millisecond {
			ps.add("topics."+k.field+".retention", "%s is less than a millisecond", k.s.Retention)
		}
	}
	if t.Ingest.Retention != 0 {
		ps.add("topics.ingest.retention", "the ingest topics' retention is the producers' to set (and purge's to shorten): residency never changes it")
	}
	if !legalTopicPrefix(t.HoldPrefix) {
		ps.add("topics.hold_prefix", "%q: a topic name prefix is 1 to 200 of letters, digits, '.', '_' and '-'", t.HoldPrefix)
	}
	if t.Audit.Partitions != 1 {
		ps.add("topics.audit.partitions", "%d: the audit topic has one partition (one total order for the audit log)", t.Audit.Partitions)
	}
}

// HoldTopic is the hold topic of region (on the ingest cluster):
// topics.hold_prefix followed by the region's name.
func (c *Config) HoldTopic(region string) string { return c.holdPrefix() + region }

// holdPrefix is topics.hold_prefix, its default before defaults are set.
func (c *Config) holdPrefix() string { return cmp.Or(c.Topics.HoldPrefix, DefaultHoldTopicPrefix) }

// legalTopicPrefix reports whether p may start Kafka topic names: 1 to 200
// of the characters Kafka allows in them (room is left for the rest of
// the name within Kafka's 249).
func legalTopicPrefix(p string) bool {
	if len(p) == 0 || len(p) > 200 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// RulesetTopic is the ruleset history topic (on the ingest cluster):
// rules.history_topic.
func (c *Config) RulesetTopic() string { return cmp.Or(c.Rules.HistoryTopic, DefaultRulesetTopic) }

// AuditTopic is the audit topic (on the ingest cluster): audit.topic.
func (c *Config) AuditTopic() string { return cmp.Or(c.Audit.Topic, DefaultAuditTopic) }

// Topic kinds of NeededTopic.
const (
	TopicIngest         = "ingest"
	TopicPinned         = "pinned"
	TopicQuarantine     = "quarantine"
	TopicDeadLetter     = "dead-letter"
	TopicSinkQuarantine = "sink-quarantine"
	TopicHold           = "hold"
	TopicRulesets       = "rulesets"
	TopicAudit          = "audit"
)

// NeededTopic is one topic the config and a ruleset need, on one cluster.
type NeededTopic struct {
	// Cluster is the kafka.clusters entry holding the topic.
	Cluster string `json:"cluster"`
	// Kind is one of the Topic* kinds.
	Kind string `json:"kind"`
	// For says what the topic is for, in words ("pinned topic of region
	// us", "router.quarantine_topic").
	For []string `json:"for"`
	// Spec is the topic as wanted.
	Spec kafka.TopicSpec `json:"want"`
	// Managed is false for the ingest topics: created when missing, but
	// their configs and partitions are the producers' and never changed.
	Managed bool `json:"managed"`
}

// anyTimestamp is the value of message.timestamp.before.max.ms and
// message.timestamp.after.max.ms that accepts every timestamp (Long.MAX_VALUE).
const anyTimestamp = "9223372036854775807"

// TimestampLimitConfigs are the topic configs that bound how far a
// record's timestamp may be from the broker's clock (Kafka 3.6 and
// later, KIP-937): NeededTopics sets both to accept any timestamp on the
// topics the router writes. A cluster whose brokers do not know them
// (older Kafka, the embedded stand-in) must be given specs without them
// (`topics` checks the broker's log.message.timestamp.after.max.ms).
var TimestampLimitConfigs = []string{"message.timestamp.before.max.ms", "message.timestamp.after.max.ms"}

// NeededTopics returns every topic the config and the ruleset rs need, in a
// stable order (by cluster, then kind, then name), each with the
// partitions, replication factor and configs (cleanup.policy,
// min.insync.replicas, retention.ms, message.timestamp.type, and
// max.message.bytes when router.max_value_bytes needs more than Kafka's
// default) of the topics section; and the problems that keep a topic from
// being placed (a region on a cluster the config does not have, a topic
// needed for two purposes). Call it after Finish.
func (c *Config) NeededTopics(rs *rules.Ruleset) ([]NeededTopic, []Problem) {
	var ps problems
	t := &c.Topics
	byKey := map[[2]string]*NeededTopic{}
	var order [][2]string
	ingest := c.Kafka.IngestCluster
	records := func(retention time.Duration, policy string) map[string]string {
		m := map[string]string{
			"cleanup.policy":         policy,
			"min.insync.replicas":    strconv.Itoa(t.MinInsyncReplicas),
			"message.timestamp.type": "CreateTime", // the event's own time, kept by the router and replay
		}
		if retention > 0 && policy == "delete" {
			m["retention.ms"] = strconv.FormatInt(retention.Milliseconds(), 10)
		}
		return m
	}
	// Topics the router writes must take its largest event, and any
	// timestamp: an event keeps its own (CreateTime) timestamp, which the
	// ingest topic accepted under its own message.timestamp.*.max.ms; a
	// destination stricter than that (Kafka 4's default refuses more than
	// an hour ahead) answers INVALID_TIMESTAMP for the whole batch, which
	// the router produces again for ever, stopping every ingest partition
	// that writes to that destination partition.
	routed := func(m map[string]string) map[string]string {
		if need := c.Router.MaxValueBytes + 16<<10; need > kafkaMaxMessageBytes {
			m["max.message.bytes"] = strconv.Itoa(need)
		}
		for _, k := range TimestampLimitConfigs {
			m[k] = anyTimestamp
		}
		return m
	}
	add := func(cluster, kind, name, purpose string, partitions int, configs map[string]string, managed bool) {
		k := [2]string{cluster, name}
		if nt, ok := byKey[k]; ok {
			if nt.Kind != kind && !(kinds(nt.Kind, kind, TopicQuarantine, TopicSinkQuarantine)) {
				ps.add(fieldOf(kind), "topic %s on cluster %s is both %s and %s: each needs its own topic", name, cluster, strings.Join(nt.For, ", "), purpose)
			}
			if !slices.Contains(nt.For, purpose) {
				nt.For = append(nt.For, purpose)
			}
			return
		}
		byKey[k] = &NeededTopic{Cluster: cluster, Kind: kind, For: []string{purpose}, Managed: managed,
			Spec: kafka.TopicSpec{Name: name, Partitions: partitions, ReplicationFactor: t.ReplicationFactor, Configs: configs}}
		order = append(order, k)
	}
	for i, tp := range c.Router.IngestTopics {
		add(ingest, TopicIngest, tp, fmt.Sprintf("router.ingest_topics[%d]", i), t.Ingest.Partitions, map[string]string{}, false)
	}
	add(ingest, TopicQuarantine, c.Router.QuarantineTopic, "router.quarantine_topic", t.Quarantine.Partitions, routed(records(t.Quarantine.Retention, "delete")), true)
	add(ingest, TopicDeadLetter, c.Router.DeadLetterTopic, "router.dead_letter_topic", t.DeadLetter.Partitions, routed(records(t.DeadLetter.Retention, "delete")), true)
	for i, sc := range c.Sinks {
		add(sc.QuarantineCluster, TopicSinkQuarantine, sc.QuarantineTopic, fmt.Sprintf("sinks[%d].quarantine_topic", i),
			t.Quarantine.Partitions, routed(records(t.Quarantine.Retention, "delete")), true)
	}
	if rs != nil {
		c.missingClusters(&ps, rs)
		for _, g := range rs.Regions {
			if _, ok := c.Kafka.Clusters[g.Cluster]; !ok {
				continue // missingClusters says what to add
			}
			add(g.Cluster, TopicPinned, g.Topic, "pinned topic of region "+g.Name, t.Pinned.Partitions, routed(records(t.Pinned.Retention, "delete")), true)
		}
		for _, g := range rs.Regions {
			add(ingest, TopicHold, c.HoldTopic(g.Name), "hold topic of region "+g.Name, t.Hold.Partitions, routed(records(t.Hold.Retention, "delete")), true)
		}
	}
	add(ingest, TopicRulesets, c.RulesetTopic(), "ruleset history", 1, records(0, "compact"), true)
	add(ingest, TopicAudit, c.AuditTopic(), "audit log", 1, records(t.Audit.Retention, "delete"), true)

	out := make([]NeededTopic, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	rank := map[string]int{TopicIngest: 0, TopicPinned: 1, TopicQuarantine: 2, TopicDeadLetter: 3, TopicSinkQuarantine: 4, TopicHold: 5, TopicRulesets: 6, TopicAudit: 7}
	slices.SortStableFunc(out, func(a, b NeededTopic) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(rank[a.Kind], rank[b.Kind]), cmp.Compare(a.Spec.Name, b.Spec.Name))
	})
	return out, ps
}

// missingClusters adds, for every cluster the ruleset rs puts a region on
// that kafka.clusters lacks, one problem saying exactly what to add.
func (c *Config) missingClusters(ps *problems, rs *rules.Ruleset) {
	var clusters []string
	regions := map[string][]string{}
	for _, g := range rs.Regions {
		if _, ok := c.Kafka.Clusters[g.Cluster]; ok {
			continue
		}
		if _, seen := regions[g.Cluster]; !seen {
			clusters = append(clusters, g.Cluster)
		}
		regions[g.Cluster] = append(regions[g.Cluster], g.Name)
	}
	for _, cl := range clusters {
		ps.add("kafka.clusters", "the ruleset puts region(s) %s on cluster %q, which %s does not have: add it (kafka: {clusters: {%s: {brokers: [HOST:PORT]}}}), or the routers quarantine those regions' events as no_rule",
			strings.Join(regions[cl], ", "), cl, cmp.Or(c.file, "the config"), cl)
	}
}

// kinds reports whether a and b are x and y, in either order, or equal.
func kinds(a, b, x, y string) bool {
	return a == b || (a == x && b == y) || (a == y && b == x)
}

// fieldOf is the field that names a topic of kind.
func fieldOf(kind string) string {
	switch kind {
	case TopicIngest:
		return "router.ingest_topics"
	case TopicQuarantine:
		return "router.quarantine_topic"
	case TopicDeadLetter:
		return "router.dead_letter_topic"
	case TopicSinkQuarantine:
		return "sinks"
	}
	return "regions"
}

// RulesetWarnings returns what in ruleset rs the config does not know or
// contradicts, each saying what to add or change: a region on a cluster
// the config lacks (its events would be quarantined as no_rule), a pinned
// topic that is also one of the router's own topics, and sinks[] entries
// whose region, store, topic or cluster the ruleset does not match. `rules
// apply` and `rules validate --config` print them; none stops the ruleset
// from being applied. Call it after Finish.
func (c *Config) RulesetWarnings(rs *rules.Ruleset) []Problem {
	var ps problems
	reserved := map[string]string{c.Router.QuarantineTopic: "router.quarantine_topic", c.Router.DeadLetterTopic: "router.dead_letter_topic",
		c.RulesetTopic(): "the ruleset history topic", c.AuditTopic(): "the audit topic"}
	for i, tp := range c.Router.IngestTopics {
		reserved[tp] = fmt.Sprintf("router.ingest_topics[%d]", i)
	}
	c.missingClusters(&ps, rs)
	for _, g := range rs.Regions {
		if _, ok := c.Kafka.Clusters[g.Cluster]; !ok || g.Cluster != c.Kafka.IngestCluster {
			continue
		}
		if f, ok := reserved[g.Topic]; ok {
			ps.add("regions", "the ruleset's region %s has pinned topic %s on the ingest cluster, which is %s of the config: the router refuses to write there", g.Name, g.Topic, f)
		} else if strings.HasPrefix(g.Topic, c.holdPrefix()) {
			ps.add("regions", "the ruleset's region %s has pinned topic %s, named like a hold topic (%s<region>, topics.hold_prefix) on the ingest cluster", g.Name, g.Topic, c.holdPrefix())
		}
	}
	for i, sc := range c.Sinks {
		f := func(name string) string { return fmt.Sprintf("sinks[%d].%s", i, name) }
		g, ok := rs.Region(sc.Region)
		if !ok {
			ps.add(f("region"), "%q is not a region of the ruleset: sink %s would not start", sc.Region, sc.Store)
			continue
		}
		if !rs.Approves(sc.Store, sc.Region) {
			ps.add(f("store"), "the ruleset does not approve store %q for region %s: sink %s would refuse to start", sc.Store, sc.Region, sc.Store)
		}
		if sc.Topic != "" && sc.Topic != g.Topic {
			ps.add(f("topic"), "%q, but the ruleset's region %s has pinned topic %s", sc.Topic, sc.Region, g.Topic)
		}
		if sc.Cluster != "" && sc.Cluster != g.Cluster {
			ps.add(f("cluster"), "%q, but the ruleset's region %s is on cluster %s", sc.Cluster, sc.Region, g.Cluster)
		}
	}
	return ps
}
