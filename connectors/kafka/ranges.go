package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/residency-router/residency/stream"
	"github.com/segmentio/kafka-go"
)

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

// ErrStalled is returned by ReadRange when records the broker still holds
// inside the range do not arrive through MaxIdle idle checks in a row (the
// broker does not serve fetches): the range is not complete, and nothing
// after the last record handed over was read.
var ErrStalled = errors.New("kafka: range read stalled")

// Reasons a part of a range was skipped, the values of Skip.Reason.
const (
	// SkipDeleted: the offsets are below the partition's log start offset
	// (deleted by retention or delete-records) and cannot be read.
	SkipDeleted = "deleted"
	// SkipNoRecords: the broker holds no record there: a fetch at the first
	// of them returned one at or beyond the range end (compaction,
	// transaction markers).
	SkipNoRecords = "no_records"
	// SkipPastEnd: the offsets are at or past the partition's high-water
	// mark (a range planned past it, or a log truncated by an unclean
	// leader election).
	SkipPastEnd = "past_end"
)

// Skip is a part [From, To) of a range ReadRange did not read.
type Skip struct {
	// Topic and Partition name the partition.
	Topic     string
	Partition int
	// From is the first offset skipped, To the one after the last.
	From, To int64
	// Reason is one of SkipDeleted, SkipNoRecords and SkipPastEnd.
	Reason string
}

// RangeReader reads offset ranges of partitions without a consumer group;
// it commits nothing and changes no offsets.
type RangeReader struct {
	cluster Cluster
	d       *kafka.Dialer
	client  *kafka.Client // for exact
	// IdleCheck is how long a read waits for the next record before it
	// asks the broker whether the rest of the range still holds any.
	// Default 2s.
	IdleCheck time.Duration
	// MaxIdle is how many idle checks in a row may find records left in
	// the range that do not arrive before ReadRange fails with ErrStalled.
	// Default 30.
	MaxIdle int
	// OnSkip, if set, is told of every part of a range that was not read,
	// and why. Skips are also logged (Logger, warning level).
	OnSkip func(Skip)
	// Logger receives the skips. Default slog.Default().
	Logger *slog.Logger
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
	tr, err := cluster.transport()
	if err != nil {
		return nil, err
	}
	return &RangeReader{cluster: cluster, d: d, client: &kafka.Client{Addr: kafka.TCP(cluster.Brokers...), Transport: tr},
		IdleCheck: 2 * time.Second, MaxIdle: 30}, nil
}

func (r *RangeReader) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.Default()
	}
	return r.Logger
}

// ReadRange reads the records of topic/partition with offsets in
// [start, end), in offset order, and calls fn with batches of at most batch
// records. It returns fn's first error, or nil once the range is read.
// Offsets missing inside the range (compaction) are passed over. A part of
// the range is skipped (and reported, see OnSkip) only when the broker
// shows it holds no record there: below the log start offset (retention),
// at or past the high-water mark, or a tail that a fetch shows empty. While
// the broker holds records in the range that do not arrive, the read
// waits, and fails with ErrStalled after MaxIdle idle checks in a row.
// Keys, values and header values come out exactly as they are in the log,
// null (nil) apart from empty (see exact).
func (r *RangeReader) ReadRange(ctx context.Context, topic string, partition int, start, end int64, batch int, fn func([]stream.Message) error) error {
	if end <= start {
		return nil
	}
	if batch <= 0 {
		batch = 100
	}
	next := start // the offset after the last record handed over or skipped
	// A start deleted by retention: the reader jumps to the log start by
	// itself; say what it skips.
	if v, err := r.probe(ctx, topic, partition, next, end, false); err != nil {
		return err
	} else if next = v.next; v.done {
		return nil
	}
	kr := kafka.NewReader(kafka.ReaderConfig{Brokers: r.cluster.Brokers, Topic: topic, Partition: partition, Dialer: r.d,
		MaxWait: 200 * time.Millisecond, MinBytes: 1, MaxBytes: 4 << 20, QueueCapacity: max(batch, 100),
		ReadBackoffMin: 50 * time.Millisecond, ReadBackoffMax: 500 * time.Millisecond})
	defer kr.Close()
	if err := kr.SetOffset(next); err != nil {
		return fmt.Errorf("kafka: cluster %s: read %s/%d from %d: %w", r.cluster.Name, topic, partition, next, err)
	}
	idle := r.IdleCheck
	if idle <= 0 {
		idle = 2 * time.Second
	}
	maxIdle := r.MaxIdle
	if maxIdle <= 0 {
		maxIdle = 30
	}
	x := newExact(r.client, r.cluster.Name, r.logger)
	buf := make([]stream.Message, 0, batch)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		err := fn(buf)
		buf = make([]stream.Message, 0, batch)
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
				// Idle: hand over what we have, then ask the broker
				// whether anything is left to read in [next, end).
				if err := flush(); err != nil {
					return err
				}
				v, err := r.probe(ctx, topic, partition, next, end, true)
				if err != nil {
					return err
				}
				if next = v.next; v.done {
					return nil
				}
				if idles++; idles >= maxIdle {
					return fmt.Errorf("%w: cluster %s: %s/%d: no record arrived for %s although the broker holds offsets %d to %d of the range; "+
						"the range is not complete", ErrStalled, r.cluster.Name, topic, partition, time.Duration(idles)*idle, next, end-1)
				}
				continue
			}
			return fmt.Errorf("kafka: cluster %s: read %s/%d: %w", r.cluster.Name, topic, partition, err)
		}
		idles = 0
		if m.Offset >= end {
			return flush()
		}
		if m.Offset > next {
			// The reader jumped: below the log start (retention while
			// reading) or compacted away. Report only what is deleted.
			r.reportDeleted(ctx, topic, partition, next, m.Offset)
		}
		if err := x.restore(ctx, &m); err != nil {
			return fmt.Errorf("kafka: cluster %s: read %s/%d at %d: %w", r.cluster.Name, topic, partition, m.Offset, err)
		}
		next = m.Offset + 1
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

// verdict is what probe found about [next, end).
type verdict struct {
	next int64 // next, past any offsets the broker no longer holds
	done bool  // nothing is left to read in the range
}

// probe asks the partition's leader what is left of [next, end): offsets
// below the log start are skipped as deleted, a range at or past the
// high-water mark is done, and with fetch a fetch at next that returns a
// record at or beyond end shows the rest holds no record. Anything else
// (records inside the range, or a fetch that does not answer) is not done.
func (r *RangeReader) probe(ctx context.Context, topic string, partition int, next, end int64, fetch bool) (verdict, error) {
	v := verdict{next: next}
	if next >= end {
		v.done = true
		return v, nil
	}
	c, err := r.leader(ctx, topic, partition)
	if err != nil {
		return v, err
	}
	defer c.Close()
	first, last, err := c.ReadOffsets()
	if err != nil {
		return v, fmt.Errorf("kafka: cluster %s: offsets of %s/%d: %w", r.cluster.Name, topic, partition, err)
	}
	if first > v.next {
		to := min(first, end)
		r.skipped(Skip{Topic: topic, Partition: partition, From: v.next, To: to, Reason: SkipDeleted})
		v.next = to
	}
	if v.next >= end {
		v.done = true
		return v, nil
	}
	if last <= v.next {
		r.skipped(Skip{Topic: topic, Partition: partition, From: v.next, To: end, Reason: SkipPastEnd})
		v.next, v.done = end, true
		return v, nil
	}
	if !fetch {
		return v, nil
	}
	if _, err := c.Seek(v.next, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
		return v, nil // inconclusive
	}
	b := c.ReadBatch(1, 1<<20)
	m, err := b.ReadMessage()
	_ = b.Close()
	if err == nil && m.Offset >= end {
		r.skipped(Skip{Topic: topic, Partition: partition, From: v.next, To: end, Reason: SkipNoRecords})
		v.next, v.done = end, true
	}
	return v, nil
}

// reportDeleted reports [from, to) as deleted if the partition's log start
// is past from; a jump over compacted offsets is not a skip.
func (r *RangeReader) reportDeleted(ctx context.Context, topic string, partition int, from, to int64) {
	c, err := r.leader(ctx, topic, partition)
	if err != nil {
		return
	}
	defer c.Close()
	first, _, err := c.ReadOffsets()
	if err != nil || first <= from {
		return
	}
	r.skipped(Skip{Topic: topic, Partition: partition, From: from, To: min(first, to), Reason: SkipDeleted})
}

func (r *RangeReader) skipped(s Skip) {
	if s.To <= s.From {
		return
	}
	r.logger().Warn(fmt.Sprintf("kafka: %s/%d: offsets %d to %d of the range were not read (%s)", s.Topic, s.Partition, s.From, s.To-1, s.Reason),
		"cluster", r.cluster.Name, "topic", s.Topic, "partition", s.Partition, "from", s.From, "to", s.To, "reason", s.Reason)
	if r.OnSkip != nil {
		r.OnSkip(s)
	}
}

// leader dials the partition's leader, with a deadline of at most 10s.
func (r *RangeReader) leader(ctx context.Context, topic string, partition int) (*kafka.Conn, error) {
	var lastErr error
	for _, b := range r.cluster.Brokers {
		c, err := r.d.DialLeader(ctx, "tcp", b, topic, partition)
		if err != nil {
			lastErr = err
			continue
		}
		dl := time.Now().Add(10 * time.Second)
		if d, ok := ctx.Deadline(); ok && d.Before(dl) {
			dl = d
		}
		_ = c.SetDeadline(dl)
		return c, nil
	}
	return nil, fmt.Errorf("kafka: cluster %s: no broker answers for %s/%d: %w", r.cluster.Name, topic, partition, lastErr)
}
