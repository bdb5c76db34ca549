package differential

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// reading is the reference reading of one event: where it must go, and
// what the router must write about it.
type reading struct {
	router.Decision
	// alt is another reason the router may give instead, where the
	// reference cannot tell from goavro's reading which of two reasons
	// the ingest contract gives: "corrupt" where the router is stricter
	// than goavro (over-long varints, a country or user id that is not
	// UTF-8), "truncated" where an array or map count claims more items
	// than there are bytes left, and goavro, reading the items, failed
	// otherwise.
	alt string
	// writer is the residency-schema header the router must write ("":
	// none).
	writer string
	// w is the writer schema found (nil before it was).
	w *writerSchema
	// native is goavro's decoding of the whole value (nil unless it
	// decoded).
	native map[string]any
	// fields are the decoded routing fields (when native is set).
	fields schemas.Fields
	// pin is the user's pin in the pin map.
	pin string
	// placed is router.Decide's decision, before the router's
	// destinations are taken into account (when native is set).
	placed router.Decision
}

// deadLetter is the reading of an event dead-lettered for reason.
func deadLetter(reason, writer string, w *writerSchema) reading {
	return reading{Decision: router.Decision{Outcome: router.DeadLettered, Reason: reason}, writer: writer, w: w}
}

// reference reads m as the ingest contract (docs/ingest-contract.md) says
// the router must, independently of the router's code: its size, then the
// framing of its topic by hand, the writer schema by the fingerprint or
// registry id it carries (or the topic's raw schema), goavro's full decode
// of the body with that schema with no bytes left over, the routing
// fields by their paths in goavro's native form, the user's pin from the
// pin map, router.Decide, and finally the router's destinations: a region
// on a cluster the router does not write to, or pinned to one of the
// ingest cluster's ingest, quarantine or dead-letter topics, is no_rule.
func (d *deployment) reference(m *stream.Message) reading {
	v := m.Value
	if len(v) == 0 {
		return deadLetter("empty_value", "", nil)
	}
	size := len(m.Key) + len(v)
	for _, h := range m.Headers {
		size += len(h.Key) + len(h.Value)
	}
	if size > d.maxValueBytes || len(v) > d.maxValueSize {
		return deadLetter("too_large", "", nil)
	}
	ts := d.byTopic[m.Topic]
	var w *writerSchema
	var writer string
	var body []byte
	switch ts.framing {
	case schemas.FramingConfluent:
		if v[0] != 0 {
			return deadLetter("bad_magic", "", nil)
		}
		if len(v) < 5 {
			return deadLetter("truncated", "", nil)
		}
		id := binary.BigEndian.Uint32(v[1:5])
		writer = fmt.Sprintf("confluent:%d", id)
		if w = d.byID[id]; w == nil {
			return deadLetter("unknown_schema", writer, nil)
		}
		body = v[5:]
	case schemas.FramingSingleObject:
		if v[0] != 0xC3 || (len(v) > 1 && v[1] != 0x01) {
			return deadLetter("bad_magic", "", nil)
		}
		if len(v) < 10 {
			return deadLetter("truncated", "", nil)
		}
		fp := binary.LittleEndian.Uint64(v[2:10])
		if w = d.byFP[fp]; w == nil {
			return deadLetter("unknown_schema", fmt.Sprintf("single-object:%016x", fp), nil)
		}
		// The header names the specification's fingerprint, also of a
		// value framed with goavro's.
		writer, body = fmt.Sprintf("single-object:%016x", w.fp), v[10:]
	default:
		w = ts.raw
		writer, body = fmt.Sprintf("raw:%016x", w.fp), v
	}

	native, rest, err := w.codec.NativeFromBinary(body)
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "short buffer") || strings.Contains(msg, "MaxBlockCount") {
			// Cut short: goavro ran out of bytes, or met a block count
			// over goavro.MaxBlockCount, which is more than the value's
			// bytes (every item of these schemas takes a byte at least).
			r := deadLetter("truncated", writer, w)
			if d.strictBeforeCut(w, body) {
				r.alt = "corrupt"
			}
			return r
		}
		r := deadLetter("corrupt", writer, w)
		// The router checks an array or map block count against the bytes
		// left before reading the items: a count claiming more items than
		// there are bytes is truncated there (the ingest contract), where
		// goavro reads items until one fails, possibly as corrupt.
		if strings.Contains(msg, "cannot decode binary array item") || strings.Contains(msg, "cannot decode binary map") {
			r.alt = "truncated"
		}
		return r
	}
	rec, ok := native.(map[string]any)
	if !ok {
		return deadLetter("corrupt", writer, w)
	}
	consumed := body[:len(body)-len(rest)]
	// An encoding goavro reads but would not write (it writes the shortest
	// varints) may hold an over-long varint, which the router refuses.
	strict := ""
	if longVarintRun(consumed) && !canonicalLength(w, native, consumed) {
		strict = "corrupt"
	}
	country, hasCountry := lookup(rec, d.countryPath)
	user, hasUser := lookup(rec, d.userPath)
	if (hasCountry && !utf8.Valid(country)) || (hasUser && !utf8.Valid(user)) {
		return deadLetter("corrupt", writer, w)
	}
	if len(rest) > 0 {
		r := deadLetter("trailing_bytes", writer, w)
		r.alt = strict
		return r
	}
	f := schemas.Fields{Country: country, HasCountry: hasCountry, UserID: user}
	r := reading{writer: writer, w: w, native: rec, fields: f, alt: strict}
	if len(user) > 0 {
		r.pin = d.pins[string(user)]
	}
	r.placed = router.Decide(f, r.pin, d.rs)
	r.Decision = r.placed
	if r.Outcome == router.Routed && !d.writable(r.Cluster, r.Topic) {
		r.Decision = router.Decision{Outcome: router.Quarantined, Reason: router.ReasonNoRule, Jurisdiction: r.Jurisdiction, Pinned: r.Pinned}
	}
	return r
}

// strictBeforeCut reports whether, before the point where body (written
// with w) is cut short, the router may have met what it is stricter about
// than goavro: a routing field that is not UTF-8, or an over-long varint.
// It completes body with zero bytes, which read as the shortest values (0,
// empty, the first union branch, false), so that goavro reads the routing
// fields that come before the cut; when even that does not decode (a
// length or count claiming more than the completion holds), any sign of
// them in body.
func (d *deployment) strictBeforeCut(w *writerSchema, body []byte) bool {
	padded := append(slices.Clip(body), make([]byte, 4096)...)
	native, rest, err := w.codec.NativeFromBinary(padded)
	rec, ok := native.(map[string]any)
	if err != nil || !ok {
		return longVarintRun(body) || !utf8.Valid(body)
	}
	country, hasCountry := lookup(rec, d.countryPath)
	user, hasUser := lookup(rec, d.userPath)
	if (hasCountry && !utf8.Valid(country)) || (hasUser && !utf8.Valid(user)) {
		return true
	}
	return longVarintRun(body) && !canonicalLength(w, native, padded[:len(padded)-len(rest)])
}

// writable reports whether the router may write a routed event to topic
// on cluster: a cluster it has a connection to, and not one of the ingest
// cluster's ingest, quarantine or dead-letter topics.
func (d *deployment) writable(cluster, topic string) bool {
	if !slices.Contains(d.clusters, cluster) {
		return false
	}
	return cluster != d.ingest || (topic != d.quarantine && topic != d.deadLetter && !slices.Contains(d.ingestTopics(), topic))
}

// lookup follows path through the records (and ["null", record] unions)
// of a goavro native record and returns the string or enum symbol there;
// false when a record on the way, or the field, is absent or null.
func lookup(rec map[string]any, path []string) ([]byte, bool) {
	var cur any = rec
	for _, seg := range path {
		m, ok := unwrapUnion(cur).(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	switch x := unwrapUnion(cur).(type) {
	case string:
		return []byte(x), true
	}
	return nil, false
}

// unwrapUnion returns the value of a union's native form (a map of one
// entry, keyed by the branch's type); the records of these schemas have
// more than one field, so a map of one entry is a union.
func unwrapUnion(v any) any {
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for _, x := range m {
			return x
		}
	}
	return v
}

// canonicalLength reports whether goavro writes native back in as many
// bytes as consumed held: no varint in them was longer than needed.
func canonicalLength(w *writerSchema, native any, consumed []byte) bool {
	b, err := w.codec.BinaryFromNative(nil, native)
	return err == nil && len(b) == len(consumed)
}

// longVarintRun reports whether b has a run of at least 5 bytes with the
// continuation bit set: a varint the router refuses as over-long (an int
// takes at most 5 bytes, a long 10) may be there.
func longVarintRun(b []byte) bool {
	run := 0
	for _, c := range b {
		if c >= 0x80 {
			if run++; run >= 5 {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}
