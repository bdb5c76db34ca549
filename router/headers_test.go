package router

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// Writer schemas of the header tests.
var (
	soRef   = schemas.WriterRef{Framing: schemas.FramingSingleObject, Fingerprint: 0x0123456789abcdef}
	rawRef  = schemas.WriterRef{Framing: schemas.FramingRaw, Fingerprint: 0xfedcba9876543210}
	confRef = schemas.WriterRef{Framing: schemas.FramingConfluent, ID: 42}
)

func TestOutHeaders(t *testing.T) {
	m := &stream.Message{Topic: "in", Partition: 2, Offset: 41, Headers: []stream.Header{
		{Key: "a", Value: []byte("1")}, {Key: HeaderRegion, Value: []byte("forged")}, {Key: "b", Value: []byte("2")},
	}}
	d := &Decision{Outcome: DeadLettered, Reason: "corrupt"}
	hs := outHeaders(m, d, rawRef, "9", "d9", "r1", errors.New(strings.Repeat("x", 500)))
	if hs[0].Key != "a" || hs[1].Key != "b" {
		t.Fatalf("original headers not first and in order: %v", hs)
	}
	if _, ok := HeaderValue(hs, HeaderRegion); ok {
		t.Fatal("forged region header kept")
	}
	if _, ok := HeaderValue(hs, HeaderRulesetVersion); ok {
		t.Fatal("dead-letter carries a ruleset version")
	}
	if _, ok := HeaderValue(hs, HeaderRulesetDigest); ok {
		t.Fatal("dead-letter carries a ruleset digest")
	}
	for k, want := range map[string]string{HeaderSourceTopic: "in", HeaderSourcePartition: "2", HeaderSourceOffset: "41", HeaderRouter: "r1", HeaderReason: "corrupt",
		HeaderSchema: "raw:fedcba9876543210"} {
		if v, _ := HeaderValue(hs, k); string(v) != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	if v, _ := HeaderValue(hs, HeaderError); len(v) != maxErrorHeader {
		t.Errorf("error header is %d bytes, want it cut to %d", len(v), maxErrorHeader)
	}
	routed := outHeaders(m, &Decision{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Pinned: true}, soRef, "9", "d9", "r1", nil)
	for k, want := range map[string]string{HeaderJurisdiction: "EU", HeaderRegion: "eu", HeaderRulesetVersion: "9", HeaderRulesetDigest: "d9", HeaderDecidedBy: "pin",
		HeaderSchema: "single-object:0123456789abcdef"} {
		if v, _ := HeaderValue(routed, k); string(v) != want {
			t.Errorf("routed %s = %q, want %q", k, v, want)
		}
	}
	if _, ok := HeaderValue(routed, HeaderReason); ok {
		t.Error("routed event has a reason")
	}
	// The schema header comes after the placement, before the source.
	var keys []string
	for _, h := range routed[2:] {
		keys = append(keys, h.Key)
	}
	if want := []string{HeaderJurisdiction, HeaderRegion, HeaderRulesetVersion, HeaderRulesetDigest, HeaderDecidedBy, HeaderSchema,
		HeaderSourceTopic, HeaderSourcePartition, HeaderSourceOffset, HeaderRouter}; !slices.Equal(keys, want) {
		t.Errorf("routed headers %v, want %v", keys, want)
	}
	q := outHeaders(m, &Decision{Outcome: Quarantined, Reason: ReasonNoCountry}, confRef, "9", "d9", "r1", nil)
	if v, _ := HeaderValue(q, HeaderSchema); string(v) != "confluent:42" {
		t.Errorf("quarantined schema header %q", v)
	}
	if v, _ := HeaderValue(q, HeaderRulesetDigest); string(v) != "d9" {
		t.Errorf("quarantined ruleset digest header %q, want d9", v)
	}
	// No schema known (zero, or a raw topic's framing alone): no header.
	for _, w := range []schemas.WriterRef{{}, {Framing: schemas.FramingRaw}} {
		if v, ok := HeaderValue(outHeaders(m, d, w, "9", "d9", "r1", errors.New("x")), HeaderSchema); ok {
			t.Errorf("writer %+v: schema header %q", w, v)
		}
	}
	// A single-object value always carries a fingerprint, 0 too (found by
	// FuzzDifferential: an unknown_schema dead-letter of a value carrying
	// fingerprint 0 had no residency-schema header).
	unknown := &Decision{Outcome: DeadLettered, Reason: "unknown_schema"}
	if v, _ := HeaderValue(outHeaders(m, unknown, schemas.WriterRef{Framing: schemas.FramingSingleObject}, "9", "d9", "r1", errors.New("x")), HeaderSchema); string(v) != "single-object:0000000000000000" {
		t.Errorf("fingerprint 0: schema header %q, want single-object:0000000000000000", v)
	}
}

// TestHeaderBuilderMatchesOutHeaders checks that the router's per-batch
// header builder writes exactly outHeaders' headers (names, values, order)
// for every kind of decision, that no event's headers share room to grow
// with another's, and that a new batch leaves the previous one's intact
// when the previous one was not released (its publish failed).
func TestHeaderBuilderMatchesOutHeaders(t *testing.T) {
	orig := []stream.Header{{Key: "a", Value: []byte("1")}, {Key: HeaderReason, Value: []byte("forged")}, {Key: "b", Value: []byte("2")}}
	decodeErr := errors.New(strings.Repeat("y", 300))
	cases := []struct {
		d   Decision
		w   schemas.WriterRef
		err error
	}{
		{Decision{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu"}, soRef, nil},
		{Decision{Outcome: Routed, Jurisdiction: "US", Region: "us", Cluster: "a", Topic: "pinned.us", Pinned: true}, rawRef, nil},
		{Decision{Outcome: Quarantined, Reason: ReasonNoCountry}, confRef, nil},
		{Decision{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: "XX", Pinned: true}, soRef, nil},
		{Decision{Outcome: Quarantined, Reason: ReasonUnknownCountry}, soRef, nil},
		// EU again, without a region (its cluster unreachable): the cached
		// EU headers must not be reused.
		{Decision{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: "EU"}, confRef, nil},
		{Decision{Outcome: DeadLettered, Reason: "truncated"}, rawRef, decodeErr},
		{Decision{Outcome: DeadLettered, Reason: "empty"}, schemas.WriterRef{}, errors.New("short")},
		{Decision{Outcome: DeadLettered, Reason: "unknown_schema"}, schemas.WriterRef{Framing: schemas.FramingRaw}, errors.New("no schema")},
	}
	var batch []stream.Message
	for i := range 3 * len(cases) {
		var hs []stream.Header
		if i%2 == 0 {
			hs = orig
		}
		batch = append(batch, stream.Message{Topic: fmt.Sprint("in-", i%2), Partition: i, Offset: int64(i) * 1_000_003, Headers: hs})
	}
	want := func(i int) []stream.Header {
		c := cases[i%len(cases)]
		return outHeaders(&batch[i], &c.d, c.w, "7", "d7", "r1", c.err)
	}
	equal := func(a, b []stream.Header) bool {
		return slices.EqualFunc(a, b, func(x, y stream.Header) bool { return x.Key == y.Key && bytes.Equal(x.Value, y.Value) })
	}
	var hb headerBuilder
	var first [][]stream.Header
	for round, ver := range []string{"7", "8"} {
		hb.startBatch(batch, ver, "d"+ver, "r1")
		var got [][]stream.Header
		for i := range batch {
			c := cases[i%len(cases)]
			got = append(got, hb.headers(&batch[i], &c.d, c.w, c.err, nil))
		}
		for i, hs := range got {
			w := want(i)
			if ver != "7" {
				for k := range w {
					switch w[k].Key {
					case HeaderRulesetVersion:
						w[k].Value = []byte(ver)
					case HeaderRulesetDigest:
						w[k].Value = []byte("d" + ver)
					}
				}
			}
			if !equal(hs, w) {
				t.Fatalf("round %d, event %d: headers\n%v\nwant\n%v", round, i, hs, w)
			}
			if cap(hs) != len(hs) {
				t.Fatalf("event %d: headers have room to grow into the next event's", i)
			}
			for _, h := range hs {
				if cap(h.Value) != len(h.Value) {
					t.Fatalf("event %d: header %s has room to grow into another value", i, h.Key)
				}
			}
		}
		// Appending to one event's headers must not touch the next one's.
		next := slices.Clone(got[1])
		_ = append(got[0], stream.Header{Key: "x", Value: []byte("x")})
		if !equal(got[1], next) {
			t.Fatal("appending to one event's headers changed the next event's")
		}
		if round == 0 {
			first = got
		}
	}
	for i, hs := range first {
		if !equal(hs, want(i)) {
			t.Fatalf("event %d of the first batch changed when the second was built: %v", i, hs)
		}
	}
}

// TestHeaderBuilderReusesOnlyAfterRelease checks that a batch started after
// release builds its headers in the previous batch's slab and arena, and
// that they are exactly outHeaders' headers although they overwrite the
// previous ones (a longer batch before, so stale entries lie past the new
// ones); that a batch started without release gets a fresh slab and arena
// and leaves the previous batch's headers unchanged; and that a batch too
// large for the released slab gets a larger one.
func TestHeaderBuilderReusesOnlyAfterRelease(t *testing.T) {
	cases := []Decision{
		{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu"},
		{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: "XX", Pinned: true},
		{Outcome: DeadLettered, Reason: "truncated"},
		{Outcome: Routed, Jurisdiction: "US", Region: "us", Cluster: "a", Topic: "pinned.us", Pinned: true},
	}
	writers := []schemas.WriterRef{soRef, confRef, rawRef, {}, soRef}
	decodeErr := errors.New("truncated record")
	// batch returns n events whose partitions and offsets depend on seed,
	// every other one with a producer header (and a forged residency one).
	batch := func(n, seed int) []stream.Message {
		var ms []stream.Message
		for i := range n {
			m := stream.Message{Topic: "in", Partition: (i + seed) % 7, Offset: int64(seed*1_000_000 + i*37)}
			if i%2 == seed%2 {
				m.Headers = []stream.Header{{Key: "trace", Value: fmt.Appendf(nil, "t-%d-%d", seed, i)}, {Key: HeaderRegion, Value: []byte("forged")}}
			}
			ms = append(ms, m)
		}
		return ms
	}
	var hb headerBuilder
	// build starts a batch and returns its events' headers and the slab's
	// and the arena's backing arrays.
	build := func(ms []stream.Message) (hs [][]stream.Header, slab *stream.Header, arena *byte) {
		hb.startBatch(ms, "7", "d7", "r1")
		slab, arena = unsafe.SliceData(hb.slab), unsafe.SliceData(hb.arena)
		for i := range ms {
			var err error
			if cases[i%len(cases)].Outcome == DeadLettered {
				err = decodeErr
			}
			hs = append(hs, hb.headers(&ms[i], &cases[i%len(cases)], writers[i%len(writers)], err, nil))
		}
		return hs, slab, arena
	}
	// check compares every event's headers with outHeaders'.
	check := func(name string, ms []stream.Message, got [][]stream.Header) {
		t.Helper()
		for i := range ms {
			var err error
			if cases[i%len(cases)].Outcome == DeadLettered {
				err = decodeErr
			}
			want := outHeaders(&ms[i], &cases[i%len(cases)], writers[i%len(writers)], "7", "d7", "r1", err)
			if !slices.EqualFunc(got[i], want, func(x, y stream.Header) bool { return x.Key == y.Key && bytes.Equal(x.Value, y.Value) }) {
				t.Fatalf("%s, event %d: headers\n%v\nwant\n%v", name, i, got[i], want)
			}
		}
	}

	first := batch(40, 1)
	hs1, slab1, arena1 := build(first)
	check("first batch", first, hs1)

	// Not released (the first batch's publish failed): fresh memory, and
	// the first batch's headers stay as they were.
	second := batch(30, 2)
	hs2, slab2, arena2 := build(second)
	if slab2 == slab1 || arena2 == arena1 {
		t.Fatal("a batch started without release reuses the previous batch's slab or arena")
	}
	check("second batch", second, hs2)
	check("first batch after the second", first, hs1)

	// Released (the second batch was published): same memory, right headers.
	hb.release()
	third := batch(25, 3)
	hs3, slab3, arena3 := build(third)
	if slab3 != slab2 || arena3 != arena2 {
		t.Fatal("a batch started after release does not reuse the previous batch's slab and arena")
	}
	check("third batch (reusing the second's memory)", third, hs3)
	if unsafe.SliceData(hs3[0]) != unsafe.SliceData(hs2[0]) {
		t.Fatal("the third batch's first headers are not where the second batch's were")
	}

	// Released, but the next batch needs more room: a larger slab.
	hb.release()
	fourth := batch(100, 4)
	hs4, slab4, _ := build(fourth)
	if slab4 == slab3 {
		t.Fatal("a batch larger than the released slab was built in it")
	}
	check("fourth batch (larger)", fourth, hs4)
	check("third batch after the fourth", third, hs3)
}

// TestHeaderBuilderAllocations checks the per-event allocation budget of
// the router's headers: none once the batch is started (and the values
// cached), except residency-error for dead-letters.
func TestHeaderBuilderAllocations(t *testing.T) {
	m := stream.Message{Topic: "in", Partition: 3, Offset: 1_234_567, Headers: []stream.Header{{Key: "producer", Value: []byte("app-1")}}}
	d := Decision{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu"}
	q := Decision{Outcome: Quarantined, Reason: ReasonUnknownCountry}
	batch := make([]stream.Message, 2000)
	for i := range batch {
		batch[i] = m
	}
	var hb headerBuilder
	hb.startBatch(batch[:2], "7", "d7", "r1")
	hb.headers(&m, &d, soRef, nil, nil) // cache the values
	hb.headers(&m, &q, confRef, nil, nil)
	hb.startBatch(batch, "7", "d7", "r1")
	allocs := testing.AllocsPerRun(500, func() {
		hb.headers(&m, &d, soRef, nil, nil)
		hb.headers(&m, &q, confRef, nil, nil)
	})
	if allocs != 0 {
		t.Fatalf("headers allocate %v times per two events", allocs)
	}
	// In the steady state (each batch released after a clean publish) a
	// whole batch, startBatch included, allocates nothing.
	batch = batch[:500]
	allocs = testing.AllocsPerRun(20, func() {
		hb.release()
		hb.startBatch(batch, "7", "d7", "r1")
		for i := range batch {
			if i%10 == 0 {
				hb.headers(&batch[i], &q, rawRef, nil, nil)
			} else {
				hb.headers(&batch[i], &d, soRef, nil, nil)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("a released builder allocates %v times per batch of %d events", allocs, len(batch))
	}
}

// TestHeaderBuilderWritersBounded checks that the interned residency-schema
// values stay bounded however many writer schemas (registry ids) come by,
// and stay right after the cache starts over.
func TestHeaderBuilderWritersBounded(t *testing.T) {
	m := stream.Message{Topic: "in", Partition: 1, Offset: 5}
	d := Decision{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu"}
	batch := make([]stream.Message, 100)
	var hb headerBuilder
	for id := range 5 * maxInterned {
		if id%len(batch) == 0 {
			hb.release()
			hb.startBatch(batch, "7", "d7", "r1")
			if len(hb.writers) > maxInterned+len(batch) {
				t.Fatalf("%d interned writer schemas", len(hb.writers))
			}
		}
		w := schemas.WriterRef{Framing: schemas.FramingConfluent, ID: uint32(id + 1)}
		v, _ := HeaderValue(hb.headers(&m, &d, w, nil, nil), HeaderSchema)
		if string(v) != w.String() {
			t.Fatalf("id %d: schema header %q", id+1, v)
		}
	}
}

// TestHeaderTemplatesMatchOutHeaders checks the per-jurisdiction header
// templates (see tmplHdr): across source topics, writer schemas, decided-by,
// jurisdictions, partitions past the cached ones, producer headers with and
// without residency- ones, more topic and writer pairs than a jurisdiction
// keeps templates for, and a new router instance or ruleset between
// batches, every event's headers are exactly outHeaders' headers, with no
// room to grow into another's, and the templates stay bounded.
func TestHeaderTemplatesMatchOutHeaders(t *testing.T) {
	decisions := []Decision{
		{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu"},
		{Outcome: Routed, Jurisdiction: "US", Region: "us", Cluster: "a", Topic: "pinned.us"},
		{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu", Pinned: true},
		{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: "XX", Pinned: true},
		{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: "IN"},
		{Outcome: Quarantined, Reason: ReasonUnknownCountry},
		// EU without a region (its cluster unreachable) between routed EU
		// events: the recently used EU headers must not be reused.
		{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: "EU"},
	}
	// More jurisdictions than headerBuilder.recent has slots, so that
	// some share one.
	for j := range 2 * recentPlaced {
		decisions = append(decisions, Decision{Outcome: Routed, Jurisdiction: fmt.Sprint("J", j), Region: fmt.Sprint("r", j%3), Cluster: "a", Topic: "t"})
	}
	writers := []schemas.WriterRef{soRef, rawRef, confRef, {Framing: schemas.FramingRaw},
		{Framing: schemas.FramingSingleObject}, {Framing: schemas.FramingConfluent, ID: 9}}
	producer := [][]stream.Header{nil, {{Key: "p", Value: []byte("1")}}, {{Key: HeaderRegion, Value: []byte("forged")}, {Key: "q", Value: []byte("2")}}}
	var batch []stream.Message
	var ds []Decision
	var ws []schemas.WriterRef
	for i := range 1200 {
		batch = append(batch, stream.Message{Topic: fmt.Sprint("in-", i%5), Partition: []int{0, 7, maxCachedPartition + 3}[i%3],
			Offset: []int64{0, 42, 1<<62 + int64(i)}[i%3], Headers: producer[i%len(producer)]})
		ds = append(ds, decisions[(i/3)%len(decisions)])
		ws = append(ws, writers[(i/7)%len(writers)])
	}
	equal := func(a, b []stream.Header) bool {
		return slices.EqualFunc(a, b, func(x, y stream.Header) bool { return x.Key == y.Key && bytes.Equal(x.Value, y.Value) })
	}
	var hb headerBuilder
	for round, c := range []struct{ ver, inst string }{{"7", "r1"}, {"7", "r1"}, {"7", "r2"}, {"8", "r2"}} {
		hb.release()
		hb.startBatch(batch, c.ver, "d"+c.ver, c.inst)
		got := make([][]stream.Header, len(batch))
		for i := range batch {
			got[i] = hb.headers(&batch[i], &ds[i], ws[i], nil, nil)
		}
		for i, hs := range got {
			want := outHeaders(&batch[i], &ds[i], ws[i], c.ver, "d"+c.ver, c.inst, nil)
			if !equal(hs, want) {
				t.Fatalf("round %d, event %d: headers\n%v\nwant\n%v", round, i, hs, want)
			}
			if cap(hs) != len(hs) {
				t.Fatalf("round %d, event %d: headers have room to grow into the next event's", round, i)
			}
			for _, h := range hs {
				if cap(h.Value) != len(h.Value) {
					t.Fatalf("round %d, event %d: header %s has room to grow into another value", round, i, h.Key)
				}
			}
		}
		for j, p := range hb.placed {
			for by, ts := range p.tmpl {
				if len(ts) > maxTemplates {
					t.Fatalf("jurisdiction %s, decided-by %d: %d templates", j, by, len(ts))
				}
			}
		}
	}
	if ts := hb.placed["US"].tmpl[0]; len(ts) != maxTemplates {
		t.Fatalf("US has %d templates by country; the test means to fill them (%d)", len(ts), maxTemplates)
	}
}

// TestAppendDecimalMatchesStrconv checks the header builder's decimal
// digits against strconv's around every power of ten, at the ends of
// int64 and for negative numbers, and that it appends as append does.
func TestAppendDecimalMatchesStrconv(t *testing.T) {
	vals := []int64{0, 1, 9, math.MaxInt64, math.MaxInt64 - 1, math.MinInt64, -1, -10, 1_000_000 + 55}
	for p := int64(1); p <= math.MaxInt64/10; p *= 10 {
		vals = append(vals, p-1, p, p+1, 10*p-1, -p)
	}
	r := rand.New(rand.NewPCG(7, 8))
	for range 10000 {
		vals = append(vals, r.Int64()>>r.IntN(63))
	}
	for _, v := range vals {
		prefix := []byte("x")
		got := appendDecimal(prefix[:1:1], v)
		if want := strconv.AppendInt([]byte("x"), v, 10); !bytes.Equal(got, want) {
			t.Fatalf("appendDecimal(%d) = %q, want %q", v, got, want)
		}
		if roomy := appendDecimal(make([]byte, 1, 64), v); string(roomy[1:]) != strconv.FormatInt(v, 10) {
			t.Fatalf("appendDecimal(%d) into a roomy slice = %q", v, roomy[1:])
		}
	}
}

// seqAttester is an Attester whose tags are a counter, so that every
// record's tag differs.
type seqAttester struct{ n int }

func (a *seqAttester) AppendAttestation(dst []byte, _ *AttestedRecord) []byte {
	a.n++
	return fmt.Appendf(dst, "v1.k.%d", a.n)
}

// TestHeaderTemplatesAllOutcomes runs one builder (as one taken from
// headerPool again and again) through 60 random batches and checks every
// event's headers against outHeaders' (plus its attestation tag): routed,
// quarantined (with and without a jurisdiction or region) and
// dead-lettered events, with and without a decode error and an
// attestation, across batches that switch the ruleset version, the digest
// alone, the router instance alone, or nothing, back and forth (A, B, A:
// templates built under A must not survive B), with and without release
// (reused and fresh slabs and arenas). The headers of every batch built
// without a release after it must stay unchanged for good, and the
// templates must never be written into (their partition and offset stay
// empty).
func TestHeaderTemplatesAllOutcomes(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 40))
	decisions := []Decision{
		{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu"},
		{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu", Pinned: true},
		{Outcome: Routed, Jurisdiction: "US", Region: "us", Cluster: "a", Topic: "pinned.us"},
		{Outcome: Routed, Jurisdiction: "EU", Region: "eu2", Cluster: "c", Topic: "pinned.eu2"}, // EU moved region
		{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: "EU"},
		{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: "XX", Pinned: true},
		{Outcome: Quarantined, Reason: ReasonNoCountry},
		{Outcome: DeadLettered, Reason: "truncated"},
		{Outcome: DeadLettered, Reason: "too_large"},
		{Outcome: DeadLettered, Reason: "corrupt", Jurisdiction: "EU", Region: "eu"},
	}
	writers := []schemas.WriterRef{soRef, rawRef, confRef, {}, {Framing: schemas.FramingRaw}, {Framing: schemas.FramingSingleObject}}
	consts := [][3]string{{"7", "d7", "r1"}, {"7", "d7b", "r1"}, {"7", "d7", "r2"}, {"8", "d8", "r1"}}
	producer := [][]stream.Header{nil, {{Key: "p", Value: []byte("1")}, {Key: HeaderSourceOffset, Value: []byte("forged")}}}
	errs := []error{nil, nil, errors.New("bad bytes"), errors.New(strings.Repeat("z", 300))}
	equal := func(a, b []stream.Header) bool {
		return slices.EqualFunc(a, b, func(x, y stream.Header) bool { return x.Key == y.Key && bytes.Equal(x.Value, y.Value) })
	}
	type kept struct {
		got, want [][]stream.Header
	}
	var keep []kept // batches not released: their headers stay valid
	var hb headerBuilder
	att := &seqAttester{}
	hb.tags = true
	for round := range 60 {
		c := consts[r.IntN(len(consts))]
		n := 1 + r.IntN(300)
		batch := make([]stream.Message, n)
		ds := make([]Decision, n)
		ws := make([]schemas.WriterRef, n)
		es := make([]error, n)
		for i := range batch {
			batch[i] = stream.Message{Topic: fmt.Sprint("in-", r.IntN(12)), Partition: []int{0, 3, maxCachedPartition + r.IntN(5), -1}[r.IntN(4)],
				Offset: []int64{0, 9, 10, 99, 100, int64(r.Uint64() >> 1), -5}[r.IntN(7)], Headers: producer[r.IntN(len(producer))]}
			ds[i] = decisions[r.IntN(len(decisions))]
			ws[i] = writers[r.IntN(len(writers))]
			es[i] = errs[r.IntN(len(errs))]
		}
		hb.startBatch(batch, c[0], c[1], c[2])
		got := make([][]stream.Header, n)
		want := make([][]stream.Header, n)
		for i := range batch {
			var tag []byte
			if r.IntN(2) == 0 {
				tag = hb.tag(att, &AttestedRecord{})
				tag = tag[:len(tag):len(tag)]
			}
			got[i] = hb.headers(&batch[i], &ds[i], ws[i], es[i], tag)
			want[i] = outHeaders(&batch[i], &ds[i], ws[i], c[0], c[1], c[2], es[i])
			if tag != nil {
				want[i] = append(want[i], stream.Header{Key: HeaderAttestation, Value: bytes.Clone(tag)})
			}
			if !equal(got[i], want[i]) {
				t.Fatalf("round %d (%v), event %d (%+v, %v, err %v): headers\n%v\nwant\n%v", round, c, i, ds[i], ws[i], es[i], got[i], want[i])
			}
			if cap(got[i]) != len(got[i]) {
				t.Fatalf("round %d, event %d: headers have room to grow", round, i)
			}
		}
		for j, p := range hb.placed {
			for _, ts := range p.tmpl {
				if len(ts) > maxTemplates {
					t.Fatalf("%s: %d templates", j, len(ts))
				}
				for _, tm := range ts {
					if hs := tm.hs; hs[len(hs)-3].Value != nil || hs[len(hs)-2].Value != nil {
						t.Fatalf("%s: a template was written into: %v", j, hs)
					}
				}
			}
		}
		if r.IntN(2) == 0 {
			hb.release()
		} else {
			keep = append(keep, kept{got, want})
		}
		// Headers of batches never released are as built, whatever came
		// after them.
		for k, b := range keep {
			for i := range b.got {
				if !equal(b.got[i], b.want[i]) {
					t.Fatalf("round %d: event %d of kept batch %d changed: %v, want %v", round, i, k, b.got[i], b.want[i])
				}
			}
		}
	}
}
