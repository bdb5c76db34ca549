package differential

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// input is one event as a producer writes it to an ingest topic.
type input struct {
	dep     int         // index of its deployment
	d       *deployment // its deployment
	topic   *topicSpec
	key     []byte // nil: a null key
	value   []byte
	headers []stream.Header
	what    string // how it was made, for failure messages
}

// message is in as the router reads it, at partition 0, offset.
func (in *input) message(offset int64) stream.Message {
	return stream.Message{Topic: in.topic.name, Partition: 0, Offset: offset, Key: in.key, Value: in.value,
		Headers: in.headers, Time: time.UnixMilli(1_790_000_000_000).UTC()}
}

// gen builds random events.
type gen struct {
	r       *rand.Rand
	user    string // the event's user id ("": null where the schema allows it, empty otherwise)
	country any    // string, or nil for null
	big     bool   // a value over max_value_size
	mark    bool   // always write sessionMark
	// atVarint is the varint of the last occurred_at written.
	atVarint []byte
}

// markers are written into every event so that corruptions can find the
// bytes of a union index (before sessionMark) and of an array count
// (before tagMark).
const (
	sessionMark = "SESS-MARK"
	tagMark     = "TAG-MARK"
)

func (g *gen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }

func (g *gen) eventID() string {
	return fmt.Sprintf("6f1c2a4e-%04x-4000-8000-%012x", g.r.IntN(1<<16), g.r.Int64N(1<<48))
}

func (g *gen) at() time.Time {
	ms := 1_790_000_000_000 + g.r.Int64N(1<<30)
	g.atVarint = binary.AppendVarint(nil, ms)
	return time.UnixMilli(ms).UTC()
}

func (g *gen) session() any {
	if !g.mark && g.r.IntN(3) == 0 {
		return nil
	}
	return goavro.Union("string", sessionMark)
}

func (g *gen) tags() []any {
	tags := []any{tagMark}
	for range g.r.IntN(3) {
		tags = append(tags, g.pick("fyp", "cooking", "", "ünï"))
	}
	if g.big {
		tags = append(tags, strings.Repeat("x", diffMaxValueSize))
	}
	return tags
}

func (g *gen) props() map[string]any {
	m := map[string]any{}
	for i := range g.r.IntN(4) {
		m[fmt.Sprintf("k%d", i)] = g.pick("a", "", "b7")
	}
	return m
}

// countryUnion is the country as a ["null","string"] union.
func (g *gen) countryUnion() any {
	if g.country == nil {
		return nil
	}
	return goavro.Union("string", g.country)
}

// countryEnum is the country as an enum symbol: the event's country if it
// is one, else a random symbol.
func (g *gen) countryEnum() string {
	for _, s := range countrySymbols {
		if g.country == s {
			return s
		}
	}
	return countrySymbols[g.r.IntN(len(countrySymbols))]
}

// userUnion is the user id as a ["null","string"] union.
func (g *gen) userUnion() any {
	if g.user == "" && g.r.IntN(2) == 0 {
		return nil
	}
	return goavro.Union("string", g.user)
}

func genV1(g *gen) map[string]any {
	return map[string]any{"event_id": g.eventID(), "user_id": g.user, "occurred_at": g.at(),
		"event_type": g.pick("VIDEO_VIEW", "VIDEO_LIKE", "OTHER"), "session_id": g.session(),
		"country": g.countryUnion(), "tags": g.tags(), "properties": g.props()}
}

func genV3(g *gen) map[string]any {
	ev := map[string]any{"event_id": g.eventID(), "user_id": g.user, "occurred_at": g.at(),
		"event_type": g.pick("VIDEO_VIEW", "LOGIN", "OTHER"), "session_id": g.session(),
		"device":  map[string]any{"device_id": "d-1", "os": g.pick("ANDROID", "IOS"), "app_version": "34.1.0"},
		"country": g.countryUnion(), "tags": g.tags(), "properties": g.props()}
	if g.r.IntN(2) == 0 {
		ev["device"] = map[string]any{"device_id": "d-8c1f", "os": "WEB", "os_version": goavro.Union("string", "14"),
			"model": nil, "app_version": "34.1.2", "screen_width": goavro.Union("int", int32(1080)), "screen_height": nil}
		ev["network"] = "WIFI"
		ev["geo_lat"] = goavro.Union("double", 41.88)
		ev["watch_time_ms"] = goavro.Union("long", g.r.Int64N(1<<40))
		ev["muted"] = true
		ev["client_ip_hash"] = goavro.Union("io.residency.events.Sha256", bytes.Repeat([]byte{0xab}, 32))
		ev["schema_version"] = int32(3)
	}
	return ev
}

func genV4(g *gen) map[string]any {
	ev := genV3(g)
	ev["home_region"] = []any{nil, goavro.Union("string", "eu-west")}[g.r.IntN(2)]
	var items []any
	for i := range g.r.IntN(3) {
		items = append(items, map[string]any{"sku": fmt.Sprintf("sku-%d", i), "qty": int32(i - 1),
			"price": []any{nil, goavro.Union("double", 9.5)}[i%2]})
	}
	ev["items"] = items
	ev["score"] = []any{nil, goavro.Union("long", int64(-3)), goavro.Union("double", 0.25), goavro.Union("string", "high")}[g.r.IntN(4)]
	return ev
}

func genV5(g *gen) map[string]any {
	return map[string]any{"event_id": g.eventID(), "occurred_at": g.at(), "session_id": g.session(),
		"user_id": g.userUnion(), "score": []any{nil, goavro.Union("int", int32(7)), goavro.Union("double", 1.5)}[g.r.IntN(3)],
		"country": g.countryEnum(), "tags": g.tags(), "flag": g.r.IntN(2) == 0}
}

func genN1(g *gen) map[string]any {
	var account any
	if g.r.IntN(5) > 0 {
		account = goavro.Union("io.residency.events.Account", map[string]any{"user_id": g.user, "country": g.countryUnion()})
	}
	return map[string]any{"event_id": g.eventID(), "occurred_at": g.at(), "session_id": g.session(),
		"account": account, "tags": g.tags()}
}

func genN2(g *gen) map[string]any {
	return map[string]any{"event_id": g.eventID(), "source": g.pick("app", ""), "occurred_at": g.at(), "session_id": g.session(),
		"account": map[string]any{"tier": int32(g.r.IntN(3)), "user_id": g.userUnion(), "country": g.countryEnum()},
		"tags":    g.tags(), "properties": g.props()}
}

// frame frames body as topic ts carries it, written with w: single-object
// with the specification's fingerprint or (as goavro's producers write it)
// goavro's, confluent with w's registry id, raw as it is.
func frame(r *rand.Rand, ts *topicSpec, w *writerSchema, body []byte) []byte {
	switch ts.framing {
	case schemas.FramingSingleObject:
		fp := w.fp
		if r.IntN(3) == 0 {
			fp = w.gfp
		}
		return schemas.AppendSingleObject(nil, fp, body)
	case schemas.FramingConfluent:
		return schemas.AppendConfluent(nil, w.id, body)
	}
	return bytes.Clone(body)
}

// headerLen is the length of ts's framing bytes.
func headerLen(ts *topicSpec) int {
	switch ts.framing {
	case schemas.FramingSingleObject:
		return 10
	case schemas.FramingConfluent:
		return 5
	}
	return 0
}

// corruptions are the ways an event's value is broken, by name.
var corruptions = []string{"truncate", "trailing", "flip", "badunion", "hugecount", "badvarint", "widevarint", "badmagic", "unknownschema", "cutheader"}

// corrupt breaks value (framed as ts says) as named. keepID leaves a
// confluent value's registry id alone (on the shared registry another
// test's schema could have the id a random change makes). It returns
// false when the corruption does not apply to value.
func corrupt(r *rand.Rand, name string, ts *topicSpec, value []byte, keepID bool, atVarint []byte) ([]byte, bool) {
	h := headerLen(ts)
	// at returns the offset of the union index before sessionMark, or of
	// the count of the array holding tagMark: the marker's length varint
	// is one byte, the index or count another.
	at := func(mark string) int {
		i := bytes.Index(value[h:], []byte(mark))
		if i < 2 {
			return -1
		}
		return h + i - 2
	}
	v := bytes.Clone(value)
	switch name {
	case "truncate":
		return v[:r.IntN(len(v))], true
	case "trailing":
		for range 1 + r.IntN(4) {
			v = append(v, byte(r.IntN(256)))
		}
		return v, true
	case "flip":
		lo := 0
		if keepID && ts.framing == schemas.FramingConfluent {
			lo = h
		}
		if len(v) <= lo {
			return nil, false
		}
		for range 1 + r.IntN(3) {
			i := lo + r.IntN(len(v)-lo)
			if keepID && ts.framing == schemas.FramingConfluent && i == 0 {
				continue
			}
			v[i] ^= 1 << r.IntN(8)
		}
		return v, true
	case "badunion":
		i := at(sessionMark)
		if i < 0 {
			return nil, false
		}
		// index 2 or 63 of a two-branch union, or -1
		v[i] = []byte{0x04, 0x7e, 0x01}[r.IntN(3)]
		return v, true
	case "hugecount":
		i := at(tagMark)
		if i < 0 {
			return nil, false
		}
		huge := [][]byte{{0xfe, 0xff, 0xff, 0xff, 0x0f}, {0x80, 0x80, 0x04}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}}[r.IntN(3)]
		return append(append(v[:i:i], huge...), value[i+1:]...), true
	case "badvarint":
		i := at(sessionMark)
		if i < 0 {
			return nil, false
		}
		// The union index is 1 (02): write it in more bytes than needed.
		switch r.IntN(4) {
		case 0: // eleven bytes, more than a long takes: the router refuses it, goavro reads 1
			return append(append(v[:i:i], 0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00), value[i+1:]...), true
		case 1: // six bytes, within a long's ten: read as 1 by both
			return append(append(v[:i:i], 0x82, 0x80, 0x80, 0x80, 0x80, 0x00), value[i+1:]...), true
		case 2: // a varint running to the end of the value
			return append(v[:i:i], 0x80, 0x80, 0x81), true
		default: // continuation bytes before the index: a huge index
			return append(append(v[:i:i], bytes.Repeat([]byte{0x80}, 1+r.IntN(10))...), value[i:]...), true
		}
	case "badmagic":
		if h == 0 {
			return nil, false
		}
		v[0] ^= 0x40
		if r.IntN(2) == 0 && ts.framing == schemas.FramingSingleObject {
			v[0] ^= 0x40
			v[1] = 0x02
		}
		return v, true
	case "unknownschema":
		switch ts.framing {
		case schemas.FramingSingleObject:
			binary.LittleEndian.PutUint64(v[2:10], r.Uint64())
		case schemas.FramingConfluent:
			binary.BigEndian.PutUint32(v[1:5], 0x7ff00000+uint32(r.IntN(1<<16)))
		default:
			return nil, false
		}
		return v, true
	case "widevarint":
		// occurred_at (atVarint) in ten bytes, bits past 64 set:
		// read as the same long by every reader (they drop them).
		i := bytes.Index(value[h:], atVarint)
		if len(atVarint) < 2 || len(atVarint) > 9 || i < 0 {
			return nil, false
		}
		i += h
		wide := bytes.Clone(atVarint)
		wide[len(wide)-1] |= 0x80
		for len(wide) < 9 {
			wide = append(wide, 0x80)
		}
		wide = append(wide, 0x30)
		return append(append(v[:i:i], wide...), value[i+len(atVarint):]...), true
	case "cutheader":
		if h == 0 {
			return nil, false
		}
		return v[:1+r.IntN(h-1)], true
	}
	panic("corrupt: " + name)
}

// headerNames are the names random producer headers get: repeated ones,
// an empty one, and residency-* ones the router must drop.
var headerNames = []string{"trace", "h", "h", "", "residency-region", "residency-schema", "x-event-id"}

// randomKey is a null, empty, user or random key, rarely one large enough
// to make the event too large.
func randomKey(r *rand.Rand, user string) []byte {
	switch r.IntN(12) {
	case 0, 1, 2:
		return nil
	case 3, 4:
		return []byte{}
	case 5:
		k := make([]byte, 1+r.IntN(24))
		for i := range k {
			k[i] = byte(r.IntN(256))
		}
		return k
	case 6:
		if r.IntN(4) == 0 {
			return bytes.Repeat([]byte{'k'}, diffMaxValueBytes)
		}
	}
	return []byte("k-" + user)
}

// randomHeaders are up to five producer headers: null, empty and short
// values, repeated names, forged residency-* ones, rarely a large one.
func randomHeaders(r *rand.Rand) []stream.Header {
	n := r.IntN(6)
	if n == 0 {
		if r.IntN(2) == 0 {
			return nil
		}
		return []stream.Header{}
	}
	hs := make([]stream.Header, n)
	for i := range hs {
		hs[i].Key = headerNames[r.IntN(len(headerNames))]
		switch r.IntN(5) {
		case 0:
			hs[i].Value = nil
		case 1:
			hs[i].Value = []byte{}
		case 2:
			if r.IntN(8) == 0 {
				hs[i].Value = bytes.Repeat([]byte{'v'}, diffMaxValueBytes/2)
				break
			}
			fallthrough
		default:
			hs[i].Value = fmt.Appendf(nil, "v%d", r.IntN(100))
		}
	}
	return hs
}

// randomInput is a random event for deployment d (index dep): a random
// ingest topic and writer schema, user and country; corrupted half of the
// time; with a random key and headers.
func randomInput(r *rand.Rand, dep int, d *deployment, keepID bool) input {
	ts := d.topics[r.IntN(len(d.topics))]
	w := ts.writers[r.IntN(len(ts.writers))]
	g := &gen{r: r, user: users[r.IntN(len(users))], country: countries[r.IntN(len(countries))], big: r.IntN(30) == 0}
	body, err := w.codec.BinaryFromNative(nil, w.gen(g))
	if err != nil {
		panic(fmt.Sprintf("%s: encode: %v", w.label, err))
	}
	in := input{dep: dep, d: d, topic: ts, value: frame(r, ts, w, body), key: randomKey(r, g.user), headers: randomHeaders(r)}
	in.what = fmt.Sprintf("%s %s %s user %q country %v", d.name, ts.framing, w.label, g.user, g.country)
	if r.IntN(2) == 0 {
		for range 4 { // a corruption that applies
			name := corruptions[r.IntN(len(corruptions))]
			if v, ok := corrupt(r, name, ts, in.value, keepID, g.atVarint); ok {
				in.value = v
				in.what += ", " + name
				break
			}
		}
	}
	return in
}
