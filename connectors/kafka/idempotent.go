package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/residency-router/residency/stream"
)

// DefaultMaxBufferedBytes is the default of
// ProducerConfig.MaxBufferedBytes: room for the router's default window
// (router.max_inflight_events, 10000 events) of events up to about 1.6 KiB
// bytes encoded, without holding more memory than that.
const DefaultMaxBufferedBytes = 16 << 20

// ProducerConfig configures a Producer.
type ProducerConfig struct {
	// Cluster is the cluster written to. Required.
	Cluster Cluster
	// Balancer picks a record's partition from its key. Default:
	// &Murmur2Balancer{} (the Java client's partitioner, as
	// connectors/kafka.Writer's default; NewBalancer maps kafka.partitioner
	// to a Balancer).
	Balancer Balancer
	// Compression is "none", "gzip", "snappy", "lz4" or "zstd". Default
	// "none".
	Compression string
	// BatchSize is the most records in one record batch: a partition's
	// records are encoded into batches of at most BatchSize records and
	// BatchBytes bytes, each sent in a request of its own (one batch per
	// partition per request); the records of later Produce calls join a
	// partition's last batch while it has not been sent (with compression
	// too: a batch is compressed when it is sealed, before it is first
	// sent). Default 1000.
	BatchSize int
	// BatchBytes is the most bytes of records in one record batch, before
	// compression. Default 1 MiB (the brokers' default message.max.bytes).
	BatchBytes int
	// MaxRequestBytes is the most bytes of one produce request. Default
	// 16 MiB, or BatchBytes when that is larger.
	MaxRequestBytes int
	// MaxInFlight is how many produce requests may be in flight on the
	// connection to one broker (so per partition: a request carries one
	// batch per partition), 1 to 5: brokers remember the last 5 batches of
	// a producer per partition, which is what lets a retry be recognised
	// as a duplicate. Default 5.
	MaxInFlight int
	// RequestTimeout is how long a broker may wait for the in-sync replicas
	// to acknowledge a request; we wait 5s more for its answer before
	// closing the connection and retrying. Default 10s.
	RequestTimeout time.Duration
	// DeliveryTimeout bounds how long a record is retried: a batch not
	// acknowledged within DeliveryTimeout of the first Produce call whose
	// records it holds fails (and so do the batches queued behind it for
	// its partition). 0 retries until Close. Default 0.
	DeliveryTimeout time.Duration
	// MaxBufferedBytes bounds the encoded records produced and not yet
	// acknowledged; Produce waits for room. Default 16 MiB
	// (DefaultMaxBufferedBytes).
	MaxBufferedBytes int64
	// Logger receives the producer's warnings (retries, epoch bumps; never
	// record contents). Default: slog.Default().
	Logger *slog.Logger

	dial dialFunc // tests: route connections through a proxy
}

// Ack is the outcome of one Produce call.
type Ack struct {
	// Err is nil when every record of the call was written. Otherwise it
	// says why some were not (errors.Is finds the broker's error code).
	Err error
	// Partitions[i] is the partition msgs[i] was assigned.
	Partitions []int32
	// Offsets[i] is msgs[i]'s offset in its partition, or -1 when it was
	// not written (or, rarely, written without the broker saying where:
	// an old broker answering a retry as a duplicate).
	Offsets []int64
}

// ErrDeliveryTimeout is the error of records not acknowledged within
// ProducerConfig.DeliveryTimeout.
var ErrDeliveryTimeout = errors.New("kafka: delivery timeout")

// ErrEarlierFailed is the error of records that failed because an earlier
// batch of their partition failed (to keep the partition's order, nothing
// queued behind a failed batch is written).
var ErrEarlierFailed = errors.New("kafka: an earlier batch of the partition failed")

// Producer is an idempotent Kafka producer on kafka-go's protocol layer:
// it gets a producer id from the cluster (InitProducerId), writes the
// producer id, epoch and per-partition sequence numbers into every record
// batch, and keeps up to MaxInFlight produce requests in flight per
// broker connection, acks=all. The brokers accept a partition's batches
// only in sequence order and recognise a resent batch as a duplicate, so
// retries neither reorder a partition's records nor write them twice.
//
// Produce is asynchronous: it encodes the records (so the caller may reuse
// their memory as soon as it returns) and calls done once every record is
// acknowledged or failed. Publish is the synchronous stream.Publisher on
// top. Records with equal keys go to the same partition (Balancer), in the
// order of the Produce calls.
//
// Failures. Retriable errors (a moved leader, not enough replicas, a
// broken connection, a timeout) are retried until DeliveryTimeout (by
// default, until Close), in order, with the same sequence numbers. A
// sequence the broker no longer knows (UnknownProducerId, an epoch
// error, an out-of-order sequence at the head of a partition: the broker
// lost the producer's state) makes the producer bump its epoch
// (InitProducerId with its id and epoch, KIP-360) once nothing is in
// flight, and renumber what is not yet acknowledged from 0; a batch whose
// earlier attempt had an unknown outcome may then be written twice (never
// out of order: its first copy precedes everything after it). A
// permanent error (a record too large, an authorization failure) fails
// the batch and every batch queued behind it for the same partition.
type Producer struct {
	cfg         ProducerConfig
	log         *slog.Logger
	w           *wire
	bal         Balancer
	codec       compress.Compression
	batchSize   int
	batchBytes  int
	reqBytes    int
	maxInFlight int
	reqTimeout  time.Duration
	maxBuffered int64

	encoders sync.Pool // *batchEncoder
	zbuf     []byte    // the loop's scratch buffer for compressing a batch (compressSealed)

	mu       sync.Mutex
	topics   map[string]*ptopic
	incoming []*pbatch
	open     map[tpKey]*pbatch // each partition's batch Produce may still append to
	buffered int64
	freed    chan struct{} // closed and replaced when buffered shrinks while waited on
	waited   bool          // someone waits on freed
	closed   bool
	errs     map[string]error

	wake   chan struct{}
	events chan func()
	quit   chan struct{}
	exited chan struct{}

	// Owned by the loop goroutine.
	parts       map[tpKey]*pstate
	brokers     map[int32]*pbroker
	pid         int64
	epoch       int16
	pidBusy     bool
	hadPID      bool
	pidFails    int
	pidRetryAt  time.Time
	bumpWanted  bool
	needMeta    bool
	metaBusy    bool
	metaRetryAt time.Time
	metaFails   int
	metaAt      time.Time // last metadata refresh
	inflight    int       // requests in flight, all brokers

	// Counters, for tests and logs.
	retries atomic.Int64
	bumps   atomic.Int64
}

type tpKey struct {
	topic     string
	partition int32
}

type ptopic struct {
	partitions int
	leaders    []int32
}

// pgroup is the records of one Produce call for one partition.
type pgroup struct {
	tp  tpKey
	idx []int32
}

// produceCall is one Produce call until every batch of it is resolved.
type produceCall struct {
	done    func(Ack)
	ack     Ack
	pending int
	errs    []error
}

type bstate int8

const (
	bQueued bstate = iota
	bInFlight
	bAcked
	bFailed
)

// pbatch is one record batch for one partition: the records of one or
// more Produce calls (segs, in order). While it is open (not sealed:
// never sent, the last batch of its partition, p.open[tp]) Produce
// appends the records of later calls to it, under p.mu; once sealed its
// records are fixed and it belongs to the loop.
type pbatch struct {
	tp      tpKey
	ob      openBatch // its records while open
	segs    []pseg
	sealed  bool // guarded by p.mu
	created time.Time

	// Set when sealed.
	data  []byte
	count int32

	seq      int32 // -1: not numbered yet
	pid      int64 // what data carries
	epoch    int16
	state    bstate
	unsure   bool // an attempt ended without knowing whether it was written
	attempts int
	lastErr  error
}

// pseg is the records of one Produce call in a batch: msgs[idx[k]] of
// the call is the batch's record at offset k after the records of the
// segments before it.
type pseg struct {
	call     *produceCall
	idx      []int32
	reserved int64 // of MaxBufferedBytes, released when resolved
}

// pstate is one partition's queue of batches not yet acknowledged, in
// order: in flight first, then queued.
type pstate struct {
	tp       tpKey
	queue    []*pbatch
	sendIdx  int // queue[sendIdx] is the next to send
	inflight int
	nextSeq  int32
	resend   bool // a batch failed: resend from the head once nothing is in flight
	retryAt  time.Time
	fails    int

	// The broker that last acknowledged a batch of this partition under
	// the current producer id and epoch, and when. Only such a broker is
	// known to hold our state for the partition: a broker without it
	// accepts any first sequence, so a batch pipelined behind one that
	// fails would be written before it. Until then one batch at a time.
	trustLeader int32
	trustAt     time.Time
}

type pbroker struct {
	id       int32
	conn     *brokerConn
	dialing  bool
	inflight int
	fails    int
	retryAt  time.Time
}

// NewProducer validates cfg and starts a producer; it connects on first
// use.
func NewProducer(cfg ProducerConfig) (*Producer, error) {
	if err := cfg.Cluster.Validate("cluster"); err != nil {
		return nil, err
	}
	var codec compress.Compression
	switch strings.ToLower(cfg.Compression) {
	case "", "none":
	case "gzip":
		codec = compress.Gzip
	case "snappy":
		codec = compress.Snappy
	case "lz4":
		codec = compress.Lz4
	case "zstd":
		codec = compress.Zstd
	default:
		return nil, fmt.Errorf("%w: compression: %q is not none, gzip, snappy, lz4 or zstd", ErrConfig, cfg.Compression)
	}
	switch {
	case cfg.BatchSize < 0:
		return nil, fmt.Errorf("%w: batch_size: must not be negative", ErrConfig)
	case cfg.BatchBytes < 0:
		return nil, fmt.Errorf("%w: batch_bytes: must not be negative", ErrConfig)
	case cfg.MaxRequestBytes < 0:
		return nil, fmt.Errorf("%w: max_request_bytes: must not be negative", ErrConfig)
	case cfg.MaxInFlight < 0 || cfg.MaxInFlight > 5:
		return nil, fmt.Errorf("%w: max_in_flight: %d is not between 1 and 5", ErrConfig, cfg.MaxInFlight)
	case cfg.RequestTimeout < 0:
		return nil, fmt.Errorf("%w: request_timeout: must not be negative", ErrConfig)
	case cfg.DeliveryTimeout < 0:
		return nil, fmt.Errorf("%w: delivery_timeout: must not be negative", ErrConfig)
	case cfg.MaxBufferedBytes < 0:
		return nil, fmt.Errorf("%w: max_buffered_bytes: must not be negative", ErrConfig)
	}
	cd, err := cfg.Cluster.connDialer(cfg.dial)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Producer{
		cfg:         cfg,
		log:         log.With("cluster", cfg.Cluster.Name),
		bal:         cfg.Balancer,
		codec:       codec,
		batchSize:   orInt(cfg.BatchSize, 1000),
		batchBytes:  orInt(cfg.BatchBytes, 1<<20),
		maxInFlight: orInt(cfg.MaxInFlight, 5),
		reqTimeout:  orDur(cfg.RequestTimeout, 10*time.Second),
		maxBuffered: orInt64(cfg.MaxBufferedBytes, DefaultMaxBufferedBytes),
		topics:      map[string]*ptopic{},
		open:        map[tpKey]*pbatch{},
		freed:       make(chan struct{}),
		errs:        map[string]error{},
		wake:        make(chan struct{}, 1),
		events:      make(chan func(), 256),
		quit:        make(chan struct{}),
		exited:      make(chan struct{}),
		parts:       map[tpKey]*pstate{},
		brokers:     map[int32]*pbroker{},
		pid:         -1,
		epoch:       -1,
		metaAt:      time.Now(),
	}
	p.reqBytes = orInt(cfg.MaxRequestBytes, max(16<<20, p.batchBytes))
	if p.reqBytes < p.batchBytes {
		return nil, fmt.Errorf("%w: max_request_bytes (%d) is smaller than batch_bytes (%d)", ErrConfig, p.reqBytes, p.batchBytes)
	}
	if p.bal == nil {
		p.bal = &Murmur2Balancer{}
	}
	p.encoders.New = func() any { return &batchEncoder{codec: codec} }
	p.w = newWire(cd, cfg.Cluster.Brokers, p.log)
	go p.run()
	return p, nil
}

// Produce assigns msgs to partitions, encodes them and queues them, and
// returns; done is called once, from the producer's goroutine (it must not
// block), when every record is acknowledged or failed. Produce keeps no
// reference to msgs: the caller may reuse their memory at once. It waits
// while MaxBufferedBytes are buffered (until ctx ends), and fails at once,
// without calling done, for a topic the cluster does not have (topics are
// never created) or after Close.
func (p *Producer) Produce(ctx context.Context, msgs []stream.Message, done func(Ack)) error {
	if len(msgs) == 0 {
		done(Ack{})
		return nil
	}
	enc := p.encoders.Get().(*batchEncoder)
	defer p.encoders.Put(enc)
	// The call's topics (a call names few: a linear search, the last one
	// found tried first), their partition counts and, by partition, the
	// call's group of records for it.
	type callTopic struct {
		name   string
		n      int
		groups []*pgroup // by partition
	}
	var tops []callTopic
	var probe []stream.Message
	topicOf := slices.Grow(enc.topicOf[:0], len(msgs))[:len(msgs)]
	enc.topicOf = topicOf
	last := 0
	for i := range msgs {
		t := msgs[i].Topic
		if last < len(tops) && tops[last].name == t {
			topicOf[i] = int32(last)
			continue
		}
		k := 0
		for k < len(tops) && tops[k].name != t {
			k++
		}
		if k == len(tops) {
			tops = append(tops, callTopic{name: t})
			probe = append(probe, stream.Message{Topic: t})
		}
		topicOf[i], last = int32(k), k
	}
	counts, err := p.partitionCounts(ctx, probe)
	if err != nil {
		return err
	}
	for k := range tops {
		tops[k].n = counts[tops[k].name]
		tops[k].groups = make([]*pgroup, tops[k].n)
	}
	call := &produceCall{done: done, ack: Ack{Partitions: make([]int32, len(msgs)), Offsets: make([]int64, len(msgs))}}
	var groups []*pgroup
	var estimate int64
	sizes := slices.Grow(enc.sizes[:0], len(msgs))[:len(msgs)] // encodedSize of each record
	enc.sizes = sizes
	for i := range msgs {
		m := &msgs[i]
		ct := &tops[topicOf[i]]
		part := int32(p.bal.Partition(m.Key, ct.n))
		if part < 0 || int(part) >= ct.n {
			return fmt.Errorf("kafka: produce: balancer chose partition %d of %d", part, ct.n)
		}
		call.ack.Partitions[i] = part
		call.ack.Offsets[i] = -1
		g := ct.groups[part]
		if g == nil {
			g = &pgroup{tp: tpKey{m.Topic, part}}
			ct.groups[part] = g
			groups = append(groups, g)
		}
		g.idx = append(g.idx, int32(i))
		sizes[i] = int32(encodedSize(m))
		estimate += int64(sizes[i])
	}
	if err := p.reserve(ctx, estimate); err != nil {
		return err
	}
	now := time.Now()
	// Append to each partition's open batch while it has room, then open
	// new ones: a partition whose batches wait for a free request sends
	// them as one. With compression the records are appended as they are
	// and compressed when the batch is sealed (compressSealed).
	nowMs := now.UnixMilli()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.release(estimate)
		return fmt.Errorf("kafka: produce: %w", ErrClosed)
	}
	for _, g := range groups {
		for rest := g.idx; len(rest) > 0; {
			b := p.open[g.tp]
			if b == nil {
				b = &pbatch{tp: g.tp, created: now, seq: -1, pid: -1, epoch: -1}
				size := batchHeaderSize
				for _, i := range rest[:min(len(rest), p.batchSize)] {
					size += int(sizes[i])
				}
				// Room for later calls' records too (a batch being filled
				// grows into a recycled buffer when it must).
				b.ob.data = getBatchBuf(min(max(size, minBatchBuf), batchHeaderSize+p.batchBytes))[:batchHeaderSize]
				p.open[g.tp] = b
				p.incoming = append(p.incoming, b)
			}
			n, size, reserved := 0, len(b.ob.data)-batchHeaderSize, int64(0)
			for n < len(rest) && int(b.ob.count)+n < p.batchSize {
				s := int(sizes[rest[n]])
				if (b.ob.count > 0 || n > 0) && size+s > p.batchBytes {
					break
				}
				size += s
				reserved += int64(s)
				n++
			}
			if n == 0 {
				p.sealLocked(b) // full
				continue
			}
			b.ob.appendRecords(msgs, rest[:n], nowMs)
			b.segs = append(b.segs, pseg{call: call, idx: rest[:n:n], reserved: reserved})
			call.pending++
			rest = rest[n:]
		}
	}
	p.mu.Unlock()
	poke(p.wake)
	return nil
}

// minBatchBuf is the least room a new uncompressed batch gets.
const minBatchBuf = 16 << 10

// sealLocked closes b to appends: its header is written and its records
// fixed. p.mu is held.
func (p *Producer) sealLocked(b *pbatch) {
	if b.sealed {
		return
	}
	b.sealed = true
	if p.open[b.tp] == b {
		delete(p.open, b.tp)
	}
	b.count = b.ob.count
	if p.codec != 0 {
		// Compressed outside p.mu, by the loop before it is first sent
		// (compressSealed): until then b.data is nil and b.ob holds the
		// records.
		return
	}
	b.ob.seal(0)
	b.data = b.ob.data
	b.ob = openBatch{}
}

// compressSealed compresses the records of a sealed batch that is not
// yet (b.data nil) into b.data, and recycles the buffer of its records.
// Only the loop goroutine calls it, and the scratch buffer it compresses
// into (p.zbuf) is the loop's: no allocation but the codec's writer. A
// batch the codec fails to compress (it writes to memory: not expected)
// is sent uncompressed, which every reader reads as well.
func (p *Producer) compressSealed(b *pbatch) {
	if b.data != nil {
		return
	}
	raw := b.ob.data
	p.zbuf = append(p.zbuf[:0], raw[:batchHeaderSize]...)
	w := p.codec.Codec().NewWriter(appendWriter{&p.zbuf})
	_, err := w.Write(raw[batchHeaderSize:])
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		p.log.Warn("kafka: produce: compressing a batch failed; sending it uncompressed", "topic", b.tp.topic, "partition", b.tp.partition, "error", err)
		b.ob.seal(0)
		b.data = b.ob.data
		b.ob = openBatch{}
		return
	}
	ob := b.ob
	ob.data = append(getBatchBuf(len(p.zbuf)), p.zbuf...)
	ob.seal(p.codec)
	putBatchBuf(raw)
	b.data = ob.data
	b.ob = openBatch{}
}

// Publish writes msgs and returns once every record is acknowledged by all
// in-sync replicas, or with an error (some records may have been written,
// and, if ctx ended first, some may still be). It implements
// stream.Publisher; its memory contract is met whatever the outcome:
// Produce keeps no reference to msgs.
func (p *Producer) Publish(ctx context.Context, msgs ...stream.Message) error {
	ch := make(chan Ack, 1)
	if err := p.Produce(ctx, msgs, func(a Ack) { ch <- a }); err != nil {
		return fmt.Errorf("kafka: publish: %w", err)
	}
	select {
	case a := <-ch:
		if a.Err != nil {
			return fmt.Errorf("kafka: publish: %w", a.Err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kafka: publish: %w", ctx.Err())
	}
}

// Flush waits until every record produced so far is acknowledged or
// failed, or ctx ends.
func (p *Producer) Flush(ctx context.Context) error {
	for {
		p.mu.Lock()
		empty := p.buffered == 0
		ch := p.freed
		p.waited = true
		p.mu.Unlock()
		if empty {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close waits up to 30s (or DeliveryTimeout when set) for the records
// produced to be acknowledged, fails what is left with ErrClosed and
// closes the connections.
func (p *Producer) Close() error {
	wait := 30 * time.Second
	if p.cfg.DeliveryTimeout > 0 {
		wait = p.cfg.DeliveryTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return p.CloseContext(ctx)
}

// CloseContext is Close with the wait bounded by ctx.
func (p *Producer) CloseContext(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.exited
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	err := p.Flush(ctx)
	close(p.quit)
	<-p.exited
	p.w.close()
	if err != nil {
		return fmt.Errorf("kafka: producer close: records left unacknowledged: %w", err)
	}
	return nil
}

// Err reports what currently keeps the producer from writing (a broker
// unreachable, no producer id), or nil. It is retried meanwhile.
func (p *Producer) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, 0, len(p.errs))
	for k := range p.errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		errs = append(errs, fmt.Errorf("%s: %w", k, p.errs[k]))
	}
	return errors.Join(errs...)
}

func (p *Producer) setErr(source string, err error) {
	p.mu.Lock()
	if err == nil {
		delete(p.errs, source)
	} else {
		p.errs[source] = err
	}
	p.mu.Unlock()
}

// reserve waits until n more bytes fit in MaxBufferedBytes (or nothing is
// buffered), and counts them.
func (p *Producer) reserve(ctx context.Context, n int64) error {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return fmt.Errorf("kafka: produce: %w", ErrClosed)
		}
		if p.buffered == 0 || p.buffered+n <= p.maxBuffered {
			p.buffered += n
			p.mu.Unlock()
			return nil
		}
		ch := p.freed
		p.waited = true
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("kafka: produce: waiting for buffer space: %w", ctx.Err())
		}
	}
}

func (p *Producer) release(n int64) {
	p.mu.Lock()
	p.buffered -= n
	if p.waited {
		close(p.freed)
		p.freed = make(chan struct{})
		p.waited = false
	}
	p.mu.Unlock()
}

// partitionCounts returns the partition count of every topic of msgs,
// asking the cluster for topics it has not seen yet.
func (p *Producer) partitionCounts(ctx context.Context, msgs []stream.Message) (map[string]int, error) {
	counts := map[string]int{}
	var missing []string
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("kafka: produce: %w", ErrClosed)
	}
	for i := range msgs {
		t := msgs[i].Topic
		if _, ok := counts[t]; ok {
			continue
		}
		if tm, ok := p.topics[t]; ok {
			counts[t] = tm.partitions
		} else {
			counts[t] = 0
			missing = append(missing, t)
		}
	}
	p.mu.Unlock()
	if len(missing) == 0 {
		return counts, nil
	}
	for attempt := 1; ; attempt++ {
		resp, err := p.w.metadata(ctx, missing, p.reqTimeout)
		if err != nil {
			return nil, fmt.Errorf("kafka: produce: %w", err)
		}
		var retry []string
		for _, t := range resp.Topics {
			switch {
			case t.ErrorCode == int16(kafka.UnknownTopicOrPartition) || (t.ErrorCode == 0 && len(t.Partitions) == 0):
				return nil, fmt.Errorf("kafka: produce: topic %s: %w", t.Name, kafka.UnknownTopicOrPartition)
			case t.ErrorCode != 0 && kafka.Error(t.ErrorCode).Temporary():
				retry = append(retry, t.Name) // e.g. a topic being created: no leader yet
			case t.ErrorCode != 0:
				return nil, fmt.Errorf("kafka: produce: topic %s: %w", t.Name, kafka.Error(t.ErrorCode))
			default:
				p.learnTopic(t.Name, t.Partitions)
				counts[t.Name] = len(t.Partitions)
			}
		}
		if len(retry) == 0 {
			break
		}
		if attempt >= 10 {
			return nil, fmt.Errorf("kafka: produce: topics %v not available", retry)
		}
		if err := sleep(ctx, clientRetry.Delay(attempt)); err != nil {
			return nil, err
		}
		missing = retry
	}
	for t, n := range counts {
		if n == 0 {
			return nil, fmt.Errorf("kafka: produce: topic %s: %w", t, kafka.UnknownTopicOrPartition)
		}
	}
	return counts, nil
}

// learnTopic records a topic's partitions and leaders from metadata.
func (p *Producer) learnTopic(name string, parts []metadataAPI.ResponsePartition) {
	leaders := make([]int32, len(parts))
	for i := range leaders {
		leaders[i] = -1
	}
	for _, pt := range parts {
		if pt.PartitionIndex >= 0 && int(pt.PartitionIndex) < len(leaders) {
			leaders[pt.PartitionIndex] = pt.LeaderID
		}
	}
	p.mu.Lock()
	p.topics[name] = &ptopic{partitions: len(parts), leaders: leaders}
	p.mu.Unlock()
}
