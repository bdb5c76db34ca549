package kafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/segmentio/kafka-go/compress"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/residency-router/residency/stream"
)

// fidelityMessages are records whose keys and header values are nil,
// empty and non-empty, with repeated header names, in an order that must
// survive.
func fidelityMessages() []stream.Message {
	t0 := time.UnixMilli(1_700_000_000_123)
	return []stream.Message{
		{Key: nil, Value: []byte("null key"), Time: t0},
		{Key: []byte{}, Value: []byte("empty key"), Time: t0.Add(time.Millisecond)},
		{Key: []byte("k"), Value: nil, Time: t0.Add(-time.Second)},
		{Key: []byte("k"), Value: []byte{}, Headers: []stream.Header{
			{Key: "n", Value: nil}, {Key: "e", Value: []byte{}}, {Key: "n", Value: []byte{0, 1}},
			{Key: "", Value: []byte("empty name")}, {Key: "n", Value: nil},
		}, Time: t0},
		{Key: bytes.Repeat([]byte{0xff}, 300), Value: bytes.Repeat([]byte("v"), 70_000), Time: t0},
	}
}

func sameMessage(got, want *stream.Message) error {
	if (got.Key == nil) != (want.Key == nil) || !bytes.Equal(got.Key, want.Key) {
		return fmt.Errorf("key %q (nil %v), want %q (nil %v)", trunc(got.Key), got.Key == nil, trunc(want.Key), want.Key == nil)
	}
	if (got.Value == nil) != (want.Value == nil) || !bytes.Equal(got.Value, want.Value) {
		return fmt.Errorf("value %q (nil %v), want %q (nil %v)", trunc(got.Value), got.Value == nil, trunc(want.Value), want.Value == nil)
	}
	if len(got.Headers) != len(want.Headers) || (got.Headers == nil) != (len(want.Headers) == 0) {
		return fmt.Errorf("headers %v, want %v", got.Headers, want.Headers)
	}
	for i := range want.Headers {
		g, w := got.Headers[i], want.Headers[i]
		if g.Key != w.Key || (g.Value == nil) != (w.Value == nil) || !bytes.Equal(g.Value, w.Value) {
			return fmt.Errorf("header %d = %q:%q (nil %v), want %q:%q (nil %v)", i, g.Key, g.Value, g.Value == nil, w.Key, w.Value, w.Value == nil)
		}
	}
	if !want.Time.IsZero() && !got.Time.Equal(want.Time) {
		return fmt.Errorf("time %v, want %v", got.Time, want.Time)
	}
	return nil
}

func trunc(b []byte) []byte {
	if len(b) > 20 {
		return b[:20]
	}
	return b
}

func allIdx(n int) []int32 {
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	return idx
}

// TestBatchRoundTrip: what the encoder writes, the decoder reads back byte
// for byte (nil vs empty, header order and repeats, timestamps), for every
// codec; and kafka-go's own decoder agrees, so the format is Kafka's.
func TestBatchRoundTrip(t *testing.T) {
	msgs := fidelityMessages()
	for _, codec := range []compress.Compression{0, compress.Gzip, compress.Snappy, compress.Lz4, compress.Zstd} {
		t.Run(codec.String(), func(t *testing.T) {
			e := batchEncoder{codec: codec}
			b, err := e.encode(msgs, allIdx(len(msgs)), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			setProducer(b, 7, 3, 11)
			got, err := readAllRecords(b, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(msgs) {
				t.Fatalf("%d records, want %d", len(got), len(msgs))
			}
			for i := range msgs {
				if err := sameMessage(&got[i], &msgs[i]); err != nil {
					t.Errorf("record %d: %v", i, err)
				}
				if got[i].Offset != int64(i) {
					t.Errorf("record %d at offset %d", i, got[i].Offset)
				}
			}
			// kafka-go reads it too: the framing, CRC and producer fields are Kafka's.
			framed := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
			framed = append(framed, b...)
			var rs protocol.RecordSet
			if _, err := rs.ReadFrom(bytes.NewReader(framed)); err != nil {
				t.Fatalf("kafka-go cannot read the batch: %v", err)
			}
			rb := rs.Records.(*protocol.RecordStream).Records[0].(*protocol.RecordBatch)
			if rb.ProducerID != 7 || rb.ProducerEpoch != 3 || rb.BaseSequence != 11 || rs.Attributes.Compression() != codec {
				t.Errorf("kafka-go reads producer %d/%d/%d, codec %v", rb.ProducerID, rb.ProducerEpoch, rb.BaseSequence, rs.Attributes.Compression())
			}
			for i := 0; ; i++ {
				r, err := rs.Records.ReadRecord()
				if errors.Is(err, io.EOF) {
					if i != len(msgs) {
						t.Fatalf("kafka-go read %d records", i)
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if (r.Key == nil) != (msgs[i].Key == nil) || len(r.Headers) != len(msgs[i].Headers) {
					t.Errorf("kafka-go record %d: key nil %v, %d headers", i, r.Key == nil, len(r.Headers))
				}
			}
		})
	}
}

// TestScanSkipsAndChecks: control batches and aborted transactions are
// skipped as read_committed requires, records before the fetch offset are
// not returned, a corrupt batch is an error, and an incomplete batch at the
// end waits for the next fetch.
// testBatch encodes a record batch of values at offset base, of producer
// pid, with attributes attrs (its checksum recomputed: it holds).
func testBatch(t *testing.T, base int64, pid int64, attrs int16, values ...string) []byte {
	t.Helper()
	var msgs []stream.Message
	for _, v := range values {
		msgs = append(msgs, stream.Message{Value: []byte(v)})
	}
	b, err := (&batchEncoder{}).encode(msgs, allIdx(len(msgs)), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint64(b, uint64(base))
	binary.BigEndian.PutUint16(b[offAttributes:], uint16(attrs))
	setProducer(b, pid, 0, 0)
	return b
}

func TestScanSkipsAndChecks(t *testing.T) {
	e := batchEncoder{}
	mk := func(base int64, pid int64, attrs int16, values ...string) []byte {
		return testBatch(t, base, pid, attrs, values...)
	}
	marker := func(base, pid int64, abort bool) []byte {
		typ := byte(1)
		if abort {
			typ = 0
		}
		msgs := []stream.Message{{Key: []byte{0, 0, 0, typ}, Value: []byte{0, 0, 0, 0, 0, 0}}}
		b, _ := e.encode(msgs, []int32{0}, time.Now())
		binary.BigEndian.PutUint64(b, uint64(base))
		binary.BigEndian.PutUint16(b[offAttributes:], attrControl|attrTransactional)
		setProducer(b, pid, 0, -1)
		return b
	}
	var raw []byte
	raw = append(raw, mk(0, -1, 0, "a0", "a1")...)                // 0-1 plain
	raw = append(raw, mk(2, 5, attrTransactional, "t2", "t3")...) // 2-3 txn 5, aborted
	raw = append(raw, mk(4, 6, attrTransactional, "c4")...)       // 4 txn 6, committed
	raw = append(raw, marker(5, 5, true)...)                      // 5 abort marker for 5
	raw = append(raw, marker(6, 6, false)...)                     // 6 commit marker for 6
	raw = append(raw, mk(7, 5, attrTransactional, "t7")...)       // 7 txn 5 again, committed later
	raw = append(raw, mk(8, -1, 0, "a8")...)                      // 8 plain
	aborted := []abortedTxn{{producerID: 5, firstOffset: 2}}

	values := func(readCommitted bool, from int64, raw []byte) ([]string, int64) {
		t.Helper()
		views, next, err := scanBatches(raw, from, readCommitted, aborted, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		var slab headerSlab
		for i := range views {
			for views[i].left > 0 {
				var m stream.Message
				ok, err := decodeRecord(&views[i], &m, &slab, 1)
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					out = append(out, string(m.Value))
				}
			}
		}
		return out, next
	}
	if got, next := values(false, 0, raw); fmt.Sprint(got) != "[a0 a1 t2 t3 c4 t7 a8]" || next != 9 {
		t.Errorf("read_uncommitted: %v next %d", got, next)
	}
	if got, next := values(true, 0, raw); fmt.Sprint(got) != "[a0 a1 c4 t7 a8]" || next != 9 {
		t.Errorf("read_committed: %v next %d", got, next)
	}
	if got, _ := values(false, 1, raw); fmt.Sprint(got) != "[a1 t2 t3 c4 t7 a8]" {
		t.Errorf("from offset 1: %v", got)
	}
	// An incomplete last batch is left for the next fetch.
	if got, next := values(false, 0, raw[:len(raw)-5]); fmt.Sprint(got) != "[a0 a1 t2 t3 c4 t7]" || next != 8 {
		t.Errorf("truncated: %v next %d", got, next)
	}
	// A flipped bit is caught by the CRC.
	bad := bytes.Clone(raw)
	bad[len(bad)-3] ^= 1
	if _, _, err := scanBatches(bad, 0, false, nil, nil, nil); !errors.Is(err, errCorrupt) {
		t.Errorf("corrupt batch: %v", err)
	}
}

// TestDecodeDoesNotAllocate: decoding the records of a scanned response
// allocates nothing per record (keys, values and header values alias the
// response; headers come from one slab per response).
func TestDecodeDoesNotAllocate(t *testing.T) {
	const n = 2000
	msgs := make([]stream.Message, n)
	for i := range msgs {
		msgs[i] = stream.Message{Key: fmt.Appendf(nil, "user-%d", i), Value: bytes.Repeat([]byte{byte(i)}, 230),
			Headers: []stream.Header{{Key: "trace", Value: []byte("abc")}}}
	}
	e := batchEncoder{}
	var raw []byte
	for i := 0; i < n; i += 500 {
		b, err := e.encode(msgs, allIdx(n)[i:i+500], time.Now())
		if err != nil {
			t.Fatal(err)
		}
		binary.BigEndian.PutUint64(b, uint64(i))
		setProducer(b, -1, -1, -1)
		raw = append(raw, b...)
	}
	dst := make([]stream.Message, n)
	views := make([]batchView, 0, 8)
	decodeAll := func() {
		vs, _, err := scanBatches(raw, 0, false, nil, views[:0], nil)
		if err != nil {
			t.Fatal(err)
		}
		var slab headerSlab
		k := 0
		for i := range vs {
			for vs[i].left > 0 {
				if _, err := decodeRecord(&vs[i], &dst[k], &slab, n-k); err != nil {
					t.Fatal(err)
				}
				k++
			}
		}
	}
	// AllocsPerRun counts the whole process's allocations, so goroutines
	// other tests left winding down (closing clusters and connections) can
	// add some: the least of three measurements is the decoder's.
	allocs := math.Inf(1)
	for range 3 {
		allocs = min(allocs, testing.AllocsPerRun(20, decodeAll))
	}
	// The header slab: a few chunks for 2000 records.
	if perRecord := allocs / n; perRecord > 0.01 {
		t.Fatalf("%.0f allocations for %d records (%.3f per record)", allocs, n, perRecord)
	}
	if err := sameMessage(&dst[n-1], &msgs[n-1]); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkDecode: checking and decoding a fetch response's worth of
// canonical-size records (2000 × ~250 bytes, 4 batches) into a reused
// slice, in memory; allocs/op is per 2000 records.
func BenchmarkDecode(b *testing.B) {
	const n = 2000
	msgs := make([]stream.Message, n)
	for i := range msgs {
		msgs[i] = stream.Message{Key: fmt.Appendf(nil, "user-%d", i), Value: bytes.Repeat([]byte{byte(i)}, 230),
			Headers: []stream.Header{{Key: "trace-id", Value: []byte("0123456789abcdef")}}}
	}
	e := batchEncoder{}
	var raw []byte
	for i := 0; i < n; i += 500 {
		bt, err := e.encode(msgs, allIdx(n)[i:i+500], time.Now())
		if err != nil {
			b.Fatal(err)
		}
		binary.BigEndian.PutUint64(bt, uint64(i))
		setProducer(bt, -1, -1, -1)
		raw = append(raw, bt...)
	}
	// alias: the records decoded where they are; copied: copied out
	// first (a recArena), as parseFetch does so that it can recycle the
	// response's frame.
	for _, copied := range []bool{false, true} {
		b.Run(map[bool]string{false: "alias", true: "copied"}[copied], func(b *testing.B) {
			dst := make([]stream.Message, 0, n)
			views := make([]batchView, 0, 8)
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				var arena *recArena
				if copied {
					arena = &recArena{}
				}
				vs, _, err := scanBatches(raw, 0, false, nil, views[:0], arena)
				if err != nil {
					b.Fatal(err)
				}
				r := fetchResult{parts: []resultPart{{topic: "t", views: vs}}, left: n}
				if dst, err = r.decode(dst[:0], n); err != nil || len(dst) != n {
					b.Fatal(err, len(dst))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
		})
	}
}

// FuzzDecode: whatever a broker (or the network) hands us, scanning and
// decoding return an error or records, never panic, and decoded slices
// stay within the input.
func FuzzDecode(f *testing.F) {
	e := batchEncoder{}
	b, _ := e.encode(fidelityMessages(), allIdx(5), time.Now())
	f.Add(b, false)
	z := batchEncoder{codec: compress.Zstd}
	bz, _ := z.encode(fidelityMessages(), allIdx(5), time.Now())
	f.Add(bz, true)
	f.Fuzz(func(t *testing.T, raw []byte, committed bool) {
		// Fix the CRC of the first batch, so the fuzzer gets past it.
		if len(raw) >= batchHeaderSize {
			n := int(int32(binary.BigEndian.Uint32(raw[offBatchLength:])))
			if n >= batchHeaderSize-12 && 12+n <= len(raw) {
				binary.BigEndian.PutUint32(raw[offCRC:], crc32.Checksum(raw[offAttributes:12+n], crc32c))
			}
		}
		views, _, err := scanBatches(raw, 0, committed, []abortedTxn{{producerID: 7, firstOffset: 0}}, nil, nil)
		if err != nil {
			return
		}
		r := fetchResult{parts: []resultPart{{topic: "t", views: views}}, left: 1}
		_, _ = r.decode(nil, 1<<20)
	})
}

// routerShaped returns n records shaped like the router's output: a key, a
// ~250-byte value, one producer header and the eleven residency headers
// (names as router/headers.go), whose values are shared by every record
// but the source offset.
func routerShaped(n int) []stream.Message {
	shared := func(s string) []byte { return []byte(s) }
	jur, reg, ver, dig, by := shared("EU"), shared("eu"), shared("42"), shared("0123456789abcdef"), shared("country")
	schema, topic, part, inst := shared("single-object:0123456789abcdef"), shared("events.ingest"), shared("3"), shared("router-7f9c")
	msgs := make([]stream.Message, n)
	for i := range msgs {
		msgs[i] = stream.Message{Topic: "pinned.eu", Key: fmt.Appendf(nil, "user-%d", i), Value: bytes.Repeat([]byte{byte(i)}, 250),
			Time: time.UnixMilli(1_700_000_000_000 + int64(i)),
			Headers: []stream.Header{{Key: "trace-id", Value: []byte("0123456789abcdef")},
				{Key: "residency-jurisdiction", Value: jur}, {Key: "residency-region", Value: reg},
				{Key: "residency-ruleset-version", Value: ver}, {Key: "residency-ruleset-digest", Value: dig},
				{Key: "residency-decided-by", Value: by}, {Key: "residency-schema", Value: schema},
				{Key: "residency-source-topic", Value: topic}, {Key: "residency-source-partition", Value: part},
				{Key: "residency-source-offset", Value: strconv.AppendInt(nil, 1_000_000+int64(i), 10)},
				{Key: "residency-router", Value: inst}}}
	}
	return msgs
}

// BenchmarkEncode: encoding router-shaped records into batches of 12 (a
// 500-event poll spread over 42 destination partitions) and of 500,
// uncompressed and with each codec kafka.compression offers but gzip;
// compressed/raw reports the size of the batches against the uncompressed
// encoding. Values "random" are incompressible (only the headers, keys and
// framing compress: a worst case), "repeated" are routerShaped's (a byte
// repeated: a best case).
func BenchmarkEncode(b *testing.B) {
	for _, codec := range []compress.Compression{0, compress.Snappy, compress.Lz4, compress.Zstd} {
		for _, per := range []int{12, 500} {
			for _, values := range []string{"random", "repeated"} {
				name := "none"
				if codec != 0 {
					name = codec.String()
				}
				b.Run(fmt.Sprintf("codec=%s/batch=%d/values=%s", name, per, values), func(b *testing.B) {
					const n = 3000
					msgs := routerShaped(n)
					if values == "random" {
						rng := rand.New(rand.NewPCG(1, 2))
						for i := range msgs {
							for j := range msgs[i].Value {
								msgs[i].Value[j] = byte(rng.Uint32())
							}
						}
					}
					idx := allIdx(n)
					e := batchEncoder{codec: codec}
					raw, out := 0, 0
					b.ReportAllocs()
					for b.Loop() {
						for i := 0; i < n; i += per {
							bt, err := e.encode(msgs, idx[i:min(i+per, n)], time.Now())
							if err != nil {
								b.Fatal(err)
							}
							setProducer(bt, 1, 0, 0)
							out += len(bt)
							putBatchBuf(bt)
						}
						for _, i := range idx {
							raw += encodedSize(&msgs[i])
						}
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/record")
					b.ReportMetric(float64(out)/float64(raw), "compressed/raw")
				})
			}
		}
	}
}

// TestBatchBufClasses: a recycled buffer serves only requests of its own
// size class, so a small batch never holds a buffer grown for a large one,
// and never gets one too small.
func TestBatchBufClasses(t *testing.T) {
	for _, n := range []int{1, 4096, 4097, 20000, 1 << 20, 8 << 20} {
		b := getBatchBuf(n)
		if cap(b) < n || len(b) != 0 {
			t.Fatalf("getBatchBuf(%d): len %d cap %d", n, len(b), cap(b))
		}
		if n >= 4096 && cap(b) >= 2*n {
			t.Fatalf("getBatchBuf(%d): cap %d, more than twice the request", n, cap(b))
		}
	}
	for range 50 {
		putBatchBuf(make([]byte, 0, 1<<20))        // large buffers recycled...
		putBatchBuf(make([]byte, 0, 3<<20))        // (between classes: the 2 MiB one)
		if b := getBatchBuf(5000); cap(b) > 8192 { // ...never serve a small batch
			t.Fatalf("getBatchBuf(5000) returned a buffer of %d bytes", cap(b))
		}
		if b := getBatchBuf(2<<20 + 1); cap(b) < 2<<20+1 {
			t.Fatalf("getBatchBuf(2 MiB + 1) returned a buffer of %d bytes", cap(b))
		}
	}
	if b := getBatchBuf(16 << 20); cap(b) < 16<<20 {
		t.Fatalf("getBatchBuf(16 MiB) cap %d", cap(b))
	}
}

// TestBufClassesBound: the free lists survive garbage collections (a
// sync.Pool is emptied by two) and never keep more than their bound.
func TestBufClassesBound(t *testing.T) {
	p := bufClasses{maxBytes: 64 << 10}
	b := make([]byte, 0, 8<<10)
	p.put(1, b)
	runtime.GC()
	runtime.GC()
	if g := p.get(1); unsafe.SliceData(g) != unsafe.SliceData(b) {
		t.Fatal("a buffer given back was not kept across garbage collections")
	}
	if g := p.get(1); g != nil {
		t.Fatal("a buffer was handed out twice")
	}
	for range 20 {
		p.put(1, make([]byte, 0, 8<<10))
	}
	if p.bytes > p.maxBytes || len(p.free[1]) != 8 {
		t.Fatalf("%d buffers of 8 KiB kept (%d bytes), bound %d", len(p.free[1]), p.bytes, p.maxBytes)
	}
	for range 8 {
		if p.get(1) == nil {
			t.Fatal("a kept buffer is missing")
		}
	}
	if p.bytes != 0 {
		t.Fatalf("%d bytes counted with no buffer kept", p.bytes)
	}
}

// TestSealMovesToItsClass: a batch opened with room for more records than
// came is moved at seal into a buffer of its own size class (its old
// buffer recycled), and reads back the same; a batch that fills its
// buffer's class stays where it is.
func TestSealMovesToItsClass(t *testing.T) {
	msgs := []stream.Message{{Key: []byte("k1"), Value: []byte("v1")}, {Key: []byte("k2"), Value: []byte("v2"),
		Headers: []stream.Header{{Key: "h", Value: []byte("x")}}}}
	ob := openBatch{data: getBatchBuf(64 << 10)[:batchHeaderSize]}
	ob.appendRecords(msgs, allIdx(len(msgs)), time.Now().UnixMilli())
	ob.seal(0)
	if cap(ob.data) != 1<<batchBufMinShift {
		t.Fatalf("sealed batch of %d bytes holds a buffer of %d", len(ob.data), cap(ob.data))
	}
	setProducer(ob.data, -1, -1, -1)
	got, err := readAllRecords(ob.data, false, nil)
	if err != nil || len(got) != len(msgs) {
		t.Fatalf("%d records, err %v", len(got), err)
	}
	for i := range msgs {
		if err := sameMessage(&got[i], &msgs[i]); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}

	big := bytes.Repeat([]byte("v"), 5000)
	full := openBatch{data: getBatchBuf(8 << 10)[:batchHeaderSize]}
	full.appendRecords([]stream.Message{{Value: big}}, []int32{0}, time.Now().UnixMilli())
	before := unsafe.SliceData(full.data)
	full.seal(0)
	if unsafe.SliceData(full.data) != before {
		t.Fatal("a batch filling its buffer's class was moved")
	}
}

// BenchmarkCompressSealed: the Producer's compression of a sealed batch
// (500 router-shaped records, repeated values), per codec: its time and
// its allocations once warm (the loop's scratch buffer and the batch
// buffers are reused; what is left is the codec's own).
func BenchmarkCompressSealed(b *testing.B) {
	for _, codec := range []compress.Compression{compress.Snappy, compress.Lz4, compress.Zstd} {
		b.Run(codec.String(), func(b *testing.B) {
			msgs := routerShaped(500)
			idx := allIdx(len(msgs))
			p := &Producer{codec: codec, log: slog.Default()}
			b.ReportAllocs()
			for b.Loop() {
				bt := &pbatch{}
				size := batchHeaderSize
				for _, i := range idx {
					size += encodedSize(&msgs[i])
				}
				bt.ob.data = getBatchBuf(size)[:batchHeaderSize]
				bt.ob.appendRecords(msgs, idx, 1_700_000_000_000)
				bt.count, bt.sealed = bt.ob.count, true
				p.compressSealed(bt)
				putBatchBuf(bt.data)
			}
		})
	}
}
