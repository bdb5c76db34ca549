package schemas

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/linkedin/goavro/v2"
)

// wholeCases returns valid events of several writer schemas, each with the
// extractor that reads it as raw Avro: canonical events (country set, null,
// empty; tags and properties full and empty), the nested schema, and random
// values of the unions schema.
func wholeCases(t *testing.T) []struct {
	name string
	e    *Extractor
	body []byte
} {
	t.Helper()
	type wc = struct {
		name string
		e    *Extractor
		body []byte
	}
	canon := rawExtractor(t, UserEventSchema, "country", "user_id")
	nested := rawExtractor(t, nestedSchema, "geo.cc", "who.id")
	unions := rawExtractor(t, unionsSchema, "country", "user_id")
	var out []wc
	for i, c := range []any{"US", nil, "", "DE"} {
		ev := sampleEvent(i, c)
		if i == 3 {
			ev["tags"], ev["properties"], ev["client_ip_hash"] = []any{}, map[string]any{}, nil
		}
		out = append(out, wc{"canonical", canon, encode(t, UserEventSchema, ev)})
	}
	for i := range 4 {
		out = append(out, wc{"nested", nested, encode(t, nestedSchema, nestedSample(i))})
	}
	root, err := parseSchema(unionsSchema)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 6 {
		out = append(out, wc{"unions", unions, genValue(r, nil, root, 0)})
	}
	return out
}

// Every prefix of a valid event is refused as truncated (an empty one as
// empty_value), wherever it is cut: before, inside or after the country.
// The router used to route a value cut short after the fields it reads.
func TestExtractEveryPrefixIsTruncated(t *testing.T) {
	ctx := context.Background()
	for _, c := range wholeCases(t) {
		if _, err := c.e.Extract(ctx, "raw", c.body); err != nil {
			t.Fatalf("%s: the whole event: %v", c.name, err)
		}
		for n := range len(c.body) {
			_, err := c.e.Extract(ctx, "raw", c.body[:n])
			want := "truncated"
			if n == 0 {
				want = "empty_value"
			}
			if Reason(err) != want || err == nil {
				t.Fatalf("%s: prefix of %d of %d bytes: %v (%s), want %s", c.name, n, len(c.body), err, Reason(err), want)
			}
		}
	}
}

// Every framing refuses the prefixes of its bodies too.
func TestExtractEveryPrefixIsTruncatedInEveryFraming(t *testing.T) {
	ctx := context.Background()
	body := encode(t, UserEventSchema, sampleEvent(4, "FR"))
	e, values := framed(t, UserEventSchema, body)
	for f, v := range values {
		for n := 1; n < len(v); n++ {
			_, err := e.Extract(ctx, "t-"+string(f), v[:n])
			if !errors.Is(err, ErrTruncated) {
				t.Fatalf("%s: prefix of %d bytes: %v, want ErrTruncated", f, n, err)
			}
		}
	}
}

// Bytes after the end of the record, of any length and content, are
// refused as trailing_bytes, and so are they by Decode.
func TestExtractTrailingBytes(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 6))
	for _, c := range wholeCases(t) {
		for n := 1; n <= 64; n++ {
			tail := make([]byte, n)
			if n%2 == 0 {
				for i := range tail {
					tail[i] = byte(r.Uint32())
				}
			}
			v := append(append([]byte(nil), c.body...), tail...)
			_, err := c.e.Extract(ctx, "raw", v)
			if !errors.Is(err, ErrTrailingBytes) || Reason(err) != "trailing_bytes" {
				t.Fatalf("%s: %d trailing bytes %x: %v (%s), want trailing_bytes", c.name, n, tail, err, Reason(err))
			}
			if _, _, err := c.e.Decode(ctx, "raw", v); !errors.Is(err, ErrTrailingBytes) {
				t.Fatalf("%s: Decode with %d trailing bytes: %v", c.name, n, err)
			}
		}
	}
}

// afterCountry returns the offset just after the country "US" of a
// canonical event body (its union index, length and two letters).
func afterCountry(t *testing.T, body []byte) int {
	t.Helper()
	i := bytes.Index(body, []byte{0x02, 0x04, 'U', 'S'})
	if i < 0 || bytes.Contains(body[i+1:], []byte{0x02, 0x04, 'U', 'S'}) {
		t.Fatalf("country US not found once in %x", body)
	}
	return i + 4
}

// The damage the router used to route because it stopped reading after the
// country: each is refused with its reason.
func TestExtractDamageAfterTheCountry(t *testing.T) {
	ctx := context.Background()
	e := rawExtractor(t, UserEventSchema, "country", "user_id")
	body := encode(t, UserEventSchema, sampleEvent(9, "US"))
	at := afterCountry(t, body)
	ev := sampleEvent(9, "US")
	ev["tags"], ev["properties"] = []any{}, map[string]any{}
	plain := encode(t, UserEventSchema, ev) // tags, properties empty: the union of client_ip_hash follows them
	pat := afterCountry(t, plain)
	if plain[pat] != 0 || plain[pat+1] != 0 || plain[pat+2] != 0x02 {
		t.Fatalf("unexpected layout after the country: %x", plain[pat:])
	}
	cases := []struct {
		name   string
		value  []byte
		reason string
	}{
		{"cut after the country", body[:at], "truncated"},
		{"cut inside tags", body[:at+3], "truncated"},
		{"array count past the end", append(append(append([]byte(nil), body[:at]...), 0xd0, 0x0f), body[at+1:]...), "truncated"},
		{"array count of fixed-size items past the end", nil, "truncated"}, // filled below
		{"bad union index after the country", append(append(append([]byte(nil), plain[:pat+2]...), 0x04), plain[pat+3:]...), "corrupt"},
		{"over-long varint after the country", append(append(append([]byte(nil), plain[:pat+2]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), plain[pat+3:]...), "corrupt"},
		{"one trailing byte", append(append([]byte(nil), body...), 0), "trailing_bytes"},
	}
	// An array of longs whose count claims more items than bytes are left.
	s := `{"type":"record","name":"T","fields":[{"name":"country","type":"string"},{"name":"user_id","type":"string"},{"name":"f","type":{"type":"array","items":{"type":"fixed","name":"F","size":4}}}]}`
	fe := rawExtractor(t, s, "country", "user_id")
	cases[3].value = []byte{0x04, 'U', 'S', 0x02, 'u', 0x06, 1, 2, 3, 4, 5, 6, 7, 8, 0x00}
	for _, c := range cases {
		ex := e
		if c.name == cases[3].name {
			ex = fe
		}
		f, err := ex.Extract(ctx, "raw", c.value)
		if err == nil || Reason(err) != c.reason {
			t.Errorf("%s: %+v, %v (%s), want %s", c.name, f, err, Reason(err), c.reason)
		}
		if err != nil && !f.Writer.IsZero() && f.Writer.Framing != FramingRaw {
			t.Errorf("%s: writer %v", c.name, f.Writer)
		}
	}
}

// A dead-lettered event's Fields still say how it was read, so that its
// dead-letter record can carry the residency-schema header.
func TestExtractErrorKeepsTheWriter(t *testing.T) {
	ctx := context.Background()
	body := encode(t, UserEventSchema, sampleEvent(9, "US"))
	e, values := framed(t, UserEventSchema, body)
	fp := mustFingerprint(t, UserEventSchema)
	for f, v := range values {
		got, err := e.Extract(ctx, "t-"+string(f), v[:len(v)-1])
		if Reason(err) != "truncated" || got.Writer.Framing != f {
			t.Fatalf("%s: %+v, %v", f, got, err)
		}
		if f != FramingConfluent && got.Writer.Fingerprint != fp || f == FramingConfluent && got.Writer.ID == 0 {
			t.Fatalf("%s: writer %v", f, got.Writer)
		}
	}
	// Before the framing is read, nothing is known: zero. Once it is, the
	// schema key the value carries, even when it is unknown.
	for _, c := range []struct {
		topic string
		value []byte
		want  WriterRef
	}{
		{"t-single-object", nil, WriterRef{}},
		{"t-single-object", append([]byte{0xC3, 0x02}, values[FramingSingleObject][2:]...), WriterRef{}},
		{"t-confluent", values[FramingConfluent][:3], WriterRef{}},
		{"t-single-object", AppendSingleObject(nil, 0x0123456789abcdef, body), WriterRef{Framing: FramingSingleObject, Fingerprint: 0x0123456789abcdef}},
		{"t-confluent", AppendConfluent(nil, 999999, body), WriterRef{Framing: FramingConfluent, ID: 999999}},
	} {
		got, err := e.Extract(ctx, c.topic, c.value)
		if err == nil || got.Writer != c.want {
			t.Fatalf("%s %x: %+v, %v; want an error and writer %v", c.topic, c.value, got, err, c.want)
		}
	}
}

// A map with a duplicate key is not a record goavro (so a sink) can read:
// Extract, Decode and DecodeJSONFast refuse it as corrupt, whether the
// duplicate is among the first keys or far down a large map; a large map
// without duplicates is read.
func TestDuplicateMapKeysRefused(t *testing.T) {
	ctx := context.Background()
	fp := mustFingerprint(t, UserEventSchema)
	e, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		keys []string
		dup  bool
	}{
		{"two keys, distinct", []string{"a", "b"}, false},
		{"two keys, equal", []string{"a", "a"}, true},
		{"40 keys, distinct", nil, false},
		{"40 keys, the last repeats the 20th", nil, true},
		{"40 keys, the 9th repeats the 1st", nil, true},
	} {
		keys := c.keys
		if keys == nil {
			for i := range 40 {
				keys = append(keys, "key-"+string(rune('A'+i)))
			}
			switch {
			case strings.Contains(c.name, "last"):
				keys[39] = keys[19]
			case strings.Contains(c.name, "9th"):
				keys[8] = keys[0]
			}
		}
		// properties is map<string>: write its block by hand, since a Go map
		// cannot hold a duplicate.
		ev := sampleEvent(1, "US")
		ev["properties"] = map[string]any{}
		body := encode(t, UserEventSchema, ev)
		at := afterCountry(t, body)
		if body[at] != 0x04 { // tags: two items
			t.Fatalf("layout %x", body[at:])
		}
		tagsEnd := at + 1 + 4 + 8 + 1 // "fyp", "cooking", end of tags
		var block []byte
		block = appendVarint(block, uint64(2*len(keys)))
		for _, k := range keys {
			block = appendVarint(block, uint64(2*len(k)))
			block = append(block, k...)
			block = append(block, 0x02, 'v')
		}
		v := append(append(append([]byte(nil), body[:tagsEnd]...), block...), body[tagsEnd:]...)
		value := AppendSingleObject(nil, fp, v)
		_, gerr := goavroDecode(t, v)
		_, xerr := e.Extract(ctx, "t", value)
		_, _, derr := e.Decode(ctx, "t", value)
		_, _, ferr := e.DecodeJSONFast(ctx, "t", value)
		if !c.dup {
			if gerr != nil || xerr != nil || derr != nil || ferr != nil {
				t.Fatalf("%s: goavro %v, Extract %v, Decode %v, DecodeJSONFast %v", c.name, gerr, xerr, derr, ferr)
			}
			continue
		}
		if gerr == nil {
			t.Fatalf("%s: goavro reads a duplicate key", c.name)
		}
		for what, err := range map[string]error{"Extract": xerr, "Decode": derr, "DecodeJSONFast": ferr} {
			if !errors.Is(err, ErrCorrupt) || Reason(err) != "corrupt" {
				t.Errorf("%s: %s: %v, want corrupt", c.name, what, err)
			}
		}
	}
}

// goavroDecode decodes a canonical event body with goavro.
func goavroDecode(t *testing.T, body []byte) (any, error) {
	t.Helper()
	c, err := goavro.NewCodec(UserEventSchema)
	if err != nil {
		t.Fatal(err)
	}
	native, rest, err := c.NativeFromBinary(body)
	if err == nil && len(rest) > 0 {
		t.Fatalf("%d bytes left", len(rest))
	}
	return native, err
}
