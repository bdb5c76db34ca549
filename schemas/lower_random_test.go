package schemas

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// The lowered runner against the reference runner (runRef) on random
// writer schemas, not only the three fixed ones of
// TestLoweredRunMatchesReference: nullable fields of every kind with the
// null first or last (guarded steps of both guards, fused into runs of
// every step kind: bytes, int and long varints, fixed of several sizes,
// captured strings), guarded booleans and enums (the general code), unions
// of three branches, named records reused inside unions (inlined with
// their union levels shifted, so that fused runs have levels above 0),
// recursion, arrays and maps of strings (the fast paths) and of anything
// else, and captures of strings and enums, nullable or not, anywhere in
// the record.

// schemaGen writes a random Avro schema.
type schemaGen struct {
	r      *rand.Rand
	n      int      // names used
	done   []string // named records complete: referable anywhere
	open   []string // named records being defined: referable in a nullable union or an array only
	named  []string // enums and fixed types defined
	fields int      // fields in all
}

func (g *schemaGen) name(prefix string) string {
	g.n++
	return fmt.Sprint(prefix, g.n)
}

// simple returns a type of no union: a primitive, an enum or a fixed, new
// or named before.
func (g *schemaGen) simple() string {
	switch x := g.r.IntN(12); {
	case x < 7:
		return fmt.Sprintf("%q", []string{"boolean", "int", "long", "float", "double", "bytes", "string"}[x])
	case x < 9 && len(g.named) > 0:
		return fmt.Sprintf("%q", g.named[g.r.IntN(len(g.named))])
	case x < 10:
		name := g.name("E")
		var syms []string
		for i := range 1 + g.r.IntN(70) { // past 63: two-byte indexes
			syms = append(syms, fmt.Sprintf("%q", fmt.Sprint("S", i)))
		}
		g.named = append(g.named, name)
		return fmt.Sprintf(`{"type":"enum","name":%q,"symbols":[%s]}`, name, strings.Join(syms, ","))
	default:
		name := g.name("F")
		g.named = append(g.named, name)
		return fmt.Sprintf(`{"type":"fixed","name":%q,"size":%d}`, name, 1+g.r.IntN(9))
	}
}

// typ returns a random type; depth bounds the nesting of new records.
func (g *schemaGen) typ(depth int) string {
	switch x := g.r.IntN(20); {
	case x < 5:
		return g.simple()
	case x < 11: // nullable, null first or last
		var t string
		switch {
		case g.r.IntN(6) == 0 && len(g.open) > 0:
			t = fmt.Sprintf("%q", g.open[g.r.IntN(len(g.open))]) // recursion
		case g.r.IntN(6) == 0 && len(g.done) > 0:
			t = fmt.Sprintf("%q", g.done[g.r.IntN(len(g.done))])
		default:
			t = g.simple()
		}
		if g.r.IntN(2) == 0 {
			return `["null",` + t + `]`
		}
		return `[` + t + `,"null"]`
	case x < 12: // three branches
		ts := []string{`"null"`, `"int"`, `"string"`, `"double"`, `"long"`, `"bytes"`}
		g.r.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
		return `[` + strings.Join(ts[:3], ",") + `]`
	case x < 14:
		items := `"string"`
		if g.r.IntN(2) == 0 {
			items = g.itemType(depth)
		}
		return `{"type":"array","items":` + items + `}`
	case x < 16:
		values := `"string"`
		if g.r.IntN(2) == 0 {
			values = g.itemType(depth)
		}
		return `{"type":"map","values":` + values + `}`
	case x < 17 && len(g.done) > 0:
		return fmt.Sprintf("%q", g.done[g.r.IntN(len(g.done))])
	default:
		if depth <= 0 {
			return g.simple()
		}
		return g.record(depth-1, nil)
	}
}

// itemType is an array item or map value type: anything, or a record
// being defined (recursion).
func (g *schemaGen) itemType(depth int) string {
	if g.r.IntN(5) == 0 && len(g.open) > 0 {
		return fmt.Sprintf("%q", g.open[g.r.IntN(len(g.open))])
	}
	return g.typ(depth)
}

// record returns a new record type of random fields, with extra fields
// (name and type) at random places among them.
func (g *schemaGen) record(depth int, extra [][2]string) string {
	name := g.name("R")
	g.open = append(g.open, name)
	var fields []string
	for len(fields) < 1+g.r.IntN(8) {
		if g.r.IntN(3) == 0 {
			// A run of like nullable fields (fused into one step).
			t := fmt.Sprintf("%q", []string{"int", "long", "float", "double", "bytes", "string"}[g.r.IntN(6)])
			if g.r.IntN(4) == 0 && len(g.named) > 0 {
				t = fmt.Sprintf("%q", g.named[g.r.IntN(len(g.named))])
			}
			u := `["null",` + t + `]`
			if g.r.IntN(2) == 0 {
				u = `[` + t + `,"null"]`
			}
			for range 2 + g.r.IntN(4) {
				fields = append(fields, fmt.Sprintf(`{"name":"f%d","type":%s}`, len(fields), u))
			}
			continue
		}
		fields = append(fields, fmt.Sprintf(`{"name":"f%d","type":%s}`, len(fields), g.typ(depth)))
	}
	for _, e := range extra {
		j := g.r.IntN(len(fields) + 1)
		fields = append(fields[:j], append([]string{fmt.Sprintf(`{"name":%q,"type":%s}`, e[0], e[1])}, fields[j:]...)...)
	}
	g.fields += len(fields)
	g.open = g.open[:len(g.open)-1]
	g.done = append(g.done, name)
	return fmt.Sprintf(`{"type":"record","name":%q,"fields":[%s]}`, name, strings.Join(fields, ","))
}

// captureType returns a type the plan can capture: a string or an enum,
// nullable (either way round) or not.
func (g *schemaGen) captureType() string {
	t := `"string"`
	if g.r.IntN(3) == 0 {
		name := g.name("C")
		t = fmt.Sprintf(`{"type":"enum","name":%q,"symbols":["US","DE","IN"]}`, name)
	}
	switch g.r.IntN(4) {
	case 0:
		return `["null",` + t + `]`
	case 1:
		return `[` + t + `,"null"]`
	case 2:
		return `["null","string",{"type":"enum","name":"` + g.name("U") + `","symbols":["A"]}]`
	}
	return t
}

// randomPlan draws a random writer schema whose country and user_id are
// of random capture types, and returns it parsed with its compiled plan
// for those two fields; it fails the test (naming the schema as name) if
// either step fails.
func randomPlan(t *testing.T, r *rand.Rand, name string) (*node, *prog) {
	t.Helper()
	g := &schemaGen{r: r}
	text := g.record(2, [][2]string{{"country", g.captureType()}, {"user_id", g.captureType()}})
	root, err := parseSchema(text)
	if err != nil {
		t.Fatalf("%s %s: %v", name, text, err)
	}
	paths := []fieldPath{{segs: []string{"country"}, slot: slotCountry}, {segs: []string{"user_id"}, slot: slotUserID}}
	p, err := compilePlan(root, paths)
	if err != nil {
		t.Fatalf("%s %s: %v", name, text, err)
	}
	return root, p
}

func TestLoweredRunRandomSchemas(t *testing.T) {
	r := rand.New(rand.NewPCG(2026, 12))
	runs, fused, levelled := 0, 0, 0
	for s := range 1000 {
		root, plan := randomPlan(t, r, fmt.Sprint("schema ", s))
		walk := compileWalk(root)
		// Count the fused guarded runs, and those inside unions, so that the
		// test is known to reach them.
		for _, st := range plan.code {
			if st.cnt > 1 {
				fused++
				if st.level > 0 && st.null != st.val {
					levelled++
				}
			}
		}
		name := fmt.Sprint("random ", s)
		for range 10 {
			v := genValue(r, nil, root, 0)
			sameRun(t, name, plan, walk, v)
			// Every prefix of a short value, else 100 of them.
			for j := range v {
				if len(v) <= 100 || r.IntN(len(v)) < 100 {
					sameRun(t, name, plan, walk, v[:j])
				}
			}
			for range 30 {
				sameRun(t, name, plan, walk, mutate(r, v))
			}
			runs++
		}
	}
	if fused < 500 || levelled < 50 {
		t.Fatalf("%d fused steps, %d guarded inside unions: the schemas do not exercise the fused fast paths", fused, levelled)
	}
	t.Logf("%d values, %d fused steps, %d guarded fused steps inside unions", runs, fused, levelled)
}

// TestLoweredRunDepthLimit checks the fast paths of guarded runs against
// the depth limit: a recursive record whose fused runs of nullable fields
// sit at union levels 0 and 1, nested through a nullable field until the
// values are too deep. At every nesting, with random null and non-null
// fields, the lowered runner must refuse (errTooDeep) exactly where the
// reference does, with the same error, offset and captures.
func TestLoweredRunDepthLimit(t *testing.T) {
	const schema = `{"type":"record","name":"L","fields":[
		{"name":"country","type":["null","string"]},
		{"name":"a","type":["null","long"]},{"name":"b","type":["null","long"]},
		{"name":"s","type":["string","null"]},{"name":"t","type":["string","null"]},
		{"name":"f","type":["null","double"]},{"name":"g","type":["null","double"]},
		{"name":"inner","type":["null",{"type":"record","name":"In","fields":[
			{"name":"x","type":["null","int"]},{"name":"y","type":["null","int"]},
			{"name":"u","type":["null","bytes"]},{"name":"v","type":["null","bytes"]}]}]},
		{"name":"tags","type":{"type":"array","items":"string"}},
		{"name":"next","type":["null","L"]}]}`
	root := mustParse(t, schema)
	plan, err := compilePlan(root, []fieldPath{{segs: []string{"country"}, slot: slotCountry}})
	if err != nil {
		t.Fatal(err)
	}
	walk := compileWalk(root)
	r := rand.New(rand.NewPCG(128, 1))
	opt := func(b []byte, null byte, val ...byte) []byte {
		if r.IntN(3) == 0 {
			return append(b, null)
		}
		return append(append(b, 2-null), val...)
	}
	tooDeep := 0
	for n := range 80 {
		for range 20 {
			var b []byte
			for k := 0; k <= n; k++ {
				b = opt(b, 0, 4, 'U', 'S')
				b = opt(b, 0, 0x81, 0x01)
				b = opt(b, 0, 0x02)
				b = opt(b, 2, 2, 'x')
				b = opt(b, 2, 0)
				b = opt(b, 0, 1, 2, 3, 4, 5, 6, 7, 8)
				b = opt(b, 0, 1, 2, 3, 4, 5, 6, 7, 8)
				if r.IntN(4) == 0 {
					b = append(b, 0)
				} else {
					b = append(b, 2)
					b = opt(b, 0, 0x7e)
					b = opt(b, 0, 0x80, 0x02)
					b = opt(b, 0, 2, 0xff)
					b = opt(b, 0, 0)
				}
				b = append(b, 4, 2, 'p', 0, 0) // tags: ["p", ""]
				if k < n {
					b = append(b, 2) // next: an L follows
				} else {
					b = append(b, 0)
				}
			}
			sameRun(t, fmt.Sprint("depth ", n), plan, walk, b)
			for j := len(b) - 40; j < len(b); j++ {
				if j >= 0 {
					sameRun(t, fmt.Sprint("depth ", n), plan, walk, b[:j])
				}
			}
			if _, err := plan.runRef(b, 0, new(captures), 0); err != nil && strings.Contains(err.Error(), "nested deeper") {
				tooDeep++
			}
		}
	}
	if tooDeep == 0 {
		t.Fatal("no value was too deep: the test does not reach the depth limit")
	}
}

// FuzzLoweredRandomSchema checks the lowered runner against the reference
// on any bytes, read with a random writer schema (see schemaGen) that the
// seed chooses: the bytes may follow a valid value of it (valid says how
// many of its bytes to keep), so that the fuzzer reaches deep into the
// schema.
func FuzzLoweredRandomSchema(f *testing.F) {
	for seed := range uint64(8) {
		f.Add(seed, uint16(1000), []byte{})
		f.Add(seed, uint16(3), []byte{0x02, 0x80, 0x00})
	}
	f.Fuzz(func(t *testing.T, seed uint64, valid uint16, tail []byte) {
		r := rand.New(rand.NewPCG(seed, seed>>32))
		root, plan := randomPlan(t, r, fmt.Sprint("seed ", seed))
		v := genValue(r, nil, root, 0)
		b := append(v[:min(int(valid), len(v)):min(int(valid), len(v))], tail...)
		sameRun(t, fmt.Sprint("seed ", seed), plan, compileWalk(root), b)
	})
}
