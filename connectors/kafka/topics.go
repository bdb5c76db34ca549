package kafka

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// TopicSpec is a topic as residency needs it on one cluster: what `topics
// apply` creates and what `topics check` compares an existing topic with.
type TopicSpec struct {
	// Name is the topic's name.
	Name string `json:"name"`
	// Partitions is the fewest partitions the topic may have (created
	// with exactly this many).
	Partitions int `json:"partitions"`
	// ReplicationFactor is the fewest replicas each partition may have.
	ReplicationFactor int `json:"replication_factor"`
	// Configs are topic configs (cleanup.policy, retention.ms, ...),
	// compared as CompareConfig says.
	Configs map[string]string `json:"configs"`
}

// TopicState is a topic as a cluster has it.
type TopicState struct {
	// Name is the topic's name.
	Name string `json:"name"`
	// Exists is false when the cluster has no such topic (the other
	// fields are then zero).
	Exists bool `json:"exists"`
	// Partitions is its partition count.
	Partitions int `json:"partitions,omitempty"`
	// ReplicationFactor is the fewest replicas of any of its partitions.
	ReplicationFactor int `json:"replication_factor,omitempty"`
	// Configs holds every config of the topic, broker defaults included.
	Configs map[string]string `json:"configs,omitempty"`
}

// The kinds of TopicChange.
const (
	// ChangeCreate: the topic does not exist.
	ChangeCreate = "create"
	// ChangePartitions: the topic has fewer partitions than wanted.
	ChangePartitions = "partitions"
	// ChangeConfig: a config differs.
	ChangeConfig = "config"
	// ChangeReplication: partitions have fewer replicas than wanted, which
	// AlterTopic cannot change (kafka-reassign-partitions.sh can).
	ChangeReplication = "replication_factor"
)

// TopicChange is one difference between a TopicSpec and a TopicState.
type TopicChange struct {
	// Kind is ChangeCreate, ChangePartitions, ChangeConfig or
	// ChangeReplication.
	Kind string `json:"kind"`
	// Config is the config's name, for ChangeConfig.
	Config string `json:"config,omitempty"`
	// Have and Want are the values as the topic has them and as wanted.
	Have string `json:"have,omitempty"`
	Want string `json:"want,omitempty"`
}

// Fixable reports whether Admin.AlterTopic (or CreateTopic) can make the
// change: every kind but ChangeReplication.
func (c TopicChange) Fixable() bool { return c.Kind != ChangeReplication }

func (c TopicChange) String() string {
	switch c.Kind {
	case ChangeCreate:
		return "missing"
	case ChangePartitions:
		unit := "partitions"
		if c.Have == "1" {
			unit = "partition"
		}
		return fmt.Sprintf("%s %s, want at least %s", c.Have, unit, c.Want)
	case ChangeReplication:
		return fmt.Sprintf("replication factor %s, want at least %s", c.Have, c.Want)
	}
	have := c.Have
	if have == "" {
		have = "(unset)"
	}
	return fmt.Sprintf("%s=%s, want %s", c.Config, have, c.Want)
}

// atLeast lists the configs whose value may exceed the wanted one: a
// longer retention (-1: for ever) or a larger limit also does.
var atLeast = map[string]bool{"retention.ms": true, "retention.bytes": true, "min.insync.replicas": true, "max.message.bytes": true}

// CompareConfig reports whether a topic whose config key has the value
// have satisfies want: numbers of retention.ms, retention.bytes,
// min.insync.replicas and max.message.bytes may be larger (-1, unlimited,
// is the largest retention); cleanup.policy compares as a set
// ("compact,delete" is "delete,compact"); any other value must be equal.
func CompareConfig(key, have, want string) bool {
	if have == want {
		return true
	}
	if atLeast[key] {
		h, err1 := strconv.ParseInt(have, 10, 64)
		w, err2 := strconv.ParseInt(want, 10, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		if strings.HasPrefix(key, "retention.") {
			return h == -1 || (w != -1 && h >= w)
		}
		return h >= w
	}
	if key == "cleanup.policy" {
		set := func(s string) []string {
			var out []string
			for _, p := range strings.Split(s, ",") {
				out = append(out, strings.ToLower(strings.TrimSpace(p)))
			}
			slices.Sort(out)
			return slices.Compact(out)
		}
		return slices.Equal(set(have), set(want))
	}
	return false
}

// DiffTopic returns what differs between the topic wanted and the topic
// the cluster has, in a stable order: creation (alone: a missing topic is
// created as wanted), fewer partitions, fewer replicas, then each config
// in name order. Nil means the topic is as wanted.
func DiffTopic(want TopicSpec, have TopicState) []TopicChange {
	if !have.Exists {
		return []TopicChange{{Kind: ChangeCreate, Want: want.Name}}
	}
	var out []TopicChange
	if have.Partitions < want.Partitions {
		out = append(out, TopicChange{Kind: ChangePartitions, Have: strconv.Itoa(have.Partitions), Want: strconv.Itoa(want.Partitions)})
	}
	if have.ReplicationFactor < want.ReplicationFactor {
		out = append(out, TopicChange{Kind: ChangeReplication, Have: strconv.Itoa(have.ReplicationFactor), Want: strconv.Itoa(want.ReplicationFactor)})
	}
	for _, k := range slices.Sorted(maps.Keys(want.Configs)) {
		if h := have.Configs[k]; !CompareConfig(k, h, want.Configs[k]) {
			out = append(out, TopicChange{Kind: ChangeConfig, Config: k, Have: h, Want: want.Configs[k]})
		}
	}
	return out
}

// BrokerHasConfig reports whether the cluster's brokers know the broker
// config name (e.g. log.message.timestamp.after.max.ms, Kafka 3.6 and
// later): a topic config they do not know makes creating or altering a
// topic fail. It asks one broker (DescribeConfigs of its broker resource).
func (a *Admin) BrokerHasConfig(ctx context.Context, name string) (bool, error) {
	md, err := a.freshMetadata(ctx, []string{})
	if err != nil {
		return false, err
	}
	if len(md.Brokers) == 0 {
		return false, fmt.Errorf("kafka: cluster %s: no broker in the metadata", a.cluster.Name)
	}
	resp, err := a.c.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeBroker, ResourceName: strconv.Itoa(int(md.Brokers[0].NodeID))}}})
	if err != nil {
		return false, fmt.Errorf("kafka: cluster %s: describe broker configs: %w", a.cluster.Name, err)
	}
	for _, r := range resp.Resources {
		if r.Error != nil {
			return false, fmt.Errorf("kafka: cluster %s: configs of broker %s: %w", a.cluster.Name, r.ResourceName, r.Error)
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == name {
				return true, nil
			}
		}
	}
	return false, nil
}

// Brokers returns the number of brokers of the cluster.
func (a *Admin) Brokers(ctx context.Context) (int, error) {
	md, err := a.freshMetadata(ctx, []string{})
	if err != nil {
		return 0, err
	}
	return len(md.Brokers), nil
}

// DescribeTopics returns the state of each named topic: its partitions,
// the fewest replicas of any partition, and every config (broker defaults
// included). A topic the cluster does not have is returned with Exists
// false.
func (a *Admin) DescribeTopics(ctx context.Context, names ...string) (map[string]TopicState, error) {
	out := make(map[string]TopicState, len(names))
	if len(names) == 0 {
		return out, nil
	}
	md, err := a.freshMetadata(ctx, names)
	if err != nil {
		return nil, err
	}
	var existing []string
	for _, t := range md.Topics {
		switch {
		case t.ErrorCode == int16(kafka.UnknownTopicOrPartition):
			continue
		case t.ErrorCode != 0:
			return nil, fmt.Errorf("kafka: cluster %s: topic %s: %w", a.cluster.Name, t.Name, kafka.Error(t.ErrorCode))
		}
		st := TopicState{Name: t.Name, Exists: true, Partitions: len(t.Partitions)}
		for i, p := range t.Partitions {
			if i == 0 || len(p.ReplicaNodes) < st.ReplicationFactor {
				st.ReplicationFactor = len(p.ReplicaNodes)
			}
		}
		out[t.Name] = st
		existing = append(existing, t.Name)
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			out[n] = TopicState{Name: n}
		}
	}
	if len(existing) == 0 {
		return out, nil
	}
	req := &kafka.DescribeConfigsRequest{}
	for _, n := range existing {
		req.Resources = append(req.Resources, kafka.DescribeConfigRequestResource{ResourceType: kafka.ResourceTypeTopic, ResourceName: n})
	}
	resp, err := a.c.DescribeConfigs(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("kafka: cluster %s: describe topic configs: %w", a.cluster.Name, err)
	}
	for _, r := range resp.Resources {
		if r.Error != nil {
			return nil, fmt.Errorf("kafka: cluster %s: configs of topic %s: %w", a.cluster.Name, r.ResourceName, r.Error)
		}
		st, ok := out[r.ResourceName]
		if !ok {
			continue
		}
		st.Configs = make(map[string]string, len(r.ConfigEntries))
		for _, e := range r.ConfigEntries {
			st.Configs[e.ConfigName] = e.ConfigValue
		}
		out[r.ResourceName] = st
	}
	return out, nil
}

// CreateTopic creates the topic spec describes (partitions, replication
// factor, configs) and waits until every partition has a leader that
// answers for it, or ctx ends. A topic that exists already is an error
// (kafka.TopicAlreadyExists): it is never changed by creating it.
func (a *Admin) CreateTopic(ctx context.Context, spec TopicSpec) error {
	tc := kafka.TopicConfig{Topic: spec.Name, NumPartitions: spec.Partitions, ReplicationFactor: spec.ReplicationFactor}
	for _, k := range slices.Sorted(maps.Keys(spec.Configs)) {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: spec.Configs[k]})
	}
	resp, err := a.c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
	if err != nil {
		return fmt.Errorf("kafka: cluster %s: create topic %s: %w", a.cluster.Name, spec.Name, err)
	}
	if e := resp.Errors[spec.Name]; e != nil {
		return fmt.Errorf("kafka: cluster %s: create topic %s: %w", a.cluster.Name, spec.Name, e)
	}
	return a.waitLeaders(ctx, spec.Partitions, spec.Name)
}

// waitLeaders waits until each of topics has at least partitions
// partitions and every partition a leader that answers for it.
func (a *Admin) waitLeaders(ctx context.Context, partitions int, topics ...string) error {
	for {
		md, err := a.freshMetadata(ctx, topics)
		if err == nil && led(md, len(topics), partitions) && a.serving(ctx, topics) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: cluster %s: wait for topic leaders: %w", a.cluster.Name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// AlterTopic sets the configs of an existing topic (incrementally: other
// configs keep their values) and, when partitions is more than it has,
// adds partitions up to that count. It never removes a partition or a
// config, and never deletes a topic.
func (a *Admin) AlterTopic(ctx context.Context, name string, configs map[string]string, partitions int) error {
	if len(configs) > 0 {
		res := kafka.IncrementalAlterConfigsRequestResource{ResourceType: kafka.ResourceTypeTopic, ResourceName: name}
		for _, k := range slices.Sorted(maps.Keys(configs)) {
			res.Configs = append(res.Configs, kafka.IncrementalAlterConfigsRequestConfig{Name: k, Value: configs[k], ConfigOperation: kafka.ConfigOperationSet})
		}
		resp, err := a.c.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{res}})
		if err != nil {
			return fmt.Errorf("kafka: cluster %s: alter configs of topic %s: %w", a.cluster.Name, name, err)
		}
		for _, r := range resp.Resources {
			if r.Error != nil {
				return fmt.Errorf("kafka: cluster %s: alter configs of topic %s: %w", a.cluster.Name, name, r.Error)
			}
		}
	}
	if partitions > 0 {
		st, err := a.DescribeTopics(ctx, name)
		if err != nil {
			return err
		}
		if have := st[name].Partitions; have < partitions {
			resp, err := a.c.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: name, Count: int32(partitions)}}})
			if err != nil {
				return fmt.Errorf("kafka: cluster %s: add partitions to topic %s: %w", a.cluster.Name, name, err)
			}
			if e := resp.Errors[name]; e != nil {
				return fmt.Errorf("kafka: cluster %s: add partitions to topic %s (%d → %d): %w", a.cluster.Name, name, have, partitions, e)
			}
			return a.waitLeaders(ctx, partitions, name)
		}
	}
	return nil
}
