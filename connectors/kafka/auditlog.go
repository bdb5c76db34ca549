package kafka

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/residency-router/residency/stream"
)

// DefaultAuditTopic is the audit topic's name by default (config
// audit.topic).
const DefaultAuditTopic = "residency.audit"

// DefaultAuditCompression is AuditLogConfig.Compression by default.
const DefaultAuditCompression = "none"

// AuditLogConfig configures an AuditLog.
type AuditLogConfig struct {
	// Cluster is the ingest cluster, which holds the audit topic. Required.
	Cluster Cluster
	// Topic is the audit topic (one partition). Default DefaultAuditTopic.
	Topic string
	// Timeout bounds one Append: records not acknowledged by every in-sync
	// replica within it fail the Append (the caller retries and commits
	// nothing meanwhile). Default 10s.
	Timeout time.Duration
	// Compression is the audit records' compression ("none", "gzip",
	// "snappy", "lz4", "zstd"). Default DefaultAuditCompression: the records
	// (audit.WireRecord) carry each shared name once and are mostly
	// digests, which no codec shrinks (lz4 saves 5 % for about 0.6 µs of
	// CPU a leaf, BenchmarkAuditCodec).
	Compression string
	// MaxRecordBytes is the largest audit record Append accepts; the
	// writers split their records below it (auditwire.LedgerConfig). It
	// must stay below the topic's max.message.bytes. Default 900 KiB.
	MaxRecordBytes int
	// Logger receives the producer's warnings (never record contents).
	// Default slog.Default().
	Logger *slog.Logger
}

// DefaultAuditMaxRecordBytes is AuditLogConfig.MaxRecordBytes by default:
// below the brokers' default message.max.bytes (1 MiB) with room for the
// batch overhead.
const DefaultAuditMaxRecordBytes = 900 << 10

// AuditLog writes audit records (auditwire.Log) to the audit topic on the
// ingest cluster with the idempotent producer, acks=all: Append returns nil
// once every record is acknowledged by every in-sync replica, in order, and
// never written twice by a retry of the producer's. It is safe for
// concurrent use; the records of concurrent Appends are not interleaved
// within one call but may be between calls.
type AuditLog struct {
	cfg  AuditLogConfig
	prod *Producer
}

// ErrAuditRecordTooLarge is the error of an Append given a record larger
// than AuditLogConfig.MaxRecordBytes.
var ErrAuditRecordTooLarge = errors.New("kafka: audit record too large")

// NewAuditLog returns an AuditLog on cfg.Cluster. It does not connect:
// the first Append does (and names the topic when it does not exist).
func NewAuditLog(cfg AuditLogConfig) (*AuditLog, error) {
	cfg.Topic = cmp.Or(cfg.Topic, DefaultAuditTopic)
	cfg.Timeout = cmp.Or(cfg.Timeout, 10*time.Second)
	cfg.Compression = cmp.Or(cfg.Compression, DefaultAuditCompression)
	cfg.MaxRecordBytes = cmp.Or(cfg.MaxRecordBytes, DefaultAuditMaxRecordBytes)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Timeout < 0 || cfg.MaxRecordBytes < 0 {
		return nil, fmt.Errorf("kafka: audit log: negative Timeout or MaxRecordBytes")
	}
	p, err := NewProducer(ProducerConfig{
		Cluster:     cfg.Cluster,
		Compression: cfg.Compression,
		BatchBytes:  max(cfg.MaxRecordBytes+(64<<10), 1<<20),
		// A record not acknowledged within the timeout fails, so the
		// producer's buffer does not grow behind an audit topic that is
		// gone; the caller retries it.
		DeliveryTimeout: cfg.Timeout,
		Logger:          cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("kafka: audit log: %w", err)
	}
	return &AuditLog{cfg: cfg, prod: p}, nil
}

// Topic returns the audit topic's name.
func (l *AuditLog) Topic() string { return l.cfg.Topic }

// MaxRecordBytes returns the largest record Append accepts.
func (l *AuditLog) MaxRecordBytes() int { return l.cfg.MaxRecordBytes }

// Append writes records, in order, to the audit topic's partition 0 and
// returns nil once every one is acknowledged by every in-sync replica. It
// keeps no reference to records. It fails, naming the topic, when the
// topic does not exist, a record is larger than MaxRecordBytes, or the
// records are not acknowledged within the timeout (or ctx ends); some of
// them may then have been written (they are written again by the retry:
// the verifier explains duplicates).
func (l *AuditLog) Append(ctx context.Context, records ...[]byte) error {
	if len(records) == 0 {
		return nil
	}
	msgs := make([]stream.Message, len(records))
	for i, r := range records {
		if len(r) > l.cfg.MaxRecordBytes {
			return fmt.Errorf("%w: %d bytes, at most %d (topic %s)", ErrAuditRecordTooLarge, len(r), l.cfg.MaxRecordBytes, l.cfg.Topic)
		}
		msgs[i] = stream.Message{Topic: l.cfg.Topic, Value: r}
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	ch := make(chan Ack, 1)
	if err := l.prod.Produce(ctx, msgs, func(a Ack) { ch <- a }); err != nil {
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			return fmt.Errorf("kafka: audit topic %s does not exist on cluster %s (create it: residency topics apply): %w",
				l.cfg.Topic, l.cfg.Cluster.Name, err)
		}
		return fmt.Errorf("kafka: append to audit topic %s: %w", l.cfg.Topic, err)
	}
	select {
	case a := <-ch:
		if a.Err != nil {
			if errors.Is(a.Err, kafka.UnknownTopicOrPartition) {
				return fmt.Errorf("kafka: audit topic %s does not exist on cluster %s: %w", l.cfg.Topic, l.cfg.Cluster.Name, a.Err)
			}
			return fmt.Errorf("kafka: append to audit topic %s: %w", l.cfg.Topic, a.Err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kafka: append to audit topic %s: not acknowledged: %w", l.cfg.Topic, ctx.Err())
	}
}

// Close waits until ctx ends for the records appended to be acknowledged,
// then closes the connections.
func (l *AuditLog) Close(ctx context.Context) error {
	if err := l.prod.CloseContext(ctx); err != nil {
		return fmt.Errorf("kafka: audit log: %w", err)
	}
	return nil
}

// Err reports what currently keeps the audit log from writing (a broker
// unreachable), or nil.
func (l *AuditLog) Err() error { return l.prod.Err() }
