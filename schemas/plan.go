package schemas

import (
	"encoding/binary"
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

// opcode is the kind of a program step.
type opcode uint8

const (
	opFixed     opcode = iota // skip n bytes
	opVarint                  // skip n varints of at most max bytes
	opBool                    // skip one boolean (0 or 1)
	opEnum                    // skip an enum index < n
	opBytes                   // skip a length-prefixed bytes or string
	opArray                   // skip an array of sub
	opMap                     // skip a map of string to sub
	opUnion                   // read a branch index i and jump by jumps[i]
	opCall                    // run sub (a recursive record)
	opCapString               // capture a string into slot n
	opCapEnum                 // capture an enum symbol (index < len(symbols)) into slot n
	opJump                    // jump by n (from the end of a union branch to the end of the union)
)

// op is one step of a program.
type op struct {
	code opcode
	// target: a jump lands on this step, so it must never be merged into
	// the step before it, which may belong to one union branch only.
	target bool
	// guard, when not 0, makes the step a whole union of two branches, one
	// of which has no code (as in ["null", "string"]) and the other is this
	// step: the step first reads the union index, and stops there when it
	// is guard-1, the index of the branch without code.
	guard uint8
	// level is the number of unions the step is nested in within its
	// program (for a guarded step: the union's own). The depth limit counts
	// a union as a level of nesting (as when each branch was a program of
	// its own), so the runner adds it.
	level   int32
	n       int // bytes, count, slot, symbol count or jump offset
	max     int // max varint length
	sub     *prog
	jumps   []int // opUnion: per branch, offset of its code from this step
	symbols [][]byte
	where   string // field path, for error messages
}

// prog is a compiled "skip program": a flat list of steps that walks an Avro
// binary record of one writer schema, skipping what it does not need and
// capturing the jurisdiction fields. size is the constant encoded size of
// what it walks, or -1 when that varies.
//
// Unions are flattened into the program rather than run as programs of
// their own, which cost a call per union (the canonical event has 14
// nullable fields before its country). A union of n branches is laid out as
//
//	union  jumps[0..n-1]  read the branch index i, jump by jumps[i]
//	code of branch 0
//	jump   to end
//	code of branch 1
//	jump   to end
//	...
//	code of the last branch that has code (it falls through)
//	end:
//
// A branch without code (null, an empty record) jumps straight to end.
// The most common union, a nullable field like ["null", "long"], is
// compiled further, into one guarded step (see op.guard). Jumps are
// relative to the step that makes them, so a compiled record's steps can be
// copied into another program as they are (see inline). Arrays, maps and
// recursive records (opCall) keep programs of their own.
type prog struct {
	ops  []op
	code []step // ops lowered for the runner (see lower)
	size int
	// barrier is set while the next step to be emitted is a jump target:
	// the start of a union branch, or the end of a union.
	barrier bool
}

// captures holds the captured field values of one run.
type captures [numSlots]struct {
	v  []byte
	ok bool
}

// emit appends o to the program. Consecutive steps that skip fixed bytes,
// or varints of the same maximum length, are merged into one, unless o is
// a jump target or one of them is guarded.
func (p *prog) emit(o op) {
	if n := len(p.ops); n > 0 && !p.barrier && !o.target && o.guard == 0 && p.ops[n-1].guard == 0 {
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
	p.add(o)
}

// add appends o without merging it, marks it as a jump target if one is
// pending, and returns its index.
func (p *prog) add(o op) int {
	o.target = o.target || p.barrier
	p.barrier = false
	p.ops = append(p.ops, o)
	return len(p.ops) - 1
}

// computeSize sets p.size: the sum of its steps' sizes when all are
// constant, else -1. Unions (guarded steps included) vary.
func (p *prog) computeSize() {
	size := 0
	for _, o := range p.ops {
		if o.guard != 0 {
			p.size = -1
			return
		}
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
		default: // unions (and their jumps) and everything of varying size
			p.size = -1
			return
		}
	}
	p.size = size
}

// compiler builds programs for one writer schema.
type compiler struct {
	records map[string]*prog // skip programs of records, by full name
	level   int32            // unions enclosing the steps being emitted
}

// fieldPath is one path to capture.
type fieldPath struct {
	segs []string
	slot int
}

// compilePlan compiles the program that walks (validates) a whole record
// of writer schema root and captures the given paths on the way, in one
// pass. Paths missing from the schema are left uncaptured; paths of an
// unreadable type give ErrFieldType.
func compilePlan(root *node, paths []fieldPath) (*prog, error) {
	if root.kind != kRecord {
		return nil, fmt.Errorf("%w: the writer schema is a %s, not a record", ErrFieldType, root.kind)
	}
	c := &compiler{records: map[string]*prog{}}
	p := &prog{}
	if err := c.record(p, root, paths, ""); err != nil {
		return nil, err
	}
	p.computeSize()
	p.lower(map[*prog]bool{})
	return p, nil
}

// record emits the steps that walk the whole of rec, capturing paths
// (relative to rec). Every field is walked, also after the last one a path
// needs: only a value that is a whole, valid record is read (see
// writer.extract).
func (c *compiler) record(p *prog, rec *node, paths []fieldPath, prefix string) error {
	for _, f := range rec.fields {
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
		return c.union(p, t, where, func(b *node) error {
			switch b.kind {
			case kNull:
				return nil
			case kString, kEnum:
				return c.capture(p, b, slot, where)
			}
			return fmt.Errorf("%w: %s is a %s; want a string or a union of null and string", ErrFieldType, where, t.describe())
		})
	}
	return fmt.Errorf("%w: %s is a %s; want a string or a union of null and string", ErrFieldType, where, t.describe())
}

// descend emits the steps that walk into t (a record, or a union with
// records) to capture paths below it.
func (c *compiler) descend(p *prog, t *node, paths []fieldPath, where string) error {
	switch t.kind {
	case kRecord:
		return c.record(p, t, paths, where+".")
	case kUnion:
		return c.union(p, t, where, func(b *node) error {
			if b.kind == kRecord {
				return c.record(p, b, paths, where+".")
			}
			c.skip(p, b, where)
			return nil
		})
	}
	return fmt.Errorf("%w: %s is a %s, not a record, so no field below it can be read", ErrFieldType, where, t.describe())
}

// union emits the union t, flattened as prog describes: the union step, then
// the code of each branch, which branch(b) emits into p.
func (c *compiler) union(p *prog, t *node, where string, branch func(b *node) error) error {
	jumps := make([]int, len(t.types)) // 0 until known
	u := p.add(op{code: opUnion, level: c.level, jumps: jumps, where: where})
	c.level++
	var exits []int // the jumps that end branches
	empty := -1     // a branch without code
	for i, b := range t.types {
		start := len(p.ops)
		// The branch's first step is a jump target, so it is never merged
		// into the step before: len(p.ops) tells whether the branch has code.
		p.barrier = true
		if err := branch(b); err != nil {
			c.level--
			return err
		}
		if len(p.ops) == start {
			empty = i
			continue // no code: jumps to the end
		}
		jumps[i] = start - u
		exits = append(exits, p.add(op{code: opJump, where: where}))
	}
	c.level--
	if len(exits) > 0 {
		// The last branch with code falls through to the end instead: no
		// step follows its jump, since the branches after it have no code.
		p.ops = p.ops[:len(p.ops)-1]
		exits = exits[:len(exits)-1]
	}
	end := len(p.ops)
	for i := range jumps {
		if jumps[i] == 0 {
			jumps[i] = end - u
		}
	}
	for _, j := range exits {
		p.ops[j].n = end - j
	}
	// Two branches, one without code and one of a single simple step with
	// the union's field name: make that step guarded, in place of the union.
	if len(t.types) == 2 && end == u+2 && guardable(&p.ops[u+1], where) {
		s := p.ops[u+1]
		s.guard = uint8(empty + 1)
		s.level = p.ops[u].level
		s.target = p.ops[u].target
		p.ops[u] = s
		p.ops = p.ops[:u+1]
	}
	p.barrier = true // the end is a jump target
	return nil
}

// guardable reports whether o, the only step of a union branch, can be
// guarded (see op.guard): a step that reads no program of its own, is not
// guarded already, and names the union's field (so errors name the same
// field either way).
func guardable(o *op, where string) bool {
	switch o.code {
	case opFixed, opVarint, opBool, opEnum, opBytes, opCapString, opCapEnum:
		return o.guard == 0 && o.where == where
	}
	return false
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
		p.emit(op{code: opArray, level: c.level, sub: c.skipProg(t.items, where+"[]"), where: where})
	case kMap:
		p.emit(op{code: opMap, level: c.level, sub: c.skipProg(t.values, where+"{}"), where: where})
	case kUnion:
		_ = c.union(p, t, where, func(b *node) error { // skipping never fails
			c.skip(p, b, where)
			return nil
		})
	case kRecord:
		if rp, ok := c.records[t.name]; ok {
			// Seen before: compiled (inline its steps) or being compiled
			// (a recursive type: call it).
			if rp.size != -2 {
				c.inline(p, rp)
				return
			}
			p.emit(op{code: opCall, level: c.level, sub: rp, where: where})
			return
		}
		rp := &prog{size: -2} // -2: being compiled
		c.records[t.name] = rp
		level := c.level
		c.level = 0 // rp is a program of its own
		for _, f := range t.fields {
			c.skip(rp, f.typ, where+"."+f.name)
		}
		c.level = level
		rp.computeSize()
		c.inline(p, rp)
	}
}

// inline copies the steps of the record program rp into p. The first may be
// merged into the step before it; the others are copied as they are, so the
// relative jumps among them stay right. Their union levels are shifted by
// the unions enclosing them in p.
func (c *compiler) inline(p *prog, rp *prog) {
	for k, o := range rp.ops {
		o.level += c.level
		if k == 0 {
			p.emit(o)
		} else {
			p.add(o)
		}
	}
	if len(rp.ops) > 0 {
		p.barrier = rp.barrier // rp may end with the end of a union
	}
}

// compileWalk compiles the program that walks (validates) a whole record
// of writer schema root, capturing nothing.
func compileWalk(root *node) *prog {
	c := &compiler{records: map[string]*prog{}}
	p := c.skipProg(root, root.shortName())
	p.lower(map[*prog]bool{})
	return p
}

// skipProg compiles a standalone program skipping one value of type t.
func (c *compiler) skipProg(t *node, where string) *prog {
	level := c.level
	c.level = 0
	p := &prog{}
	c.skip(p, t, where)
	p.computeSize()
	c.level = level
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
	errCountOverflow = fmt.Errorf("%w: array or map has more items than the value has bytes left", ErrTruncated)
	errDuplicateKey  = fmt.Errorf("%w: map has a duplicate key", ErrCorrupt)
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

// varint reads a zig-zag varint of at most max bytes at b[i:]. The runner
// calls it for the varints varint1 does not read.
//
//go:noinline
func varint(b []byte, i, max int) (int64, int, error) {
	end := min(i+max, len(b))
	var v uint64
	for j, shift := i, uint(0); j < end; j, shift = j+1, shift+7 {
		c := b[j]
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return int64(v>>1) ^ -int64(v&1), j + 1, nil
		}
	}
	if end < i+max {
		return 0, end, errShort
	}
	return 0, end, errLongVarint
}

// varint1 reads the zig-zag varint at b[i] when it is one byte long, the
// common case, for which varint's loop costs several times more. ok is
// false otherwise (a longer varint, or none: then call varint).
func varint1(b []byte, i int) (v int64, ok bool) {
	if i < len(b) && b[i] < 0x80 {
		v = int64(b[i])
		return v>>1 ^ -(v & 1), true
	}
	return 0, false
}

// validUTF8 is utf8.Valid, faster on the short ASCII strings that captured
// fields (country codes, user ids) nearly always are.
func validUTF8(s []byte) bool {
	if len(s) > 16 {
		return utf8.Valid(s)
	}
	// ASCII when no byte has its top bit: eight bytes at a time, then
	// the rest, without a branch per byte.
	var word uint64
	t := s
	for len(t) >= 8 {
		word |= binary.LittleEndian.Uint64(t)
		t = t[8:]
	}
	var acc byte
	for _, c := range t {
		acc |= c
	}
	if word&0x8080808080808080 == 0 && acc < utf8.RuneSelf {
		return true
	}
	return utf8.Valid(s)
}

// inlineKeys is how many keys of one map skipMap remembers on the stack
// to find a duplicate; a larger map's keys go into a Go map.
const inlineKeys = 8

// skipString skips the length-prefixed bytes or string at b[i:] and
// returns the offset after it and its own start. where names the field.
func skipString(b []byte, i int, where string) (end, start int, err error) {
	ls := i
	n, ok := varint1(b, i)
	if ok {
		i++
	} else if n, i, err = varint(b, i, 10); err != nil {
		return i, i, &runError{err, where, ls}
	}
	if n < 0 {
		return i, i, &runError{errNegativeLen, where, ls}
	}
	if int64(len(b)-i) < n {
		return i, i, &runError{errShort, where, ls}
	}
	return i + int(n), i, nil
}

// blockCount reads the item count of the next block of an array or map
// at b[i:]: 0 at the end, else the count, which is at most the bytes left
// (every item takes one byte at least) unless fixedSize says the items
// take a constant number of bytes (then the count is bounded by it, or by
// MaxEmptyItems for items of no bytes).
func blockCount(o *op, b []byte, i, fixedSize int) (int64, int, error) {
	start := i
	count, ok := varint1(b, i)
	var err error
	if ok {
		i++
	} else if count, i, err = varint(b, i, 10); err != nil {
		return 0, i, &runError{err, o.where, start}
	}
	if count == 0 {
		return 0, i, nil
	}
	if count < 0 {
		if count == math.MinInt64 {
			return 0, i, &runError{errBlockCount, o.where, start}
		}
		count = -count
		// The block's byte size follows; like goavro, walk the items
		// rather than trust it.
		if _, i, err = varint(b, i, 10); err != nil {
			return 0, i, &runError{err, o.where, start}
		}
	}
	switch {
	case fixedSize == 0:
		if count > MaxEmptyItems {
			return 0, i, &runError{errBlockCount, o.where, start}
		}
	case fixedSize > 0:
		if count > int64(len(b)-i)/int64(fixedSize) {
			return 0, i, &runError{errShort, o.where, start}
		}
	default:
		if count > int64(len(b)-i) {
			return 0, i, &runError{errCountOverflow, o.where, start}
		}
	}
	return count, i, nil
}

// strItems reports whether the items of array or map o are each one
// string or bytes: the most common arrays and maps, skipped without
// running their program.
func strItems(o *op) bool {
	return len(o.sub.ops) == 1 && o.sub.ops[0].code == opBytes && o.sub.ops[0].guard == 0
}

// skipString1 skips the string or bytes at b[i:] when its length is a
// one-byte varint and its bytes are there, the common case, for which the
// call of skipString costs several times more. ok is false otherwise (then
// call skipString).
func skipString1(b []byte, i int) (end int, ok bool) {
	if i < len(b) {
		if c := b[i]; c < 0x80 && c&1 == 0 {
			if end = i + 1 + int(c>>1); end <= len(b) {
				return end, true
			}
		}
	}
	return i, false
}

// skipArray skips the blocks of an array.
func skipArray(o *op, b []byte, i, depth int) (int, error) {
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
				if i, err = o.sub.run(b, i, nil, depth+1); err != nil {
					return i, err
				}
			}
		}
	}
}

// skipMap skips the blocks of a map. A map with a duplicate key is refused
// (errDuplicateKey): goavro refuses it, so the sinks could not read it.
func skipMap(o *op, b []byte, i, depth int) (int, error) {
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
			} else if i, err = o.sub.run(b, i, nil, depth+1); err != nil {
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
