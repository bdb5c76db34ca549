package schemas

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/linkedin/goavro/v2"
)

// nestedSchema exercises what the canonical event does not: a nested path
// through a nullable record, arrays of records, maps of unions, fixed,
// floats, booleans, and a recursive type before the target.
const nestedSchema = `{"type":"record","name":"Nested","namespace":"t","fields":[
	{"name":"ok","type":"boolean"},
	{"name":"f","type":"float"},
	{"name":"items","type":{"type":"array","items":{"type":"record","name":"Item","fields":[
		{"name":"n","type":"int"},{"name":"tag","type":["null","string","bytes"]}]}}},
	{"name":"list","type":{"type":"record","name":"Node","fields":[
		{"name":"v","type":"long"},{"name":"next","type":["null","Node"]}]}},
	{"name":"attrs","type":{"type":"map","values":["null","double",{"type":"fixed","name":"Id","size":4}]}},
	{"name":"who","type":{"type":"record","name":"Who","fields":[
		{"name":"kind","type":{"type":"enum","name":"Kind","symbols":["A","B","C"]}},
		{"name":"id","type":["null","string"]}]}},
	{"name":"geo","type":["null",{"type":"record","name":"Geo","fields":[
		{"name":"lat","type":"double"},
		{"name":"cc","type":["null",{"type":"enum","name":"CC","symbols":["US","DE","IN"]},"string"]}]}]},
	{"name":"tail","type":"string"}]}`

type fuzzCase struct {
	name          string
	codec         *goavro.Codec
	e             *Extractor
	country, user func(map[string]any) (any, bool)
}

// unwrap reads a goavro union value: nil, or the single value of the map.
func unwrap(v any) (any, bool) {
	if v == nil {
		return nil, false
	}
	if m, ok := v.(map[string]any); ok {
		for _, x := range m {
			return x, true
		}
	}
	return v, true
}

func fuzzCases(t testing.TB) []fuzzCase {
	dir := t.TempDir()
	p := filepath.Join(dir, "nested.avsc")
	if err := os.WriteFile(p, []byte(nestedSchema), 0o644); err != nil {
		t.Fatal(err)
	}
	canon, err := NewExtractor(ExtractorConfig{DefaultFraming: FramingRaw,
		RawSchemas: map[string]string{DefaultTopic: "io.residency.events.UserEvent"}})
	if err != nil {
		t.Fatal(err)
	}
	nested, err := NewExtractor(ExtractorConfig{DefaultFraming: FramingRaw, CountryField: "geo.cc", UserIDField: "who.id",
		RawSchemas: map[string]string{DefaultTopic: p}})
	if err != nil {
		t.Fatal(err)
	}
	// goavro allocates for a block count before reading the items; cap it
	// as the extractor does so the fuzzer does not exhaust memory.
	goavro.MaxBlockCount = MaxEmptyItems
	cc, _ := goavro.NewCodec(UserEventSchema)
	nc, _ := goavro.NewCodec(nestedSchema)
	return []fuzzCase{
		{"canonical", cc, canon,
			func(m map[string]any) (any, bool) { return unwrap(m["country"]) },
			func(m map[string]any) (any, bool) { return m["user_id"], true }},
		{"nested", nc, nested,
			func(m map[string]any) (any, bool) {
				g, ok := unwrap(m["geo"])
				if !ok {
					return nil, false
				}
				return unwrap(g.(map[string]any)["cc"])
			},
			func(m map[string]any) (any, bool) { return unwrap(m["who"].(map[string]any)["id"]) }},
		unionsCase(t),
	}
}

// longVarintRun reports whether b has a run of at least 5 bytes with the
// continuation bit set: the only varints goavro accepts and we refuse.
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

// crossCheck extracts body with c.e and decodes it with goavro. Extract
// checks the whole record, so it accepts exactly what goavro decodes with
// no bytes left over, and reads the same fields; what goavro decodes with
// bytes left over is refused as trailing_bytes. The exceptions are what we
// are stricter about (over-long varints, invalid UTF-8 in a captured field,
// values nested deeper than maxDepth): refused as corrupt.
func crossCheck(t *testing.T, c fuzzCase, body []byte) {
	got, err := c.e.Extract(context.Background(), "raw", body)
	native, rest, gerr := c.codec.NativeFromBinary(body)
	if err != nil && Reason(err) == "corrupt" && !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: error wraps no sentinel: %v", c.name, err)
	}
	// Decode agrees with goavro on whole records.
	decoded, _, derr := c.e.Decode(context.Background(), "raw", body)
	switch {
	case derr == nil && (gerr != nil || len(rest) > 0):
		t.Fatalf("%s: Decode accepts %x, goavro: %v, %d trailing bytes", c.name, body, gerr, len(rest))
	case derr == nil && fmt.Sprint(decoded) != fmt.Sprint(native):
		t.Fatalf("%s: Decode = %v, goavro %v", c.name, decoded, native)
	case derr != nil && gerr == nil && len(rest) == 0 && (!errors.Is(derr, ErrCorrupt) || !(longVarintRun(body) || errors.Is(derr, errTooDeep))):
		t.Fatalf("%s: goavro decodes %x but Decode fails: %v", c.name, body, derr)
	}
	if gerr != nil {
		if err == nil {
			t.Fatalf("%s: Extract accepts %x, goavro refuses it: %v", c.name, body, gerr)
		}
		if r := Reason(err); r != "truncated" && r != "corrupt" && r != "empty_value" {
			t.Fatalf("%s: goavro refuses %x (%v), Extract says %s: %v", c.name, body, gerr, r, err)
		}
		return
	}
	m := native.(map[string]any)
	wantC, hasC := c.country(m)
	wantU, hasU := c.user(m)
	strict := longVarintRun(body) || errors.Is(err, errTooDeep) ||
		(hasC && !utf8.ValidString(fmt.Sprint(wantC))) || (hasU && !utf8.ValidString(fmt.Sprint(wantU)))
	if err != nil {
		switch {
		case strict && errors.Is(err, ErrCorrupt):
		case len(rest) > 0 && errors.Is(err, ErrTrailingBytes) && Reason(err) == "trailing_bytes":
		default:
			t.Fatalf("%s: goavro decodes %x (%d bytes left over) but Extract fails: %v", c.name, body, len(rest), err)
		}
		return
	}
	if len(rest) > 0 {
		t.Fatalf("%s: Extract accepts %x, goavro leaves %d bytes after the record", c.name, body, len(rest))
	}
	if got.HasCountry != hasC || (hasC && string(got.Country) != fmt.Sprint(wantC)) {
		t.Fatalf("%s: country %q/%v, goavro %v/%v (body %x)", c.name, got.Country, got.HasCountry, wantC, hasC, body)
	}
	if (got.UserID != nil) != hasU || (hasU && string(got.UserID) != fmt.Sprint(wantU)) {
		t.Fatalf("%s: user id %q, goavro %v/%v (body %x)", c.name, got.UserID, wantU, hasU, body)
	}
}

func nestedSample(i int) map[string]any {
	var list any
	for j := range i % 4 {
		list = goavro.Union("t.Node", map[string]any{"v": int64(j), "next": list})
	}
	return map[string]any{
		"ok": i%2 == 0, "f": float32(i) / 3,
		"items": []any{
			map[string]any{"n": int32(i), "tag": goavro.Union("string", "x")},
			map[string]any{"n": int32(-i), "tag": goavro.Union("bytes", []byte{0xff, 0})},
			map[string]any{"n": int32(0), "tag": nil},
		},
		"list":  map[string]any{"v": int64(-1), "next": list},
		"attrs": map[string]any{"a": goavro.Union("double", 2.5), "b": nil, "c": goavro.Union("t.Id", []byte("abcd"))},
		"who":   map[string]any{"kind": "B", "id": goavro.Union("string", fmt.Sprintf("w%d", i))},
		"geo": []any{nil,
			goavro.Union("t.Geo", map[string]any{"lat": 1.0, "cc": goavro.Union("t.CC", "DE")}),
			goavro.Union("t.Geo", map[string]any{"lat": 2.0, "cc": goavro.Union("string", "IN")}),
			goavro.Union("t.Geo", map[string]any{"lat": 3.0, "cc": nil}),
		}[i%4],
		"tail": "end",
	}
}

func TestCrossCheckSamples(t *testing.T) {
	cases := fuzzCases(t)
	for i := range 8 {
		var country any
		if i%3 != 0 {
			country = []string{"US", "", "DE", "ÖS"}[i%4]
		}
		crossCheck(t, cases[0], encode(t, UserEventSchema, sampleEvent(i, country)))
		crossCheck(t, cases[1], encode(t, nestedSchema, nestedSample(i)))
	}
	// The nested case does capture through the nullable record and enum.
	got, err := cases[1].e.Extract(context.Background(), "raw", encode(t, nestedSchema, nestedSample(1)))
	if err != nil || string(got.Country) != "DE" || string(got.UserID) != "w1" {
		t.Fatalf("nested sample: %+v, %v", got, err)
	}
}

// An enum index beyond 32 bits is out of range, not truncated to a valid
// one: goavro reads it whole, and so do we.
func TestEnumIndexTruncatedLikeGoavro(t *testing.T) {
	s := `{"type":"record","name":"T","fields":[{"name":"country","type":{"type":"enum","name":"C","symbols":["US","DE"]}},{"name":"user_id","type":"string"}]}`
	p := filepath.Join(t.TempDir(), "t.avsc")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := NewExtractor(ExtractorConfig{DefaultFraming: FramingRaw, RawSchemas: map[string]string{DefaultTopic: p}})
	if err != nil {
		t.Fatal(err)
	}
	codec, _ := goavro.NewCodec(s)
	c := fuzzCase{"enum", codec, e,
		func(m map[string]any) (any, bool) { return m["country"], true },
		func(m map[string]any) (any, bool) { return m["user_id"], true }}
	body := []byte{0x80, 0x80, 0x80, 0x80, 0x20, 0x02, 'u'} // index 2^32
	if _, _, err := codec.NativeFromBinary(body); err == nil {
		t.Fatal("goavro accepts an enum index of 2^32")
	}
	if _, err := e.Extract(context.Background(), "raw", body); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Extract: %v, want ErrCorrupt", err)
	}
	crossCheck(t, c, []byte{0x02, 0x02, 'u'})
}

// FuzzExtract cross-checks fast extraction against goavro's full decode on
// arbitrary bytes, for the canonical event, a schema with nesting and
// recursion, and one with unions of every shape (unionsSchema). Run: go test ./schemas -run '^$' -fuzz FuzzExtract -fuzztime 60s
func FuzzExtract(f *testing.F) {
	for i := range 4 {
		f.Add(encode(f, UserEventSchema, sampleEvent(i, []any{"US", nil, "IN", "GB"}[i])))
		f.Add(encode(f, nestedSchema, nestedSample(i)))
	}
	// fastavro's encodings of the canonical event.
	if raw, err := os.ReadFile("testdata/golden/golden.json"); err == nil {
		var g golden
		if err := json.Unmarshal(raw, &g); err != nil {
			f.Fatal(err)
		}
		for _, c := range g.Cases {
			if b, err := hex.DecodeString(c.Body); err == nil && c.Writer == "v3" {
				f.Add(b)
			}
		}
	}
	unions, err := parseSchema(unionsSchema)
	if err != nil {
		f.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 4 {
		f.Add(genValue(r, nil, unions, 0))
	}
	f.Add([]byte{})
	f.Add([]byte{0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	// testdata/fuzz/FuzzExtract/reason-* hold one single-object value per
	// reason the router can give (TestFuzzCorpusHasEveryReason).
	cases := fuzzCases(f)
	framed := newFramedCase(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, c := range cases {
			crossCheck(t, c, body)
		}
		framed.check(t, body)
	})
}

// framedMaxValue is the max_value_size of framedCase's extractor, small so
// that a too_large seed stays small.
const framedMaxValue = 4096

// framedCase reads a whole value (framing included) as the router does:
// single-object framing, the embedded schemas plus the nested and unions
// schemas in a catalogue, max_value_size framedMaxValue.
type framedCase struct {
	e      *Extractor
	codecs map[uint64]*goavro.Codec // by fingerprint (the specification's and goavro's)
}

func newFramedCase(t testing.TB) framedCase {
	dir := t.TempDir()
	codecs := map[uint64]*goavro.Codec{}
	for name, text := range map[string]string{"user_event.avsc": UserEventSchema, "nested.avsc": nestedSchema, "unions.avsc": unionsSchema} {
		if name != "user_event.avsc" {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		c, err := goavro.NewCodec(text)
		if err != nil {
			t.Fatal(err)
		}
		fp, err := Fingerprint(text)
		if err != nil {
			t.Fatal(err)
		}
		codecs[fp], codecs[c.Rabin] = c, c
	}
	e, err := NewExtractor(ExtractorConfig{CatalogueDir: dir, MaxValueSize: framedMaxValue})
	if err != nil {
		t.Fatal(err)
	}
	return framedCase{e, codecs}
}

// reference is the reading of value that Extract must agree with: the
// reason it is refused for, "" when it is accepted, and the decoded record.
// strictOK is set when Extract may refuse as corrupt what goavro reads
// (see crossCheck).
func (fc framedCase) reference(value []byte) (reason string, native map[string]any, strictOK bool) {
	switch {
	case len(value) == 0:
		return "empty_value", nil, false
	case len(value) > framedMaxValue:
		return "too_large", nil, false
	case value[0] != 0xC3 || len(value) > 1 && value[1] != 0x01:
		return "bad_magic", nil, false
	case len(value) < singleObjectHeaderLen:
		return "truncated", nil, false
	}
	codec, ok := fc.codecs[binary.LittleEndian.Uint64(value[2:10])]
	if !ok {
		return "unknown_schema", nil, false
	}
	body := value[singleObjectHeaderLen:]
	n, rest, err := codec.NativeFromBinary(body)
	if err != nil {
		return "truncated|corrupt", nil, false
	}
	native = n.(map[string]any)
	strictOK = longVarintRun(body)
	for _, k := range []string{"country", "user_id"} {
		if v, ok := unwrap(native[k]); ok && !utf8.ValidString(fmt.Sprint(v)) {
			strictOK = true
		}
	}
	if len(rest) > 0 {
		return "trailing_bytes", native, strictOK
	}
	return "", native, strictOK
}

// check extracts value and compares with the reference reading.
func (fc framedCase) check(t *testing.T, value []byte) {
	got, err := fc.e.Extract(context.Background(), "events", value)
	want, native, strictOK := fc.reference(value)
	reason := ""
	if err != nil {
		reason = Reason(err)
	}
	switch {
	case reason == want:
	case want == "truncated|corrupt" && (reason == "truncated" || reason == "corrupt"):
	case strictOK && reason == "corrupt", errors.Is(err, errTooDeep):
	default:
		t.Fatalf("framed %x: Extract says %q (%v), the reference %q", value, reason, err, want)
	}
	if err != nil || native == nil {
		return
	}
	wantC, hasC := unwrap(native["country"])
	if got.HasCountry != hasC || hasC && string(got.Country) != fmt.Sprint(wantC) {
		t.Fatalf("framed %x: country %q/%v, goavro %v/%v", value, got.Country, got.HasCountry, wantC, hasC)
	}
	if want := (WriterRef{Framing: FramingSingleObject, Fingerprint: mustFingerprintOf(fc.codecs[binary.LittleEndian.Uint64(value[2:10])])}); got.Writer != want {
		t.Fatalf("framed %x: writer %v, want %v", value, got.Writer, want)
	}
}

// mustFingerprintOf is the specification's fingerprint of c's schema.
func mustFingerprintOf(c *goavro.Codec) uint64 {
	fp, err := Fingerprint(c.Schema())
	if err != nil {
		panic(err)
	}
	return fp
}

// The fuzz corpus holds one value per reason the router can give, each
// named reason-REASON, and framedCase gives each its reason.
func TestFuzzCorpusHasEveryReason(t *testing.T) {
	fc := newFramedCase(t)
	for _, reason := range Reasons() {
		p := filepath.Join("testdata", "fuzz", "FuzzExtract", "reason-"+reason)
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("no seed for reason %s: %v", reason, err)
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a go test fuzz v1 []byte file", p)
		}
		value, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		_, err = fc.e.Extract(context.Background(), "events", []byte(value))
		if got := Reason(err); err == nil || got != reason {
			t.Errorf("%s: Extract: %v (%s), want %s", p, err, got, reason)
		}
		fc.check(t, []byte(value))
	}
}

// Arrays and maps written in several blocks, with negative counts followed
// by a byte size (as Apache Avro for Java writes them), are skipped item by
// item, like goavro reads them.
func TestMultiBlockArraysAndMaps(t *testing.T) {
	s := `{"type":"record","name":"T","fields":[
		{"name":"a","type":{"type":"array","items":"long"}},
		{"name":"m","type":{"type":"map","values":["null","string"]}},
		{"name":"z","type":{"type":"array","items":"null"}},
		{"name":"country","type":"string"},{"name":"user_id","type":"string"}]}`
	p := filepath.Join(t.TempDir(), "t.avsc")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := NewExtractor(ExtractorConfig{DefaultFraming: FramingRaw, RawSchemas: map[string]string{DefaultTopic: p}})
	if err != nil {
		t.Fatal(err)
	}
	codec, _ := goavro.NewCodec(s)
	c := fuzzCase{"blocks", codec, e,
		func(m map[string]any) (any, bool) { return m["country"], true },
		func(m map[string]any) (any, bool) { return m["user_id"], true }}
	body := []byte{
		0x03, 0x04, 0x02, 0x04, // a: block of -2 items, 2 bytes: 1, 2
		0x02, 0x06, // block of 1 item: 3
		0x00,                                   // end of a
		0x01, 0x0a, 0x02, 'k', 0x02, 0x02, 'v', // m: block of -1 item, 5 bytes: k → "v"
		0x02, 0x02, 'n', 0x00, // block of 1: n → null
		0x00,       // end of m
		0x0a, 0x00, // z: 5 nulls
		0x04, 'U', 'S', 0x02, 'u', // country, user_id
	}
	native, _, err := codec.NativeFromBinary(body)
	if err != nil {
		t.Fatalf("goavro: %v", err)
	}
	if a := native.(map[string]any)["a"].([]any); len(a) != 3 {
		t.Fatalf("goavro read a = %v", a)
	}
	crossCheck(t, c, body)
	got, err := e.Extract(context.Background(), "raw", body)
	if err != nil || string(got.Country) != "US" {
		t.Fatalf("Extract = %q, %v", got.Country, err)
	}
	// Over MaxEmptyItems zero-byte items in one block: refused, not looped.
	huge := append([]byte{0x00, 0x00}, appendVarint(nil, 2*(MaxEmptyItems+1))...)
	huge = append(huge, 0x00, 0x04, 'U', 'S', 0x02, 'u')
	if _, err := e.Extract(context.Background(), "raw", huge); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("huge empty block: %v", err)
	}
}

// appendVarint appends the zig-zag varint of the non-negative n given
// already doubled (i.e. the raw unsigned varint of n).
func appendVarint(b []byte, n uint64) []byte {
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return append(b, byte(n))
}
