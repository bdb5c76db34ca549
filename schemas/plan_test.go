package schemas

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/linkedin/goavro/v2"
)

// unionsSchema exercises the flattened unions of the skip programs (see
// prog): unions whose branches end in a fixed or a varint just before a
// fixed or varint field (the merge barrier), a record ending in a union
// that is inlined before a fixed field, the same record inlined again inside
// a union, unions as array items and map values, recursion through a union,
// and captures through unions of three branches.
const unionsSchema = `{"type":"record","name":"Unions","namespace":"t","fields":[
	{"name":"a","type":["null","double"]},
	{"name":"b","type":"double"},
	{"name":"c","type":["int","long","null"]},
	{"name":"d","type":"long"},
	{"name":"r","type":{"type":"record","name":"R","fields":[
		{"name":"y","type":["null","long"]},
		{"name":"x","type":["null",{"type":"fixed","name":"F","size":3},"float"]}]}},
	{"name":"g","type":{"type":"fixed","name":"G","size":2}},
	{"name":"rr","type":["null","R"]},
	{"name":"h","type":"float"},
	{"name":"items","type":{"type":"array","items":["null","double"]}},
	{"name":"recs","type":{"type":"array","items":["R","null","string"]}},
	{"name":"m","type":{"type":"map","values":["null","R"]}},
	{"name":"list","type":["null",{"type":"record","name":"L","fields":[
		{"name":"v","type":["null","int"]},
		{"name":"next","type":["null","L"]}]}]},
	{"name":"country","type":["null","string",{"type":"enum","name":"E","symbols":["US","DE"]}]},
	{"name":"user_id","type":["string","null"]},
	{"name":"tail","type":"double"}]}`

// rawExtractor returns an extractor that reads every topic as raw Avro of
// schema, with the given field paths.
func rawExtractor(t testing.TB, schema, country, userID string) *Extractor {
	t.Helper()
	p := filepath.Join(t.TempDir(), "writer.avsc")
	if err := os.WriteFile(p, []byte(schema), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := NewExtractor(ExtractorConfig{DefaultFraming: FramingRaw, CountryField: country, UserIDField: userID,
		RawSchemas: map[string]string{DefaultTopic: p}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// unionsCase is the fuzz case of unionsSchema (see fuzzCases).
func unionsCase(t testing.TB) fuzzCase {
	codec, err := goavro.NewCodec(unionsSchema)
	if err != nil {
		t.Fatal(err)
	}
	return fuzzCase{"unions", codec, rawExtractor(t, unionsSchema, "country", "user_id"),
		func(m map[string]any) (any, bool) { return unwrap(m["country"]) },
		func(m map[string]any) (any, bool) { return unwrap(m["user_id"]) }}
}

// genValue appends a random valid encoding of a value of type t. Unions
// pick their branches at random; below depth 8 they pick a branch without
// recursion when there is one, and arrays and maps are left empty, so that
// values stay small.
func genValue(r *rand.Rand, b []byte, t *node, depth int) []byte {
	switch t.kind {
	case kBoolean:
		b = append(b, byte(r.IntN(2)))
	case kInt:
		b = appendVarint(b, uint64(r.IntN(1<<r.IntN(32)))) // zig-zag: an int32
	case kLong:
		b = appendVarint(b, uint64(r.IntN(1<<r.IntN(40))))
	case kFloat, kDouble, kFixed:
		n := map[kind]int{kFloat: 4, kDouble: 8, kFixed: t.size}[t.kind]
		for range n {
			b = append(b, byte(r.IntN(256)))
		}
	case kBytes, kString:
		n := r.IntN(4)
		b = appendVarint(b, uint64(2*n))
		for range n {
			b = append(b, byte('a'+r.IntN(26)))
		}
	case kEnum:
		b = appendVarint(b, uint64(2*r.IntN(len(t.symbols))))
	case kArray, kMap:
		n := 0
		if depth < 8 {
			n = r.IntN(4)
		}
		if n > 0 {
			b = appendVarint(b, uint64(2*n))
			first := r.IntN(7)
			for j := range n {
				if t.kind == kMap {
					b = append(b, 4, 'k', byte('0'+first+j)) // keys differ, as they must
					b = genValue(r, b, t.values, depth+1)
				} else {
					b = genValue(r, b, t.items, depth+1)
				}
			}
		}
		b = append(b, 0)
	case kUnion:
		i := r.IntN(len(t.types))
		if depth >= 8 {
			for j, x := range t.types {
				if x.kind != kRecord && x.kind != kArray && x.kind != kMap {
					i = j
				}
			}
		}
		b = appendVarint(b, uint64(2*i))
		b = genValue(r, b, t.types[i], depth+1)
	case kRecord:
		for _, f := range t.fields {
			b = genValue(r, b, f.typ, depth+1)
		}
	}
	return b
}

// Random values of unionsSchema, and mutations of them, read the same as
// goavro reads them (Extract and Decode, see crossCheck).
func TestUnionsAgainstGoavro(t *testing.T) {
	c := unionsCase(t)
	root, err := parseSchema(unionsSchema)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	countries := 0
	for range 2000 {
		body := genValue(r, nil, root, 0)
		crossCheck(t, c, body)
		if f, err := c.e.Extract(context.Background(), "raw", body); err == nil && f.HasCountry {
			countries++
		}
		for range 3 {
			m := append([]byte(nil), body...)
			switch j := r.IntN(len(m)); r.IntN(3) {
			case 0:
				m[j] = byte(r.IntN(256))
			case 1:
				m = m[:j]
			default:
				m = append(m[:j], m[j+1:]...)
			}
			crossCheck(t, c, m)
		}
	}
	if countries < 500 {
		t.Fatalf("only %d of 2000 values have a country", countries)
	}
}

// progString renders a program for tests: steps separated by spaces, "@"
// marking jump targets, "?i" a guarded step whose branch i has no code.
func progString(p *prog) string {
	var parts []string
	for _, o := range p.ops {
		var s string
		switch o.code {
		case opFixed:
			s = fmt.Sprintf("fixed%d", o.n)
		case opVarint:
			s = fmt.Sprintf("varint%d", o.max)
			if o.n > 1 {
				s += fmt.Sprintf("x%d", o.n)
			}
		case opBool:
			s = "bool"
		case opEnum:
			s = fmt.Sprintf("enum%d", o.n)
		case opBytes:
			s = "bytes"
		case opArray:
			s = "array(" + progString(o.sub) + ")"
		case opMap:
			s = "map(" + progString(o.sub) + ")"
		case opUnion:
			s = fmt.Sprintf("union%v", o.jumps)
		case opCall:
			s = "call"
		case opCapString:
			s = "cap-string"
		case opCapEnum:
			s = "cap-enum"
		case opJump:
			s = fmt.Sprintf("jump+%d", o.n)
		}
		if o.guard != 0 {
			s = fmt.Sprintf("?%d:%s", o.guard-1, s)
		}
		if o.target {
			s = "@" + s
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func mustParse(t *testing.T, schema string) *node {
	t.Helper()
	root, err := parseSchema(schema)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// The layout of flattened unions, and the steps that must not be merged
// into a branch's last step.
func TestUnionLayout(t *testing.T) {
	cases := []struct{ name, fields, want string }{
		{"nullable field: one guarded step, not merged with the next",
			`{"name":"a","type":["null","double"]},{"name":"b","type":"double"}`,
			"?0:fixed8 @fixed8"},
		{"null last",
			`{"name":"a","type":["long","null"]},{"name":"b","type":"long"}`,
			"?1:varint10 @varint10"},
		{"the union's end is not merged into the last branch",
			`{"name":"c","type":["int","long","null"]},{"name":"d","type":"long"}`,
			"union[1 3 4] @varint5 jump+2 @varint10 @varint10"},
		{"nor into a branch that jumps",
			`{"name":"c","type":["double","null","float"]},{"name":"d","type":"double"}`,
			"union[1 4 3] @fixed8 jump+2 @fixed4 @fixed8"},
		{"a record ending in a union, inlined, then a fixed",
			`{"name":"r","type":{"type":"record","name":"R","fields":[
				{"name":"y","type":["null","long"]},
				{"name":"x","type":["null",{"type":"fixed","name":"F","size":3},"float"]}]}},
			{"name":"g","type":{"type":"fixed","name":"G","size":2}},
			{"name":"rr","type":["null","R"]},{"name":"h","type":"float"}`,
			"?0:varint10 @union[4 1 3] @fixed3 jump+2 @fixed4 @fixed2 " +
				"union[6 1] @?0:varint10 @union[4 1 3] @fixed3 jump+2 @fixed4 @fixed4"},
		{"union items: not of constant size",
			`{"name":"items","type":{"type":"array","items":["null","double"]}}`,
			"array(?0:fixed8)"},
		{"a branch of several steps is not guarded",
			`{"name":"p","type":["null",{"type":"record","name":"P","fields":[{"name":"a","type":"int"},{"name":"b","type":"string"}]}]}`,
			"union[3 1] @varint5 bytes"},
		{"a branch that is a one-field record keeps its own field name",
			`{"name":"p","type":["null",{"type":"record","name":"P","fields":[{"name":"a","type":"int"}]}]}`,
			"union[2 1] @varint5"},
		{"recursion: a call",
			`{"name":"n","type":{"type":"record","name":"N","fields":[{"name":"next","type":["null","N"]}]}}`,
			"union[2 1] @call"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := mustParse(t, `{"type":"record","name":"T","fields":[`+c.fields+`]}`)
			if got := progString(compileWalk(root)); got != c.want {
				t.Fatalf("walk:\n got %s\nwant %s", got, c.want)
			}
		})
	}
	root := mustParse(t, `{"type":"record","name":"T","fields":[{"name":"items","type":{"type":"array","items":["null","double"]}}]}`)
	if size := compileWalk(root).ops[0].sub.size; size != -1 {
		t.Fatalf("size of a union of null and double = %d, want -1 (varies)", size)
	}
}

// The canonical event's plan is flat: each of its nullable fields is one
// guarded step, and nothing is called or jumped over. It walks the whole
// record, the fields after the country included.
func TestCanonicalPlanIsFlat(t *testing.T) {
	e, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	w := e.byName["io.residency.events.UserEvent"][0]
	guarded := 0
	for _, o := range w.plan.ops {
		switch {
		case o.code == opUnion || o.code == opJump || o.code == opCall:
			t.Fatalf("plan %s has a %d step", progString(w.plan), o.code)
		case o.guard != 0:
			guarded++
		}
	}
	if guarded != 16 {
		t.Fatalf("%d guarded steps, want 16 (the nullable fields): %s", guarded, progString(w.plan))
	}
}

// The depth limit counts each union as a level of nesting, as it did when
// union branches were programs of their own (flattening does not raise it).
func TestDepthLimitCountsUnions(t *testing.T) {
	cases := []struct {
		name, schema string
		link         []byte // one level of recursion, repeated
		end          []byte // the end of the chain
		deepest      int    // the most links read
	}{
		// Each link: a union (1 level) and a call (1 level).
		{"record", `{"type":"record","name":"N","fields":[{"name":"next","type":["null","N"]}]}`,
			[]byte{2}, []byte{0}, 63},
		// Each link: two unions, one in the inlined W, and a call.
		{"record through another", `{"type":"record","name":"N","fields":[
			{"name":"v","type":["null","long"]},
			{"name":"next","type":["null",{"type":"record","name":"W","fields":[
				{"name":"n","type":["null","N"]},{"name":"k","type":"int"}]}]}]}`,
			[]byte{0, 2, 2}, []byte{0, 0}, 42},
		// Each link: an array (1 level) of unions (1 level) and a call.
		{"array", `{"type":"record","name":"N","fields":[{"name":"kids","type":{"type":"array","items":["null","N"]}}]}`,
			[]byte{2, 2}, []byte{0}, 42},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			walk := compileWalk(mustParse(t, c.schema))
			chain := func(n int) []byte {
				var b []byte
				for range n {
					b = append(b, c.link...)
				}
				b = append(b, c.end...)
				if c.name == "record through another" {
					for range n {
						b = append(b, 0) // k of each W
					}
				}
				if c.name == "array" {
					for range n {
						b = append(b, 0) // end of each array
					}
				}
				return b
			}
			ok := chain(c.deepest)
			if end, err := walk.run(ok, 0, nil, 0); err != nil || end != len(ok) {
				t.Fatalf("%d links: end %d of %d, %v", c.deepest, end, len(ok), err)
			}
			_, err := walk.run(chain(c.deepest+1), 0, nil, 0)
			if !errors.Is(err, errTooDeep) {
				t.Fatalf("%d links: %v, want errTooDeep", c.deepest+1, err)
			}
		})
	}
}

// Errors within flattened unions and guarded steps name the field and the
// offset where the failing value starts, in the plan and in the walk.
func TestUnionErrorPositions(t *testing.T) {
	const s = `{"type":"record","name":"P","fields":[
		{"name":"s","type":["null","string"]},
		{"name":"r","type":["null",{"type":"record","name":"Q","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]},"int"]},
		{"name":"country","type":["null","string"]},
		{"name":"user_id","type":"string"}]}`
	e := rawExtractor(t, s, "country", "user_id")
	w := e.raw[DefaultTopic]
	cases := []struct {
		name     string
		body     []byte
		want     error
		where    string
		at       int
		planOnly bool // the walk does not check UTF-8
	}{
		{"guarded union index", []byte{6}, errUnionRange, "s", 0, false},
		{"guarded union index, long varint", []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80}, errLongVarint, "s", 0, false},
		{"guarded step", []byte{2, 1}, errNegativeLen, "s", 1, false},
		{"guarded step, truncated", []byte{2, 8, 'a'}, errShort, "s", 1, false},
		{"union index", []byte{0, 7}, errUnionRange, "r", 1, false},
		{"second step of a branch", []byte{0, 2, 4, 6, 'x'}, errShort, "r.b", 3, false},
		{"last branch", []byte{0, 4, 0xff, 0xff, 0xff, 0xff, 0xff}, errLongVarint, "r", 2, false},
		{"captured string", []byte{0, 4, 0, 2, 2, 0xff}, errBadUTF8, "country", 4, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			check := func(what string, err error, where string) {
				t.Helper()
				var re *runError
				if !errors.Is(err, c.want) || !errors.As(err, &re) || re.where != where || re.at != c.at {
					t.Fatalf("%s: %v; want %v at %s, byte %d", what, err, c.want, where, c.at)
				}
			}
			_, err := e.Extract(context.Background(), "raw", c.body)
			check("Extract", err, c.where)
			if !c.planOnly {
				// The walk's field paths start at the record's name.
				check("walk", w.check(c.body), "P."+c.where)
			}
		})
	}
	// A trailing byte after a whole record is refused by both.
	body := []byte{0, 4, 0, 0, 2, 'u', 9}
	if _, err := e.Extract(context.Background(), "raw", body); !errors.Is(err, ErrTrailingBytes) {
		t.Fatalf("Extract: %v, want ErrTrailingBytes for a trailing byte", err)
	}
	if err := w.check(body); !errors.Is(err, ErrTrailingBytes) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("walk: %v, want ErrTrailingBytes (a kind of ErrCorrupt) for a trailing byte", err)
	}
}
