package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/linkedin/goavro/v2"
)

// The lowered runner (lower.go) against the reference runner below, the
// runner of p.ops as it was before lowering: on valid values, on every
// prefix, and on random mutations (flipped, cut, inserted and deleted
// bytes, including the bytes the fast paths test: union indexes, one- and
// two-byte varints and lengths), both must give the same end offset, the
// same error (message, field and offset) and the same captures.

// runRef is the runner as it was before programs were lowered (see
// lower.go): it interprets p.ops one by one. It is the reference the
// lowered runner must agree with, byte for byte and error for error.
func (p *prog) runRef(b []byte, i int, c *captures, depth int) (int, error) {
	if depth > maxDepth {
		return i, &runError{errTooDeep, "", i}
	}
	// The branches of a union at level l are at depth depth+l+1 (see
	// op.level): from level deep on, they are too deep.
	deep := int32(maxDepth - depth)
	var err error
	ops := p.ops
	for k := 0; k < len(ops); k++ {
		o := &ops[k]
		start := i
		if o.guard != 0 {
			// The union of a guarded step (see op.guard).
			x, ok := varint1(b, i)
			if ok {
				i++
			} else if x, i, err = varint(b, i, 10); err != nil {
				return i, &runError{err, o.where, start}
			}
			if uint64(x) > 1 {
				return i, &runError{errUnionRange, o.where, start}
			}
			if o.level >= deep {
				return i, &runError{errTooDeep, "", i}
			}
			if x == int64(o.guard-1) {
				continue // the branch without code
			}
			start = i
		}
		switch o.code {
		case opFixed:
			if len(b)-i < o.n {
				return i, &runError{errShort, o.where, start}
			}
			i += o.n
		case opVarint:
			for range o.n {
				if _, ok := varint1(b, i); ok {
					i++
				} else if _, i, err = varint(b, i, o.max); err != nil {
					return i, &runError{err, o.where, start}
				}
			}
		case opBool:
			if i >= len(b) {
				return i, &runError{errShort, o.where, start}
			}
			if b[i] > 1 {
				return i, &runError{errBadBool, o.where, start}
			}
			i++
		case opEnum, opCapEnum:
			x, ok := varint1(b, i)
			if ok {
				i++
			} else if x, i, err = varint(b, i, 5); err != nil {
				return i, &runError{err, o.where, start}
			}
			if o.code == opEnum {
				if x < 0 || x >= int64(o.n) {
					return i, &runError{errEnumRange, o.where, start}
				}
				break
			}
			if x < 0 || x >= int64(len(o.symbols)) {
				return i, &runError{errEnumRange, o.where, start}
			}
			c[o.n].v, c[o.n].ok = o.symbols[x], true
		case opBytes, opCapString:
			n, ok := varint1(b, i)
			if ok {
				i++
			} else if n, i, err = varint(b, i, 10); err != nil {
				return i, &runError{err, o.where, start}
			}
			if n < 0 {
				return i, &runError{errNegativeLen, o.where, start}
			}
			if int64(len(b)-i) < n {
				return i, &runError{errShort, o.where, start}
			}
			if o.code == opCapString {
				s := b[i : i+int(n) : i+int(n)]
				if !validUTF8(s) {
					return i, &runError{errBadUTF8, o.where, start}
				}
				c[o.n].v, c[o.n].ok = s, true
			}
			i += int(n)
		case opUnion:
			x, ok := varint1(b, i)
			if ok {
				i++
			} else if x, i, err = varint(b, i, 10); err != nil {
				return i, &runError{err, o.where, start}
			}
			if uint64(x) >= uint64(len(o.jumps)) {
				return i, &runError{errUnionRange, o.where, start}
			}
			if o.level >= deep {
				return i, &runError{errTooDeep, "", i}
			}
			k += o.jumps[x] - 1 // -1: the loop adds 1
		case opJump:
			k += o.n - 1
		case opCall:
			if i, err = o.sub.runRef(b, i, c, depth+int(o.level)+1); err != nil {
				return i, err
			}
		case opArray:
			if i, err = skipArrayRef(o, b, i, depth+int(o.level)); err != nil {
				return i, err
			}
		case opMap:
			if i, err = skipMapRef(o, b, i, depth+int(o.level)); err != nil {
				return i, err
			}
		}
	}
	return i, nil
}

// skipArrayRef is skipArray running item programs with runRef.
func skipArrayRef(o *op, b []byte, i, depth int) (int, error) {
	size := o.sub.size // constant item size, or -1
	str := strItems(o)
	for {
		count, j, err := blockCount(o, b, i, size)
		if i = j; err != nil || count == 0 {
			return i, err
		}
		switch {
		case size >= 0: // constant-size items: skip them at once
			i += int(count) * size
		case str:
			for range count {
				if end, ok := skipString1(b, i); ok {
					i = end
				} else if i, _, err = skipString(b, i, o.sub.ops[0].where); err != nil {
					return i, err
				}
			}
		default:
			for range count {
				if i, err = o.sub.runRef(b, i, nil, depth+1); err != nil {
					return i, err
				}
			}
		}
	}
}

// skipMapRef is skipMap running value programs with runRef.
func skipMapRef(o *op, b []byte, i, depth int) (int, error) {
	var keys [inlineKeys][2]int  // offsets of the first keys in b
	var more map[string]struct{} // the keys, once there are more than inlineKeys
	nkeys := 0
	str := strItems(o)
	for {
		count, j, err := blockCount(o, b, i, -1) // a key takes a byte at least
		if i = j; err != nil || count == 0 {
			return i, err
		}
		for range count {
			ks := i
			k0 := i + 1
			if end, ok := skipString1(b, i); ok {
				i = end
			} else if i, k0, err = skipString(b, i, o.where); err != nil {
				return i, err
			}
			key := b[k0:i]
			if nkeys < inlineKeys {
				for _, k := range keys[:nkeys] {
					if string(b[k[0]:k[1]]) == string(key) {
						return i, &runError{errDuplicateKey, o.where, ks}
					}
				}
				keys[nkeys] = [2]int{k0, i}
			} else {
				if more == nil {
					more = make(map[string]struct{}, 2*inlineKeys)
					for _, k := range keys {
						more[string(b[k[0]:k[1]])] = struct{}{}
					}
				}
				if _, dup := more[string(key)]; dup {
					return i, &runError{errDuplicateKey, o.where, ks}
				}
				more[string(key)] = struct{}{}
			}
			nkeys++
			if str {
				if end, ok := skipString1(b, i); ok {
					i = end
				} else if i, _, err = skipString(b, i, o.sub.ops[0].where); err != nil {
					return i, err
				}
			} else if i, err = o.sub.runRef(b, i, nil, depth+1); err != nil {
				return i, err
			}
		}
	}
}

// loweredSchemas are the schemas the differential tests run: the
// canonical event (long runs of nullable fields, fused into one step
// each), and the nested and unions schemas (recursion, arrays and maps of
// records and unions, unions of three branches, enums in unions).
func loweredSchemas(t *testing.T) map[string]*node {
	return map[string]*node{
		"canonical": mustParse(t, UserEventSchema),
		"nested":    mustParse(t, nestedSchema),
		"unions":    mustParse(t, unionsSchema),
	}
}

// sameRun runs b with the lowered and the reference runner, as plan (with
// captures) and as walk, and fails when they differ in any way.
func sameRun(t *testing.T, name string, plan, walk *prog, b []byte) {
	t.Helper()
	for _, p := range []*prog{plan, walk} {
		var c1, c2 *captures
		if p == plan {
			c1, c2 = new(captures), new(captures)
		}
		end1, err1 := p.run(b, 0, c1, 0)
		end2, err2 := p.runRef(b, 0, c2, 0)
		if end1 != end2 || fmt.Sprint(err1) != fmt.Sprint(err2) {
			t.Fatalf("%s %x: lowered runner: %d, %v; reference: %d, %v", name, b, end1, err1, end2, err2)
		}
		if err1 != nil && (Reason(err1) != Reason(err2) || !errors.Is(err1, ErrCorrupt) && !errors.Is(err1, ErrTruncated)) {
			t.Fatalf("%s %x: lowered runner's error %v is not classified as the reference's %v", name, b, err1, err2)
		}
		if c1 != nil {
			for s := range c1 {
				if c1[s].ok != c2[s].ok || !bytes.Equal(c1[s].v, c2[s].v) {
					t.Fatalf("%s %x: slot %d: lowered runner captured %q (%v), reference %q (%v)", name, b, s, c1[s].v, c1[s].ok, c2[s].v, c2[s].ok)
				}
			}
		}
	}
}

// mutate returns a random damaged copy of b.
func mutate(r *rand.Rand, b []byte) []byte {
	m := bytes.Clone(b)
	special := []byte{0x00, 0x01, 0x02, 0x03, 0x04, 0x7e, 0x7f, 0x80, 0x81, 0xff}
	for range 1 + r.IntN(3) {
		if len(m) == 0 {
			return append(m, special[r.IntN(len(special))])
		}
		j := r.IntN(len(m))
		switch r.IntN(5) {
		case 0:
			m[j] = byte(r.IntN(256))
		case 1:
			m[j] = special[r.IntN(len(special))]
		case 2:
			m = m[:j]
		case 3:
			m = append(m[:j], m[j+1:]...)
		default:
			m = append(m[:j], append([]byte{special[r.IntN(len(special))]}, m[j:]...)...)
		}
	}
	return m
}

func TestLoweredRunMatchesReference(t *testing.T) {
	paths := []fieldPath{{segs: []string{"country"}, slot: slotCountry}, {segs: []string{"user_id"}, slot: slotUserID}}
	nestedPaths := []fieldPath{{segs: []string{"geo", "cc"}, slot: slotCountry}, {segs: []string{"who", "id"}, slot: slotUserID}}
	r := rand.New(rand.NewPCG(16, 250))
	for name, root := range loweredSchemas(t) {
		ps := paths
		if name == "nested" {
			ps = nestedPaths
		}
		plan, err := compilePlan(root, ps)
		if err != nil {
			t.Fatal(err)
		}
		walk := compileWalk(root)
		var values [][]byte
		for range 300 {
			values = append(values, genValue(r, nil, root, 0))
		}
		if name == "canonical" {
			// Fused runs of nullable fields, and strings and varints too
			// long for the fast paths.
			for i, long := range []string{"", "x", string(make([]byte, 63)), string(make([]byte, 64)), string(make([]byte, 300))} {
				ev := sampleEvent(i, "US")
				ev["session_id"] = goavro.Union("string", long)
				ev["timezone"] = goavro.Union("string", long)
				ev["creator_id"] = nil
				ev["watch_time_ms"] = goavro.Union("long", int64(1)<<(7*i))
				ev["position_ms"] = goavro.Union("long", int64(-1)<<(7*i))
				if i%2 == 1 {
					ev["country"] = goavro.Union("string", "D\u00e9")
				}
				values = append(values, encode(t, UserEventSchema, ev))
			}
			// Arrays and maps of strings around the fast paths' limits
			// (inlineKeys keys, one-byte counts and lengths).
			for _, n := range []int{0, 1, inlineKeys, inlineKeys + 1, 63, 64, 70} {
				ev := sampleEvent(n, "GB")
				tags, props := []any{}, map[string]any{}
				for j := range n {
					tags = append(tags, fmt.Sprint("t", j))
					props[fmt.Sprint("k", j)] = fmt.Sprint("v", j)
				}
				ev["tags"], ev["properties"] = tags, props
				values = append(values, encode(t, UserEventSchema, ev))
			}
			if len(plan.code) >= len(plan.ops) {
				t.Fatalf("the canonical plan's %d ops were lowered to %d steps: no run was fused", len(plan.ops), len(plan.code))
			}
		}
		for _, v := range values {
			sameRun(t, name, plan, walk, v)
			for j := range v {
				sameRun(t, name, plan, walk, v[:j])
			}
			for range 40 {
				sameRun(t, name, plan, walk, mutate(r, v))
			}
		}
	}
}

// A union index or length written as a longer varint than needed (0x80
// 0x00 is 0) takes the general path and is read as before.
func TestLoweredRunNonCanonicalVarints(t *testing.T) {
	root := mustParse(t, UserEventSchema)
	plan, err := compilePlan(root, []fieldPath{{segs: []string{"country"}, slot: slotCountry}, {segs: []string{"user_id"}, slot: slotUserID}})
	if err != nil {
		t.Fatal(err)
	}
	walk := compileWalk(root)
	v := encode(t, UserEventSchema, sampleEvent(3, "US"))
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		// Widen one byte below 0x80 into the two-byte varint of the same
		// value.
		m := bytes.Clone(v)
		j := r.IntN(len(m))
		if m[j] >= 0x80 {
			continue
		}
		m = append(m[:j], append([]byte{m[j] | 0x80, 0x00}, m[j+1:]...)...)
		sameRun(t, "canonical", plan, walk, m)
	}
}

// FuzzLoweredRun checks the lowered runner against the reference on any
// bytes, for the three schemas.
func FuzzLoweredRun(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	schemas := loweredSchemasF(f)
	for _, root := range schemas {
		for range 4 {
			f.Add(genValue(r, nil, root, 0))
		}
	}
	f.Add(encode(f, UserEventSchema, sampleEvent(1, "US")))
	type progs struct{ plan, walk *prog }
	var ps []progs
	for _, root := range schemas {
		// Paths a schema lacks are left uncaptured (nested: see
		// TestLoweredRunMatchesReference for its own paths).
		plan, err := compilePlan(root, []fieldPath{{segs: []string{"country"}, slot: slotCountry}, {segs: []string{"user_id"}, slot: slotUserID}})
		if err != nil {
			f.Fatal(err)
		}
		ps = append(ps, progs{plan, compileWalk(root)})
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, p := range ps {
			sameRun(t, "fuzz", p.plan, p.walk, b)
		}
	})
}

func loweredSchemasF(f *testing.F) []*node {
	var out []*node
	for _, s := range []string{UserEventSchema, nestedSchema, unionsSchema} {
		root, err := parseSchema(s)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, root)
	}
	return out
}

// TestValidUTF8MatchesUTF8Valid checks the runner's UTF-8 check of
// captured strings against utf8.Valid: every string of two bytes, and
// random strings of up to 20 bytes with a non-ASCII byte anywhere in them.
func TestValidUTF8MatchesUTF8Valid(t *testing.T) {
	for x := range 1 << 16 {
		s := []byte{byte(x), byte(x >> 8)}
		if validUTF8(s) != utf8.Valid(s) {
			t.Fatalf("validUTF8(%x) = %v", s, validUTF8(s))
		}
	}
	r := rand.New(rand.NewPCG(11, 12))
	for range 200000 {
		s := make([]byte, r.IntN(21))
		for j := range s {
			s[j] = byte('a' + r.IntN(26))
		}
		if len(s) > 0 && r.IntN(2) == 0 {
			s[r.IntN(len(s))] = byte(0x80 + r.IntN(128))
			if r.IntN(2) == 0 && len(s) > 1 { // sometimes a valid sequence
				j := r.IntN(len(s) - 1)
				copy(s[j:], "\u00e9")
			}
		}
		if validUTF8(s) != utf8.Valid(s) {
			t.Fatalf("validUTF8(%x) = %v", s, validUTF8(s))
		}
	}
}

// TestLoweredRunHugeFixed checks that an op whose size does not fit a
// step's int32 (2049 fixed fields of 1 MiB in a row, merged into one op of
// more than 2^31 bytes) runs through the general code, and refuses a
// short value as the reference does.
func TestLoweredRunHugeFixed(t *testing.T) {
	var fields []string
	for i := range 2049 {
		typ := `"F"`
		if i == 0 {
			typ = `{"type":"fixed","name":"F","size":1048576}`
		}
		fields = append(fields, fmt.Sprintf(`{"name":"f%d","type":%s}`, i, typ))
	}
	root := mustParse(t, `{"type":"record","name":"Huge","fields":[{"name":"country","type":"string"},`+strings.Join(fields, ",")+`]}`)
	plan, err := compilePlan(root, []fieldPath{{segs: []string{"country"}, slot: slotCountry}})
	if err != nil {
		t.Fatal(err)
	}
	walk := compileWalk(root)
	for _, p := range []*prog{plan, walk} {
		last := p.code[len(p.code)-1]
		if o := p.ops[last.idx]; o.code != opFixed || o.n <= math.MaxInt32 || last.code != sGeneral {
			t.Fatalf("last step %+v of op %+v: want the general code for a fixed of more than 2^31 bytes", last, o)
		}
	}
	for _, b := range [][]byte{nil, {0x04, 'U', 'S'}, append([]byte{0x04, 'U', 'S'}, make([]byte, 4096)...)} {
		sameRun(t, "huge", plan, walk, b)
		if _, err := plan.run(b, 0, new(captures), 0); !errors.Is(err, ErrTruncated) {
			t.Fatalf("%d bytes: %v, want truncated", len(b), err)
		}
	}
}
