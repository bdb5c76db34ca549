package kafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/bits"
	"sync"
	"time"
	"unsafe"

	"github.com/segmentio/kafka-go/compress"

	"github.com/residency-router/residency/stream"
)

// Record batches, magic v2 (the only format Kafka 4 writes):
//
//	baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 |
//	magic int8 | crc uint32 (CRC-32C of everything after it) |
//	attributes int16 | lastOffsetDelta int32 | firstTimestamp int64 |
//	maxTimestamp int64 | producerId int64 | producerEpoch int16 |
//	baseSequence int32 | recordCount int32 | records...
//
// and a record is
//
//	length varint | attributes int8 | timestampDelta varlong |
//	offsetDelta varint | keyLength varint (-1: null) | key |
//	valueLength varint (-1: null) | value | headerCount varint |
//	headers (keyLength varint, key, valueLength varint (-1: null), value)
//
// The varints are zigzag-encoded, as encoding/binary's Varint.

const (
	batchHeaderSize = 61

	offBatchLength   = 8
	offMagic         = 16
	offCRC           = 17
	offAttributes    = 21
	offLastDelta     = 23
	offFirstTS       = 27
	offMaxTS         = 35
	offProducerID    = 43
	offProducerEpoch = 51
	offBaseSequence  = 53
	offRecordCount   = 57

	attrCompression   = 0x07
	attrLogAppendTime = 0x08
	attrTransactional = 0x10
	attrControl       = 0x20
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks a record batch that does not decode: a CRC mismatch, a
// length beyond its bounds, a bad varint. The fetch is retried (the
// corruption may have happened on the way); nothing is ever skipped.
var errCorrupt = errors.New("kafka: corrupt record batch")

// varintSize is the size of v as a zigzag varint.
func varintSize(v int64) int {
	ux := uint64(v<<1) ^ uint64(v>>63)
	return (bits.Len64(ux|1) + 6) / 7
}

// bytesSize is the size of a length-prefixed byte string (-1 for nil).
func bytesSize(b []byte) int {
	if b == nil {
		return 1
	}
	return varintSize(int64(len(b))) + len(b)
}

func appendBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}

// batchEncoder encodes record batches; its scratch buffer (for records to
// compress) is reused from batch to batch.
type batchEncoder struct {
	codec   compress.Compression
	scratch []byte
	sizes   []int32 // Produce's encodedSize of each record of a call
	topicOf []int32 // Produce's index of each record's topic
}

// encode returns msgs[idx[0]], msgs[idx[1]], ... as one v2 record batch
// without producer id (set by setProducer, which also writes the CRC,
// before it is sent). A record without a time gets now. Keys, values and
// header values keep the difference between nil and empty.
func (e *batchEncoder) encode(msgs []stream.Message, idx []int32, now time.Time) ([]byte, error) {
	if len(idx) == 0 {
		return nil, errors.New("kafka: empty record batch")
	}
	size := 0
	for _, i := range idx {
		size += encodedSize(&msgs[i])
	}
	var ob openBatch
	if e.codec == 0 {
		ob.data = getBatchBuf(batchHeaderSize + size)[:batchHeaderSize]
		ob.appendRecords(msgs, idx, now.UnixMilli())
		ob.seal(0)
		return ob.data, nil
	}
	// Compressed: the records go to the scratch buffer first.
	ob.data = e.scratch[:0]
	ob.appendRecords(msgs, idx, now.UnixMilli())
	e.scratch = ob.data
	out := getBatchBuf(batchHeaderSize + size)[:batchHeaderSize]
	w := e.codec.Codec().NewWriter(appendWriter{&out})
	if _, err := w.Write(ob.data); err != nil {
		return nil, fmt.Errorf("kafka: compress records: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("kafka: compress records: %w", err)
	}
	ob.data = out
	ob.seal(e.codec)
	return ob.data, nil
}

// openBatch is a record batch being filled: data is its header (written
// by seal) followed by its records, count its records, firstTS and maxTS
// its first and largest timestamps. The producer appends the records of
// later Produce calls for the same partition to a batch not yet sent, so
// that a partition whose requests queue up sends one larger batch instead
// of many small ones.
type openBatch struct {
	data    []byte
	count   int32
	firstTS int64
	maxTS   int64
}

// appendRecords appends msgs[idx[0]], msgs[idx[1]], ... to the records of
// b (without compression); a record without a time gets nowMs.
func (b *openBatch) appendRecords(msgs []stream.Message, idx []int32, nowMs int64) {
	recs := b.data
	if b.count == 0 && len(idx) > 0 {
		b.firstTS = nowMs
		if t := msgs[idx[0]].Time; !t.IsZero() {
			b.firstTS = t.UnixMilli()
		}
		b.maxTS = b.firstTS
	}
	firstTS, maxTS, n := b.firstTS, b.maxTS, int64(b.count)
	for _, i := range idx {
		m := &msgs[i]
		ts := nowMs
		if !m.Time.IsZero() {
			ts = m.Time.UnixMilli()
		}
		maxTS = max(maxTS, ts)
		delta := ts - firstTS
		// The body's size: attributes, the deltas, key, value, headers.
		body := 1 + varintSize(delta) + varintSize(n) + bytesSize(m.Key) + bytesSize(m.Value) + varintSize(int64(len(m.Headers)))
		for j := range m.Headers {
			h := &m.Headers[j]
			body += varintSize(int64(len(h.Key))) + len(h.Key) + bytesSize(h.Value)
		}
		if need := len(recs) + body + binary.MaxVarintLen32; need > cap(recs) {
			// Grow into a recycled buffer, and recycle the old one:
			// nothing else refers to a batch being filled.
			grown := append(getBatchBuf(max(need, 2*cap(recs))), recs...)
			putBatchBuf(recs)
			recs = grown
		}
		recs = binary.AppendVarint(recs, int64(body))
		recs = append(recs, 0)
		recs = binary.AppendVarint(recs, delta)
		recs = binary.AppendVarint(recs, n)
		recs = appendBytes(recs, m.Key)
		recs = appendBytes(recs, m.Value)
		recs = binary.AppendVarint(recs, int64(len(m.Headers)))
		for j := range m.Headers {
			h := &m.Headers[j]
			recs = binary.AppendVarint(recs, int64(len(h.Key)))
			recs = append(recs, h.Key...)
			recs = appendBytes(recs, h.Value)
		}
		n++
	}
	b.data, b.count, b.maxTS = recs, int32(n), maxTS
}

// seal writes the header of b, whose records are compressed with codec,
// but for the producer id, epoch, base sequence and CRC (setProducer).
// When a buffer of a smaller size class holds the batch (a batch opened
// with room for later records that did not come, or compressed), it is
// moved into one and its buffer recycled: a batch in flight holds at most
// twice its size until it is acknowledged.
func (b *openBatch) seal(codec compress.Compression) {
	if c := batchBufClass(len(b.data)); c >= 0 && cap(b.data) >= 2<<(c+batchBufMinShift) {
		moved := append(getBatchBuf(len(b.data)), b.data...)
		putBatchBuf(b.data)
		b.data = moved
	}
	out := b.data
	be := binary.BigEndian
	be.PutUint64(out[0:], 0)
	be.PutUint32(out[offBatchLength:], uint32(len(out)-12))
	be.PutUint32(out[12:], math.MaxUint32) // partition leader epoch: -1
	out[offMagic] = 2
	be.PutUint16(out[offAttributes:], uint16(codec)&attrCompression)
	be.PutUint32(out[offLastDelta:], uint32(b.count-1))
	be.PutUint64(out[offFirstTS:], uint64(b.firstTS))
	be.PutUint64(out[offMaxTS:], uint64(b.maxTS))
	be.PutUint32(out[offRecordCount:], uint32(b.count))
}

// batchBufs recycles the buffers of encoded batches once the broker has
// acknowledged them (Producer.resolve), sparing the allocation and zeroing
// of a large buffer per batch. One free list per power-of-two size class,
// from 4 KiB (class 0) to 8 MiB: a buffer is handed out only for a request
// of at least half its capacity, so the buffers held by batches in flight
// are at most twice their contents (one pool of every size let a batch of
// a few records hold a buffer grown for a megabyte: 37-54 MB of the
// router's heap, docs/performance.md, "Memory: a million pins…"). The
// lists keep at most batchBufPoolBytes in all: unlike a sync.Pool they
// are not emptied by every other garbage collection (which a tight memory
// limit makes frequent, and every buffer is then allocated afresh), and
// unlike it they never hold more than that bound of idle buffers.
var batchBufs = bufClasses{maxBytes: batchBufPoolBytes}

const (
	batchBufMinShift = 12 // 4 KiB
	batchBufClasses  = 12 // up to 8 MiB
	// batchBufPoolBytes bounds the capacity of the idle buffers batchBufs
	// keeps.
	batchBufPoolBytes = 4 << 20
)

// bufClasses is a free list of byte buffers per size class, holding at
// most maxBytes of capacity; safe for concurrent use.
type bufClasses struct {
	mu       sync.Mutex
	free     [batchBufClasses][][]byte
	bytes    int
	maxBytes int
}

func (p *bufClasses) get(c int) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.free[c]
	if len(l) == 0 {
		return nil
	}
	b := l[len(l)-1]
	l[len(l)-1] = nil
	p.free[c] = l[:len(l)-1]
	p.bytes -= cap(b)
	return b
}

func (p *bufClasses) put(c int, b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes+cap(b) > p.maxBytes {
		return // left to the garbage collector
	}
	p.free[c] = append(p.free[c], b)
	p.bytes += cap(b)
}

// batchBufClass returns the size class whose buffers hold n bytes (n ≤
// 2^(class+12)), or -1 when n is above the largest.
func batchBufClass(n int) int {
	c := 0
	for size := 1 << batchBufMinShift; size < n; size <<= 1 {
		c++
	}
	if c >= batchBufClasses {
		return -1
	}
	return c
}

// getBatchBuf returns an empty buffer with room for n bytes.
func getBatchBuf(n int) []byte {
	c := batchBufClass(n)
	if c < 0 {
		return make([]byte, 0, n)
	}
	if b := batchBufs.get(c); b != nil {
		return b[:0]
	}
	return make([]byte, 0, 1<<(c+batchBufMinShift))
}

// putBatchBuf recycles b, which nothing reads or writes any more, in the
// class it fills (its capacity rounded down to a power of two).
func putBatchBuf(b []byte) {
	if cap(b) < 1<<batchBufMinShift {
		return
	}
	c := batchBufClass(cap(b))
	if c < 0 {
		return
	}
	if cap(b) < 1<<(c+batchBufMinShift) {
		c-- // between two classes: it serves the smaller one
	}
	batchBufs.put(c, b[:0])
}

// appendWriter is an io.Writer appending to a byte slice.
type appendWriter struct{ b *[]byte }

// Write appends p.
func (w appendWriter) Write(p []byte) (int, error) {
	*w.b = append(*w.b, p...)
	return len(p), nil
}

// setProducer writes the producer id, epoch and base sequence into an
// encoded batch and updates its CRC.
func setProducer(b []byte, pid int64, epoch int16, seq int32) {
	be := binary.BigEndian
	be.PutUint64(b[offProducerID:], uint64(pid))
	be.PutUint16(b[offProducerEpoch:], uint16(epoch))
	be.PutUint32(b[offBaseSequence:], uint32(seq))
	be.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], crc32c))
}

// batchView is one record batch of a fetch response, checked and ready to
// decode: records is its records section (decompressed if it was
// compressed; else a copy in a recArena, or aliasing the buffer scanned
// when scanBatches had none).
type batchView struct {
	baseOffset int64
	firstTS    int64
	maxTS      int64
	attrs      int16
	left       int32  // records not yet decoded
	records    []byte // from the next record not yet decoded
	skipBelow  int64  // records before this offset were fetched already
}

// batchHeader is what scanBatches reads of a batch's header.
type batchHeader struct {
	baseOffset  int64
	lastOffset  int64
	attrs       int16
	producerID  int64
	recordCount int32
	firstTS     int64
	maxTS       int64
}

// parseBatchHeader reads the header of the complete batch b (12 + its
// batchLength bytes) and checks its magic and CRC.
func parseBatchHeader(b []byte) (batchHeader, error) {
	be := binary.BigEndian
	if len(b) < batchHeaderSize {
		return batchHeader{}, fmt.Errorf("%w: batch of %d bytes", errCorrupt, len(b))
	}
	if m := b[offMagic]; m != 2 {
		return batchHeader{}, fmt.Errorf("kafka: record batch at offset %d has message format v%d; only v2 is supported", int64(be.Uint64(b)), m)
	}
	if crc := crc32.Checksum(b[offAttributes:], crc32c); crc != be.Uint32(b[offCRC:]) {
		return batchHeader{}, fmt.Errorf("%w: CRC mismatch at offset %d", errCorrupt, int64(be.Uint64(b)))
	}
	h := batchHeader{
		baseOffset:  int64(be.Uint64(b)),
		attrs:       int16(be.Uint16(b[offAttributes:])),
		firstTS:     int64(be.Uint64(b[offFirstTS:])),
		maxTS:       int64(be.Uint64(b[offMaxTS:])),
		producerID:  int64(be.Uint64(b[offProducerID:])),
		recordCount: int32(be.Uint32(b[offRecordCount:])),
	}
	h.lastOffset = h.baseOffset + int64(int32(be.Uint32(b[offLastDelta:])))
	if h.recordCount < 0 {
		return batchHeader{}, fmt.Errorf("%w: %d records", errCorrupt, h.recordCount)
	}
	return h, nil
}

// maxDecompressed bounds a decompressed batch (a batch is at most
// message.max.bytes, 1 MiB by default, compressed).
const maxDecompressed = 256 << 20

// decompress returns the records section of a compressed batch, in a new
// buffer.
func decompress(codec compress.Compression, src []byte) ([]byte, error) {
	c := codec.Codec()
	if c == nil {
		return nil, fmt.Errorf("kafka: unknown compression codec %d", codec)
	}
	r := c.NewReader(bytes.NewReader(src))
	defer r.Close()
	buf := bytes.NewBuffer(make([]byte, 0, 4*len(src)+512))
	if _, err := buf.ReadFrom(io.LimitReader(r, maxDecompressed+1)); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errCorrupt, codec, err)
	}
	if buf.Len() > maxDecompressed {
		return nil, fmt.Errorf("%w: %s batch of more than %d bytes decompressed", errCorrupt, codec, maxDecompressed)
	}
	return buf.Bytes(), nil
}

// abortedTxn is an aborted transaction of a fetch response.
type abortedTxn struct {
	producerID  int64
	firstOffset int64
}

// passedRange is a part [from, to) of a partition that scanBatches passed
// over because it holds no data record to deliver: a control batch (a
// transaction marker), or, read_committed, a batch of an aborted
// transaction.
type passedRange struct {
	from, to int64
	aborted  bool // a batch of an aborted transaction; else a control batch
}

// scanBatches checks the record batches in raw (a fetch response's records
// of one partition, fetched from offset from) and appends those with
// records to deliver to views: not control batches and, when aborted is
// not nil (read_committed), not batches of aborted transactions. It
// returns the offset after the last complete batch (from when there is
// none); an incomplete batch at the end (the response's size limit) is
// left for the next fetch. With an arena, the records of uncompressed
// batches are copied into it, so that the views do not refer to raw;
// without, they alias raw.
func scanBatches(raw []byte, from int64, readCommitted bool, aborted []abortedTxn, views []batchView, arena *recArena) ([]batchView, int64, error) {
	return scanBatchesPassed(raw, from, readCommitted, aborted, views, arena, nil)
}

// scanBatchesPassed is scanBatches that also appends to passed (when not
// nil) the offsets of the control batches and aborted batches it passes
// over, at or after from, in offset order.
func scanBatchesPassed(raw []byte, from int64, readCommitted bool, aborted []abortedTxn, views []batchView, arena *recArena, passed *[]passedRange) ([]batchView, int64, error) {
	next := from
	var active map[int64]bool // producers whose transaction in progress was aborted
	for len(raw) >= 12 {
		n := int(int32(binary.BigEndian.Uint32(raw[offBatchLength:])))
		if n < batchHeaderSize-12 {
			return views, next, fmt.Errorf("%w: batch length %d", errCorrupt, n)
		}
		if 12+n > len(raw) {
			break
		}
		b := raw[:12+n]
		raw = raw[12+n:]
		h, err := parseBatchHeader(b)
		if err != nil {
			return views, next, err
		}
		if h.lastOffset < from {
			continue // fetched already (the broker starts at a batch boundary)
		}
		at := next // where to fetch again if this batch's records do not decompress
		next = h.lastOffset + 1
		if readCommitted {
			for len(aborted) > 0 && aborted[0].firstOffset <= h.lastOffset {
				if active == nil {
					active = map[int64]bool{}
				}
				active[aborted[0].producerID] = true
				aborted = aborted[1:]
			}
		}
		if h.attrs&attrControl != 0 {
			if readCommitted && active[h.producerID] && isAbortMarker(b) {
				delete(active, h.producerID)
			}
			if passed != nil {
				*passed = append(*passed, passedRange{from: max(h.baseOffset, from), to: h.lastOffset + 1})
			}
			continue
		}
		if readCommitted && h.attrs&attrTransactional != 0 && active[h.producerID] {
			if passed != nil {
				*passed = append(*passed, passedRange{from: max(h.baseOffset, from), to: h.lastOffset + 1, aborted: true})
			}
			continue
		}
		if h.recordCount == 0 {
			continue
		}
		recs := b[batchHeaderSize:]
		if c := compress.Compression(h.attrs & attrCompression); c != 0 {
			if recs, err = decompress(c, recs); err != nil {
				// Not past it: its records would be passed over without a
				// word. The caller fetches it again (and reports why).
				return views, at, err
			}
		} else if arena != nil {
			recs = arena.copy(recs)
		}
		views = append(views, batchView{baseOffset: h.baseOffset, firstTS: h.firstTS, maxTS: h.maxTS,
			attrs: h.attrs, left: h.recordCount, records: recs, skipBelow: from})
	}
	return views, next, nil
}

// recArena holds the copies parseFetch makes of the records of the
// uncompressed batches of one fetch response, so that the response's
// frame can be recycled as soon as it is parsed (frameBufs). Small
// batches share chunks of recArenaChunk bytes; a batch of at least half a
// chunk gets a buffer of its own. A record then keeps alive only its
// batch's copy (or its chunk), not the whole 1-2 MiB response: the router
// holds a record until it settles, and one unsettled record of a
// partition used to keep every other partition's records of its response
// in memory. The copies are never reused or written once handed out.
type recArena struct {
	chunk []byte
}

// recArenaChunk is the size of the chunks small batches are copied into.
const recArenaChunk = 64 << 10

// copy returns a copy of b, with a capacity equal to its length.
func (a *recArena) copy(b []byte) []byte {
	if len(b) == 0 {
		return b[:0:0]
	}
	if len(b) >= recArenaChunk/2 {
		c := make([]byte, len(b))
		copy(c, b)
		return c
	}
	if cap(a.chunk)-len(a.chunk) < len(b) {
		a.chunk = make([]byte, 0, recArenaChunk)
	}
	start := len(a.chunk)
	a.chunk = append(a.chunk, b...)
	return a.chunk[start:len(a.chunk):len(a.chunk)]
}

// isAbortMarker reports whether the control batch b holds an abort marker:
// its record's key is version int16, type int16 (0 abort, 1 commit).
func isAbortMarker(b []byte) bool {
	if compress.Compression(binary.BigEndian.Uint16(b[offAttributes:])&attrCompression) != 0 {
		return false // control batches are never compressed
	}
	d := recDecoder{b: b[batchHeaderSize:]}
	d.varint() // length
	d.skip(1)  // attributes
	d.varint() // timestamp delta
	d.varint() // offset delta
	if k := d.varint(); k < 4 || d.bad {
		return false
	}
	key := d.take(4)
	return !d.bad && binary.BigEndian.Uint16(key[2:]) == 0
}

// recDecoder reads a records section.
type recDecoder struct {
	b   []byte
	i   int
	bad bool
}

func (d *recDecoder) varint() int64 {
	b := d.b[d.i:]
	if len(b) > 0 && b[0] < 0x80 {
		d.i++
		return int64(b[0]>>1) ^ -int64(b[0]&1)
	}
	if len(b) > 1 && b[1] < 0x80 { // lengths of 64 to 8191 bytes
		ux := uint64(b[0]&0x7f) | uint64(b[1])<<7
		d.i += 2
		return int64(ux>>1) ^ -int64(ux&1)
	}
	v, n := binary.Varint(b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.i += n
	return v
}

func (d *recDecoder) skip(n int) {
	if n < 0 || n > len(d.b)-d.i {
		d.bad = true
		return
	}
	d.i += n
}

// take returns the next n bytes, with capacity n (appending to them never
// writes over the next field).
func (d *recDecoder) take(n int) []byte {
	if n < 0 || n > len(d.b)-d.i {
		d.bad = true
		return nil
	}
	s := d.b[d.i : d.i+n : d.i+n]
	d.i += n
	return s
}

// nullable reads a length-prefixed byte string: nil for length -1, a
// non-nil empty slice for length 0.
func (d *recDecoder) nullable() []byte {
	n := d.varint()
	if n == -1 {
		return nil
	}
	if n < -1 || n > math.MaxInt32 {
		d.bad = true
		return nil
	}
	return d.take(int(n))
}

// str reads a header key as a string aliasing the records buffer (which
// is never written to once decoded).
func (d *recDecoder) str() string {
	n := d.varint()
	if n < 0 || n > math.MaxInt32 {
		d.bad = true
		return ""
	}
	b := d.take(int(n))
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// headerSlab hands out header slices from chunks shared by the records of
// one fetch response.
type headerSlab struct {
	free []stream.Header
}

// take returns a slice of n headers with capacity n; hint is how many
// more headers are likely needed (the chunk size when a new one is
// allocated).
func (s *headerSlab) take(n, hint int) []stream.Header {
	if len(s.free) < n {
		s.free = make([]stream.Header, max(n, min(hint, 4096), 64))
	}
	h := s.free[:n:n]
	s.free = s.free[n:]
	return h
}

// decodeRecord decodes the next record of v into m (Topic and Partition
// are the caller's), headers from slab. ok is false when the record was
// skipped (before skipBelow); err is set when the batch is corrupt.
func decodeRecord(v *batchView, m *stream.Message, slab *headerSlab, hint int) (ok bool, err error) {
	d := recDecoder{b: v.records}
	length := d.varint()
	if d.bad || length < 0 || int(length) > len(d.b)-d.i {
		return false, fmt.Errorf("%w: record length %d", errCorrupt, length)
	}
	end := d.i + int(length)
	d.b = d.b[:end]
	d.skip(1) // attributes
	tsDelta := d.varint()
	offDelta := d.varint()
	v.records = v.records[end:]
	v.left--
	if d.bad {
		return false, fmt.Errorf("%w: record header", errCorrupt)
	}
	offset := v.baseOffset + offDelta
	if offset < v.skipBelow {
		return false, nil
	}
	m.Offset = offset
	if v.attrs&attrLogAppendTime != 0 {
		m.Time = time.UnixMilli(v.maxTS)
	} else {
		m.Time = time.UnixMilli(v.firstTS + tsDelta)
	}
	m.Key = d.nullable()
	m.Value = d.nullable()
	nh := d.varint()
	if d.bad || nh < 0 || nh > int64(len(d.b)-d.i) {
		return false, fmt.Errorf("%w: %d headers", errCorrupt, nh)
	}
	m.Headers = nil
	if nh > 0 {
		hs := slab.take(int(nh), hint*int(nh))
		for j := range hs {
			hs[j].Key = d.str()
			hs[j].Value = d.nullable()
		}
		m.Headers = hs
	}
	if d.bad {
		return false, fmt.Errorf("%w: record at offset %d", errCorrupt, offset)
	}
	return true, nil
}

// readAllRecords is a test and tool helper: every record of the batches in
// raw, decoded.
func readAllRecords(raw []byte, readCommitted bool, aborted []abortedTxn) ([]stream.Message, error) {
	views, _, err := scanBatches(raw, 0, readCommitted, aborted, nil, nil)
	if err != nil {
		return nil, err
	}
	var out []stream.Message
	var slab headerSlab
	for i := range views {
		v := &views[i]
		for v.left > 0 {
			var m stream.Message
			ok, err := decodeRecord(v, &m, &slab, 1)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, m)
			}
		}
	}
	return out, nil
}

// encodedSize bounds the size of m as a record of a batch.
func encodedSize(m *stream.Message) int {
	n := len(m.Key) + len(m.Value) + 32
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value) + 12
	}
	return n
}
