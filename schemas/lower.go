package schemas

import (
	"fmt"
	"math"
)

// The runner does not interpret a program's ops directly: lower turns them
// into steps, which fuse runs of like ops (the canonical event has four
// nullable strings in a row, then three nullable longs) and give the
// common cases opcodes of their own, with a fast path for the bytes they
// nearly always hold (union indexes, lengths and varints of one byte).
// Whenever a fast path meets anything else (a longer varint, a value cut
// short, a bad index, a union too deep), the step's remaining ops run
// through execOp, the general code of one op, from the offset of the first
// op not yet done: so every value is accepted or refused exactly as by the
// ops themselves, with the same error, field and offset.

// errControlOp is execOp's error for an op it cannot run (never given it).
var errControlOp = fmt.Errorf("%w: internal error: a control op outside the runner", ErrCorrupt)

// scode is the opcode of a step.
type scode uint8

const (
	sFixed        scode = iota // skip n bytes (one opFixed)
	sVarint                    // skip reps varints of at most n bytes (one opVarint)
	sBool                      // one opBool
	sEnum                      // one opEnum
	sBytes                     // skip cnt strings or bytes (cnt opBytes)
	sCapString                 // one opCapString
	sCapEnum                   // one opCapEnum
	sUnion                     // one opUnion; jumps remapped to steps
	sJump                      // one opJump; n remapped to steps
	sCall                      // one opCall
	sArray                     // one opArray
	sMap                       // one opMap
	sOptBytes                  // cnt guarded opBytes of one guard and level
	sOptVarint                 // cnt guarded opVarint (of one varint each) of at most n bytes, one guard and level
	sOptFixed                  // cnt guarded opFixed of n bytes, one guard and level
	sOptCapString              // one guarded opCapString
	sGeneral                   // any other op that is not a control op (guarded ones, and sizes past int32): run by execOp
)

// step is one step of a lowered program: one op, or a run of cnt like ops
// (p.ops[idx:idx+cnt]).
type step struct {
	code scode
	// null and val are, for a guarded step, the one-byte encodings of the
	// index of the branch without code and of the other branch.
	null, val uint8
	cnt       int32 // ops in the step
	n         int32 // sFixed, sOptFixed: bytes; sVarint, sOptVarint: max varint length; sEnum: symbols; sJump: steps to jump by
	level     int32 // the union level of its ops (see op.level)
	idx       int32 // its first op in p.ops
	reps      int32 // sVarint: varints to skip; sArray, sMap: 1 when the items are strings or bytes (see strItems)
	jumps     []int32
}

// lower builds p.code from p.ops, and the code of every program p runs.
func (p *prog) lower(seen map[*prog]bool) {
	if seen[p] {
		return
	}
	seen[p] = true
	for k := range p.ops {
		if sub := p.ops[k].sub; sub != nil {
			sub.lower(seen)
		}
	}
	// The steps jumps land on: a run is never fused across one.
	target := make([]bool, len(p.ops)+1)
	for k, o := range p.ops {
		switch o.code {
		case opUnion:
			for _, j := range o.jumps {
				target[k+j] = true
			}
		case opJump:
			target[k+o.n] = true
		}
	}
	stepOf := make([]int32, len(p.ops)+1) // the step each op starts or is in
	var code []step
	for k := 0; k < len(p.ops); {
		o := &p.ops[k]
		s := step{cnt: 1, level: o.level, idx: int32(k)}
		if o.guard != 0 {
			s.null, s.val = byte(2*(o.guard-1)), byte(2*(2-o.guard))
		}
		// like reports whether the op after the step can join it.
		like := func(q *op) bool { return false }
		switch {
		case o.n > math.MaxInt32 || o.max > math.MaxInt32:
			// Sizes and counts past the step's int32 (a schema of huge
			// fixed fields merged into one op): the general code.
			s.code = sGeneral
		case o.guard == 0:
			switch o.code {
			case opFixed:
				s.code, s.n = sFixed, int32(o.n)
			case opVarint:
				s.code, s.n, s.reps = sVarint, int32(o.max), int32(o.n)
			case opBool:
				s.code = sBool
			case opEnum:
				s.code, s.n = sEnum, int32(o.n)
			case opBytes:
				s.code = sBytes
				like = func(q *op) bool { return q.code == opBytes && q.guard == 0 }
			case opCapString:
				s.code = sCapString
			case opCapEnum:
				s.code = sCapEnum
			case opUnion:
				s.code = sUnion
			case opJump:
				s.code = sJump
			case opCall:
				s.code = sCall
			case opArray:
				s.code = sArray
			case opMap:
				s.code = sMap
			}
			if (o.code == opArray || o.code == opMap) && strItems(o) {
				s.reps = 1
			}
		case o.code == opBytes:
			s.code = sOptBytes
			like = func(q *op) bool { return q.code == opBytes && q.guard == o.guard && q.level == o.level }
		case o.code == opVarint && o.n == 1:
			s.code, s.n = sOptVarint, int32(o.max)
			like = func(q *op) bool {
				return q.code == opVarint && q.n == 1 && q.max == o.max && q.guard == o.guard && q.level == o.level
			}
		case o.code == opFixed:
			s.code, s.n = sOptFixed, int32(o.n)
			like = func(q *op) bool { return q.code == opFixed && q.n == o.n && q.guard == o.guard && q.level == o.level }
		case o.code == opCapString:
			s.code = sOptCapString
		default:
			s.code = sGeneral
		}
		stepOf[k] = int32(len(code))
		k++
		for k < len(p.ops) && !target[k] && like(&p.ops[k]) {
			stepOf[k] = int32(len(code))
			s.cnt++
			k++
		}
		code = append(code, s)
	}
	stepOf[len(p.ops)] = int32(len(code))
	for i := range code {
		s := &code[i]
		o := &p.ops[s.idx]
		switch s.code {
		case sUnion:
			s.jumps = make([]int32, len(o.jumps))
			for x, j := range o.jumps {
				s.jumps[x] = stepOf[int(s.idx)+j] - int32(i)
			}
		case sJump:
			s.n = stepOf[int(s.idx)+o.n] - int32(i)
		}
	}
	p.code = code
}

// run executes p on b from offset i and returns the offset after it.
func (p *prog) run(b []byte, i int, c *captures, depth int) (int, error) {
	if depth > maxDepth {
		return i, &runError{errTooDeep, "", i}
	}
	// The branches of a union at level l are at depth depth+l+1 (see
	// op.level): from level deep on, they are too deep.
	deep := int32(maxDepth - depth)
	var err error
	code := p.code
	for k := 0; k < len(code); k++ {
		s := &code[k]
		e := int32(0) // ops of the step done by its fast path
		switch s.code {
		case sOptBytes:
			if s.level < deep {
				for ; e < s.cnt; e++ {
					if i >= len(b) {
						break
					}
					if x := b[i]; x == s.null {
						i++
						continue
					} else if x != s.val {
						break
					}
					end, ok := skipString1(b, i+1)
					if !ok {
						break
					}
					i = end
				}
			}
		case sOptVarint:
			if s.level < deep {
				for ; e < s.cnt; e++ {
					if i >= len(b) {
						break
					}
					if x := b[i]; x == s.null {
						i++
						continue
					} else if x != s.val {
						break
					}
					// A varint of one or two bytes (max is 5 or 10).
					if j := i + 1; j < len(b) && b[j] < 0x80 {
						i = j + 1
					} else if j+1 < len(b) && b[j+1] < 0x80 {
						i = j + 2
					} else {
						break
					}
				}
			}
		case sOptFixed:
			if s.level < deep {
				for ; e < s.cnt; e++ {
					if i >= len(b) {
						break
					}
					if x := b[i]; x == s.null {
						i++
						continue
					} else if x != s.val || len(b)-(i+1) < int(s.n) {
						break
					}
					i += 1 + int(s.n)
				}
			}
		case sOptCapString:
			if s.level < deep && i < len(b) {
				if x := b[i]; x == s.null {
					i++
					continue
				} else if x == s.val {
					if end, ok := skipString1(b, i+1); ok {
						if v := b[i+2 : end : end]; validUTF8(v) {
							o := &p.ops[s.idx]
							c[o.n].v, c[o.n].ok = v, true
							i = end
							continue
						}
					}
				}
			}
		case sBytes:
			for ; e < s.cnt; e++ {
				end, ok := skipString1(b, i)
				if !ok {
					break
				}
				i = end
			}
		case sCapString:
			if end, ok := skipString1(b, i); ok {
				if v := b[i+1 : end : end]; validUTF8(v) {
					o := &p.ops[s.idx]
					c[o.n].v, c[o.n].ok = v, true
					i = end
					continue
				}
			}
		case sFixed:
			if len(b)-i < int(s.n) {
				return i, &runError{errShort, p.ops[s.idx].where, i}
			}
			i += int(s.n)
			continue
		case sVarint:
			start := i
			for range s.reps {
				// Skip to the byte that ends the varint, if it is within
				// its max bytes; else varint gives the error.
				j, end := i, min(i+int(s.n), len(b))
				for j < end && b[j] >= 0x80 {
					j++
				}
				if j < end {
					i = j + 1
				} else if _, i, err = varint(b, i, int(s.n)); err != nil {
					return i, &runError{err, p.ops[s.idx].where, start}
				}
			}
			continue
		case sEnum:
			if i < len(b) {
				if x := b[i]; x < 0x80 && x&1 == 0 && int32(x>>1) < s.n {
					i++
					continue
				}
			}
		case sBool:
			if i < len(b) && b[i] <= 1 {
				i++
				continue
			}
		case sUnion:
			o := &p.ops[s.idx]
			start := i
			x, ok := varint1(b, i)
			if ok {
				i++
			} else if x, i, err = varint(b, i, 10); err != nil {
				return i, &runError{err, o.where, start}
			}
			if uint64(x) >= uint64(len(s.jumps)) {
				return i, &runError{errUnionRange, o.where, start}
			}
			if s.level >= deep {
				return i, &runError{errTooDeep, "", i}
			}
			k += int(s.jumps[x]) - 1 // -1: the loop adds 1
			continue
		case sJump:
			k += int(s.n) - 1
			continue
		case sCall:
			o := &p.ops[s.idx]
			if i, err = o.sub.run(b, i, c, depth+int(o.level)+1); err != nil {
				return i, err
			}
			continue
		case sArray:
			if s.reps == 1 {
				if end, ok := skipStrArray1(b, i); ok {
					i = end
					continue
				}
			}
			if i, err = skipArray(&p.ops[s.idx], b, i, depth+int(s.level)); err != nil {
				return i, err
			}
			continue
		case sMap:
			if s.reps == 1 {
				if end, ok := skipStrMap1(b, i); ok {
					i = end
					continue
				}
			}
			if i, err = skipMap(&p.ops[s.idx], b, i, depth+int(s.level)); err != nil {
				return i, err
			}
			continue
		}
		// The ops the fast path did not do (all of them for sEnum, sCapEnum,
		// sGeneral, and for a step whose fast path does nothing).
		for ; e < s.cnt; e++ {
			if i, err = execOp(&p.ops[s.idx+e], b, i, c, deep); err != nil {
				return i, err
			}
		}
	}
	return i, nil
}

// skipStrArray1 skips the array of strings or bytes at b[i:] when its
// block counts and item lengths are one-byte varints (positive counts: no
// block sizes) and the value holds them, the common case, and returns the
// offset after it. ok is false otherwise: then call skipArray from i, which
// reads it (or refuses it) the general way.
func skipStrArray1(b []byte, i int) (end int, ok bool) {
	for i < len(b) {
		c := b[i]
		if c == 0 {
			return i + 1, true
		}
		if c >= 0x80 || c&1 != 0 {
			return 0, false
		}
		i++
		count := int(c >> 1)
		if count > len(b)-i {
			return 0, false
		}
		for range count {
			if i, ok = skipString1(b, i); !ok {
				return 0, false
			}
		}
	}
	return 0, false
}

// skipStrMap1 is skipStrArray1 for a map of strings or bytes of at most
// inlineKeys keys, none of them twice (skipMap refuses a duplicate key).
func skipStrMap1(b []byte, i int) (end int, ok bool) {
	var keys [inlineKeys][2]int // offsets of the keys in b
	nkeys := 0
	for i < len(b) {
		c := b[i]
		if c == 0 {
			return i + 1, true
		}
		if c >= 0x80 || c&1 != 0 {
			return 0, false
		}
		i++
		count := int(c >> 1)
		if count > len(b)-i || count > inlineKeys-nkeys {
			return 0, false
		}
		for range count {
			k0 := i + 1
			if i, ok = skipString1(b, i); !ok {
				return 0, false
			}
			key := b[k0:i]
			for _, k := range keys[:nkeys] {
				if string(b[k[0]:k[1]]) == string(key) {
					return 0, false
				}
			}
			keys[nkeys] = [2]int{k0, i}
			nkeys++
			if i, ok = skipString1(b, i); !ok {
				return 0, false
			}
		}
	}
	return 0, false
}

// execOp runs one op that is neither a union, a jump nor a program of its
// own (opCall, opArray, opMap), guarded or not, on b from offset i and
// returns the offset after it. deep is as in run.
func execOp(o *op, b []byte, i int, c *captures, deep int32) (int, error) {
	var err error
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
			return i, nil // the branch without code
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
	default: // lower never gives one: refuse rather than guess
		return i, &runError{errControlOp, o.where, start}
	}
	return i, nil
}
