package router

import (
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// Residency headers added to every event the router writes. Incoming headers
// whose names start with HeaderPrefix are dropped first, so a producer (or an
// earlier routing, when replaying) cannot forge or confuse them.
const (
	// HeaderPrefix starts the name of every residency header.
	HeaderPrefix = "residency-"
	// HeaderJurisdiction is the jurisdiction the event belongs to.
	HeaderJurisdiction = "residency-jurisdiction"
	// HeaderRegion is the region whose pinned topic holds the event.
	HeaderRegion = "residency-region"
	// HeaderRulesetVersion is the version of the ruleset that placed it.
	HeaderRulesetVersion = "residency-ruleset-version"
	// HeaderRulesetDigest is the content digest of that ruleset version
	// (rules.Ruleset.ShortDigest: the first 16 hex digits of the SHA-256 of
	// its content), next to its version on every event that carries one:
	// a version number tells which version placed the event, the digest
	// which content, even if Redis lost its data and the number was given
	// to other content later.
	HeaderRulesetDigest = "residency-ruleset-digest"
	// HeaderDecidedBy is "country" or "pin": what chose the jurisdiction.
	HeaderDecidedBy = "residency-decided-by"
	// HeaderSourceTopic is the ingest topic the event was read from.
	HeaderSourceTopic = "residency-source-topic"
	// HeaderSourcePartition is its partition in the ingest topic.
	HeaderSourcePartition = "residency-source-partition"
	// HeaderSourceOffset is its offset in that partition.
	HeaderSourceOffset = "residency-source-offset"
	// HeaderRouter is the instance name of the router that wrote it.
	HeaderRouter = "residency-router"
	// HeaderReason is the quarantine or dead-letter reason.
	HeaderReason = "residency-reason"
	// HeaderError is, on dead-letter only, a short description of the
	// decode error (never the payload).
	HeaderError = "residency-error"
	// HeaderSchema says how the router read the event: its framing and
	// writer schema, in the form of schemas.WriterRef.String
	// ("single-object:0123456789abcdef", "raw:…", "confluent:42"). Sinks
	// read the event the same way. Every event the router writes carries
	// it when the writer is known: routed and quarantined events always,
	// dead-lettered ones as far as the value was read (see
	// schemas.Extractor.Extract): truncated, trailing_bytes and corrupt
	// ones, and unknown_schema ones with the fingerprint or registry id
	// they carry; not empty_value, too_large, bad_magic, a value cut
	// inside its framing header (truncated), nor a raw topic without a
	// schema.
	HeaderSchema = "residency-schema"
	// HeaderOmittedBytes is, on a dead-letter record of an event too large
	// to route (reason too_large), the size in bytes of the event's key,
	// value and headers, none of which are copied: the event stays at its
	// source coordinates in the ingest topic.
	HeaderOmittedBytes = "residency-omitted-bytes"
	// HeaderAttestation carries the router's attestation of the record
	// (audit.HeaderAttestation), on every record the router and replay
	// write when an Attester is configured (see Attester, docs/audit.md).
	HeaderAttestation = "residency-attestation"
)

// Replay provenance headers, added by replay (router/replay) to every event
// it writes, after the residency headers. The residency-source-* headers of
// a replayed event keep naming the ingest coordinates the event was first
// read from.
const (
	// HeaderReplayID is the id of the replay that wrote the event.
	HeaderReplayID = "residency-replay-id"
	// HeaderReplayCount is how many times the event has been replayed,
	// this replay included.
	HeaderReplayCount = "residency-replay-count"
	// HeaderReplayTopic is the topic the replay read the event from (the
	// ingest, quarantine or dead-letter topic).
	HeaderReplayTopic = "residency-replay-topic"
	// HeaderReplayPartition is the partition the replay read it from.
	HeaderReplayPartition = "residency-replay-partition"
	// HeaderReplayOffset is the offset the replay read it from.
	HeaderReplayOffset = "residency-replay-offset"
)

// maxErrorHeader bounds the length of the residency-error header.
const maxErrorHeader = 200

// outHeaders returns the original headers (minus residency ones) followed by
// the residency headers for decision d of an event read as writer says, in
// a slice and values of their own. The router builds the same headers with
// a headerBuilder, per batch.
func outHeaders(m *stream.Message, d *Decision, writer schemas.WriterRef, rulesetVersion, rulesetDigest, instance string, decodeErr error) []stream.Header {
	var b headerBuilder
	b.setConstants(rulesetVersion, rulesetDigest, instance)
	b.slab = make([]stream.Header, 0, len(m.Headers)+residencyHeaders)
	return b.headers(m, d, writer, decodeErr, nil)
}

// maxInterned bounds the number of distinct values (jurisdictions,
// regions, reasons, source topics; writer schemas apart) a headerBuilder
// keeps as bytes; past it the cache starts over.
const maxInterned = 1024

// headerBuilder builds the outgoing headers of the router's events without
// allocating per event: the values that depend only on the ruleset, the
// decision and the router (jurisdiction, region, ruleset version and
// digest, decided-by, reason, router instance, source topic, source
// partition) are
// converted to bytes once and shared, read-only, by every event that carries
// them, and so is each writer schema's residency-schema value (converted
// once per schemas.WriterRef); the headers of a batch's events share one
// backing slice (the slab),
// and their source offsets in decimal one byte slice (the arena). Every
// returned slice and value has its capacity cut to its length, so appending
// to one never writes into another event's headers or values.
//
// The slab and the arena are reused from batch to batch, which saves
// allocating and zeroing about nine 40-byte headers per event, and the
// garbage collections that garbage would cause, but only when the caller
// has said that the previous batch's headers are no longer referenced, by
// calling release. The router calls it once every Publish
// given the batch returned nil (by the Publisher memory contract, no
// publisher refers to the messages any more). After a failed Publish it
// does not: the publisher may still be reading the headers, so the next
// startBatch takes a fresh slab and arena, and the new batch never writes
// into the previous batch's headers. So without release (and for
// outHeaders, which builds one event's headers with a builder of its own),
// every batch's headers stay valid and unchanged for good.
//
// A reused slab keeps the capacity of the largest batch so far. Its entries
// past those the current batch uses still point at values of an earlier
// batch (producer header values, residency-error), which stay reachable
// until overwritten: at most one batch's worth.
//
// A headerBuilder is used by one goroutine at a time. The zero value works;
// without startBatch, values are not cached and headers allocates.
type headerBuilder struct {
	version, instance   string
	versionB, instanceB []byte
	digest              string
	digestB             []byte
	values              map[string][]byte            // interned values; nil: no caching
	placed              map[string]*placedHdr        // by jurisdiction, for this version
	recent              [recentPlaced]recentHdr      // the last placed headers looked up, by recentSlot; valid while placed is the same map
	writers             map[schemas.WriterRef][]byte // interned residency-schema values, when caching
	topic               string                       // the last source topic
	topicB              []byte                       // and its bytes
	writer              schemas.WriterRef            // the last writer schema
	writerB             []byte                       // and its header value
	slab                []stream.Header              // the batch's headers
	arena               []byte                       // the batch's offset digits (and those of partitions past maxCachedPartition)
	parts               [][]byte                     // partition digits, by partition, shared read-only
	released            bool                         // nothing refers to slab and arena: startBatch may reuse them
	tags                bool                         // startBatch reserves arena room for attestation tags
	tagSlice            [][]byte                     // tagSlots' slots
}

// placedHdr holds the first five residency headers of a jurisdiction's
// events (jurisdiction, region, ruleset version and digest, decided-by),
// for a routed or quarantined decision of one region, by country and by
// pin.
type placedHdr struct {
	region  string
	country []stream.Header
	pin     []stream.Header
	// tmpl holds, by decided-by (0 country, 1 pin), the templates of
	// such events' residency headers up to the router's (see tmplHdr), at
	// most maxTemplates.
	tmpl [2][]tmplHdr
}

// tmplHdr is the template of the residency headers of a jurisdiction's
// events read from one source topic with one writer schema: the five
// placed headers, the residency-schema header (when writer names a
// schema), then the source topic, partition and offset and the router.
// Only the partition and offset values (hs[len(hs)-3] and hs[len(hs)-2],
// nil in the template) differ from event to event: headers copies the
// template and fills them in, with the values it would have built one by
// one.
type tmplHdr struct {
	writer schemas.WriterRef
	topic  string
	hs     []stream.Header
}

// residencyHeaders is the most residency headers of an event that is not
// dead-lettered (jurisdiction, region, ruleset version and digest,
// decided-by, schema, source topic, partition and offset, router; a
// quarantined one has a reason instead of a region), plus the attestation;
// a dead-lettered one has at most eight.
const residencyHeaders = 11

// tagRoom is the arena bytes reserved per event for its attestation tag
// ("v1.", a key id of up to 64 bytes, ".", 43 digits of MAC).
const tagRoom = 112

// setConstants sets the ruleset version and digest and the router instance
// written into the headers.
func (b *headerBuilder) setConstants(rulesetVersion, rulesetDigest, instance string) {
	if b.versionB == nil || rulesetVersion != b.version {
		b.version, b.versionB = rulesetVersion, frozen([]byte(rulesetVersion))
		b.placed = nil
	}
	if b.digestB == nil || rulesetDigest != b.digest {
		b.digest, b.digestB = rulesetDigest, frozen([]byte(rulesetDigest))
		b.placed = nil
	}
	if b.instanceB == nil || instance != b.instance {
		b.instance, b.instanceB = instance, frozen([]byte(instance))
		b.placed = nil // the templates hold the instance
	}
}

// startBatch prepares the builder for the headers of batch's events under
// the given ruleset version and digest and router instance: a slab large
// enough for all
// of them and an arena for their digits. It reuses the previous batch's
// slab and arena when release was called since and they are large enough,
// overwriting the headers handed out for the previous batch; otherwise it
// allocates new ones and those headers stay valid and unchanged.
func (b *headerBuilder) startBatch(batch []stream.Message, rulesetVersion, rulesetDigest, instance string) {
	b.setConstants(rulesetVersion, rulesetDigest, instance)
	if b.values == nil || len(b.values) > maxInterned {
		b.values = make(map[string][]byte)
		b.topic, b.topicB = "", nil
	}
	if b.placed == nil || len(b.placed) > maxInterned {
		b.placed = make(map[string]*placedHdr)
		b.recent = [recentPlaced]recentHdr{}
	}
	if b.writers == nil || len(b.writers) > maxInterned {
		b.writers = make(map[schemas.WriterRef][]byte)
		b.writer, b.writerB = schemas.WriterRef{}, nil
	}
	n := 0
	for i := range batch {
		n += len(batch[i].Headers)
	}
	// An event keeps at most its own headers and gets at most
	// residencyHeaders more, so the slab never grows during the batch.
	slabCap := n + residencyHeaders*len(batch)
	// A partition and an offset take up to 10 + 19 digits; 24 bytes per event
	// cover offsets below 10^19 / 10^5 and the arena grows if needed (the
	// values already handed out stay in the old array).
	arenaCap := 24 * len(batch)
	if b.tags {
		arenaCap += tagRoom * len(batch)
	}
	if b.released && cap(b.slab) >= slabCap {
		b.slab = b.slab[:0]
	} else {
		b.slab = make([]stream.Header, 0, slabCap)
	}
	if b.released && cap(b.arena) >= arenaCap {
		b.arena = b.arena[:0]
	} else {
		b.arena = make([]byte, 0, arenaCap)
	}
	b.released = false
}

// release tells the builder that nothing refers any longer to the headers
// it handed out since startBatch, nor to their values: the next startBatch
// may reuse their memory. Call it only when every Publish given messages
// with those headers has returned nil (see Publisher), and never after one
// of them returned an error, even if a retry succeeded.
func (b *headerBuilder) release() { b.released = true }

// value returns s as bytes, converted once per builder when caching.
func (b *headerBuilder) value(s string) []byte {
	if b.values == nil {
		return []byte(s)
	}
	v, ok := b.values[s]
	if !ok {
		v = frozen([]byte(s))
		b.values[s] = v
	}
	return v
}

// maxCachedPartition bounds the partitions whose digits a headerBuilder
// keeps; higher ones go to the arena like offsets.
const maxCachedPartition = 4096

// partition returns p in decimal: converted once per builder and shared,
// read-only, by every event of that partition, when caching.
func (b *headerBuilder) partition(p int) []byte {
	if b.values == nil || p < 0 || p >= maxCachedPartition {
		return b.number(int64(p))
	}
	if p < len(b.parts) && b.parts[p] != nil {
		return b.parts[p]
	}
	if p >= len(b.parts) {
		b.parts = append(b.parts, make([][]byte, p+1-len(b.parts))...)
	}
	b.parts[p] = frozen(strconv.AppendInt(nil, int64(p), 10))
	return b.parts[p]
}

// writerValue returns the residency-schema value of writer (its header
// form, see schemas.WriterRef.String): converted once per builder and
// shared, read-only, by every event read with that writer schema, when
// caching.
func (b *headerBuilder) writerValue(writer schemas.WriterRef) []byte {
	if writer.Fingerprint == b.writer.Fingerprint && writer.ID == b.writer.ID && writer.Framing == b.writer.Framing && b.writerB != nil {
		return b.writerB
	}
	if b.writers == nil {
		v, _ := writer.AppendText(nil)
		return frozen(v)
	}
	v, ok := b.writers[writer]
	if !ok {
		v, _ = writer.AppendText(nil)
		v = frozen(v)
		b.writers[writer] = v
	}
	b.writer, b.writerB = writer, v
	return v
}

// number appends v in decimal to the arena and returns its digits.
func (b *headerBuilder) number(v int64) []byte {
	start := len(b.arena)
	b.arena = appendDecimal(b.arena, v)
	return b.arena[start:len(b.arena):len(b.arena)]
}

// pow10 holds the powers of ten an int64 can reach, and 10^19.
var pow10 = [...]uint64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

// digits2 holds the two digits of every number below 100.
const digits2 = "00010203040506070809101112131415161718192021222324252627282930313233343536373839" +
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879" +
	"8081828384858687888990919293949596979899"

// appendDecimal is strconv.AppendInt(dst, v, 10), faster for the
// non-negative values offsets are: it writes the digits in place, two at a
// time, with no call. dst grows as append grows it.
func appendDecimal(dst []byte, v int64) []byte {
	if v < 0 {
		return strconv.AppendInt(dst, v, 10)
	}
	u := uint64(v)
	n := bits.Len64(u) * 1233 >> 12 // log10(2) ≈ 1233/4096: n or n+1 digits
	if u >= pow10[n] {
		n++
	}
	n = max(n, 1)
	start := len(dst)
	dst = slices.Grow(dst, n)[:start+n]
	i := start + n
	for u >= 100 {
		q := u / 100
		r := (u - q*100) * 2
		i -= 2
		dst[i], dst[i+1] = digits2[r], digits2[r+1]
		u = q
	}
	if u >= 10 {
		dst[i-2], dst[i-1] = digits2[2*u], digits2[2*u+1]
	} else {
		dst[i-1] = byte('0' + u)
	}
	return dst
}

// recentPlaced is the number of slots of headerBuilder.recent (a power of
// two).
const recentPlaced = 64

// recentHdr is a slot of headerBuilder.recent: a jurisdiction and its
// placedHdr.
type recentHdr struct {
	jurisdiction string
	p            *placedHdr
}

// recentSlot returns the slot of headerBuilder.recent for jurisdiction j:
// jurisdiction names are short and mostly differ in their first or last
// letter. Two names in one slot only cost map lookups.
func recentSlot(j string) int {
	h := len(j)
	if len(j) > 0 {
		h += 5*int(j[0]) + int(j[len(j)-1])
	}
	return h & (recentPlaced - 1)
}

// placedHdr returns the placedHdr of d (which has a jurisdiction and is
// not dead-lettered): the jurisdiction, region, ruleset version and digest
// and decided-by headers of its jurisdiction and region, built once per
// jurisdiction and ruleset version. The builder must be caching
// (started). The last one of each slot of recent is found without a map
// lookup.
func (b *headerBuilder) placedHdr(d *Decision) *placedHdr {
	r := &b.recent[recentSlot(d.Jurisdiction)]
	if r.p != nil && r.jurisdiction == d.Jurisdiction && r.p.region == d.Region {
		return r.p
	}
	p := b.placed[d.Jurisdiction]
	if p == nil || p.region != d.Region {
		p = &placedHdr{region: d.Region}
		for _, by := range []string{"country", "pin"} {
			hs := []stream.Header{{Key: HeaderJurisdiction, Value: b.value(d.Jurisdiction)}}
			if d.Region != "" {
				hs = append(hs, stream.Header{Key: HeaderRegion, Value: b.value(d.Region)})
			}
			hs = append(hs, stream.Header{Key: HeaderRulesetVersion, Value: b.versionB}, stream.Header{Key: HeaderRulesetDigest, Value: b.digestB},
				stream.Header{Key: HeaderDecidedBy, Value: b.value(by)})
			if by == "pin" {
				p.pin = hs
			} else {
				p.country = hs
			}
		}
		b.placed[d.Jurisdiction] = p
	}
	*r = recentHdr{d.Jurisdiction, p}
	return p
}

// maxTemplates bounds the templates a placedHdr keeps by decided-by (one
// per source topic and writer schema); an event of another pair gets its
// headers built one by one.
const maxTemplates = 8

// template returns the template of the residency headers of d, whose
// placedHdr p is, for an event of m's source topic read as writer says
// (see tmplHdr), or nil when p has maxTemplates of them already for
// other pairs.
func (b *headerBuilder) template(p *placedHdr, m *stream.Message, d *Decision, writer schemas.WriterRef) []stream.Header {
	by := 0
	if d.Pinned {
		by = 1
	}
	ts := p.tmpl[by]
	for i := range ts {
		if ts[i].writer == writer && ts[i].topic == m.Topic {
			return ts[i].hs
		}
	}
	if len(ts) >= maxTemplates {
		return nil
	}
	placed := p.country
	if d.Pinned {
		placed = p.pin
	}
	hs := make([]stream.Header, 0, len(placed)+5)
	hs = append(hs, placed...)
	if namesWriter(writer) {
		hs = append(hs, stream.Header{Key: HeaderSchema, Value: b.writerValue(writer)})
	}
	hs = append(hs,
		stream.Header{Key: HeaderSourceTopic, Value: b.value(m.Topic)},
		stream.Header{Key: HeaderSourcePartition}, // the event's
		stream.Header{Key: HeaderSourceOffset},    // the event's
		stream.Header{Key: HeaderRouter, Value: b.instanceB},
	)
	hs = hs[:len(hs):len(hs)]
	p.tmpl[by] = append(ts, tmplHdr{writer: writer, topic: m.Topic, hs: hs})
	return hs
}

// namesWriter reports whether an event read as writer says gets a
// residency-schema header: a confluent or single-object value, once
// unframed, names its writer schema (a registry id; a fingerprint, 0
// included); a raw one only when its topic has a schema.
func namesWriter(writer schemas.WriterRef) bool {
	return writer.Framing == schemas.FramingConfluent || writer.Framing == schemas.FramingSingleObject || writer.Fingerprint != 0
}

// headers returns the original headers of m (minus residency ones) followed
// by the residency headers for decision d of an event read as writer says
// (no residency-schema header when it names no schema: the zero WriterRef,
// or a raw topic's framing alone), backed by the batch's slab.
//
// tag, when not nil, is the record's attestation (see tag), added last.
func (b *headerBuilder) headers(m *stream.Message, d *Decision, writer schemas.WriterRef, decodeErr error, tag []byte) []stream.Header {
	start := len(b.slab)
	hs := b.slab
	for _, h := range m.Headers {
		if !strings.HasPrefix(h.Key, HeaderPrefix) {
			hs = append(hs, h)
		}
	}
	if b.placed != nil && d.Jurisdiction != "" && d.Outcome != DeadLettered {
		p := b.placedHdr(d)
		if t := b.template(p, m, d, writer); t != nil {
			// Every residency header up to the router's; only the
			// partition and offset are the event's own.
			hs = append(hs, t...)
			n := len(hs)
			hs[n-3].Value = b.partition(m.Partition)
			hs[n-2].Value = b.number(m.Offset)
			if d.Reason == "" && decodeErr == nil && tag == nil { // routed, no attestation: nothing follows
				b.slab = hs
				return hs[start:n:n]
			}
			return b.finish(hs, start, d, decodeErr, tag)
		}
		if d.Pinned {
			hs = append(hs, p.pin...)
		} else {
			hs = append(hs, p.country...)
		}
	} else {
		if d.Jurisdiction != "" {
			hs = append(hs, stream.Header{Key: HeaderJurisdiction, Value: b.value(d.Jurisdiction)})
		}
		if d.Region != "" {
			hs = append(hs, stream.Header{Key: HeaderRegion, Value: b.value(d.Region)})
		}
		if d.Outcome != DeadLettered {
			hs = append(hs, stream.Header{Key: HeaderRulesetVersion, Value: b.versionB}, stream.Header{Key: HeaderRulesetDigest, Value: b.digestB})
			if d.Jurisdiction != "" {
				by := "country"
				if d.Pinned {
					by = "pin"
				}
				hs = append(hs, stream.Header{Key: HeaderDecidedBy, Value: b.value(by)})
			}
		}
	}
	if namesWriter(writer) {
		hs = append(hs, stream.Header{Key: HeaderSchema, Value: b.writerValue(writer)})
	}
	if b.topicB == nil || m.Topic != b.topic {
		b.topic, b.topicB = m.Topic, b.value(m.Topic)
	}
	hs = append(hs,
		stream.Header{Key: HeaderSourceTopic, Value: b.topicB},
		stream.Header{Key: HeaderSourcePartition, Value: b.partition(m.Partition)},
		stream.Header{Key: HeaderSourceOffset, Value: b.number(m.Offset)},
		stream.Header{Key: HeaderRouter, Value: b.instanceB},
	)
	return b.finish(hs, start, d, decodeErr, tag)
}

// finish appends the headers that follow the router's (reason, error,
// attestation) to hs, the slab up to them, and returns the event's headers,
// those from start.
func (b *headerBuilder) finish(hs []stream.Header, start int, d *Decision, decodeErr error, tag []byte) []stream.Header {
	if d.Reason != "" {
		hs = append(hs, stream.Header{Key: HeaderReason, Value: b.value(d.Reason)})
	}
	if decodeErr != nil {
		msg := decodeErr.Error()
		if len(msg) > maxErrorHeader {
			msg = msg[:maxErrorHeader]
		}
		hs = append(hs, stream.Header{Key: HeaderError, Value: frozen([]byte(msg))})
	}
	if tag != nil {
		hs = append(hs, stream.Header{Key: HeaderAttestation, Value: tag})
	}
	b.slab = hs
	return hs[start:len(hs):len(hs)]
}

// tag appends the attestation of rec, made by a, to the arena and returns
// it.
func (b *headerBuilder) tag(a Attester, rec *AttestedRecord) []byte {
	start := len(b.arena)
	b.arena = a.AppendAttestation(b.arena, rec)
	return b.arena[start:len(b.arena):len(b.arena)]
}

// tagRegions takes n regions of tagRoom bytes from the arena, for tags
// made on several goroutines (Pipeline.attestAll): region k is
// [k*tagRoom, (k+1)*tagRoom). startBatch reserved room for them.
func (b *headerBuilder) tagRegions(n int) []byte {
	start := len(b.arena)
	b.arena = append(b.arena, make([]byte, n*tagRoom)...)
	return b.arena[start:]
}

// tagSlots returns n nil slots for the tags of a chunk, reused from one
// batch to the next.
func (b *headerBuilder) tagSlots(n int) [][]byte {
	b.tagSlice = resize(b.tagSlice, n)
	clear(b.tagSlice)
	return b.tagSlice
}

// frozen returns v with its capacity cut to its length.
func frozen(v []byte) []byte { return v[:len(v):len(v)] }

// HeaderValue returns the value of the last header named key, and whether
// there is one.
func HeaderValue(hs []stream.Header, key string) ([]byte, bool) {
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].Key == key {
			return hs[i].Value, true
		}
	}
	return nil, false
}
