package schemas

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
)

// singleObjectEvent returns sampleEvent(i, country) in single-object
// framing with the embedded UserEvent schema.
func singleObjectEvent(t testing.TB, i int, country string) []byte {
	t.Helper()
	fp, err := Fingerprint(UserEventSchema)
	if err != nil {
		t.Fatal(err)
	}
	return AppendSingleObject(nil, fp, encode(t, UserEventSchema, sampleEvent(i, country)))
}

// eventKeys are the EventKeys of sampleEvent(i, ...).
func eventKeys(i int) EventKeys {
	ev := sampleEvent(i, nil)
	return EventKeys{EventID: ev["event_id"].(string), UserID: ev["user_id"].(string), OccurredAt: ev["occurred_at"].(time.Time)}
}

// The rendering of the canonical event matches goavro's standard JSON
// (DecodeJSON) except for bytes, which are base64.
func TestRenderMatchesStandardJSON(t *testing.T) {
	e, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	v := singleObjectEvent(t, 3, "DE")
	native, schema, err := e.Decode(context.Background(), "t", v)
	if err != nil {
		t.Fatal(err)
	}
	mine, err := RenderJSON(nil, schema, native)
	if err != nil {
		t.Fatal(err)
	}
	std, _, err := e.DecodeJSON(context.Background(), "t", v)
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	if err := json.Unmarshal(mine, &a); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, mine)
	}
	if err := json.Unmarshal(std, &b); err != nil {
		t.Fatal(err)
	}
	if a["client_ip_hash"] != base64.StdEncoding.EncodeToString(make([]byte, 32)) {
		t.Errorf("client_ip_hash = %v", a["client_ip_hash"])
	}
	delete(a, "client_ip_hash")
	delete(b, "client_ip_hash")
	if !reflect.DeepEqual(a, b) {
		t.Errorf("rendering differs from standard JSON:\n%s\n%s", mine, std)
	}
}

func TestRenderTypes(t *testing.T) {
	schema := `{"type":"record","name":"R","namespace":"x.y","fields":[
	  {"name":"inner","type":{"type":"record","name":"Inner","fields":[{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}]}},
	  {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
	  {"name":"d","type":{"type":"int","logicalType":"date"}},
	  {"name":"f","type":"float"},
	  {"name":"nan","type":"double"},
	  {"name":"s","type":"string"},
	  {"name":"u","type":["null","Inner",{"type":"long","logicalType":"timestamp-millis"}]},
	  {"name":"u2","type":["null","Inner",{"type":"long","logicalType":"timestamp-millis"}]},
	  {"name":"m","type":{"type":"map","values":{"type":"array","items":"Inner"}}},
	  {"name":"fx","type":{"type":"fixed","name":"F2","size":2}},
	  {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":6,"scale":2}},
	  {"name":"n","type":"null"},
	  {"name":"b","type":"boolean"}
	]}`
	codec, err := goavro.NewCodec(schema)
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]any{
		"ts":    time.UnixMicro(1_700_000_000_123_456).UTC(),
		"d":     time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC),
		"f":     float32(1.5),
		"nan":   math.NaN(),
		"s":     "a\"b\\c\n\x01é",
		"u":     goavro.Union("x.y.Inner", map[string]any{"e": "B"}),
		"u2":    goavro.Union("long.timestamp-millis", time.UnixMilli(1_700_000_000_123).UTC()),
		"inner": map[string]any{"e": "A"},
		"m":     map[string]any{"z": []any{map[string]any{"e": "A"}}, "a": []any{}},
		"fx":    []byte{0xff, 0x00},
		"dec":   mustRat(t, "12.34"),
		"n":     nil,
		"b":     true,
	}
	bin, err := codec.BinaryFromNative(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	native, _, err := codec.NativeFromBinary(bin)
	if err != nil {
		t.Fatal(err)
	}
	n, err := parseSchema(schema)
	if err != nil {
		t.Fatal(err)
	}
	got, err := renderJSON(nil, n, native)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"inner":{"e":"A"},"ts":1700000000123456,"d":19754,"f":1.5,"nan":"NaN","s":"a\"b\\c\n\u0001é",` +
		`"u":{"e":"B"},"u2":1700000000123,"m":{"a":[],"z":[{"e":"A"}]},` +
		`"fx":"/wA=","dec":"12.34","n":null,"b":true}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if !json.Valid(got) {
		t.Error("not valid JSON")
	}
	tc, _, err := transcodeEvent(nil, n, bin)
	var x, y any
	if err != nil || json.Unmarshal(tc, &x) != nil || json.Unmarshal([]byte(want), &y) != nil || !reflect.DeepEqual(x, y) {
		t.Errorf("transcoded %s (%v)\nwant       %s", tc, err, want)
	}
	if _, err := renderJSON(nil, n, map[string]any{"ts": "not a time"}); err == nil {
		t.Error("a value that does not fit the schema rendered")
	}
}

func mustRat(t *testing.T, s string) any {
	t.Helper()
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		t.Fatal(s)
	}
	return r
}

func TestTranscodeMatchesRenderAndReadsKeyFields(t *testing.T) {
	e, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		v := singleObjectEvent(t, i, []string{"US", "DE", ""}[i%3])
		native, schema, err := e.Decode(context.Background(), "t", v)
		if err != nil {
			t.Fatal(err)
		}
		want, err := RenderJSON(nil, schema, native)
		if err != nil {
			t.Fatal(err)
		}
		// Map keys are sorted by render, written in binary order by the
		// transcoder: compare as values.
		got, kf, err := e.DecodeJSONFast(context.Background(), "t", v)
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		if json.Unmarshal(got, &a) != nil || json.Unmarshal(want, &b) != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("event %d:\n%s\n%s", i, got, want)
		}
		if want := eventKeys(i); kf.EventID != want.EventID || kf.UserID != want.UserID || !kf.OccurredAt.Equal(want.OccurredAt) {
			t.Fatalf("event %d key fields %+v", i, kf)
		}
	}
}

func TestTranscodeRejectsBadBodies(t *testing.T) {
	e, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	body, schema, err := e.Body(context.Background(), "t", singleObjectEvent(t, 1, "US"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := parseSchema(schema)
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(body) {
		if _, _, err := transcodeEvent(nil, n, body[:i]); err == nil {
			t.Fatalf("a body cut at %d of %d bytes transcoded", i, len(body))
		}
	}
	if _, _, err := transcodeEvent(nil, n, append(append([]byte(nil), body...), 0)); err == nil {
		t.Fatal("trailing bytes accepted")
	}
	// Flipped bytes must give an error or valid JSON, never a panic.
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := append([]byte(nil), body...)
		for range 1 + rnd.IntN(3) {
			b[rnd.IntN(len(b))] = byte(rnd.IntN(256))
		}
		if doc, _, err := transcodeEvent(nil, n, b); err == nil && !json.Valid(doc) {
			t.Fatalf("invalid JSON from a corrupted body: %s", doc)
		}
	}
}

// Whatever the whole-record check accepts, the transcoder reads, and as
// goavro does: varints of up to 5 bytes for an int and 10 for a long, the
// bits past the type's width dropped (Apache Avro for Java and goavro
// read them so). Found by FuzzDifferential: an event whose occurred_at was
// a 10-byte varint with more than 64 bits was routed and its sink could
// not decode it (sink_undecodable), nor read its occurred_at.
func TestTranscodeReadsVarintsAsTheCheck(t *testing.T) {
	s := `{"type":"record","name":"T","fields":[
		{"name":"event_id","type":"string"},
		{"name":"occurred_at","type":{"type":"long","logicalType":"timestamp-millis"}},
		{"name":"n","type":"int"},
		{"name":"k","type":{"type":"enum","name":"K","symbols":["A","B"]}},
		{"name":"country","type":"string"},{"name":"user_id","type":"string"}]}`
	p := filepath.Join(t.TempDir(), "t.avsc")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := NewExtractor(ExtractorConfig{DefaultFraming: FramingRaw, RawSchemas: map[string]string{DefaultTopic: p}})
	if err != nil {
		t.Fatal(err)
	}
	body := func(at, n, k []byte) []byte {
		b := []byte{0x04, 'e', '1'}
		b = append(append(append(b, at...), n...), k...)
		return append(b, 0x04, 'U', 'S', 0x02, 'u')
	}
	long10 := []byte{0xe2, 0xea, 0xbf, 0xbf, 0xbf, 0xbf, 0xbf, 0xbf, 0x99, 0x30} // more than 64 bits
	cases := map[string][]byte{
		"long of 10 bytes past 64 bits": body(long10, []byte{0x02}, []byte{0x02}),
		"int of 5 bytes past 32 bits":   body([]byte{0x02}, []byte{0xff, 0xff, 0xff, 0xff, 0x7f}, []byte{0x02}),
		"int of 5 bytes, 2^31-1":        body([]byte{0x02}, []byte{0xfe, 0xff, 0xff, 0xff, 0x0f}, []byte{0x00}),
		"non-minimal long and int":      body([]byte{0x82, 0x80, 0x80, 0x00}, []byte{0x84, 0x80, 0x00}, []byte{0x82, 0x00}),
	}
	for name, b := range cases {
		if _, err := e.Extract(context.Background(), "t", b); err != nil {
			t.Fatalf("%s: Extract: %v", name, err)
		}
		native, schema, err := e.Decode(context.Background(), "t", b)
		if err != nil {
			t.Fatalf("%s: Decode: %v", name, err)
		}
		want, err := RenderJSON(nil, schema, native)
		if err != nil {
			t.Fatal(err)
		}
		got, keys, err := e.DecodeJSONFast(context.Background(), "t", b)
		if err != nil {
			t.Errorf("%s: Extract and Decode accept it, DecodeJSONFast: %v", name, err)
			continue
		}
		if string(got) != string(want) {
			t.Errorf("%s: DecodeJSONFast %s, goavro's decoding %s", name, got, want)
		}
		if at := native.(map[string]any)["occurred_at"].(time.Time); !keys.OccurredAt.Equal(at) {
			t.Errorf("%s: occurred_at %v, goavro %v", name, keys.OccurredAt, at)
		}
	}
	// Longer ones are refused by all: over-long (corrupt) or cut (truncated).
	for name, c := range map[string]struct {
		b    []byte
		want error
	}{
		"int of 6 bytes":   {body([]byte{0x02}, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, []byte{0x00}), ErrCorrupt},
		"long of 11 bytes": {body(append(bytes.Repeat([]byte{0x80}, 10), 0x00), []byte{0x02}, []byte{0x00}), ErrCorrupt},
		"enum of 6 bytes":  {body([]byte{0x02}, []byte{0x02}, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x00}), ErrCorrupt},
		"cut int":          {[]byte{0x04, 'e', '1', 0x02, 0x80, 0x80}, ErrTruncated},
	} {
		_, xerr := e.Extract(context.Background(), "t", c.b)
		_, _, derr := e.DecodeJSONFast(context.Background(), "t", c.b)
		if !errors.Is(xerr, c.want) || !errors.Is(derr, c.want) {
			t.Errorf("%s: Extract %v, DecodeJSONFast %v; want both %v", name, xerr, derr, c.want)
		}
	}
}
