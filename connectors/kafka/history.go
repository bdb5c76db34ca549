package kafka

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

// ErrNoHistoryTopic is returned by HistoryTopic.ReadVersions when the topic
// does not exist (no version was ever archived, or it was not created).
var ErrNoHistoryTopic = errors.New("the ruleset history topic does not exist")

// HistoryTopic is the ruleset history topic (rules.Archive): a compacted
// topic of one partition on the ingest cluster holding every applied
// version of the ruleset, one record per version and content (key
// "NUMBER/SHA256", value the version's record and content as JSON), and
// every pin (key "pin/USER", value {"user_id", "jurisdiction"} as JSON; a
// removed pin is a tombstone), so that both outlive Redis.
type HistoryTopic struct {
	admin *Admin
	w     *Writer
	topic string
}

// NewHistoryTopic returns the history topic named topic on cluster. It does
// not connect yet.
func NewHistoryTopic(cluster Cluster, topic string) (*HistoryTopic, error) {
	a, err := NewAdmin(cluster)
	if err != nil {
		return nil, err
	}
	w, err := NewWriter(WriterConfig{Cluster: cluster, MaxAttempts: 10})
	if err != nil {
		return nil, err
	}
	return &HistoryTopic{admin: a, w: w, topic: topic}, nil
}

// Topic is the topic's name.
func (h *HistoryTopic) Topic() string { return h.topic }

// Cluster is the name of the cluster holding it.
func (h *HistoryTopic) Cluster() string { return h.admin.cluster.Name }

// Create creates the topic if it does not exist: one partition, compacted
// (cleanup.policy=compact, so every version's last record is kept for
// good), the brokers' default replication factor. It waits until the
// partition has a leader. The rules commands never call it (residency
// creates no topic on its own; docs/operations.md): tests and topic
// tooling do.
func (h *HistoryTopic) Create(ctx context.Context) error {
	return h.admin.create(ctx, kafka.TopicConfig{Topic: h.topic, NumPartitions: 1, ReplicationFactor: -1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}}})
}

// ErrHistoryTopicNotCompacted is returned by Check for a history topic
// whose cleanup.policy is not exactly "compact": retention would delete
// versions from it.
var ErrHistoryTopicNotCompacted = errors.New("the ruleset history topic is not compacted")

// Check reports whether the topic exists (else ErrNoHistoryTopic) and is
// compacted without deletion (else ErrHistoryTopicNotCompacted), saying
// how to create it.
func (h *HistoryTopic) Check(ctx context.Context) error {
	how := fmt.Sprintf("create it with one partition and cleanup.policy=compact (docs/operations.md, \"Topics\"), e.g. "+
		"kafka-topics.sh --create --topic %s --partitions 1 --replication-factor 3 --config cleanup.policy=compact --config min.insync.replicas=2", h.topic)
	if _, err := h.admin.partitions(ctx, h.topic); err != nil {
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			return fmt.Errorf("kafka: cluster %s: topic %s: %w: %s", h.admin.cluster.Name, h.topic, ErrNoHistoryTopic, how)
		}
		return err
	}
	resp, err := h.admin.c.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: h.topic, ConfigNames: []string{"cleanup.policy"}}}})
	if err != nil {
		return fmt.Errorf("kafka: cluster %s: configuration of topic %s: %w", h.admin.cluster.Name, h.topic, err)
	}
	policy := "delete"
	for _, r := range resp.Resources {
		if r.Error != nil {
			return fmt.Errorf("kafka: cluster %s: configuration of topic %s: %w", h.admin.cluster.Name, h.topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "cleanup.policy" {
				policy = e.ConfigValue
			}
		}
	}
	if policy != "compact" {
		return fmt.Errorf("kafka: cluster %s: topic %s has cleanup.policy=%s: %w: set cleanup.policy=compact", h.admin.cluster.Name, h.topic, policy, ErrHistoryTopicNotCompacted)
	}
	return nil
}

// archived is the value of a history record.
type archived struct {
	rules.VersionInfo
	Content string `json:"content"`
}

// key is the record key of a version: its number and digest, so that a
// number applied twice with other content (Redis lost its data and the
// rules were applied without this topic) keeps both.
func key(info rules.VersionInfo) []byte {
	return []byte(strconv.FormatInt(info.Number, 10) + "/" + info.SHA256)
}

// WriteVersions writes versions to the topic and waits for every in-sync
// replica to have them.
func (h *HistoryTopic) WriteVersions(ctx context.Context, versions ...rules.Archived) error {
	msgs := make([]stream.Message, len(versions))
	for i, v := range versions {
		value, err := json.Marshal(archived{VersionInfo: v.Info, Content: string(v.Content)})
		if err != nil {
			return err
		}
		msgs[i] = stream.Message{Topic: h.topic, Key: key(v.Info), Value: value, Time: v.Info.AppliedAt}
	}
	if err := h.w.Publish(ctx, msgs...); err != nil {
		return fmt.Errorf("kafka: ruleset history topic %s: %w", h.topic, err)
	}
	return nil
}

// pinPrefix starts the key of a pin's record.
const pinPrefix = "pin/"

// WritePins writes pins to the topic (a pin without a jurisdiction as a
// tombstone: compaction removes the user's pin) and waits for every
// in-sync replica to have them.
func (h *HistoryTopic) WritePins(ctx context.Context, pins ...rules.Pin) error {
	msgs := make([]stream.Message, len(pins))
	for i, p := range pins {
		msgs[i] = stream.Message{Topic: h.topic, Key: []byte(pinPrefix + p.UserID), Time: time.Now()}
		if p.Jurisdiction != "" {
			v, err := json.Marshal(p)
			if err != nil {
				return err
			}
			msgs[i].Value = v
		}
	}
	if err := h.w.Publish(ctx, msgs...); err != nil {
		return fmt.Errorf("kafka: ruleset history topic %s: %w", h.topic, err)
	}
	return nil
}

// ReadPins reads every pin in the topic (the last record of each user; a
// tombstone removes it), by user id.
func (h *HistoryTopic) ReadPins(ctx context.Context) ([]rules.Pin, error) {
	msgs, err := h.read(ctx)
	if err != nil {
		return nil, err
	}
	byUser := map[string]rules.Pin{}
	for _, m := range msgs {
		user, ok := strings.CutPrefix(string(m.Key), pinPrefix)
		if !ok {
			continue
		}
		if m.Value == nil {
			delete(byUser, user)
			continue
		}
		var p rules.Pin
		if err := json.Unmarshal(m.Value, &p); err != nil || p.UserID != user || p.Jurisdiction == "" {
			return nil, fmt.Errorf("kafka: ruleset history topic %s, offset %d: %w: a pin record that does not decode", h.topic, m.Offset, rules.ErrCorrupt)
		}
		byUser[user] = p
	}
	out := make([]rules.Pin, 0, len(byUser))
	for _, p := range byUser {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b rules.Pin) int { return strings.Compare(a.UserID, b.UserID) })
	return out, nil
}

// read checks the topic and reads every record of it.
func (h *HistoryTopic) read(ctx context.Context) ([]stream.Message, error) {
	if err := h.Check(ctx); err != nil {
		return nil, err
	}
	return h.admin.ReadAll(ctx, h.topic)
}

// ReadVersions reads every version in the topic, by number then time of
// apply; a key written twice counts once (its last record). A record that
// does not decode, or whose content does not match its SHA-256, is an
// error wrapping rules.ErrCorrupt; a missing or not compacted topic is
// Check's error.
func (h *HistoryTopic) ReadVersions(ctx context.Context) ([]rules.Archived, error) {
	msgs, err := h.read(ctx)
	if err != nil {
		return nil, err
	}
	byKey := map[string]rules.Archived{}
	for _, m := range msgs {
		if strings.HasPrefix(string(m.Key), pinPrefix) {
			continue
		}
		if m.Value == nil {
			delete(byKey, string(m.Key))
			continue
		}
		var a archived
		if err := json.Unmarshal(m.Value, &a); err != nil {
			return nil, fmt.Errorf("kafka: ruleset history topic %s, offset %d: %w: %w", h.topic, m.Offset, rules.ErrCorrupt, err)
		}
		if a.Number <= 0 || rules.Hash([]byte(a.Content)) != a.SHA256 || string(m.Key) != string(key(a.VersionInfo)) {
			return nil, fmt.Errorf("kafka: ruleset history topic %s, offset %d: %w: its content does not match its SHA-256 or key", h.topic, m.Offset, rules.ErrCorrupt)
		}
		byKey[string(m.Key)] = rules.Archived{Info: a.VersionInfo, Content: []byte(a.Content)}
	}
	out := make([]rules.Archived, 0, len(byKey))
	for _, a := range byKey {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b rules.Archived) int {
		return cmp.Or(cmp.Compare(a.Info.Number, b.Info.Number), a.Info.AppliedAt.Compare(b.Info.AppliedAt))
	})
	return out, nil
}

// Close releases the writer's connections.
func (h *HistoryTopic) Close() error { return h.w.Close() }

// create creates topics (those that exist are left as they are) and waits
// until every partition has a leader that answers for it, or ctx ends.
func (a *Admin) create(ctx context.Context, topics ...kafka.TopicConfig) error {
	resp, err := a.c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("kafka: cluster %s: create topics: %w", a.cluster.Name, err)
	}
	for n, e := range resp.Errors {
		if e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
			return fmt.Errorf("kafka: cluster %s: create topic %s: %w", a.cluster.Name, n, e)
		}
	}
	names := make([]string, len(topics))
	least := 0
	for i, t := range topics {
		names[i] = t.Topic
		if i == 0 || t.NumPartitions < least {
			least = t.NumPartitions
		}
	}
	return a.waitLeaders(ctx, max(least, 1), names...)
}
