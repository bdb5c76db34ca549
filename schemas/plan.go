package schemas

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// ErrFieldType: the writer schema has a jurisdiction field (country or user
// id) of a type the router cannot read (it must be a string, an enum, or a
// union of null with one of them), or its path runs through a non-record.
// It wraps ErrCorrupt, so such events are dead-lettered as "corrupt".
var ErrFieldType = fmt.Errorf("%w: jurisdiction field has an unreadable type", ErrCorrupt)

// maxDepth bounds how deeply nested (recursive) values may be skipped.
const maxDepth = 128

// MaxEmptyItems bounds the item count of one array block whose items take
// no bytes (nulls, empty records). Such a block costs nothing on the wire
// but a full decoder allocates for every item, so a larger count is refused
// as corrupt. Every other count is bounded by the bytes left in the value.
const MaxEmptyItems = 1 << 20

// Capture slots of a plan.
const (
	slotCountry = iota
	slotUserID
	numSlots
)

type opcode uint8

const (
	opFixed     opcode = iota // skip n bytes
	opVarint                  // skip n varints of at most max bytes
	opBool                    // skip one boolean (0 or 1)
	opEnum                    // skip an enum index < n
	opBytes                   // skip a length-prefixed bytes or string
	opArray                   // skip an array of sub
	opMap                     // skip a map of string to sub
	opUnion                   // read a branch index and run branches[i]
	opCall                    // run sub (a recursive record)
	opCapString               // capture a string into slot n
	opCapEnum                 // capture an enum symbol (index < len(symbols)) into slot n
)

// op is one step of a program.
type op struct {
	code     opcode
	n        int // bytes, count, slot or symbol count
	max      int // max varint length
	sub      *prog
	branches []*prog
	symbols  [][]byte
	where    string // field path, for error messages
}

// prog is a compiled "skip program": a flat list of steps that walks an Avro
// binary record of one writer schema, skipping what it does not need and
// capturing the jurisdiction fields. size is the constant encoded size of
// what it walks, or -1 when that varies.
type prog struct {
	ops  []op
	size int
}

// captures holds the captured field values of one run.
type captures [numSlots]struct {
	v  []byte
	ok bool
}

func (p *prog) emit(o op) {
	if n := len(p.ops); n > 0 {
		last := &p.ops[n-1]
		switch {
		case o.code == opFixed && last.code == opFixed:
			last.n += o.n
			return
		case o.code == opVarint && last.code == opVarint && last.max == o.max:
			last.n += o.n
			return
		}
	}
	p.ops = append(p.ops, o)
}

func (p *prog) computeSize() {
	size := 0
	for _, o := range p.ops {
		switch o.code {
		case opFixed:
			size += o.n
		case opBool:
			size++
		case opCall:
			if o.sub.size < 0 {
				p.size = -1
				return
			}
			size += o.sub.size
		default:
			p.size = -1
			return
		}
	}
	p.size = size
}

// compiler builds programs for one writer schema.
type compiler struct {
	records map[string]*prog // skip programs of records, by full name
}

// fieldPath is one path to capture.
type fieldPath struct {
	segs []string
	slot int
}

// compilePlan compiles the program that captures the given paths from a
// record of writer schema root. Paths missing from the schema are left
// uncaptured; paths of an unreadable type give ErrFieldType.
func compilePlan(root *node, paths []fieldPath) (*prog, error) {
	if root.kind != kRecord {
		return nil, fmt.Errorf("%w: the writer schema is a %s, not a record", ErrFieldType, root.kind)
	}
	c := &compiler{records: map[string]*prog{}}
	p := &prog{}
	if err := c.record(p, root, paths, "", false); err != nil {
		return nil, err
	}
	p.computeSize()
	return p, nil
}

// record emits the steps that walk rec capturing paths (relative to rec).
// The top-level record (whole false) stops after the last field a path
// needs; a nested one is walked whole, since what follows it must be found.
func (c *compiler) record(p *prog, rec *node, paths []fieldPath, prefix string, whole bool) error {
	last := -1
	if whole {
		last = len(rec.fields) - 1
	}
	for i, f := range rec.fields {
		for _, fp := range paths {
			if fp.segs[0] == f.name && i > last {
				last = i
			}
		}
	}
	for i := 0; i <= last; i++ {
		f := rec.fields[i]
		where := prefix + f.name
		var leaf *fieldPath
		var sub []fieldPath
		for _, fp := range paths {
			if fp.segs[0] != f.name {
				continue
			}
			if len(fp.segs) == 1 {
				if leaf != nil {
					return fmt.Errorf("%w: two paths capture %s", ErrFieldType, where)
				}
				leaf = &fieldPath{slot: fp.slot}
			} else {
				sub = append(sub, fieldPath{segs: fp.segs[1:], slot: fp.slot})
			}
		}
		switch {
		case leaf != nil && sub != nil:
			return fmt.Errorf("%w: %s is both a field and a record on a path", ErrFieldType, where)
		case leaf != nil:
			if err := c.capture(p, f.typ, leaf.slot, where); err != nil {
				return err
			}
		case sub != nil:
			if err := c.descend(p, f.typ, sub, where); err != nil {
				return err
			}
		default:
			c.skip(p, f.typ, where)
		}
	}
	return nil
}

// capture emits the step that captures a leaf of type t into slot.
func (c *compiler) capture(p *prog, t *node, slot int, where string) error {
	switch t.kind {
	case kString:
		p.emit(op{code: opCapString, n: slot, where: where})
		return nil
	case kEnum:
		p.emit(op{code: opCapEnum, n: slot, symbols: symbolBytes(t.symbols), where: where})
		return nil
	case kUnion:
		u := op{code: opUnion, where: where}
		for _, b := range t.types {
			bp := &prog{}
			switch b.kind {
			case kNull:
			case kString, kEnum:
				if err := c.capture(bp, b, slot, where); err != nil {
					return err
				}
			default:
				return fmt.Errorf("%w: %s is a %s; want a string or a union of null and string", ErrFieldType, where, t.describe())
			}
			bp.computeSize()
			u.branches = append(u.branches, bp)
		}
		p.emit(u)
		return nil
	}
	return fmt.Errorf("%w: %s is a %s; want a string or a union of null and string", ErrFieldType, where, t.describe())
}

// descend emits the steps that walk into t (a record, or a union with
// records) to capture paths below it.
func (c *compiler) descend(p *prog, t *node, paths []fieldPath, where string) error {
	switch t.kind {
	case kRecord:
		return c.record(p, t, paths, where+".", true)
	case kUnion:
		u := op{code: opUnion, where: where}
		for _, b := range t.types {
			bp := &prog{}
			if b.kind == kRecord {
				if err := c.record(bp, b, paths, where+".", true); err != nil {
					return err
				}
			} else {
				c.skip(bp, b, where)
			}
			bp.computeSize()
			u.branches = append(u.branches, bp)
		}
		p.emit(u)
		return nil
	}
	return fmt.Errorf("%w: %s is a %s, not a record, so no field below it can be read", ErrFieldType, where, t.describe())
}

// skip emits the steps that skip a value of type t.
func (c *compiler) skip(p *prog, t *node, where string) {
	switch t.kind {
	case kNull:
	case kBoolean:
		p.emit(op{code: opBool, where: where})
	case kInt:
		p.emit(op{code: opVarint, n: 1, max: 5, where: where})
	case kLong:
		p.emit(op{code: opVarint, n: 1, max: 10, where: where})
	case kFloat:
		p.emit(op{code: opFixed, n: 4, where: where})
	case kDouble:
		p.emit(op{code: opFixed, n: 8, where: where})
	case kFixed:
		if t.size > 0 {
			p.emit(op{code: opFixed, n: t.size, where: where})
		}
	case kBytes, kString:
		p.emit(op{code: opBytes, where: where})
	case kEnum:
		p.emit(op{code: opEnum, n: len(t.symbols), where: where})
	case kArray:
		p.emit(op{code: opArray, sub: c.skipProg(t.items, where+"[]"), where: where})
	case kMap:
		p.emit(op{code: opMap, sub: c.skipProg(t.values, where+"{}"), where: where})
	case kUnion:
		u := op{code: opUnion, where: where}
		for _, b := range t.types {
			u.branches = append(u.branches, c.skipProg(b, where))
		}
		p.emit(u)
	case kRecord:
		if rp, ok := c.records[t.name]; ok {
			// Seen before: compiled (inline its steps) or being compiled
			// (a recursive type: call it).
			if rp.size != -2 {
				for _, o := range rp.ops {
					p.emit(o)
				}
				return
			}
			p.emit(op{code: opCall, sub: rp, where: where})
			return
		}
		rp := &prog{size: -2} // -2: being compiled
		c.records[t.name] = rp
		for _, f := range t.fields {
			c.skip(rp, f.typ, where+"."+f.name)
		}
		rp.computeSize()
		for _, o := range rp.ops {
			p.emit(o)
		}
	}
}

// compileWalk compiles the program that walks (validates) a whole record
// of writer schema root, capturing nothing.
func compileWalk(root *node) *prog {
	c := &compiler{records: map[string]*prog{}}
	return c.skipProg(root, root.shortName())
}

// skipProg compiles a standalone program skipping one value of type t.
func (c *compiler) skipProg(t *node, where string) *prog {
	p := &prog{}
	c.skip(p, t, where)
	p.computeSize()
	return p
}

func symbolBytes(symbols []string) [][]byte {
	out := make([][]byte, len(symbols))
	for i, s := range symbols {
		out[i] = []byte(s)[:len(s):len(s)]
	}
	return out
}

// Errors of the program runner; runError adds the field and offset.
var (
	errShort         = fmt.Errorf("%w: value ends inside a field", ErrTruncated)
	errLongVarint    = fmt.Errorf("%w: varint longer than its type allows", ErrCorrupt)
	errNegativeLen   = fmt.Errorf("%w: negative length", ErrCorrupt)
	errBadBool       = fmt.Errorf("%w: boolean byte is neither 0 nor 1", ErrCorrupt)
	errEnumRange     = fmt.Errorf("%w: enum index out of range", ErrCorrupt)
	errUnionRange    = fmt.Errorf("%w: union index out of range", ErrCorrupt)
	errBadUTF8       = fmt.Errorf("%w: string is not valid UTF-8", ErrCorrupt)
	errBlockCount    = fmt.Errorf("%w: bad array or map block count", ErrCorrupt)
	errTooDeep       = fmt.Errorf("%w: values nested deeper than %d levels", ErrCorrupt, maxDepth)
	errCountOverflow = fmt.Errorf("%w: array or map larger than the value", ErrCorrupt)
)

// runError is a runner error with the field it happened in.
type runError struct {
	err   error
	where string
	at    int
}

func (e *runError) Error() string {
	return fmt.Sprintf("%v (field %s, byte %d of the body)", e.err, e.where, e.at)
}

func (e *runError) Unwrap() error { return e.err }

// varint reads a zig-zag varint of at most max bytes at b[i:].
func varint(b []byte, i, max int) (int64, int, error) {
	var v uint64
	var shift uint
	for n := 0; n < max; n++ {
		if i >= len(b) {
			return 0, i, errShort
		}
		c := b[i]
		i++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return int64(v>>1) ^ -int64(v&1), i, nil
		}
		shift += 7
	}
	return 0, i, errLongVarint
}

// run executes p on b from offset i and returns the offset after it.
func (p *prog) run(b []byte, i int, c *captures, depth int) (int, error) {
	if depth > maxDepth {
		return i, &runError{errTooDeep, "", i}
	}
	var err error
	for k := range p.ops {
		o := &p.ops[k]
		start := i
		switch o.code {
		case opFixed:
			if len(b)-i < o.n {
				return i, &runError{errShort, o.where, start}
			}
			i += o.n
		case opVarint:
			for range o.n {
				if _, i, err = varint(b, i, o.max); err != nil {
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
			var x int64
			if x, i, err = varint(b, i, 5); err != nil {
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
			var n int64
			if n, i, err = varint(b, i, 10); err != nil {
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
				if !utf8.Valid(s) {
					return i, &runError{errBadUTF8, o.where, start}
				}
				c[o.n].v, c[o.n].ok = s, true
			}
			i += int(n)
		case opUnion:
			var x int64
			if x, i, err = varint(b, i, 10); err != nil {
				return i, &runError{err, o.where, start}
			}
			if x < 0 || x >= int64(len(o.branches)) {
				return i, &runError{errUnionRange, o.where, start}
			}
			if i, err = o.branches[x].run(b, i, c, depth+1); err != nil {
				return i, err
			}
		case opCall:
			if i, err = o.sub.run(b, i, c, depth+1); err != nil {
				return i, err
			}
		case opArray, opMap:
			if i, err = skipBlocks(o, b, i, depth); err != nil {
				return i, err
			}
		}
	}
	return i, nil
}

// skipBlocks skips the blocks of an array or map.
func skipBlocks(o *op, b []byte, i, depth int) (int, error) {
	var err error
	for {
		start := i
		var count int64
		if count, i, err = varint(b, i, 10); err != nil {
			return i, &runError{err, o.where, start}
		}
		if count == 0 {
			return i, nil
		}
		if count < 0 {
			if count == math.MinInt64 {
				return i, &runError{errBlockCount, o.where, start}
			}
			count = -count
			// The block's byte size follows; like goavro, walk the items
			// rather than trust it.
			if _, i, err = varint(b, i, 10); err != nil {
				return i, &runError{err, o.where, start}
			}
		}
		if o.code == opArray && o.sub.size >= 0 {
			// Constant-size items: skip them at once.
			if o.sub.size == 0 {
				if count > MaxEmptyItems {
					return i, &runError{errBlockCount, o.where, start}
				}
				continue
			}
			if count > int64(len(b)-i)/int64(o.sub.size) {
				return i, &runError{errShort, o.where, start}
			}
			i += int(count) * o.sub.size
			continue
		}
		// Every item (or map key) takes at least one byte.
		if count > int64(len(b)-i) {
			return i, &runError{errCountOverflow, o.where, start}
		}
		for range count {
			if o.code == opMap {
				var n int64
				ks := i
				if n, i, err = varint(b, i, 10); err != nil {
					return i, &runError{err, o.where, ks}
				}
				if n < 0 {
					return i, &runError{errNegativeLen, o.where, ks}
				}
				if int64(len(b)-i) < n {
					return i, &runError{errShort, o.where, ks}
				}
				i += int(n)
			}
			if i, err = o.sub.run(b, i, nil, depth+1); err != nil {
				return i, err
			}
		}
	}
}

// splitPath splits a dotted field path and checks its parts.
func splitPath(path string) ([]string, error) {
	if path == "" {
		return nil, errors.New("empty path")
	}
	segs := strings.Split(path, ".")
	for _, s := range segs {
		if !validName(s) {
			return nil, fmt.Errorf("%q is not a valid Avro field path (names joined by dots)", path)
		}
	}
	return segs, nil
}
