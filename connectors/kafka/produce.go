package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/residency-router/residency/stream"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	produceAPI "github.com/segmentio/kafka-go/protocol/produce"
	rawProduceAPI "github.com/segmentio/kafka-go/protocol/rawproduce"
)

// producer writes the records of one Publish call with one produce request
// per partition leader: a request carries every topic and partition that
// broker leads, where kafka-go's Writer sends one request per partition. A
// routed batch is spread over every pinned topic's partitions (about 40 in
// the bench), so this is the difference between one request per batch and
// dozens, each of which the broker handles on its own (docs/performance.md).
//
// Its Balancer puts a key on a partition (murmur2 as the Java client by
// default; FNV-1a as kafka-go's Writer and earlier versions of this adapter
// with kafka.partitioner: fnv1a). Records of one partition are sent in the order given, in chunks of at
// most batchSize records and batchBytes bytes; chunk k+1 of a partition is
// sent only after chunk k was acknowledged, so the first copy of every
// record is appended in order. (Without an idempotent producer, which
// kafka-go does not have, a request that timed out may still be appended
// after its retry: a later duplicate, as with any at-least-once producer.)
//
// Every record set is encoded in the caller's goroutine before its request
// is handed to the transport, which then reads only those bytes: the
// messages are never read after publish returns, whatever the outcome
// (kafka-go may still be encoding a request whose context has ended, so a
// request built on the messages themselves would break the Publisher
// memory contract after a retried failure).
type producer struct {
	log          *slog.Logger
	tr           kafka.RoundTripper // a *kafka.Transport, but for tests
	addr         net.Addr
	bal          Balancer
	acks         int16
	timeout      time.Duration
	attributes   protocol.Attributes // compression codec
	batchSize    int                 // records of one partition per request
	batchBytes   int64               // bytes of one partition's records per request
	requestBytes int64               // bytes of one request
	retry        stream.Retry        // the waits (Delay) and bound (Attempts) of retrying partitions within one publish
}

// batchOverhead is the size of a v2 record batch's header, counted against
// batchBytes with the records.
const batchOverhead = 61

// recordOverhead is a generous bound on the framing bytes of one record in
// a v2 record batch (length, attributes, timestamp and offset deltas, key
// and value lengths, header count), used to keep requests under their
// limits.
const recordOverhead = 32

// topicPartition names one partition of a topic.
type topicPartition struct {
	topic     string
	partition int32
}

// partBatch is the records of one Publish call bound for one partition, by
// index into the call's messages, in order; done counts the ones already
// acknowledged.
type partBatch struct {
	topic     string
	partition int32
	idx       []int32
	done      int
	err       error // the last error, for the report
}

// publishError is what a partition batch that could not be written
// reports: the partition and how many records it held.
type publishError struct {
	failed, total int
	err           error
}

func (e *publishError) Error() string {
	return fmt.Sprintf("%d of %d records failed: %v", e.failed, e.total, e.err)
}

func (e *publishError) Unwrap() error { return e.err }

// topicMeta is what the producer needs of a topic: its partition leaders.
type topicMeta struct {
	leaders []int32 // by partition; -1: none
}

// metadata returns the partition leaders of topics from the transport's
// cached cluster metadata (kafka-go refreshes it at random intervals of at
// most its MetadataTTL, not on errors; see Cluster.transport), the same view
// the transport uses to send a produce request to its leader. A topic the
// cluster does not have is an error: topics are never auto-created.
func (p *producer) metadata(ctx context.Context, topics []string) (map[string]topicMeta, error) {
	r, err := p.tr.RoundTrip(ctx, p.addr, &metadataAPI.Request{TopicNames: topics})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	resp, ok := r.(*metadataAPI.Response)
	if !ok {
		return nil, fmt.Errorf("metadata: unexpected response %T", r)
	}
	out := make(map[string]topicMeta, len(resp.Topics))
	for _, t := range resp.Topics {
		if t.ErrorCode != 0 {
			return nil, fmt.Errorf("topic %s: %w", t.Name, kafka.Error(t.ErrorCode))
		}
		leaders := make([]int32, len(t.Partitions))
		for i := range leaders {
			leaders[i] = -1
		}
		for _, pt := range t.Partitions {
			if int(pt.PartitionIndex) < len(leaders) && pt.PartitionIndex >= 0 {
				leaders[pt.PartitionIndex] = pt.LeaderID
			}
		}
		out[t.Name] = topicMeta{leaders: leaders}
	}
	for _, t := range topics {
		if m, ok := out[t]; !ok || len(m.leaders) == 0 {
			return nil, fmt.Errorf("topic %s: %w", t, kafka.UnknownTopicOrPartition)
		}
	}
	return out, nil
}

// publish writes msgs and returns once every record is acknowledged, or
// with an error: at once for a permanent one, else when the retriable
// failures have been tried p.retry.Attempts times or for p.timeout in all.
// Records already acknowledged are not sent again within the call.
// placement is where a publish call wrote its records: parts[i] and
// offs[i] for msgs[i] (-1 until acknowledged). A nil placement records
// nothing.
type placement struct {
	parts []int32
	offs  []int64
}

// set records that the n records of b from b.done on were written from
// base on.
func (pl *placement) set(b *partBatch, n int, base int64) {
	if pl == nil {
		return
	}
	for k, i := range b.idx[b.done : b.done+n] {
		pl.parts[i] = b.partition
		pl.offs[i] = -1
		if base >= 0 {
			pl.offs[i] = base + int64(k)
		}
	}
}

func (p *producer) publish(ctx context.Context, msgs []stream.Message, pl *placement) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var topics []string
	seen := map[string]bool{}
	for i := range msgs {
		if t := msgs[i].Topic; !seen[t] {
			seen[t] = true
			topics = append(topics, t)
		}
	}
	meta, err := p.metadata(ctx, topics)
	if err != nil {
		return err
	}
	batches := p.assign(msgs, meta)
	now := time.Now()
	for attempt := 1; ; attempt++ {
		retry, perm := p.attempt(ctx, msgs, batches, meta, now, pl)
		if perm != nil {
			return perm
		}
		if len(retry) == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(ctx.Err(), batchesError(retry))
		}
		if attempt >= p.retry.Attempts || time.Since(now) >= p.timeout {
			return batchesError(retry)
		}
		wait := p.retry.Delay(attempt)
		if p.log != nil {
			p.log.Warn("kafka: produce: retrying partitions", "partitions", len(retry),
				"attempt", attempt, "backoff_ms", wait.Milliseconds(), "error", retry[0].err)
		}
		if err := sleep(ctx, wait); err != nil {
			return errors.Join(err, batchesError(retry))
		}
		for _, b := range retry {
			b.idx, b.done = b.idx[b.done:], 0 // send only what is left
		}
		batches = retry
		// Leaders may have moved; group by what the cache says now.
		if m, err := p.metadata(ctx, topics); err == nil {
			meta = m
		}
	}
}

// assign picks each record's partition with the balancer and groups the
// records by partition, in order.
func (p *producer) assign(msgs []stream.Message, meta map[string]topicMeta) []*partBatch {
	byTP := map[topicPartition]*partBatch{}
	var batches []*partBatch
	for i := range msgs {
		m := &msgs[i]
		part := int32(p.bal.Partition(m.Key, len(meta[m.Topic].leaders)))
		k := topicPartition{m.Topic, part}
		b := byTP[k]
		if b == nil {
			b = &partBatch{topic: m.Topic, partition: part}
			byTP[k] = b
			batches = append(batches, b)
		}
		b.idx = append(b.idx, int32(i))
	}
	return batches
}

// attempt sends every batch once, one goroutine per leader. It returns the
// batches that failed with a retriable error (with the records still to
// send) and the first permanent error.
func (p *producer) attempt(ctx context.Context, msgs []stream.Message, batches []*partBatch, meta map[string]topicMeta, now time.Time, pl *placement) (retry []*partBatch, perm error) {
	byLeader := map[int32][]*partBatch{}
	var leaders []int32
	for _, b := range batches {
		tl := meta[b.topic].leaders
		if int(b.partition) >= len(tl) {
			// The topic has fewer partitions than when the records were
			// assigned (recreated, or a broker behind): keep the partition,
			// and with it the order, and wait for the metadata to catch up.
			b.err = fmt.Errorf("%s[%d]: %w", b.topic, b.partition, kafka.UnknownTopicOrPartition)
			retry = append(retry, b)
			continue
		}
		l := tl[b.partition]
		if l < 0 {
			b.err = fmt.Errorf("%s[%d]: %w", b.topic, b.partition, kafka.LeaderNotAvailable)
			retry = append(retry, b)
			continue
		}
		if _, ok := byLeader[l]; !ok {
			leaders = append(leaders, l)
		}
		byLeader[l] = append(byLeader[l], b)
	}
	sort.Slice(leaders, func(i, j int) bool { return leaders[i] < leaders[j] })
	results := make([][]*partBatch, len(leaders))
	perms := make([]error, len(leaders))
	if len(leaders) == 1 {
		results[0], perms[0] = p.sendTo(ctx, msgs, byLeader[leaders[0]], now, pl)
	} else {
		var wg sync.WaitGroup
		for i, l := range leaders {
			wg.Go(func() { results[i], perms[i] = p.sendTo(ctx, msgs, byLeader[l], now, pl) })
		}
		wg.Wait()
	}
	for i := range leaders {
		retry = append(retry, results[i]...)
		if perm == nil {
			perm = perms[i]
		}
	}
	return retry, perm
}

// sendTo sends batches, all led by one broker, in as few requests as the
// limits allow, and returns those that failed with a retriable error and
// the first permanent error.
func (p *producer) sendTo(ctx context.Context, msgs []stream.Message, batches []*partBatch, now time.Time, pl *placement) (retry []*partBatch, perm error) {
	active := batches
	for len(active) > 0 {
		if ctx.Err() != nil {
			// Not sent at all: kafka-go would still send a request whose
			// context has ended if a connection is idle.
			for _, b := range active {
				b.err = fmt.Errorf("%s[%d]: %w", b.topic, b.partition, ctx.Err())
			}
			return append(retry, active...), perm
		}
		req, chunks, err := p.request(msgs, active, now)
		if err != nil {
			if perm == nil {
				perm = err
			}
			return retry, perm
		}
		rctx, cancel := context.WithTimeout(ctx, p.timeout)
		r, err := p.tr.RoundTrip(rctx, p.addr, req)
		cancel()
		if err != nil {
			// The whole request failed (a connection, a moved leader, the
			// deadline): every batch still active is retried.
			for _, b := range active {
				b.err = fmt.Errorf("%s[%d]: %w", b.topic, b.partition, err)
			}
			return append(retry, active...), perm
		}
		resp, ok := r.(*produceAPI.Response)
		if !ok {
			err := fmt.Errorf("produce: unexpected response %T", r)
			for _, b := range active {
				b.err = err
			}
			return append(retry, active...), perm
		}
		type answer struct {
			code int16
			base int64
		}
		codes := make(map[topicPartition]answer, len(chunks))
		for _, t := range resp.Topics {
			for _, pr := range t.Partitions {
				codes[topicPartition{t.Topic, pr.Partition}] = answer{pr.ErrorCode, pr.BaseOffset}
			}
		}
		next := active[:0:0]
		for _, b := range active {
			n, sent := chunks[b]
			if !sent {
				next = append(next, b) // not in this request: the next one
				continue
			}
			ans, answered := codes[topicPartition{b.topic, b.partition}]
			code := ans.code
			switch {
			case !answered:
				b.err = fmt.Errorf("%s[%d]: %w", b.topic, b.partition, errNoAnswer)
				retry = append(retry, b)
			case code != 0:
				kerr := kafka.Error(code)
				b.err = fmt.Errorf("%s[%d]: %w", b.topic, b.partition, kerr)
				if kerr.Temporary() {
					retry = append(retry, b)
				} else if perm == nil {
					perm = &publishError{failed: len(b.idx) - b.done, total: len(msgs), err: b.err}
				}
			default:
				pl.set(b, n, ans.base)
				b.done += n
				if b.done < len(b.idx) {
					next = append(next, b)
				}
			}
		}
		active = next
	}
	return retry, perm
}

// request builds one produce request with the next chunk of as many of
// batches as fit, each encoded as a v2 record batch; chunks says how many
// records of each batch it holds. An error (encoding failed) is permanent.
func (p *producer) request(msgs []stream.Message, batches []*partBatch, now time.Time) (*rawProduceAPI.Request, map[*partBatch]int, error) {
	// The broker's timeout is below the client's deadline for the request
	// (which also covers connecting and queueing), so that a slow
	// acknowledgement comes back as the broker's RequestTimedOut rather
	// than as a dropped connection.
	req := &rawProduceAPI.Request{Acks: p.acks, Timeout: int32(p.timeout * 3 / 4 / time.Millisecond)}
	chunks := make(map[*partBatch]int, len(batches))
	topicAt := map[string]int{}
	var reqBytes int64
	var reader recordsReader
	for _, b := range batches {
		rest := b.idx[b.done:]
		n, size := 0, int64(batchOverhead)
		for n < len(rest) && n < p.batchSize {
			s := recordSize(&msgs[rest[n]])
			if n > 0 && size+s > p.batchBytes {
				break
			}
			size += s
			n++
		}
		if len(chunks) > 0 && reqBytes+size > p.requestBytes {
			continue // the next request
		}
		reqBytes += size
		chunks[b] = n
		reader = recordsReader{msgs: msgs, idx: rest[:n], now: now}
		var buf bytes.Buffer
		buf.Grow(int(size) + 4)
		rs := protocol.RecordSet{Version: 2, Attributes: p.attributes, Records: &reader}
		if _, err := rs.WriteTo(&buf); err != nil {
			return nil, nil, fmt.Errorf("%s[%d]: encoding records: %w", b.topic, b.partition, err)
		}
		ti, ok := topicAt[b.topic]
		if !ok {
			ti = len(req.Topics)
			topicAt[b.topic] = ti
			req.Topics = append(req.Topics, rawProduceAPI.RequestTopic{Topic: b.topic})
		}
		req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, rawProduceAPI.RequestPartition{
			Partition: b.partition,
			RecordSet: protocol.RawRecordSet{Reader: &buf},
		})
	}
	return req, chunks, nil
}

// errNoAnswer: a produce response lacked a partition the request carried
// (retried).
var errNoAnswer = errors.New("the broker did not answer for this partition")

// recordSize estimates the encoded size of m in a record batch.
func recordSize(m *stream.Message) int64 {
	n := len(m.Key) + len(m.Value) + recordOverhead
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value) + 4
	}
	return int64(n)
}

// recordsReader hands the records msgs[idx[0]], msgs[idx[1]], ... to
// kafka-go's record-batch encoder, which request runs in the caller's
// goroutine: keys, values and headers are read in place (stream.Header and
// kafka-go's header have the same layout, see kafkaHeaders). A record
// without a time gets now.
type recordsReader struct {
	msgs       []stream.Message
	idx        []int32
	i          int
	now        time.Time
	rec        protocol.Record
	key, value bytesReadCloser
}

// ReadRecord returns the next record, or io.EOF.
func (r *recordsReader) ReadRecord() (*protocol.Record, error) {
	if r.i >= len(r.idx) {
		return nil, io.EOF
	}
	m := &r.msgs[r.idx[r.i]]
	r.i++
	r.rec = protocol.Record{Time: m.Time, Headers: kafkaHeaders(m.Headers)}
	if r.rec.Time.IsZero() {
		r.rec.Time = r.now
	}
	if m.Key != nil {
		r.key.Reset(m.Key)
		r.rec.Key = &r.key
	}
	if m.Value != nil {
		r.value.Reset(m.Value)
		r.rec.Value = &r.value
	}
	return &r.rec, nil
}

// bytesReadCloser is a protocol.Bytes over a byte slice.
type bytesReadCloser struct{ bytes.Reader }

// Close does nothing.
func (*bytesReadCloser) Close() error { return nil }

// batchesError summarizes the failures of the batches still unwritten.
// Distinct errors are joined (at most maxJoined), so errors.Is finds any
// of the broker's error codes.
func batchesError(bs []*partBatch) error {
	const maxJoined = 5
	failed := 0
	seen := map[string]bool{}
	var errs []error
	for _, b := range bs {
		failed += len(b.idx) - b.done
		if b.err != nil && !seen[b.err.Error()] && len(errs) < maxJoined {
			seen[b.err.Error()] = true
			errs = append(errs, b.err)
		}
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("not acknowledged"))
	}
	return fmt.Errorf("%d records in %d partitions not written: %w", failed, len(bs), errors.Join(errs...))
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
