package kafka

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"sort"
	"time"

	"github.com/segmentio/kafka-go/protocol"
	fetchAPI "github.com/segmentio/kafka-go/protocol/fetch"

	"github.com/residency-router/residency/stream"
)

// fetchVersion is the Fetch version we speak: v11 (Kafka 2.3 and later;
// Kafka 4 answers v4 to v17). Its response is read by hand (parseFetch), so
// that the records stay in the one buffer the response was read into.
const fetchVersion = 11

// fetchPart is one partition of a fetch request: its state in the
// generation and the offset it was fetched from.
type fetchPart struct {
	p    *partFetch
	from int64
}

// fetchRequest encodes a Fetch v11 request for parts, without a fetch
// session (every request names all its partitions).
func fetchRequest(clientID string, parts []fetchPart, maxWait time.Duration, maxBytes, partMaxBytes int, isolation int8) ([]byte, error) {
	req := &fetchAPI.Request{
		ReplicaID:      -1,
		MaxWaitTime:    int32(maxWait / time.Millisecond),
		MinBytes:       1,
		MaxBytes:       int32(maxBytes),
		IsolationLevel: isolation,
		SessionID:      0,
		SessionEpoch:   -1,
	}
	topicAt := map[string]int{}
	for _, fp := range parts {
		ti, ok := topicAt[fp.p.topic]
		if !ok {
			ti = len(req.Topics)
			topicAt[fp.p.topic] = ti
			req.Topics = append(req.Topics, fetchAPI.RequestTopic{Topic: fp.p.topic})
		}
		req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, fetchAPI.RequestPartition{
			Partition:          fp.p.partition,
			CurrentLeaderEpoch: -1,
			FetchOffset:        fp.from,
			LogStartOffset:     -1,
			PartitionMaxBytes:  int32(partMaxBytes),
		})
	}
	var buf bytes.Buffer
	if err := protocol.WriteRequest(&buf, fetchVersion, 0, clientID, req); err != nil {
		return nil, fmt.Errorf("kafka: encode fetch: %w", err)
	}
	return buf.Bytes(), nil
}

// partOutcome is what one fetch brought for one partition.
type partOutcome struct {
	fp       fetchPart
	code     int16 // the broker's error code
	hwm      int64
	lso      int64
	logStart int64
	next     int64 // the offset to fetch next
	views    []batchView
	err      error // the records did not decode (corrupt, unsupported format)
	answered bool
	nrecords int // records in views (an upper bound: records before from are skipped)
	// passed are the transaction markers and aborted batches passed
	// over, when parseFetchPassed was asked for them.
	passed []passedRange
}

// respReader reads a response body.
type respReader struct {
	b   []byte
	i   int
	bad bool
}

func (r *respReader) need(n int) bool {
	if r.bad || n < 0 || n > len(r.b)-r.i {
		r.bad = true
		return false
	}
	return true
}

func (r *respReader) i16() int16 {
	if !r.need(2) {
		return 0
	}
	v := int16(binary.BigEndian.Uint16(r.b[r.i:]))
	r.i += 2
	return v
}

func (r *respReader) i32() int32 {
	if !r.need(4) {
		return 0
	}
	v := int32(binary.BigEndian.Uint32(r.b[r.i:]))
	r.i += 4
	return v
}

func (r *respReader) i64() int64 {
	if !r.need(8) {
		return 0
	}
	v := int64(binary.BigEndian.Uint64(r.b[r.i:]))
	r.i += 8
	return v
}

// bytes reads n bytes (aliasing the response).
func (r *respReader) bytes(n int) []byte {
	if !r.need(n) {
		return nil
	}
	v := r.b[r.i : r.i+n : r.i+n]
	r.i += n
	return v
}

// str reads an int16-length string as bytes (nil for null).
func (r *respReader) str() []byte {
	n := r.i16()
	if n < 0 {
		return nil
	}
	return r.bytes(int(n))
}

// parseFetch reads a Fetch v11 response body (after the correlation id)
// for the partitions parts asked for. Records are checked (CRC) and
// decompressed here; the records of uncompressed batches are copied out of
// body (recArena): nothing it returns refers to body, which the caller
// recycles.
func parseFetch(body []byte, parts []fetchPart, readCommitted bool) ([]partOutcome, error) {
	return parseFetchPassed(body, parts, readCommitted, false)
}

// parseFetchPassed is parseFetch that, with passed, also notes in each
// partition's outcome the offsets of the transaction markers and (when
// readCommitted) aborted batches it passed over (RangeReader).
func parseFetchPassed(body []byte, parts []fetchPart, readCommitted, passed bool) ([]partOutcome, error) {
	r := respReader{b: body}
	var arena recArena
	r.i32() // throttle time
	if code := r.i16(); code != 0 {
		return nil, kafkaErr(code)
	}
	r.i32() // session id
	out := make([]partOutcome, len(parts))
	for i := range parts {
		out[i].fp = parts[i]
		out[i].next = parts[i].from
	}
	views := make([]batchView, 0, 4*len(parts))
	nt := r.i32()
	at := 0 // the answers usually come in request order
	for range max(nt, 0) {
		name := r.str()
		np := r.i32()
		for range max(np, 0) {
			partition := r.i32()
			code := r.i16()
			hwm := r.i64()
			lso := r.i64()
			logStart := r.i64()
			var aborted []abortedTxn
			if na := r.i32(); na > 0 && r.need(16*int(na)) {
				aborted = make([]abortedTxn, na)
				for j := range aborted {
					aborted[j] = abortedTxn{producerID: r.i64(), firstOffset: r.i64()}
				}
				sort.Slice(aborted, func(a, b int) bool { return aborted[a].firstOffset < aborted[b].firstOffset })
			}
			r.i32() // preferred read replica
			var records []byte
			if n := r.i32(); n > 0 {
				records = r.bytes(int(n))
			}
			if r.bad {
				return nil, fmt.Errorf("%w: truncated fetch response", errCorrupt)
			}
			k := -1
			for j := range len(parts) {
				c := (at + j) % len(parts)
				if p := parts[c].p; p.partition == partition && string(name) == p.topic {
					k = c
					break
				}
			}
			if k < 0 {
				continue // not asked for: ignore
			}
			at = k + 1
			o := &out[k]
			o.answered, o.code, o.hwm, o.lso, o.logStart = true, code, hwm, lso, logStart
			if code != 0 || len(records) == 0 {
				continue
			}
			start := len(views)
			var pp *[]passedRange
			if passed {
				pp = &o.passed
			}
			views, o.next, o.err = scanBatchesPassed(records, o.fp.from, readCommitted, aborted, views, &arena, pp)
			o.views = views[start:len(views):len(views)]
			for _, v := range o.views {
				o.nrecords += int(v.left)
			}
		}
	}
	if r.bad {
		return nil, fmt.Errorf("%w: truncated fetch response", errCorrupt)
	}
	return out, nil
}

// fetchResult is a fetch response's records for the caller of Poll. Their
// buffers (the copies parseFetch made of the records of uncompressed
// batches, the decompressed records of compressed ones) are never reused:
// the keys, values and headers handed out alias them for as long as the
// caller keeps them. The response's own frame is recycled once parsed.
type fetchResult struct {
	gen    uint64
	broker *brokerFetch
	parts  []resultPart
	pi     int
	left   int // records left (an upper bound), the header slab's hint
	slab   headerSlab
}

type resultPart struct {
	topic     string
	partition int32
	hwm       int64
	views     []batchView
	vi        int
}

// decode appends up to limit records to dst.
func (r *fetchResult) decode(dst []stream.Message, limit int) ([]stream.Message, error) {
	for r.pi < len(r.parts) && limit > 0 {
		p := &r.parts[r.pi]
		for p.vi < len(p.views) && limit > 0 {
			v := &p.views[p.vi]
			for v.left > 0 && limit > 0 {
				dst = append(dst, stream.Message{})
				m := &dst[len(dst)-1]
				ok, err := decodeRecord(v, m, &r.slab, r.left)
				r.left--
				if err != nil {
					return dst[:len(dst)-1], fmt.Errorf("%s[%d]: %w", p.topic, p.partition, err)
				}
				if !ok {
					dst = dst[:len(dst)-1]
					continue
				}
				m.Topic = p.topic
				m.Partition = int(p.partition)
				m.HighWaterMark = p.hwm
				limit--
			}
			if v.left == 0 {
				p.vi++
			}
		}
		if p.vi == len(p.views) {
			r.pi++
		}
	}
	return dst, nil
}

// done reports whether every record was handed out.
func (r *fetchResult) done() bool { return r.pi >= len(r.parts) }

// fetchCall builds the call of a fetch request. Its response frame comes
// from frameBufs: the caller gives it back (frameBufs.put) once parsed.
func fetchCall(frame []byte, maxWait, timeout time.Duration) *call {
	return &call{frame: net.Buffers{frame}, timeout: maxWait + timeout, pooled: true, done: make(chan struct{})}
}
