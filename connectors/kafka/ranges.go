package kafka

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/residency-router/residency/router"
)

// ErrNoPartition is returned for a partition the topic does not have.
var ErrNoPartition = errors.New("kafka: no such partition")

// PartitionRange is the half-open offset range [Start, End) of one
// partition.
type PartitionRange struct {
	// Partition is the partition id.
	Partition int `json:"partition"`
	// Start is the first offset of the range.
	Start int64 `json:"start"`
	// End is the offset after the last one of the range.
	End int64 `json:"end"`
}

// Len is the number of offsets in the range (0 when End <= Start).
func (r PartitionRange) Len() int64 { return max(r.End-r.Start, 0) }

// partitionOffsets asks the leader of each partition of topic for offsets;
// fn gets a connection to the partition's leader.
func (a *Admin) partitionOffsets(ctx context.Context, topic string, fn func(c *kafka.Conn, p int) (PartitionRange, error)) ([]PartitionRange, error) {
	ps, err := a.partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	d, err := a.cluster.dialer()
	if err != nil {
		return nil, err
	}
	sort.Ints(ps)
	out := make([]PartitionRange, 0, len(ps))
	for _, p := range ps {
		var r PartitionRange
		var err error
		for _, b := range a.cluster.Brokers {
			var c *kafka.Conn
			if c, err = d.DialLeader(ctx, "tcp", b, topic, p); err != nil {
				continue
			}
			if dl, ok := ctx.Deadline(); ok {
				_ = c.SetDeadline(dl)
			} else {
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			}
			r, err = fn(c, p)
			_ = c.Close()
			break
		}
		if err != nil {
			return nil, fmt.Errorf("kafka: cluster %s: offsets of %s/%d: %w", a.cluster.Name, topic, p, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Bounds returns, for every partition of topic in partition order, the
// range of offsets it holds now: [log start offset, high-water mark).
func (a *Admin) Bounds(ctx context.Context, topic string) ([]PartitionRange, error) {
	return a.partitionOffsets(ctx, topic, func(c *kafka.Conn, p int) (PartitionRange, error) {
		first, last, err := c.ReadOffsets()
		return PartitionRange{Partition: p, Start: first, End: last}, err
	})
}

// TimeRanges returns, for every partition of topic, the offsets of the
// records produced in [from, to): Start is the first offset whose timestamp
// is at or after from, End the first at or after to. A zero from starts at
// the log start offset, a zero to ends at the high-water mark. Timestamps
// are the records' (producer or log-append) timestamps, which Kafka
// indexes; a record with an out-of-order timestamp may fall outside.
func (a *Admin) TimeRanges(ctx context.Context, topic string, from, to time.Time) ([]PartitionRange, error) {
	if !from.IsZero() && !to.IsZero() && !to.After(from) {
		return nil, fmt.Errorf("%w: time range: %s is not after %s", ErrConfig, to.Format(time.RFC3339), from.Format(time.RFC3339))
	}
	return a.partitionOffsets(ctx, topic, func(c *kafka.Conn, p int) (PartitionRange, error) {
		first, last, err := c.ReadOffsets()
		if err != nil {
			return PartitionRange{}, err
		}
		at := func(t time.Time, def int64) (int64, error) {
			if t.IsZero() {
				return def, nil
			}
			o, err := c.ReadOffset(t)
			if err != nil {
				return 0, err
			}
			if o < 0 { // no record at or after t
				return last, nil
			}
			return min(max(o, first), last), nil
		}
		r := PartitionRange{Partition: p}
		if r.Start, err = at(from, first); err != nil {
			return r, err
		}
		if r.End, err = at(to, last); err != nil {
			return r, err
		}
		r.End = max(r.End, r.Start)
		return r, nil
	})
}

// RangeReader reads offset ranges of partitions without a consumer group;
// it commits nothing and changes no offsets.
type RangeReader struct {
	cluster Cluster
	d       *kafka.Dialer
	// IdleCheck is how long a read waits for the next record before it
	// checks whether the range was cut short (retention, compaction).
	// Default 2s.
	IdleCheck time.Duration
}

// NewRangeReader returns a RangeReader for cluster.
func NewRangeReader(cluster Cluster) (*RangeReader, error) {
	if err := cluster.Validate("cluster"); err != nil {
		return nil, err
	}
	d, err := cluster.dialer()
	if err != nil {
		return nil, err
	}
	return &RangeReader{cluster: cluster, d: d, IdleCheck: 2 * time.Second}, nil
}

// ReadRange reads the records of topic/partition with offsets in
// [start, end), in offset order, and calls fn with batches of at most batch
// records. It returns fn's first error, or nil once the range is read. An
// offset range that no longer exists at its start (deleted by retention)
// is read from the log start; offsets missing inside it (compaction,
// transaction markers) are skipped, and the read ends after three idle
// checks in a row find no record although the range is not exhausted.
func (r *RangeReader) ReadRange(ctx context.Context, topic string, partition int, start, end int64, batch int, fn func([]router.Message) error) error {
	if end <= start {
		return nil
	}
	if batch <= 0 {
		batch = 100
	}
	kr := kafka.NewReader(kafka.ReaderConfig{Brokers: r.cluster.Brokers, Topic: topic, Partition: partition, Dialer: r.d,
		MaxWait: 200 * time.Millisecond, MinBytes: 1, MaxBytes: 4 << 20, QueueCapacity: max(batch, 100),
		ReadBackoffMin: 50 * time.Millisecond, ReadBackoffMax: 500 * time.Millisecond})
	defer kr.Close()
	if err := kr.SetOffset(start); err != nil {
		return fmt.Errorf("kafka: cluster %s: read %s/%d from %d: %w", r.cluster.Name, topic, partition, start, err)
	}
	idle := r.IdleCheck
	if idle <= 0 {
		idle = 2 * time.Second
	}
	buf := make([]router.Message, 0, batch)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		err := fn(buf)
		buf = make([]router.Message, 0, batch)
		return err
	}
	idles := 0
	for {
		fctx, cancel := context.WithTimeout(ctx, idle)
		m, err := kr.FetchMessage(fctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if fctx.Err() != nil {
				// Idle: hand over what we have; stop if the partition has
				// nothing more inside the range.
				if err := flush(); err != nil {
					return err
				}
				if done, derr := r.exhausted(ctx, topic, partition, kr.Offset(), end); derr != nil {
					return derr
				} else if done {
					return nil
				}
				// Offsets below end exist (end was at most the high-water
				// mark when planned), yet no record came: what is left is
				// transaction markers or compacted away.
				if idles++; idles >= 3 {
					return nil
				}
				continue
			}
			return fmt.Errorf("kafka: cluster %s: read %s/%d: %w", r.cluster.Name, topic, partition, err)
		}
		idles = 0
		if m.Offset >= end {
			return flush()
		}
		buf = append(buf, fromKafka(m))
		if len(buf) >= batch {
			if err := flush(); err != nil {
				return err
			}
		}
		if m.Offset >= end-1 {
			return flush()
		}
	}
}

// exhausted reports whether nothing is left to read in [next, end): the
// partition's high-water mark is at or below next.
func (r *RangeReader) exhausted(ctx context.Context, topic string, partition int, next, end int64) (bool, error) {
	if next >= end {
		return true, nil
	}
	for _, b := range r.cluster.Brokers {
		c, err := r.d.DialLeader(ctx, "tcp", b, topic, partition)
		if err != nil {
			continue
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		last, err := c.ReadLastOffset()
		_ = c.Close()
		if err != nil {
			return false, fmt.Errorf("kafka: cluster %s: end offset of %s/%d: %w", r.cluster.Name, topic, partition, err)
		}
		return last <= next, nil
	}
	return false, fmt.Errorf("kafka: cluster %s: no broker answers for %s/%d", r.cluster.Name, topic, partition)
}
