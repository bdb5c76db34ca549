package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/residency-router/residency/stream"
	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
)

// Admin runs administrative requests (topics, offsets) against one cluster.
// Close releases its connections.
type Admin struct {
	c       *kafka.Client
	cluster Cluster

	mu sync.Mutex
	w  *wire // uncached metadata (kafka-go's transport answers from a cache)
}

// freshMetadata asks a broker for the metadata of topics now: kafka-go's
// Client answers metadata requests from its transport's cache, refreshed
// only every few seconds, which would hide a topic just created or
// deleted.
func (a *Admin) freshMetadata(ctx context.Context, topics []string) (*metadataAPI.Response, error) {
	a.mu.Lock()
	if a.w == nil {
		d, err := a.cluster.connDialer(nil)
		if err != nil {
			a.mu.Unlock()
			return nil, err
		}
		a.w = newWire(d, a.cluster.Brokers, slog.Default())
	}
	w := a.w
	a.mu.Unlock()
	md, err := w.metadata(ctx, topics, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("kafka: cluster %s: %w", a.cluster.Name, err)
	}
	return md, nil
}

// Close closes the Admin's connections. It may be used again afterwards
// (it reconnects).
func (a *Admin) Close() error {
	a.mu.Lock()
	w := a.w
	a.w = nil
	a.mu.Unlock()
	if w != nil {
		w.close()
	}
	if t, ok := a.c.Transport.(*kafka.Transport); ok {
		t.CloseIdleConnections()
	}
	return nil
}

// NewAdmin returns an Admin for cluster.
func NewAdmin(cluster Cluster) (*Admin, error) {
	if err := cluster.Validate("cluster"); err != nil {
		return nil, err
	}
	tr, err := cluster.transport()
	if err != nil {
		return nil, err
	}
	return &Admin{c: &kafka.Client{Addr: kafka.TCP(cluster.Brokers...), Timeout: 10 * time.Second, Transport: tr}, cluster: cluster}, nil
}

// CreateTopics creates the named topics with the given partition count and
// replication factor, ignoring those that exist, and waits until every
// partition has a leader that answers for it, or ctx ends.
func (a *Admin) CreateTopics(ctx context.Context, partitions, replication int, names ...string) error {
	topics := make([]kafka.TopicConfig, len(names))
	for i, n := range names {
		topics[i] = kafka.TopicConfig{Topic: n, NumPartitions: partitions, ReplicationFactor: replication}
	}
	return a.create(ctx, topics...)
}

// serving reports whether the leader of every partition of topics answers
// for it: metadata names a leader a moment before that broker has taken
// the partition over (KRaft), and a produce in between fails with "not
// leader".
func (a *Admin) serving(ctx context.Context, topics []string) bool {
	for _, t := range topics {
		if _, err := a.EndOffsets(ctx, t); err != nil {
			return false
		}
	}
	return true
}

// led reports whether md holds n topics, each with at least partitions
// partitions, every one with a leader.
func led(md *metadataAPI.Response, n, partitions int) bool {
	if len(md.Topics) != n {
		return false
	}
	for _, t := range md.Topics {
		if t.ErrorCode != 0 || len(t.Partitions) == 0 || len(t.Partitions) < partitions {
			return false
		}
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 || p.LeaderID < 0 {
				return false
			}
		}
	}
	return true
}

// partitions returns the partition ids of topic.
func (a *Admin) partitions(ctx context.Context, topic string) ([]int, error) {
	md, err := a.c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("kafka: cluster %s: metadata of %s: %w", a.cluster.Name, topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		var terr error
		if len(md.Topics) == 1 {
			terr = md.Topics[0].Error
		}
		return nil, fmt.Errorf("kafka: cluster %s: topic %s: %w", a.cluster.Name, topic, errors.Join(terr, kafka.UnknownTopicOrPartition))
	}
	ps := make([]int, 0, len(md.Topics[0].Partitions))
	for _, p := range md.Topics[0].Partitions {
		ps = append(ps, p.ID)
	}
	return ps, nil
}

// EndOffsets returns the high-water mark of each partition of topic.
func (a *Admin) EndOffsets(ctx context.Context, topic string) (map[int]int64, error) {
	return retryTemporary(ctx, func() (map[int]int64, error) { return a.endOffsets(ctx, topic) })
}

// StableOffsets returns, for every partition of topic, its last stable
// offset: the first offset of a transaction still open, else the
// high-water mark (what a read_committed consumer can read up to).
func (a *Admin) StableOffsets(ctx context.Context, topic string) (map[int]int64, error) {
	return retryTemporary(ctx, func() (map[int]int64, error) { return a.listEnds(ctx, topic, kafka.ReadCommitted) })
}

// endOffsets is one attempt of EndOffsets.
func (a *Admin) endOffsets(ctx context.Context, topic string) (map[int]int64, error) {
	return a.listEnds(ctx, topic, kafka.ReadUncommitted)
}

// listEnds asks for the end offset of every partition of topic at an
// isolation level: the high-water marks read uncommitted, the last stable
// offsets read committed.
func (a *Admin) listEnds(ctx context.Context, topic string, iso kafka.IsolationLevel) (map[int]int64, error) {
	ps, err := a.partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	req := make([]kafka.OffsetRequest, len(ps))
	for i, p := range ps {
		req[i] = kafka.LastOffsetOf(p)
	}
	resp, err := a.c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: req}, IsolationLevel: iso})
	if err != nil {
		return nil, fmt.Errorf("kafka: cluster %s: end offsets of %s: %w", a.cluster.Name, topic, err)
	}
	out := make(map[int]int64, len(ps))
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("kafka: cluster %s: end offset of %s/%d: %w", a.cluster.Name, topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.LastOffset
	}
	return out, nil
}

// Lag returns how many records of topic the group has not committed yet,
// summed over partitions.
func (a *Admin) Lag(ctx context.Context, group, topic string) (int64, error) {
	end, err := a.EndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	ps := make([]int, 0, len(end))
	for p := range end {
		ps = append(ps, p)
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
		// The group's coordinator is being elected or loaded (a new broker, a
		// moved __consumer_offsets partition): ask again shortly.
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("kafka: cluster %s: offsets of group %s: %w", a.cluster.Name, group, errors.Join(err, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
	if errors.Is(err, kafka.GroupIdNotFound) {
		resp, err = &kafka.OffsetFetchResponse{}, nil // nothing committed yet
	}
	if err != nil {
		return 0, fmt.Errorf("kafka: cluster %s: offsets of group %s: %w", a.cluster.Name, group, err)
	}
	committed := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		committed[p.Partition] = max(p.CommittedOffset, 0)
	}
	var lag int64
	for p, e := range end {
		lag += max(e-committed[p], 0)
	}
	return lag, nil
}

// ReadAll returns every record of topic present when it is called, partition
// by partition in offset order, keys, values and header values exactly as
// they are in the log (null apart from empty). It reads without a consumer
// group and commits nothing.
func (a *Admin) ReadAll(ctx context.Context, topic string) ([]stream.Message, error) {
	end, err := a.EndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	d, err := a.cluster.dialer()
	if err != nil {
		return nil, err
	}
	x := newExact(a.c, a.cluster.Name, slog.Default)
	var out []stream.Message
	for p, last := range end {
		if last == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: a.cluster.Brokers, Topic: topic, Partition: p, Dialer: d,
			MaxWait: 200 * time.Millisecond, MaxBytes: 4 << 20})
		for {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				_ = r.Close()
				return nil, fmt.Errorf("kafka: cluster %s: read %s/%d: %w", a.cluster.Name, topic, p, err)
			}
			if err := x.restore(ctx, &m); err != nil {
				_ = r.Close()
				return nil, fmt.Errorf("kafka: cluster %s: read %s/%d: %w", a.cluster.Name, topic, p, err)
			}
			out = append(out, fromKafka(m))
			if m.Offset >= last-1 {
				break
			}
		}
		_ = r.Close()
	}
	return out, nil
}

func fromKafka(m kafka.Message) stream.Message {
	out := stream.Message{
		Topic:         m.Topic,
		Partition:     m.Partition,
		Offset:        m.Offset,
		HighWaterMark: m.HighWaterMark,
		Key:           m.Key,
		Value:         m.Value,
		Time:          m.Time,
	}
	out.Headers = routerHeaders(m.Headers)
	return out
}

// coordinatorMoving reports whether err says the group coordinator is not
// ready yet: retriable, not an answer.
func coordinatorMoving(err error) bool {
	return errors.Is(err, kafka.NotCoordinatorForGroup) ||
		errors.Is(err, kafka.GroupCoordinatorNotAvailable) ||
		errors.Is(err, kafka.GroupLoadInProgress)
}
