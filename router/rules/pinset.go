package rules

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/bits"
	"runtime"
	"strconv"
	"unsafe"
)

// PinView answers "is this user pinned to a jurisdiction?" from memory: one
// consistent view of the whole pin set, as Pins.Pins hands it out. It is
// immutable: a view taken before a pin changes keeps answering as before
// (the next view sees the change), so a batch of events is decided under
// one view. Safe for concurrent use.
type PinView interface {
	// Pin returns the name of the jurisdiction userID is pinned to, or ""
	// when the user has no pin. It does not allocate.
	Pin(userID []byte) string
}

// pinTable is an immutable, exact set of pins in little memory: every user
// id once, behind a length-and-kind prefix, in one byte arena, and an
// open-addressing index of 8-byte slots (linear probing, at most maxLoad
// full), each slot holding an arena offset, 24 bits of the id's hash (so
// that most probes of other ids need not read the arena) and a
// jurisdiction number. Ids in a canonical form are stored packed, exactly
// and reversibly (see packID): a lowercase UUID in 16 bytes, a decimal
// number in its varint. About len(packed id) + 1 + 8/maxLoad bytes per
// pin, plus a byte for the filter. The slots, arena and filter are mapped
// outside the Go heap where the system allows (see pinMem), so the
// garbage collector neither scans them nor counts them into its heap goal;
// they are given back when the table becomes unreachable.
type pinTable struct {
	seed  maphash.Seed
	slots []uint64 // 0: empty; else (offset+1)<<32 | tag<<8 | jurisdiction
	arena []byte   // uvarint(len(id)) id, one after another
	jurs  []string // jurisdiction names, by number
	n     int      // pins
	// filter says which ids may be in the table (a blocked Bloom filter,
	// one word per id, four bits: about 8 bits per pin, 1 MB for a million
	// pins, about 2.5% false positives), built by finish. Most lookups are
	// of users without a pin: it answers them from a megabyte that stays
	// in cache instead of a probe into the slots (16 MB for a million
	// pins), a cache miss each. nil: no filter (a table being built).
	filter []uint64
	// mem owns slots, arena and filter when they are mapped (nil for
	// emptyPins, which lives in the heap).
	mem *pinMem
}

const (
	maxLoad       = 0.7
	maxArena      = 1<<32 - 2 // slot offsets are 32 bits (+1)
	maxJurisdicts = 256       // slot jurisdiction numbers are 8 bits
	tagMask       = 1<<24 - 1
)

// emptyPins is the pin set with no pin.
var emptyPins = &pinTable{seed: maphash.MakeSeed(), slots: make([]uint64, 8)}

// slotsFor returns the index size for n pins.
func slotsFor(n int) int { return max(8, int(float64(n)/maxLoad)+1) }

// start returns the first slot and the tag of a hash.
func (t *pinTable) start(h uint64) (int, uint64) {
	hi, _ := bits.Mul64(h, uint64(len(t.slots))) // fast range: the high bits of h pick the slot
	return int(hi), h & tagMask
}

// Kinds of packed user ids.
const (
	idRaw     = 0 // the id's bytes
	idUUID    = 1 // a canonical lowercase UUID: its 16 bytes
	idDecimal = 2 // a canonical decimal number below 2^64: its uvarint
)

// packBuf holds a packed id.
type packBuf [binary.MaxVarintLen64 + 16]byte

// packID returns the form the table stores id in, exactly and reversibly
// (unpackID): for a canonical lowercase UUID ("0f8fad5b-d9cb-469f-a165-
// 70867728950e") its 16 bytes, for a canonical decimal number below 2^64
// (no sign, no leading zero) its uvarint, and for anything else id itself.
// Compact forms are written to buf. It does not allocate.
func packID(id []byte, buf *packBuf) (kind byte, b []byte) {
	if len(id) == 36 && id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-' {
		var bad byte
		for n, i := range uuidDigits {
			hi, lo := hexValue[id[i]], hexValue[id[i+1]]
			bad |= hi | lo
			buf[n] = hi<<4 | lo&0xf
		}
		if bad&0xf0 == 0 {
			return idUUID, buf[:16]
		}
		return idRaw, id
	}
	if len(id) > 0 && len(id) <= 20 && (id[0] != '0' || len(id) == 1) {
		var v uint64
		for _, c := range id {
			if c < '0' || c > '9' {
				return idRaw, id
			}
			d := uint64(c - '0')
			if v > (1<<64-1-d)/10 {
				return idRaw, id // above 2^64-1
			}
			v = v*10 + d
		}
		return idDecimal, binary.AppendUvarint(buf[:0], v)
	}
	return idRaw, id
}

// uuidDigits are the offsets of the 16 hex digit pairs of a UUID.
var uuidDigits = [16]int{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

// hexValue maps a lowercase hex digit to its value and every other byte
// to 0xf0 (a high nibble no digit has).
var hexValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xf0
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c-'a') + 10
	}
	return t
}()

// unpackID returns the user id a packed id stands for.
func unpackID(kind byte, b []byte) []byte { return appendUnpacked(nil, kind, b) }

// appendUnpacked appends the user id a packed id stands for to dst.
func appendUnpacked(dst []byte, kind byte, b []byte) []byte {
	switch kind {
	case idUUID:
		const hexDigits = "0123456789abcdef"
		for i, x := range b {
			if i == 4 || i == 6 || i == 8 || i == 10 {
				dst = append(dst, '-')
			}
			dst = append(dst, hexDigits[x>>4], hexDigits[x&0xf])
		}
		return dst
	case idDecimal:
		v, _ := binary.Uvarint(b)
		return strconv.AppendUint(dst, v, 10)
	}
	return append(dst, b...)
}

// filterBits returns the filter word of hash h and the four bits of it h
// sets. The word is picked by the high bits of h scrambled (the slots use
// h's own high bits), the bits by its low ones.
func (t *pinTable) filterBits(h uint64) (int, uint64) {
	x := h * 0x9e3779b97f4a7c15
	w, _ := bits.Mul64(x, uint64(len(t.filter)))
	return int(w), 1<<(x&63) | 1<<((x>>6)&63) | 1<<((x>>12)&63) | 1<<((x>>18)&63)
}

// mayHold reports whether the id of hash h may be in the table: false
// only for an id that is not.
func (t *pinTable) mayHold(h uint64) bool {
	if t.filter == nil {
		return true
	}
	w, m := t.filterBits(h)
	ok := t.filter[w]&m == m
	runtime.KeepAlive(t)
	return ok
}

// buildFilter sets the filter from every pin's hash.
func (t *pinTable) buildFilter() {
	t.filter = t.mem.words(max(1, (t.n+7)/8))
	for _, s := range t.slots {
		if s != 0 {
			w, m := t.filterBits(t.hashAt(s))
			t.filter[w] |= m
		}
	}
	runtime.KeepAlive(t)
}

// find returns the slot holding userID, and whether there is one. The
// hash is of the id as given, so that an id without a pin (most lookups)
// is never packed: only an id whose hash tag matches a slot's is compared.
func (t *pinTable) find(userID []byte) (int, bool) {
	return t.findHash(userID, maphash.Bytes(t.seed, userID))
}

// findHash is find given userID's hash.
func (t *pinTable) findHash(userID []byte, h uint64) (int, bool) {
	i, tag := t.start(h)
	var buf packBuf
	packed := false
	var kind byte
	var b []byte
	found := false
	for {
		s := t.slots[i]
		if s == 0 {
			break
		}
		if (s>>8)&tagMask == tag {
			if !packed {
				kind, b = packID(userID, &buf)
				packed = true
			}
			if k, id := t.idAt(s); k == kind && string(id) == string(b) {
				found = true
				break
			}
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
	runtime.KeepAlive(t) // the slots and arena are read: t may go now
	return i, found
}

// hashAt returns the hash of the user id a full slot points at.
func (t *pinTable) hashAt(s uint64) uint64 {
	var buf [40]byte
	k, b := t.idAt(s)
	h := maphash.Bytes(t.seed, appendUnpacked(buf[:0], k, b))
	runtime.KeepAlive(t)
	return h
}

// idAt returns the packed user id a full slot points at: b is in the
// arena, valid only while t is reachable (its caller keeps t alive until
// it is done with b, and never keeps b).
func (t *pinTable) idAt(s uint64) (kind byte, b []byte) {
	off := int(s>>32) - 1
	h, n := binary.Uvarint(t.arena[off:])
	l := int(h >> 2)
	return byte(h & 3), t.arena[off+n : off+n+l]
}

// get returns userID's jurisdiction, "" for none.
func (t *pinTable) get(userID []byte) string {
	h := maphash.Bytes(t.seed, userID)
	if !t.mayHold(h) {
		return ""
	}
	j := ""
	if i, ok := t.findHash(userID, h); ok {
		j = t.jurs[t.slots[i]&0xff]
	}
	runtime.KeepAlive(t)
	return j
}

// Pin returns userID's jurisdiction, "" for none.
func (t *pinTable) Pin(userID []byte) string { return t.get(userID) }

// each calls fn for every pin (slot index, user id, jurisdiction); the
// user id is a copy of its own, fn may keep it.
func (t *pinTable) each(fn func(slot int, userID []byte, jurisdiction string)) {
	for i, s := range t.slots {
		if s != 0 {
			fn(i, unpackID(t.idAt(s)), t.jurs[s&0xff])
		}
	}
	runtime.KeepAlive(t)
}

// bytes returns the memory the table holds (index, arena, filter, names),
// mapped or in the heap.
func (t *pinTable) bytes() int {
	n := 8*cap(t.slots) + cap(t.arena) + 8*cap(t.filter)
	for _, j := range t.jurs {
		n += 16 + len(j)
	}
	return n
}

// pinTableBuilder fills a new pinTable. It is used by one goroutine, and
// the table is not read before finish.
type pinTableBuilder struct {
	t     *pinTable
	jurNo map[string]uint8
}

// newPinTableBuilder returns a builder sized for about n pins whose ids
// take about idBytes bytes in all (both may be 0: it grows). The index is
// sized for n up front; the arena is reserved for idBytes + n (mapped
// pages cost memory only once written, and finish gives back the pages
// left unused).
func newPinTableBuilder(n, idBytes int) *pinTableBuilder {
	t := &pinTable{seed: maphash.MakeSeed()}
	m := ownMem(t)
	t.slots = m.words(slotsFor(n))
	t.arena = m.bytes(idBytes + n + binary.MaxVarintLen64)[:0]
	return &pinTableBuilder{t: t, jurNo: map[string]uint8{}}
}

// add sets userID's pin to jurisdiction (not ""), replacing an earlier one.
func (b *pinTableBuilder) add(userID []byte, jurisdiction string) error {
	t := b.t
	j, ok := b.jurNo[jurisdiction]
	if !ok {
		if len(t.jurs) == maxJurisdicts {
			return fmt.Errorf("rules: pins: more than %d distinct jurisdictions", maxJurisdicts)
		}
		j = uint8(len(t.jurs))
		t.jurs = append(t.jurs, jurisdiction)
		b.jurNo[jurisdiction] = j
	}
	if float64(t.n+1) > maxLoad*float64(len(t.slots)) {
		b.grow(2 * len(t.slots))
	}
	var buf packBuf
	kind, id := packID(userID, &buf)
	i, found := t.find(userID)
	if found {
		t.slots[i] = t.slots[i]&^0xff | uint64(j)
		return nil
	}
	off := len(t.arena)
	need := binary.MaxVarintLen64 + len(id)
	if int64(off)+int64(need) > maxArena { // in int64: maxArena overflows a 32-bit int
		return fmt.Errorf("rules: pins: the user ids take more than %d bytes", int64(maxArena))
	}
	if off+need > cap(t.arena) {
		b.growArena(max(2*cap(t.arena), off+need, 4096))
	}
	t.arena = binary.AppendUvarint(t.arena, uint64(len(id))<<2|uint64(kind))
	t.arena = append(t.arena, id...)
	_, tag := t.start(maphash.Bytes(t.seed, userID))
	t.slots[i] = uint64(off+1)<<32 | tag<<8 | uint64(j)
	t.n++
	return nil
}

// growArena moves the arena to one of size bytes (the appends of add
// never reallocate it: they stay within its capacity).
func (b *pinTableBuilder) growArena(size int) {
	t := b.t
	old := t.arena
	t.arena = append(t.mem.bytes(size)[:0], old...)
	t.mem.free(unsafe.Pointer(unsafe.SliceData(old)))
}

// grow rebuilds the index with size slots.
func (b *pinTableBuilder) grow(size int) {
	t := b.t
	old := t.slots
	t.slots = t.mem.words(size)
	for _, s := range old {
		if s == 0 {
			continue
		}
		i, _ := t.start(t.hashAt(s))
		for t.slots[i] != 0 {
			if i++; i == len(t.slots) {
				i = 0
			}
		}
		t.slots[i] = s
	}
	t.mem.free(unsafe.Pointer(unsafe.SliceData(old)))
}

// finish returns the table; the builder must not be used afterwards.
func (b *pinTableBuilder) finish() *pinTable {
	t := b.t
	b.t = nil
	if c := cap(t.arena); c > len(t.arena)+len(t.arena)/8+4096 {
		// Give back what was reserved and not used: the pages past the
		// ids, or (in the heap) the slack of a copy.
		p := unsafe.Pointer(unsafe.SliceData(t.arena))
		if k := t.mem.trim(p, len(t.arena)); k >= 0 {
			t.arena = t.arena[:len(t.arena):min(k, cap(t.arena))]
		} else {
			t.arena = append([]byte(nil), t.arena...)
		}
	}
	t.buildFilter()
	return t
}

// pinSnapshot is a PinView: the compact table of the last full load and
// the changes since (over: user id → jurisdiction, "" for a pin removed),
// both immutable.
type pinSnapshot struct {
	base *pinTable
	over map[string]string
	n    int // pins in all
}

// Pin returns userID's jurisdiction, "" for none, without allocating.
func (s *pinSnapshot) Pin(userID []byte) string {
	if len(s.over) > 0 {
		if j, ok := s.over[string(userID)]; ok {
			return j
		}
	}
	return s.base.get(userID)
}

// with returns a snapshot with changes (user id → jurisdiction, "" for
// none) applied on top of s, sharing s's table.
func (s *pinSnapshot) with(changes map[string]string) *pinSnapshot {
	over := make(map[string]string, len(s.over)+len(changes))
	for u, j := range s.over {
		over[u] = j
	}
	n := s.n
	for u, j := range changes {
		before := s.Pin([]byte(u))
		if base := s.base.get([]byte(u)); base == j {
			delete(over, u) // the table says it already
		} else {
			over[u] = j
		}
		switch {
		case before == "" && j != "":
			n++
		case before != "" && j == "":
			n--
		}
	}
	return &pinSnapshot{base: s.base, over: over, n: n}
}

// compact returns a snapshot with the same pins in one new table.
func (s *pinSnapshot) compact() (*pinSnapshot, error) {
	idBytes := len(s.base.arena)
	for u := range s.over {
		idBytes += len(u)
	}
	b := newPinTableBuilder(s.n, idBytes)
	var err error
	s.base.each(func(_ int, id []byte, j string) {
		if _, changed := s.over[string(id)]; !changed && err == nil {
			err = b.add(id, j)
		}
	})
	for u, j := range s.over {
		if j != "" && err == nil {
			err = b.add([]byte(u), j)
		}
	}
	if err != nil {
		return nil, err
	}
	t := b.finish()
	return &pinSnapshot{base: t, n: t.n}, nil
}
