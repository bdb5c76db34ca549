package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/residency-router/residency/stream"
	"github.com/segmentio/kafka-go"
)

// Defaults of ReaderConfig.
const (
	// DefaultSessionTimeout is the default of ReaderConfig.SessionTimeout.
	DefaultSessionTimeout = 10 * time.Second
	// DefaultRebalanceTimeout is the default of ReaderConfig.RebalanceTimeout.
	DefaultRebalanceTimeout = 10 * time.Second
)

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	// Cluster is the cluster holding the ingest topics. Required.
	Cluster Cluster
	// GroupID is the consumer group. Required.
	GroupID string
	// Topics are the ingest topics. Required.
	Topics []string
	// StartOffset is where a group without committed offsets starts:
	// "earliest" or "latest". Default "earliest" (nothing is skipped).
	StartOffset string
	// SessionTimeout is the group session timeout. Default 10s.
	SessionTimeout time.Duration
	// HeartbeatInterval is the group heartbeat interval. Default 1s.
	HeartbeatInterval time.Duration
	// RebalanceTimeout is how long members get to rejoin during a rebalance.
	// Default 10s.
	RebalanceTimeout time.Duration
	// JoinGroupBackoff is the wait before rejoining after a group error.
	// Default 1s.
	JoinGroupBackoff time.Duration
	// MaxWait is the longest a fetch request waits on the broker for new
	// records. Default 500ms.
	MaxWait time.Duration
	// MaxBytes is the most bytes one fetch request returns. Default 4 MiB.
	MaxBytes int
	// QueueCapacity is how many fetched records are buffered ahead of
	// Fetch. Default 1000.
	QueueCapacity int
	// IsolationLevel is "read_uncommitted", the only level this reader
	// supports (the default): kafka-go's reader stops at the last stable
	// offset under read_committed but still returns the records of aborted
	// transactions, so "read_committed" is refused here; the batch
	// Consumer supports it.
	IsolationLevel string
	// Logger receives kafka-go's messages (info at debug level, errors at
	// warn). Default: slog.Default().
	Logger *slog.Logger
}

// Reader is a consumer-group member that implements stream.Subscriber and
// stream.GroupMember. Commits are synchronous. A record's key, value and
// header values come out exactly as they are in the log: null (nil) apart
// from empty (see exact).
type Reader struct {
	r      *kafka.Reader
	tr     *kafka.Transport
	joined atomic.Bool

	mu      sync.Mutex     // serializes Fetch
	exact   *exact         // restores empty fields kafka-go reads as nil
	pending *kafka.Message // fetched but not returned: restoring it failed
}

// NewReader validates cfg and creates a reader; it connects on the first
// Fetch.
func NewReader(cfg ReaderConfig) (*Reader, error) {
	if err := cfg.Cluster.Validate("cluster"); err != nil {
		return nil, err
	}
	if cfg.GroupID == "" {
		return nil, fmt.Errorf("%w: group_id: required", ErrConfig)
	}
	if len(cfg.Topics) == 0 {
		return nil, fmt.Errorf("%w: topics: required", ErrConfig)
	}
	if iso, err := isolationLevel(cfg.IsolationLevel); err != nil {
		return nil, err
	} else if iso != 0 {
		return nil, fmt.Errorf("%w: isolation_level: read_committed is not supported by this reader (kafka-go's reader returns the records of aborted transactions); the batch Consumer supports it", ErrConfig)
	}
	start := kafka.FirstOffset
	switch strings.ToLower(cfg.StartOffset) {
	case "", "earliest":
	case "latest":
		start = kafka.LastOffset
	default:
		return nil, fmt.Errorf("%w: start_offset: %q is not earliest or latest", ErrConfig, cfg.StartOffset)
	}
	d, err := cfg.Cluster.dialer()
	if err != nil {
		return nil, err
	}
	tr, err := cfg.Cluster.transport()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("cluster", cfg.Cluster.Name, "group", cfg.GroupID)
	rd := &Reader{tr: tr}
	rd.exact = newExact(&kafka.Client{Addr: kafka.TCP(cfg.Cluster.Brokers...), Transport: tr}, cfg.Cluster.Name,
		func() *slog.Logger { return log })
	rd.r = kafka.NewReader(kafka.ReaderConfig{
		Brokers:           cfg.Cluster.Brokers,
		GroupID:           cfg.GroupID,
		GroupTopics:       cfg.Topics,
		Dialer:            d,
		StartOffset:       start,
		SessionTimeout:    orDur(cfg.SessionTimeout, DefaultSessionTimeout),
		HeartbeatInterval: orDur(cfg.HeartbeatInterval, time.Second),
		RebalanceTimeout:  orDur(cfg.RebalanceTimeout, DefaultRebalanceTimeout),
		JoinGroupBackoff:  orDur(cfg.JoinGroupBackoff, time.Second),
		MaxWait:           orDur(cfg.MaxWait, 500*time.Millisecond),
		MinBytes:          1,
		MaxBytes:          orInt(cfg.MaxBytes, 4<<20),
		QueueCapacity:     orInt(cfg.QueueCapacity, 1000),
		CommitInterval:    0, // synchronous commits
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    500 * time.Millisecond,
		GroupBalancers:    []kafka.GroupBalancer{kafka.RangeGroupBalancer{}, kafka.RoundRobinGroupBalancer{}},
		Logger: kafka.LoggerFunc(func(msg string, args ...any) {
			rd.observe(msg)
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug(fmt.Sprintf(msg, args...), "source", "kafka-go")
			}
		}),
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			log.Warn(fmt.Sprintf(msg, args...), "source", "kafka-go")
		}),
	})
	return rd, nil
}

// observe follows the group membership from kafka-go's log messages, the
// only place it reports them.
func (r *Reader) observe(msg string) {
	switch {
	case strings.HasPrefix(msg, "subscribed to topics and partitions"),
		strings.HasPrefix(msg, "joined group"):
		r.joined.Store(true)
	case strings.HasPrefix(msg, "stopped heartbeat"):
		r.joined.Store(false)
	}
}

// Joined reports whether the reader holds a group assignment.
func (r *Reader) Joined() bool { return r.joined.Load() }

// Fetch returns the next record without committing it. A record it could
// not return (ctx ended, or telling an empty field from a null one failed)
// is returned by the next call.
func (r *Reader) Fetch(ctx context.Context) (stream.Message, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.pending
	r.pending = nil
	if m == nil {
		km, err := r.r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				return stream.Message{}, err
			}
			return stream.Message{}, fmt.Errorf("kafka: fetch: %w", err)
		}
		m = &km
	}
	if err := r.exact.restore(ctx, m); err != nil {
		r.pending = m
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return stream.Message{}, err
		}
		return stream.Message{}, fmt.Errorf("kafka: fetch: %w", err)
	}
	return fromKafka(*m), nil
}

// Commit synchronously commits, per partition, the offset after the highest
// of msgs.
func (r *Reader) Commit(ctx context.Context, msgs ...stream.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	// kafka-go commits the highest offset given per partition; pass only
	// those.
	type tp struct {
		topic string
		part  int
	}
	high := map[tp]int64{}
	for _, m := range msgs {
		k := tp{m.Topic, m.Partition}
		if o, ok := high[k]; !ok || m.Offset > o {
			high[k] = m.Offset
		}
	}
	ks := make([]kafka.Message, 0, len(high))
	for k, o := range high {
		ks = append(ks, kafka.Message{Topic: k.topic, Partition: k.part, Offset: o})
	}
	if err := r.r.CommitMessages(ctx, ks...); err != nil {
		return fmt.Errorf("kafka: commit: %w", err)
	}
	return nil
}

// Close leaves the group and closes the connections. It commits nothing.
func (r *Reader) Close() error {
	r.joined.Store(false)
	err := r.r.Close()
	r.tr.CloseIdleConnections()
	return err
}

func orDur(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

func orInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
