package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/residency-router/residency/stream"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
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
// broker does not serve fetches, or, read_committed, a transaction stays
// open): the range is not complete, and nothing after the last record
// handed over was read.
var ErrStalled = errors.New("kafka: range read stalled")

// Reasons a part of a range was skipped, the values of Skip.Reason. The
// first three are offsets ReadRange could not read (logged as warnings);
// SkipTxnMarker and SkipAborted are offsets it read and that hold no data
// record for the reader's isolation level (logged at debug level): a
// caller that counts offsets tells them apart from deleted or compacted
// ones.
const (
	// SkipDeleted: the offsets are below the partition's log start offset
	// (deleted by retention or delete-records) and cannot be read.
	SkipDeleted = "deleted"
	// SkipNoRecords: the broker holds no record there: a fetch at the first
	// of them returned one at or beyond the range end (compaction).
	SkipNoRecords = "no_records"
	// SkipPastEnd: the offsets are at or past the partition's high-water
	// mark (a range planned past it, or a log truncated by an unclean
	// leader election).
	SkipPastEnd = "past_end"
	// SkipTxnMarker: the offsets hold a control batch, a transaction
	// marker (commit or abort) that a transactional producer's
	// coordinator wrote. A marker is never a record: no isolation level
	// returns it.
	SkipTxnMarker = "txn_marker"
	// SkipAborted: read_committed only: the offsets hold a batch of a
	// transaction its producer aborted, whose records read_committed does
	// not return (read_uncommitted returns them as any record).
	SkipAborted = "aborted"
)

// Isolation levels of RangeReader.IsolationLevel, as the config's
// kafka.isolation_level spells them.
const (
	// ReadUncommitted returns every data record, those of aborted
	// transactions included (Kafka's default).
	ReadUncommitted = "read_uncommitted"
	// ReadCommitted returns the records of committed transactions and
	// non-transactional ones, up to the last stable offset.
	ReadCommitted = "read_committed"
)

// Skip is a part [From, To) of a range ReadRange did not hand over.
type Skip struct {
	// Topic and Partition name the partition.
	Topic     string
	Partition int
	// From is the first offset skipped, To the one after the last.
	From, To int64
	// Reason is one of SkipDeleted, SkipNoRecords, SkipPastEnd,
	// SkipTxnMarker and SkipAborted.
	Reason string
}

// RangeReader reads offset ranges of partitions without a consumer group;
// it commits nothing and changes no offsets. It fetches with its own
// connections and decodes record batches as the router's batch Consumer
// does (scanBatches): transaction markers are never returned as records,
// and read_committed filters aborted transactions exactly as the router
// does.
type RangeReader struct {
	cluster Cluster
	d       *kafka.Dialer // log start and high-water mark (probe)
	cd      *connDialer   // fetches
	// IdleCheck is how long a read waits for the next record before it
	// asks the broker whether the rest of the range still holds any.
	// Default 2s.
	IdleCheck time.Duration
	// MaxIdle is how many idle checks in a row may find records left in
	// the range that do not arrive before ReadRange fails with ErrStalled.
	// Default 30.
	MaxIdle int
	// IsolationLevel is ReadUncommitted or ReadCommitted (case
	// insensitive); another value makes ReadRange fail with ErrConfig.
	// Read committed, offsets at or past the last stable offset (an open
	// transaction) are waited for like records that do not arrive.
	// Default (empty) read_uncommitted.
	IsolationLevel string
	// OnSkip, if set, is told of every part of a range that was not
	// handed over, and why. Skips are also logged (Logger: deleted,
	// no_records and past_end as warnings, txn_marker and aborted at
	// debug level).
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
	cd, err := cluster.connDialer(nil)
	if err != nil {
		return nil, err
	}
	return &RangeReader{cluster: cluster, d: d, cd: cd, IdleCheck: 2 * time.Second, MaxIdle: 30}, nil
}

func (r *RangeReader) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.Default()
	}
	return r.Logger
}

// isolationLevel returns the Fetch and ListOffsets isolation level of a
// config's isolation_level: 0 for "" or ReadUncommitted, 1 for
// ReadCommitted (case insensitive); anything else is ErrConfig.
func isolationLevel(level string) (int8, error) {
	switch strings.ToLower(level) {
	case "", ReadUncommitted:
		return 0, nil
	case ReadCommitted:
		return 1, nil
	}
	return 0, fmt.Errorf("%w: isolation_level: %q is not %s or %s", ErrConfig, level, ReadUncommitted, ReadCommitted)
}

// rangeFetchWait is how long a fetch of ReadRange waits on the broker for
// records to arrive.
const rangeFetchWait = 200 * time.Millisecond

// rangeFetchTimeout bounds a fetch of ReadRange's response, beyond its wait.
const rangeFetchTimeout = 10 * time.Second

// ReadRange reads the records of topic/partition with offsets in
// [start, end), in offset order, and calls fn with batches of at most batch
// records. It returns fn's first error, or nil once the range is read.
// Offsets missing inside the range (compaction) are passed over. A part of
// the range is skipped (and reported, see OnSkip) only when the broker
// shows it holds no record there: below the log start offset (retention),
// at or past the high-water mark, or a tail that a fetch shows empty. While
// the broker holds records in the range that do not arrive, the read
// waits, and fails with ErrStalled after MaxIdle idle checks in a row.
// Transaction markers are never handed over, whatever the isolation level
// (SkipTxnMarker); read_committed, neither are the records of aborted
// transactions (SkipAborted). Keys, values and header values come out
// exactly as they are in the log, null (nil) apart from empty.
func (r *RangeReader) ReadRange(ctx context.Context, topic string, partition int, start, end int64, batch int, fn func([]stream.Message) error) error {
	return r.ReadRangeSkips(ctx, topic, partition, start, end, batch, fn, nil)
}

// ReadRangeSkips is ReadRange that also tells skip (when not nil) of this
// read's skips, as OnSkip: every skip is reported before fn is handed any
// record after it, so a caller merging records and skips sees offsets in
// order once it has handed over the records before each skip.
func (r *RangeReader) ReadRangeSkips(ctx context.Context, topic string, partition int, start, end int64, batch int, fn func([]stream.Message) error, skip func(Skip)) error {
	if end <= start {
		return nil
	}
	if batch <= 0 {
		batch = 100
	}
	iso, err := isolationLevel(r.IsolationLevel)
	if err != nil {
		return err
	}
	idle := r.IdleCheck
	if idle <= 0 {
		idle = 2 * time.Second
	}
	maxIdle := r.MaxIdle
	if maxIdle <= 0 {
		maxIdle = 30
	}
	rd := rangeRead{r: r, topic: topic, partition: int32(partition), skip: skip, leader: -1,
		w: newWire(r.cd, r.cluster.Brokers, r.logger())}
	defer rd.w.close()
	next := start // the offset after the last record handed over or skipped
	// A start deleted by retention: say what is skipped.
	if v, err := r.probe(ctx, topic, partition, next, end, rd.skipped); err != nil {
		return err
	} else if next = v.next; v.done {
		return nil
	}
	buf := make([]stream.Message, 0, batch)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		err := fn(buf)
		buf = make([]stream.Message, 0, batch)
		return err
	}
	var slab headerSlab
	idles, fails := 0, 0
	lastMove := time.Now()
	var why error // the last reason a fetch brought nothing
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		o, err := rd.fetch(ctx, next, iso)
		moved := false
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, errPermanent) {
				return fmt.Errorf("kafka: cluster %s: read %s/%d at %d: %w", r.cluster.Name, topic, partition, next, err)
			}
			why = err
		case o.code == int16(kafka.OffsetOutOfRange):
			// Below the log start (retention while reading) or past the
			// high-water mark (a truncated log): the broker's offsets say.
			if err := flush(); err != nil {
				return err
			}
			v, err := r.probe(ctx, topic, partition, next, end, rd.skipped)
			if err != nil {
				return err
			}
			moved = v.next > next
			if next = v.next; v.done {
				return nil
			}
			why = kafka.OffsetOutOfRange
		case o.code != 0:
			kerr := kafka.Error(o.code)
			if !kerr.Temporary() {
				return fmt.Errorf("kafka: cluster %s: read %s/%d at %d: %w", r.cluster.Name, topic, partition, next, kerr)
			}
			rd.leader = -1 // the leader moved, or is not known yet
			why = kerr
		default:
			// Skips first (see ReadRangeSkips), then the records.
			done := false
			for _, p := range o.passed {
				from, to := max(p.from, next), min(p.to, end)
				reason := SkipTxnMarker
				if p.aborted {
					reason = SkipAborted
				}
				rd.skipped(Skip{Topic: topic, Partition: partition, From: from, To: to, Reason: reason})
			}
			last := next - 1 // the last offset handed over
			for i := range o.views {
				v := &o.views[i]
				for v.left > 0 && !done {
					buf = append(buf, stream.Message{})
					m := &buf[len(buf)-1]
					ok, err := decodeRecord(v, m, &slab, o.nrecords)
					if err != nil {
						return fmt.Errorf("kafka: cluster %s: read %s/%d at %d: %w", r.cluster.Name, topic, partition, next, err)
					}
					if !ok || m.Offset < next {
						buf = buf[:len(buf)-1]
						continue
					}
					if m.Offset >= end {
						buf = buf[:len(buf)-1]
						done = true
						break
					}
					m.Topic, m.Partition, m.HighWaterMark = topic, partition, o.hwm
					last = m.Offset
					if len(buf) >= batch {
						if err := flush(); err != nil {
							return err
						}
					}
				}
			}
			if done {
				// A record at or past the end: the rest of the range holds
				// none. Say so of the offsets no marker or aborted batch
				// (reported above) explains, each offset once.
				at := last + 1
				for _, p := range o.passed { // in offset order
					if p.to <= at || p.from >= end {
						continue
					}
					if p.from > at {
						rd.skipped(Skip{Topic: topic, Partition: partition, From: at, To: min(p.from, end), Reason: SkipNoRecords})
					}
					at = p.to
				}
				if at < end {
					rd.skipped(Skip{Topic: topic, Partition: partition, From: at, To: end, Reason: SkipNoRecords})
				}
				return flush()
			}
			if o.next > next {
				moved, next = true, o.next
			}
			if o.err != nil {
				// A batch that does not decode: fetched again (it may have
				// been damaged on the way); a lasting one stalls the read.
				r.logger().Warn("kafka: fetched records do not decode; fetching again", "cluster", r.cluster.Name,
					"topic", topic, "partition", partition, "offset", next, "error", o.err)
				why = o.err
			}
			if next >= end {
				return flush()
			}
			if !moved && o.err == nil {
				stable := o.hwm
				if iso == 1 && o.lso >= 0 {
					stable = min(o.lso, o.hwm)
				}
				switch {
				case o.hwm >= 0 && o.hwm <= next:
					// Below the range's end: a truncated log, or a new
					// leader whose high-water mark has not caught up yet.
					// Only the probe after an idle check concludes past_end,
					// so a lagging mark does not cut the range short.
					why = fmt.Errorf("the high-water mark is %d", o.hwm)
				case stable <= next:
					why = fmt.Errorf("the last stable offset is %d: a transaction is still open", stable)
				default:
					why = nil
				}
			}
		}
		if moved {
			idles, fails, lastMove, why = 0, 0, time.Now(), nil
			continue
		}
		if time.Since(lastMove) >= idle {
			// Idle: hand over what we have, then ask the broker whether
			// anything is left to read in [next, end).
			if err := flush(); err != nil {
				return err
			}
			v, err := r.probe(ctx, topic, partition, next, end, rd.skipped)
			if err != nil {
				return err
			}
			if v.done {
				return nil
			}
			if v.next > next {
				next, idles, lastMove = v.next, 0, time.Now()
				continue
			}
			lastMove = time.Now()
			if idles++; idles >= maxIdle {
				detail := ""
				if why != nil {
					detail = fmt.Sprintf(" (%v)", why)
				}
				return fmt.Errorf("%w: cluster %s: %s/%d: no record arrived for %s although the broker holds offsets %d to %d of the range%s; "+
					"the range is not complete", ErrStalled, r.cluster.Name, topic, partition, time.Duration(idles)*idle, next, end-1, detail)
			}
		}
		// Nothing moved: wait a little before asking again (a failure
		// backs off further).
		fails++
		if err := sleep(ctx, min(clientRetry.Delay(fails), idle)); err != nil {
			return err
		}
	}
}

// errPermanent marks a fetch failure retrying cannot mend.
var errPermanent = errors.New("not retriable")

// rangeRead is the state of one ReadRange: its connections and the
// partition's leader.
type rangeRead struct {
	r         *RangeReader
	topic     string
	partition int32
	skip      func(Skip)
	w         *wire
	leader    int32 // -1: look it up
}

// skipped reports s to the reader and to the read's skip function.
func (rd *rangeRead) skipped(s Skip) {
	if s.To <= s.From {
		return
	}
	rd.r.skipped(s)
	if rd.skip != nil {
		rd.skip(s)
	}
}

// fetch sends one fetch request for the partition at offset to its leader
// and parses the response, noting the markers and aborted batches passed
// over. A broker's error code is in the outcome; err is for failures to
// ask (wrapping errPermanent when retrying cannot help).
func (rd *rangeRead) fetch(ctx context.Context, offset int64, iso int8) (partOutcome, error) {
	if rd.leader < 0 {
		resp, err := rd.w.metadata(ctx, []string{rd.topic}, rangeFetchTimeout)
		if err != nil {
			return partOutcome{}, err
		}
		for _, t := range resp.Topics {
			if t.Name != rd.topic {
				continue
			}
			if t.ErrorCode != 0 {
				if kerr := kafka.Error(t.ErrorCode); !kerr.Temporary() {
					return partOutcome{}, fmt.Errorf("%w: metadata of %s: %w", errPermanent, rd.topic, kerr)
				}
				return partOutcome{}, fmt.Errorf("metadata of %s: %w", rd.topic, kafka.Error(t.ErrorCode))
			}
			for _, p := range t.Partitions {
				if p.PartitionIndex == rd.partition {
					rd.leader = p.LeaderID
				}
			}
		}
		if rd.leader < 0 {
			return partOutcome{}, fmt.Errorf("no leader known for %s/%d", rd.topic, rd.partition)
		}
	}
	conn, err := rd.w.conn(ctx, rd.leader, kindData)
	if err != nil {
		rd.leader = -1
		return partOutcome{}, err
	}
	if _, err := conn.version(protocol.Fetch, fetchVersion, fetchVersion); err != nil {
		return partOutcome{}, fmt.Errorf("%w: %w", errPermanent, err)
	}
	parts := []fetchPart{{p: &partFetch{topic: rd.topic, partition: rd.partition}, from: offset}}
	frame, err := fetchRequest(conn.clientID, parts, rangeFetchWait, 4<<20, 4<<20, iso)
	if err != nil {
		return partOutcome{}, err
	}
	cl := fetchCall(frame, rangeFetchWait, rangeFetchTimeout)
	conn.send(cl)
	select {
	case <-cl.done:
	case <-ctx.Done():
		return partOutcome{}, ctx.Err()
	}
	if cl.err != nil {
		rd.leader = -1
		return partOutcome{}, cl.err
	}
	out, err := parseFetchPassed(cl.body(), parts, iso == 1, true)
	frameBufs.put(cl.resp) // parseFetch copied out what it returns
	cl.resp = nil
	if err != nil {
		return partOutcome{}, err
	}
	if !out[0].answered {
		return partOutcome{}, fmt.Errorf("the broker did not answer for %s/%d", rd.topic, rd.partition)
	}
	return out[0], nil
}

// verdict is what probe found about [next, end).
type verdict struct {
	next int64 // next, past any offsets the broker no longer holds
	done bool  // nothing is left to read in the range
}

// probe asks the partition's leader what is left of [next, end): offsets
// below the log start are skipped as deleted, a range at or past the
// high-water mark is done; each skip goes to report. Anything else
// (records inside the range) is not done.
func (r *RangeReader) probe(ctx context.Context, topic string, partition int, next, end int64, report func(Skip)) (verdict, error) {
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
		report(Skip{Topic: topic, Partition: partition, From: v.next, To: to, Reason: SkipDeleted})
		v.next = to
	}
	if v.next >= end {
		v.done = true
		return v, nil
	}
	if last <= v.next {
		report(Skip{Topic: topic, Partition: partition, From: v.next, To: end, Reason: SkipPastEnd})
		v.next, v.done = end, true
	}
	return v, nil
}

// skipped logs s (see OnSkip) and tells OnSkip.
func (r *RangeReader) skipped(s Skip) {
	if s.To <= s.From {
		return
	}
	lvl := slog.LevelWarn
	if s.Reason == SkipTxnMarker || s.Reason == SkipAborted {
		lvl = slog.LevelDebug // read, and no data record there: nothing lost
	}
	msg := fmt.Sprintf("kafka: %s/%d: offsets %d to %d of the range were not read (%s)", s.Topic, s.Partition, s.From, s.To-1, s.Reason)
	if lvl == slog.LevelDebug {
		msg = fmt.Sprintf("kafka: %s/%d: offsets %d to %d of the range hold no data record to return (%s)", s.Topic, s.Partition, s.From, s.To-1, s.Reason)
	}
	r.logger().Log(context.Background(), lvl, msg,
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
