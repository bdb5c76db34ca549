package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	initPIDAPI "github.com/segmentio/kafka-go/protocol/initproducerid"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
)

// The producer's state (partition queues, sequence numbers, brokers, the
// producer id) belongs to one goroutine, run; Produce hands it batches
// through p.incoming, and the goroutines doing I/O (connecting, metadata,
// InitProducerId, produce responses) hand it their outcome as closures on
// p.events.

// responseGrace is how much longer than the broker's timeout we wait for a
// produce response before giving up on the connection.
const responseGrace = 5 * time.Second

// stateTrust is how long after a partition's last acknowledgement we trust
// its leader to still hold our producer state (brokers forget an idle
// producer after producer.id.expiration.ms, one day by default) and so
// pipeline more than one batch.
const stateTrust = 10 * time.Minute

// metadataMaxAge is how often the producer refreshes its topics' metadata
// even without an error (as Java's metadata.max.age.ms).
const metadataMaxAge = 5 * time.Minute

func (p *Producer) run() {
	defer close(p.exited)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		p.absorb()
		next := p.pump(ctx, time.Now())
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), time.Millisecond))
		}
		select {
		case <-p.wake:
		case f := <-p.events:
			f()
		case <-timer.C:
		case <-p.quit:
			p.shutdown()
			return
		}
	}
}

// post hands f to the loop; after the loop has exited, f is dropped.
func (p *Producer) post(f func()) {
	select {
	case p.events <- f:
	case <-p.exited:
	}
}

// absorb moves the batches of new Produce calls to their partitions'
// queues.
func (p *Producer) absorb() {
	p.mu.Lock()
	in := p.incoming
	p.incoming = nil
	p.mu.Unlock()
	for _, b := range in {
		ps := p.parts[b.tp]
		if ps == nil {
			ps = &pstate{tp: b.tp, trustLeader: -1}
			p.parts[b.tp] = ps
		}
		ps.queue = append(ps.queue, b)
	}
}

// pump starts whatever can start now and returns when it should run again
// for a retry or a timeout (zero: not before an event).
func (p *Producer) pump(ctx context.Context, now time.Time) time.Time {
	var next time.Time
	later := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	work := false
	for _, ps := range p.parts {
		if len(ps.queue) > 0 {
			work = true
			break
		}
	}
	if !work {
		return next
	}
	if d := p.cfg.DeliveryTimeout; d > 0 {
		for _, ps := range p.parts {
			for _, b := range ps.queue {
				if b.state != bQueued {
					continue
				}
				if dl := b.created.Add(d); !now.Before(dl) {
					err := fmt.Errorf("%w after %v", ErrDeliveryTimeout, d)
					if b.lastErr != nil {
						err = fmt.Errorf("%w: %w", err, b.lastErr)
					}
					p.failFrom(ps, b, err, b.unsure)
				} else {
					later(dl)
				}
				break // only the first queued batch can expire first
			}
		}
	}
	// A producer id first, and a new epoch once nothing is in flight when
	// the brokers lost track of our sequences.
	if p.pid < 0 || (p.bumpWanted && p.inflight == 0) {
		if !p.pidBusy {
			if now.Before(p.pidRetryAt) {
				later(p.pidRetryAt)
			} else {
				p.initPID(ctx)
			}
		}
	}
	if p.pid < 0 || p.bumpWanted || p.pidBusy {
		return next
	}
	if now.Sub(p.metaAt) > metadataMaxAge {
		p.needMeta = true // new partitions, moved leaders nobody told us about
	}
	if p.needMeta && !p.metaBusy {
		if now.Before(p.metaRetryAt) {
			later(p.metaRetryAt)
		} else {
			p.refreshMetadata(ctx)
		}
	}
	// The partitions with a batch to send, by leader.
	byLeader := map[int32][]*pstate{}
	p.mu.Lock()
	for _, ps := range p.parts {
		for ps.sendIdx < len(ps.queue) && ps.queue[ps.sendIdx].state == bAcked {
			ps.sendIdx++
		}
		if ps.sendIdx >= len(ps.queue) || ps.resend || ps.inflight >= p.maxInFlight {
			continue
		}
		if now.Before(ps.retryAt) {
			later(ps.retryAt)
			continue
		}
		leader := int32(-1)
		if t := p.topics[ps.tp.topic]; t != nil && int(ps.tp.partition) < len(t.leaders) {
			leader = t.leaders[ps.tp.partition]
		}
		if leader < 0 {
			p.needMeta = true
			continue
		}
		byLeader[leader] = append(byLeader[leader], ps)
	}
	p.mu.Unlock()
	for id, pss := range byLeader {
		br := p.brokers[id]
		if br == nil {
			br = &pbroker{id: id}
			p.brokers[id] = br
		}
		if br.conn == nil || !br.conn.usable(0) {
			br.conn = nil
			if br.dialing {
				continue
			}
			if now.Before(br.retryAt) {
				later(br.retryAt)
				continue
			}
			p.dial(ctx, br)
			continue
		}
		for br.inflight < p.maxInFlight {
			if !p.sendRequest(br, pss, now) {
				break
			}
		}
	}
	return next
}

// dial connects to broker br in the background.
func (p *Producer) dial(ctx context.Context, br *pbroker) {
	br.dialing = true
	go func() {
		c, err := p.w.conn(ctx, br.id, kindData)
		p.post(func() {
			br.dialing = false
			if err != nil {
				br.fails++
				br.retryAt = time.Now().Add(clientRetry.Delay(br.fails))
				p.needMeta = true
				p.setErr(fmt.Sprintf("broker %d", br.id), err)
				if br.fails == 1 || br.fails%20 == 0 {
					p.log.Warn("kafka: produce: cannot connect; retrying", "broker", br.id, "attempt", br.fails, "error", err)
				}
				return
			}
			br.conn = c
		})
	}()
}

// preq is one produce request in flight.
type preq struct {
	br      *pbroker
	conn    *brokerConn
	version int16
	batches []*pbatch
}

// sendRequest sends one produce request to br with the next batch of as
// many of pss as fit; false when there was nothing to send.
func (p *Producer) sendRequest(br *pbroker, pss []*pstate, now time.Time) bool {
	v, err := br.conn.version(protocol.Produce, 3, 8)
	if err != nil {
		p.setErr(fmt.Sprintf("broker %d", br.id), err)
		return false
	}
	var batches []*pbatch
	size := 0
	p.mu.Lock() // to seal open batches
	for _, ps := range pss {
		limit := p.maxInFlight
		if ps.trustLeader != br.id || now.Sub(ps.trustAt) > stateTrust {
			limit = 1
		}
		if ps.sendIdx >= len(ps.queue) || ps.inflight >= limit || ps.resend {
			continue
		}
		b := ps.queue[ps.sendIdx]
		if b.state != bQueued {
			continue
		}
		// A batch not compressed yet counts its records' size: at least
		// what it will be once compressed.
		bsize := len(b.data)
		if b.data == nil {
			bsize = len(b.ob.data)
		}
		if len(batches) > 0 && size+bsize > p.reqBytes {
			continue
		}
		p.sealLocked(b)
		size += bsize
		if b.seq < 0 {
			b.seq = ps.nextSeq
			ps.nextSeq = addSeq(ps.nextSeq, b.count)
		}
		if b.pid != p.pid || b.epoch != p.epoch {
			b.pid, b.epoch = p.pid, p.epoch
		}
		b.state = bInFlight
		b.attempts++
		ps.sendIdx++
		ps.inflight++
		batches = append(batches, b)
	}
	p.mu.Unlock()
	if len(batches) == 0 {
		return false
	}
	for _, b := range batches {
		p.compressSealed(b) // once: a batch compressed already keeps its data
		setProducer(b.data, b.pid, b.epoch, b.seq)
	}
	req := &preq{br: br, conn: br.conn, version: v, batches: batches}
	cl := &call{frame: p.produceFrame(v, batches), timeout: p.reqTimeout + responseGrace}
	cl.onDone = func(cl *call) { p.post(func() { p.produced(req, cl) }) }
	br.inflight++
	p.inflight++
	br.conn.send(cl)
	return true
}

// produceFrame encodes a Produce request (v3 to v8 share a layout): acks
// all, no transactional id, the batches already encoded, grouped by topic.
func (p *Producer) produceFrame(version int16, batches []*pbatch) net.Buffers {
	byTopic := map[string][]*pbatch{}
	var topics []string
	for _, b := range batches {
		if _, ok := byTopic[b.tp.topic]; !ok {
			topics = append(topics, b.tp.topic)
		}
		byTopic[b.tp.topic] = append(byTopic[b.tp.topic], b)
	}
	be := binary.BigEndian
	head := requestHeader(make([]byte, 0, 64+32*len(topics)+12*len(batches)), protocol.Produce, version, p.w.d.clientID)
	head = be.AppendUint16(head, math.MaxUint16) // transactional id: null
	head = be.AppendUint16(head, math.MaxUint16) // acks: -1, all in-sync replicas
	head = be.AppendUint32(head, uint32(p.reqTimeout/time.Millisecond))
	head = be.AppendUint32(head, uint32(len(topics)))
	bufs := net.Buffers{head}
	cur := head
	for _, t := range topics {
		bs := byTopic[t]
		cur = be.AppendUint16(cur, uint16(len(t)))
		cur = append(cur, t...)
		cur = be.AppendUint32(cur, uint32(len(bs)))
		for _, b := range bs {
			cur = be.AppendUint32(cur, uint32(b.tp.partition))
			cur = be.AppendUint32(cur, uint32(len(b.data)))
			bufs[len(bufs)-1] = cur
			bufs = append(bufs, b.data)
			cur = cur[len(cur):] // the next fixed part starts a new segment of the same array
			bufs = append(bufs, cur)
		}
	}
	bufs[len(bufs)-1] = cur
	if len(cur) == 0 {
		bufs = bufs[:len(bufs)-1]
	}
	setFrameSize(bufs)
	return bufs
}

// addSeq adds n to a sequence number; sequences wrap to 0 after
// math.MaxInt32, as Kafka's.
func addSeq(seq, n int32) int32 {
	if seq > math.MaxInt32-n {
		return n - (math.MaxInt32 - seq) - 1
	}
	return seq + n
}

// presult is a broker's answer for one partition of a produce request.
type presult struct {
	code int16
	base int64
	msg  string
}

// parseProduce reads a Produce response body (v3 to v8).
func parseProduce(body []byte, version int16) (map[tpKey]presult, error) {
	r := respReader{b: body}
	out := map[tpKey]presult{}
	nt := r.i32()
	for range max(nt, 0) {
		name := string(r.str())
		np := r.i32()
		for range max(np, 0) {
			part := r.i32()
			res := presult{code: r.i16(), base: r.i64()}
			r.i64() // log append time
			if version >= 5 {
				r.i64() // log start offset
			}
			if version >= 8 {
				ne := r.i32()
				for range max(ne, 0) {
					r.i32()
					r.str()
				}
				if m := r.str(); m != nil {
					res.msg = string(m)
				}
			}
			out[tpKey{name, part}] = res
		}
	}
	if r.bad {
		return nil, fmt.Errorf("%w: truncated produce response", errCorrupt)
	}
	return out, nil
}

// produced handles the answer (or the failure) of a produce request.
func (p *Producer) produced(req *preq, cl *call) {
	now := time.Now()
	br := req.br
	br.inflight--
	p.inflight--
	touched := map[*pstate]bool{}
	for _, b := range req.batches {
		if ps := p.parts[b.tp]; ps != nil {
			ps.inflight--
			touched[ps] = true
		}
	}
	source := fmt.Sprintf("broker %d", br.id)
	var results map[tpKey]presult
	err := cl.err
	if err == nil {
		if results, err = parseProduce(cl.body(), req.version); err != nil {
			req.conn.close()
		}
	}
	if err != nil {
		// The request as a whole failed (a broken connection, no answer in
		// time): whether the broker wrote it is unknown. Resend in order,
		// with the same sequence numbers: a batch already written is
		// acknowledged as a duplicate.
		if br.conn == req.conn {
			br.conn = nil
		}
		br.fails++
		br.retryAt = now.Add(clientRetry.Delay(br.fails))
		p.needMeta = true
		p.setErr(source, err)
		for _, b := range req.batches {
			p.retry(p.parts[b.tp], b, true, fmt.Errorf("%s[%d]: %w", b.tp.topic, b.tp.partition, err))
		}
		if br.fails == 1 || br.fails%20 == 0 {
			p.log.Warn("kafka: produce request failed; resending", "broker", br.id, "attempt", br.fails, "error", err)
		}
	} else {
		br.fails = 0
		p.setErr(source, nil)
		for _, b := range req.batches {
			ps := p.parts[b.tp]
			r, ok := results[b.tp]
			if !ok {
				p.retry(ps, b, true, fmt.Errorf("%s[%d]: %w", b.tp.topic, b.tp.partition, errNoAnswer))
				continue
			}
			p.answer(ps, b, r, br.id)
		}
	}
	for ps := range touched {
		p.settle(ps)
	}
}

// answer applies a broker's answer for batch b of partition ps.
func (p *Producer) answer(ps *pstate, b *pbatch, r presult, broker int32) {
	kerr := kafka.Error(r.code)
	err := error(nil)
	if r.code != 0 {
		err = fmt.Errorf("%s[%d]: %w", b.tp.topic, b.tp.partition, kerr)
		if r.msg != "" {
			err = fmt.Errorf("%w (%s)", err, r.msg)
		}
	}
	switch kerr {
	case 0, kafka.DuplicateSequenceNumber:
		// (DuplicateSequenceNumber: written before, an old broker's
		// answer to a resent batch.)
		if b.pid == p.pid && b.epoch == p.epoch {
			ps.trustLeader, ps.trustAt = broker, time.Now()
		}
		p.acked(ps, b, r.base)
	case kafka.OutOfOrderSequenceNumber:
		if p.isHead(ps, b) {
			// Every earlier batch is acknowledged, yet the broker expects
			// another sequence: it lost our state (or records). Start over
			// under a new epoch.
			ps.trustLeader = -1
			p.resequence(ps, b, err)
		} else {
			p.retry(ps, b, false, err) // an earlier batch failed: resend in order
		}
	case kafka.UnknownProducerId, kafka.InvalidProducerEpoch, kafka.InvalidProducerIDMapping, kafka.ProducerFenced:
		p.resequence(ps, b, err)
	case kafka.NotLeaderForPartition, kafka.LeaderNotAvailable, kafka.UnknownTopicOrPartition,
		kafka.FencedLeaderEpoch, kafka.UnknownLeaderEpoch, kafka.KafkaStorageError, kafka.NetworkException:
		p.needMeta = true
		p.retry(ps, b, false, err)
	case kafka.RequestTimedOut, kafka.NotEnoughReplicasAfterAppend:
		p.retry(ps, b, true, err) // maybe written: a resend is acknowledged as a duplicate
	case kafka.InvalidMessage:
		p.retry(ps, b, false, err) // damaged on the way; the CRC is ours
	default:
		if kerr.Temporary() {
			p.retry(ps, b, false, err)
			return
		}
		p.failFrom(ps, b, err, false)
	}
}

// isHead reports whether every batch before b in its queue is
// acknowledged.
func (p *Producer) isHead(ps *pstate, b *pbatch) bool {
	for _, x := range ps.queue {
		if x == b {
			return true
		}
		if x.state != bAcked {
			return false
		}
	}
	return false
}

// acked records b as written at base.
func (p *Producer) acked(ps *pstate, b *pbatch, base int64) {
	if b.state == bFailed {
		return
	}
	b.state = bAcked
	if base >= 0 {
		for _, sg := range b.segs {
			for _, i := range sg.idx {
				sg.call.ack.Offsets[i] = base
				base++
			}
		}
	}
	ps.fails = 0
	for len(ps.queue) > 0 && ps.queue[0].state == bAcked {
		p.resolve(ps.queue[0], nil)
		ps.queue[0] = nil
		ps.queue = ps.queue[1:]
		if ps.sendIdx > 0 {
			ps.sendIdx--
		}
	}
}

// retry queues b to be sent again, in order, once the partition has
// nothing in flight.
func (p *Producer) retry(ps *pstate, b *pbatch, unsure bool, err error) {
	if ps == nil || b.state == bFailed || b.state == bAcked {
		return
	}
	b.state = bQueued
	b.unsure = b.unsure || unsure
	b.lastErr = err
	ps.resend = true
	ps.fails++
	ps.retryAt = time.Now().Add(partitionRetry.Delay(ps.fails))
	p.retries.Add(1)
}

// resequence queues b again and asks for a new epoch: every batch not yet
// acknowledged is renumbered from 0 under it.
func (p *Producer) resequence(ps *pstate, b *pbatch, err error) {
	if !p.bumpWanted {
		p.log.Warn("kafka: produce: the broker lost track of the producer's sequence; bumping the epoch",
			"topic", b.tp.topic, "partition", b.tp.partition, "producer_id", p.pid, "epoch", p.epoch, "error", err)
	}
	p.retry(ps, b, false, err)
	p.bumpWanted = true
}

// failFrom fails b and every batch queued behind it in its partition
// (nothing after a failed batch may be written, or the partition's order
// would break when the caller sends the failed records again). If b was
// definitely not written the partition's sequence goes back to b's;
// otherwise (unsure) the epoch is bumped.
func (p *Producer) failFrom(ps *pstate, b *pbatch, err error, unsure bool) {
	i := 0
	for i < len(ps.queue) && ps.queue[i] != b {
		i++
	}
	if i == len(ps.queue) {
		return
	}
	p.log.Warn("kafka: produce: records failed", "topic", b.tp.topic, "partition", b.tp.partition,
		"batches", len(ps.queue)-i, "error", err)
	p.mu.Lock()
	for _, x := range ps.queue[i:] {
		p.sealLocked(x) // nothing more is appended to a failed batch
	}
	p.mu.Unlock()
	for j, x := range ps.queue[i:] {
		xerr := err
		if j > 0 {
			xerr = fmt.Errorf("%s[%d]: %w", x.tp.topic, x.tp.partition, ErrEarlierFailed)
		}
		x.state = bFailed // one still in flight is counted until its answer comes
		p.resolve(x, xerr)
		ps.queue[i+j] = nil
	}
	ps.queue = ps.queue[:i]
	ps.sendIdx = min(ps.sendIdx, i)
	if i == 0 && ps.inflight == 0 {
		// Nothing of the partition is left: the backoff of the failed
		// batches is not the next one's. Kept, it could hold a batch
		// produced after the cause was gone past its own DeliveryTimeout
		// without ever sending it (the backoff reaches 1s).
		ps.fails, ps.retryAt = 0, time.Time{}
	}
	if unsure {
		p.bumpWanted = true
	} else if b.seq >= 0 {
		ps.nextSeq = b.seq
	}
}

// settle resends a partition's failed batches once nothing of it is in
// flight (responses come in order, so by then every batch sent has its
// answer).
func (p *Producer) settle(ps *pstate) {
	if ps.resend && ps.inflight == 0 {
		ps.resend = false
		ps.sendIdx = 0
	}
}

// resolve finishes batch b (err nil: written) and, with their last
// batch, its Produce calls.
func (p *Producer) resolve(b *pbatch, err error) {
	if err == nil && b.state == bAcked {
		// Answered: no request reads it any more.
		putBatchBuf(b.data)
	}
	b.data = nil
	if b.ob.data != nil {
		// The records of a sealed batch never compressed (never sent):
		// only compressSealed reads them.
		putBatchBuf(b.ob.data)
		b.ob = openBatch{}
	}
	for _, sg := range b.segs {
		c := sg.call
		if err != nil && len(c.errs) < 5 {
			dup := false
			for _, e := range c.errs {
				if e.Error() == err.Error() {
					dup = true
				}
			}
			if !dup {
				c.errs = append(c.errs, err)
			}
		}
		p.release(sg.reserved)
		c.pending--
		if c.pending == 0 {
			if len(c.errs) > 0 {
				failed := 0
				for _, o := range c.ack.Offsets {
					if o < 0 {
						failed++
					}
				}
				c.ack.Err = fmt.Errorf("%d of %d records not written: %w", failed, len(c.ack.Offsets), errors.Join(c.errs...))
			}
			c.done(c.ack)
		}
	}
	b.segs = nil
}

// initPID gets a producer id, or bumps the epoch of ours (KIP-360).
func (p *Producer) initPID(ctx context.Context) {
	p.pidBusy = true
	bump := p.bumpWanted && p.pid >= 0
	pid, epoch := p.pid, p.epoch
	go func() {
		var resp *initPIDAPI.Response
		err := func() error {
			c, err := p.w.anyConn(ctx)
			if err != nil {
				return err
			}
			req := &initPIDAPI.Request{TransactionTimeoutMs: math.MaxInt32, ProducerID: -1, ProducerEpoch: -1}
			lo := int16(0)
			if bump {
				if v, _ := c.version(protocol.InitProducerId, 3, 4); v >= 3 {
					req.ProducerID, req.ProducerEpoch, lo = pid, epoch, 3
				}
			}
			r, err := c.roundTrip(ctx, req, lo, 4, p.reqTimeout)
			if err != nil {
				return err
			}
			resp = r.(*initPIDAPI.Response)
			if resp.ErrorCode != 0 {
				return fmt.Errorf("init producer id: %w", kafka.Error(resp.ErrorCode))
			}
			return nil
		}()
		p.post(func() { p.pidDone(resp, err) })
	}()
}

func (p *Producer) pidDone(resp *initPIDAPI.Response, err error) {
	p.pidBusy = false
	if err != nil {
		p.pidFails++
		p.pidRetryAt = time.Now().Add(clientRetry.Delay(p.pidFails))
		p.setErr("producer id", err)
		var kerr kafka.Error
		if errors.As(err, &kerr) && (kerr == kafka.InvalidProducerEpoch || kerr == kafka.ProducerFenced) {
			p.pid, p.epoch = -1, -1 // fenced: start with a new producer id
		}
		if p.pidFails == 1 || p.pidFails%20 == 0 {
			p.log.Warn("kafka: produce: no producer id; retrying", "attempt", p.pidFails, "error", err)
		}
		return
	}
	p.pidFails = 0
	p.setErr("producer id", nil)
	renumber := p.hadPID // a new epoch or id: sequences start over
	p.hadPID = true
	if renumber {
		p.bumps.Add(1)
		p.log.Info("kafka: produce: new producer epoch", "producer_id", resp.ProducerID, "epoch", resp.ProducerEpoch)
	}
	p.pid, p.epoch = resp.ProducerID, resp.ProducerEpoch
	p.bumpWanted = false
	if !renumber {
		return
	}
	p.mu.Lock() // an open batch's count may still grow: it is numbered when sent
	defer p.mu.Unlock()
	for _, ps := range p.parts {
		seq := int32(0)
		for _, b := range ps.queue {
			if b.state == bAcked {
				continue
			}
			b.state = bQueued
			if !b.sealed {
				b.seq = -1
				continue
			}
			b.seq = seq
			seq = addSeq(seq, b.count)
		}
		ps.nextSeq = seq
		ps.sendIdx = 0
		ps.resend = false
		ps.trustLeader = -1
	}
}

// refreshMetadata updates the leaders of the topics produced to.
func (p *Producer) refreshMetadata(ctx context.Context) {
	p.metaBusy = true
	p.needMeta = false
	p.mu.Lock()
	topics := make([]string, 0, len(p.topics))
	for t := range p.topics {
		topics = append(topics, t)
	}
	p.mu.Unlock()
	go func() {
		resp, err := p.w.metadata(ctx, topics, p.reqTimeout)
		p.post(func() { p.metadataDone(resp, err) })
	}()
}

func (p *Producer) metadataDone(resp *metadataAPI.Response, err error) {
	p.metaBusy = false
	if err != nil {
		p.metaFails++
		p.needMeta = true
		p.metaRetryAt = time.Now().Add(clientRetry.Delay(p.metaFails))
		p.setErr("metadata", err)
		return
	}
	p.setErr("metadata", nil)
	p.metaFails = 0
	p.metaAt = time.Now()
	// Do not ask again at once if a leader is still unknown.
	p.metaRetryAt = time.Now().Add(100 * time.Millisecond)
	for _, t := range resp.Topics {
		if t.ErrorCode == 0 && len(t.Partitions) > 0 {
			p.learnTopic(t.Name, t.Partitions)
		}
	}
}

// shutdown fails every batch not yet resolved.
func (p *Producer) shutdown() {
	p.absorb()
	p.mu.Lock()
	for _, ps := range p.parts {
		for _, b := range ps.queue {
			p.sealLocked(b)
		}
	}
	p.mu.Unlock()
	for _, ps := range p.parts {
		for _, b := range ps.queue {
			switch b.state {
			case bAcked:
				p.resolve(b, nil)
			case bQueued, bInFlight:
				b.state = bFailed
				p.resolve(b, fmt.Errorf("%s[%d]: %w", b.tp.topic, b.tp.partition, ErrClosed))
			}
		}
		ps.queue = nil
	}
}
