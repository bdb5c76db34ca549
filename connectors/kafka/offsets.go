package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/residency-router/residency/stream"
)

// This file holds what purge, erasure listings and residue scans ask of a
// cluster besides DeleteRecords: committed offsets of a group, the low and
// high watermarks of a topic's partitions, the first offset at or after a
// time, and a topic's configuration (retention). The signatures use only
// standard types, so *Admin satisfies the ports of package erasure as it is.

// CommittedOffsets returns the offsets group has committed for the
// partitions of topic: the next offset the group will read, per partition.
// A partition the group never committed is absent from the map (a group
// that does not exist gives an empty map).
func (a *Admin) CommittedOffsets(ctx context.Context, group, topic string) (map[int]int64, error) {
	ps, err := a.partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	var resp *kafka.OffsetFetchResponse
	for {
		resp, err = a.c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
		if err == nil {
			err = resp.Error
		}
		if !coordinatorMoving(err) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("kafka: cluster %s: offsets of group %s: %w", a.cluster.Name, group, errors.Join(err, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
	if errors.Is(err, kafka.GroupIdNotFound) {
		return map[int]int64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kafka: cluster %s: offsets of group %s: %w", a.cluster.Name, group, err)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("kafka: cluster %s: offset of group %s on %s/%d: %w", a.cluster.Name, group, topic, p.Partition, p.Error)
		}
		if p.CommittedOffset >= 0 {
			out[p.Partition] = p.CommittedOffset
		}
	}
	return out, nil
}

// Watermarks returns, per partition of topic, its log start offset (low
// watermark: the first offset still held) and its high-water mark (the
// offset after the last record readers can see). A partition whose
// leader is moving or not known yet (a topic just created) is asked again
// for a few seconds (retryTemporary), as are OffsetsAt and EndOffsets.
func (a *Admin) Watermarks(ctx context.Context, topic string) (low, high map[int]int64, err error) {
	ps, err := a.partitions(ctx, topic)
	if err != nil {
		return nil, nil, err
	}
	ask := func(req func(int) kafka.OffsetRequest, first bool) (map[int]int64, error) {
		rs := make([]kafka.OffsetRequest, len(ps))
		for i, p := range ps {
			rs[i] = req(p)
		}
		resp, err := a.c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: rs}})
		if err != nil {
			return nil, fmt.Errorf("kafka: cluster %s: offsets of %s: %w", a.cluster.Name, topic, err)
		}
		out := make(map[int]int64, len(ps))
		for _, p := range resp.Topics[topic] {
			if p.Error != nil {
				return nil, fmt.Errorf("kafka: cluster %s: offsets of %s/%d: %w", a.cluster.Name, topic, p.Partition, p.Error)
			}
			if first {
				out[p.Partition] = p.FirstOffset
			} else {
				out[p.Partition] = p.LastOffset
			}
		}
		if len(out) != len(ps) {
			return nil, fmt.Errorf("kafka: cluster %s: offsets of %s: %d of %d partitions answered", a.cluster.Name, topic, len(out), len(ps))
		}
		return out, nil
	}
	// Two requests: a broker refuses one partition twice in one request.
	if low, err = retryTemporary(ctx, func() (map[int]int64, error) { return ask(kafka.FirstOffsetOf, true) }); err != nil {
		return nil, nil, err
	}
	if high, err = retryTemporary(ctx, func() (map[int]int64, error) { return ask(kafka.LastOffsetOf, false) }); err != nil {
		return nil, nil, err
	}
	return low, high, nil
}

// temporaryAttempts bounds retryTemporary: with clientRetry's delays,
// about 5 s of a partition's leadership moving or settling.
const temporaryAttempts = 8

// retryTemporary calls f again, with clientRetry (the one retry policy),
// while it fails with an error the broker calls temporary (a partition's
// leader moving, or not known yet right after the topic was created:
// NOT_LEADER, LEADER_NOT_AVAILABLE), at most temporaryAttempts times and
// until ctx ends; any other error is returned as it is at once.
func retryTemporary[T any](ctx context.Context, f func() (T, error)) (T, error) {
	var v T
	r := clientRetry
	r.Attempts = temporaryAttempts
	err := r.Do(ctx, "offsets", func(context.Context) error {
		var err error
		v, err = f()
		var kerr kafka.Error
		if err != nil && (!errors.As(err, &kerr) || !kerr.Temporary()) {
			return stream.Permanent(err)
		}
		return err
	})
	return v, err
}

// OffsetsAt returns, per partition of topic, the first offset whose record
// timestamp is at or after t (Kafka's time index), or the high-water mark
// when no record is that recent. Timestamps are the producers' (or the log
// append time, with message.timestamp.type=LogAppendTime).
func (a *Admin) OffsetsAt(ctx context.Context, topic string, t time.Time) (map[int]int64, error) {
	return retryTemporary(ctx, func() (map[int]int64, error) { return a.offsetsAt(ctx, topic, t) })
}

// offsetsAt is one attempt of OffsetsAt.
func (a *Admin) offsetsAt(ctx context.Context, topic string, t time.Time) (map[int]int64, error) {
	ps, err := a.partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	rs := make([]kafka.OffsetRequest, len(ps))
	for i, p := range ps {
		rs[i] = kafka.TimeOffsetOf(p, t)
	}
	resp, err := a.c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: rs}})
	if err != nil {
		return nil, fmt.Errorf("kafka: cluster %s: offsets of %s at %s: %w", a.cluster.Name, topic, t.Format(time.RFC3339), err)
	}
	var none []int // partitions with no record at or after t
	out := make(map[int]int64, len(ps))
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("kafka: cluster %s: offset of %s/%d at %s: %w", a.cluster.Name, topic, p.Partition, t.Format(time.RFC3339), p.Error)
		}
		found := false
		for o := range p.Offsets {
			if o >= 0 {
				out[p.Partition], found = o, true
			}
		}
		if !found {
			none = append(none, p.Partition)
		}
	}
	if len(none) > 0 {
		_, high, err := a.Watermarks(ctx, topic)
		if err != nil {
			return nil, err
		}
		for _, p := range none {
			out[p] = high[p]
		}
	}
	return out, nil
}

// Topic configuration names TopicConfig reports.
const (
	ConfigRetentionMs          = "retention.ms"
	ConfigRetentionBytes       = "retention.bytes"
	ConfigCleanupPolicy        = "cleanup.policy"
	ConfigSegmentMs            = "segment.ms"
	ConfigMaxCompactionLagMs   = "max.compaction.lag.ms"
	ConfigMinCompactionLagMs   = "min.compaction.lag.ms"
	ConfigDeleteRetentionMs    = "delete.retention.ms"
	ConfigMessageTimestampType = "message.timestamp.type"
)

// TopicConfig returns the effective configuration of topic (its own
// settings, else the broker's defaults) for the names above: retention.ms,
// retention.bytes, cleanup.policy, segment.ms, max.compaction.lag.ms,
// min.compaction.lag.ms, delete.retention.ms and message.timestamp.type.
func (a *Admin) TopicConfig(ctx context.Context, topic string) (map[string]string, error) {
	names := []string{ConfigRetentionMs, ConfigRetentionBytes, ConfigCleanupPolicy, ConfigSegmentMs,
		ConfigMaxCompactionLagMs, ConfigMinCompactionLagMs, ConfigDeleteRetentionMs, ConfigMessageTimestampType}
	resp, err := a.c.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: names,
	}}})
	if err != nil {
		return nil, fmt.Errorf("kafka: cluster %s: configs of %s: %w", a.cluster.Name, topic, err)
	}
	out := map[string]string{}
	for _, r := range resp.Resources {
		if r.ResourceName != topic {
			continue
		}
		if r.Error != nil {
			return nil, fmt.Errorf("kafka: cluster %s: configs of %s: %w", a.cluster.Name, topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			out[e.ConfigName] = e.ConfigValue
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("kafka: cluster %s: configs of %s: %w", a.cluster.Name, topic, kafka.UnknownTopicOrPartition)
	}
	return out, nil
}
