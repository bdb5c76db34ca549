package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"time"

	"github.com/residency-router/residency/stream"
	"github.com/segmentio/kafka-go"
)

// A Kafka record's key, value and header values are each null or a byte
// string, possibly empty, and the router must write them back exactly as
// it read them: a record with an empty key goes, like every record of that
// key, to one partition, while one with a null key may go to any.
//
// kafka-go's Reader (and Conn.ReadBatch under it) cannot tell them apart:
// its message decoding (message_reader.go, readNewBytes) returns nil for a
// length of 0 as for a length of -1, so an empty key, value or header value
// comes out as nil. Its protocol package decodes record batches without
// that loss (a null key is a nil protocol.Bytes, an empty one a Bytes of
// length 0; a header value is nil or a zero-length slice). So when the
// Reader hands over a record with a nil key, value or header value, an
// exact fetches the partition from that offset through the protocol
// package and notes which fields of the records it got are empty; the
// Reader's record is then corrected, and the next ones of that partition
// are answered from the notes, without another request, until the reader
// passes the last offset the fetch returned. Records without a nil field
// (the usual case: keyed events) cost nothing.
//
// The price is a second fetch of the partition's data, for topics whose
// records have null or empty keys (or values, or header values). Fetching
// and decoding record batches ourselves in the first place (instead of
// kafka-go's Reader) removes it: the batch Consumer and the RangeReader
// do (records.go), and need no exact; the consumer-group Reader and
// Admin.ReadAll still read with kafka-go's Reader, and use one.

// exactMaxBytes bounds one fetch of an exact, so its notes stay small.
const exactMaxBytes = 1 << 20

// empties says which fields of the record at offset are empty (zero bytes)
// rather than null.
type empties struct {
	offset     int64
	key, value bool
	headers    []int // indexes of the header values that are empty
}

// emptiesOf returns which fields of r are empty, and whether any is.
func emptiesOf(r *kafka.Record) (empties, bool) {
	e := empties{offset: r.Offset}
	e.key = r.Key != nil && r.Key.Len() == 0
	e.value = r.Value != nil && r.Value.Len() == 0
	for i, h := range r.Headers {
		if h.Value != nil && len(h.Value) == 0 {
			e.headers = append(e.headers, i)
		}
	}
	return e, e.key || e.value || len(e.headers) > 0
}

// nilField reports whether m has a nil key, value or header value, which
// kafka-go's Reader hands over for an empty one as for a null one.
func nilField(m *kafka.Message) bool {
	if m.Key == nil || m.Value == nil {
		return true
	}
	for _, h := range m.Headers {
		if h.Value == nil {
			return true
		}
	}
	return false
}

// notes is what one fetch told of a partition: of the records with offsets
// in [from, to), those in recs (in offset order) have an empty field; every
// other nil field is null.
type notes struct {
	from, to int64
	recs     []empties
}

// exact restores the empty keys, values and header values of records read
// with kafka-go's Reader (see above). It is used by one goroutine at a time.
type exact struct {
	client   *kafka.Client
	cluster  string
	log      func() *slog.Logger
	maxBytes int
	notes    map[topicPartition]*notes
	// retry is the wait between attempts of a fetch that failed with a
	// retriable error (its Delay).
	retry stream.Retry
}

// newExact returns an exact fetching through client from cluster (named in
// errors and logs); log gives the logger for records it cannot resolve.
func newExact(client *kafka.Client, cluster string, log func() *slog.Logger) *exact {
	return &exact{client: client, cluster: cluster, log: log, maxBytes: exactMaxBytes,
		notes: map[topicPartition]*notes{}, retry: stream.Retry{Min: 50 * time.Millisecond, Max: time.Second}}
}

// errGone: the broker no longer holds the record (retention, compaction).
var errGone = errors.New("the broker no longer holds the record")

// restore makes the key, value and header values of m that are empty in
// the log empty (not nil), where kafka-go read them as nil. It fetches only
// when m has a nil field that no earlier fetch covers, and retries a
// failing fetch until ctx ends. A record the broker no longer holds keeps
// kafka-go's reading (nil), with a warning: it cannot be read again.
func (x *exact) restore(ctx context.Context, m *kafka.Message) error {
	if !nilField(m) {
		return nil
	}
	tp := topicPartition{m.Topic, int32(m.Partition)}
	n := x.notes[tp]
	if n == nil || m.Offset < n.from || m.Offset >= n.to {
		var err error
		n, err = x.fetch(ctx, m.Topic, m.Partition, m.Offset)
		if errors.Is(err, errGone) {
			x.log().Warn("kafka: a record with a null or empty field was deleted before it could be read again; "+
				"its empty key, value or header values are written as null",
				"cluster", x.cluster, "topic", m.Topic, "partition", m.Partition, "offset", m.Offset)
			delete(x.notes, tp)
			return nil
		}
		if err != nil {
			return err
		}
		x.notes[tp] = n
	}
	i := sort.Search(len(n.recs), func(i int) bool { return n.recs[i].offset >= m.Offset })
	if i < len(n.recs) && n.recs[i].offset == m.Offset {
		apply(m, &n.recs[i])
		i++
	}
	// The reader moves on: forget what it passed. A reader sent back (a
	// rebalance) fetches again.
	n.recs, n.from = n.recs[i:], m.Offset+1
	if len(n.recs) == 0 {
		n.recs = nil
	}
	return nil
}

// apply makes the fields e names empty in m, where m has them nil.
func apply(m *kafka.Message, e *empties) {
	if e.key && m.Key == nil {
		m.Key = []byte{}
	}
	if e.value && m.Value == nil {
		m.Value = []byte{}
	}
	for _, i := range e.headers {
		if i < len(m.Headers) && m.Headers[i].Value == nil {
			m.Headers[i].Value = []byte{}
		}
	}
}

// fetch fetches topic/partition from offset and returns its notes,
// retrying retriable failures until ctx ends. It fails with errGone when
// the record at offset is no longer on the broker.
func (x *exact) fetch(ctx context.Context, topic string, partition int, offset int64) (*notes, error) {
	for attempt := 1; ; attempt++ {
		n, err := x.fetchOnce(ctx, topic, partition, offset)
		if err == nil || errors.Is(err, errGone) {
			return n, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var kerr kafka.Error
		if errors.As(err, &kerr) && !kerr.Temporary() {
			return nil, fmt.Errorf("kafka: cluster %s: fetch %s/%d at %d: %w", x.cluster, topic, partition, offset, err)
		}
		if err := sleep(ctx, x.retry.Delay(attempt)); err != nil {
			return nil, err
		}
	}
}

// errNoRecord: a fetch returned no record at or after the offset asked for
// (retried).
var errNoRecord = errors.New("the fetch returned no record")

// fetchOnce sends one fetch request for topic/partition at offset.
func (x *exact) fetchOnce(ctx context.Context, topic string, partition int, offset int64) (*notes, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := x.client.Fetch(rctx, &kafka.FetchRequest{Topic: topic, Partition: partition, Offset: offset,
		MinBytes: 1, MaxBytes: int64(x.maxBytes), MaxWait: 250 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	if resp.Error != nil {
		if errors.Is(resp.Error, kafka.OffsetOutOfRange) {
			return nil, errGone
		}
		return nil, resp.Error
	}
	n := &notes{from: offset, to: offset}
	for {
		r, err := resp.Records.ReadRecord()
		if err != nil {
			if errors.Is(err, io.EOF) || n.to > offset {
				break // the end, or a batch cut short at the end of the response
			}
			return nil, err
		}
		if r.Offset >= offset {
			if n.to == offset && r.Offset > offset {
				closeRecord(r)
				return nil, errGone // compacted away
			}
			n.to = r.Offset + 1
			if e, ok := emptiesOf(r); ok {
				n.recs = append(n.recs, e)
			}
		}
		closeRecord(r)
	}
	if n.to == offset {
		return nil, errNoRecord
	}
	return n, nil
}

// closeRecord releases the buffers of r's key and value.
func closeRecord(r *kafka.Record) {
	if r.Key != nil {
		_ = r.Key.Close()
	}
	if r.Value != nil {
		_ = r.Value.Close()
	}
}
