package rules

import (
	"runtime"
	"slices"
	"sync/atomic"
	"unsafe"
)

// pinMem is where one pinTable keeps its slots, arena and filter: memory
// mapped from the operating system (an anonymous private mapping, on
// Linux), outside the Go heap, so that the garbage collector neither
// counts a million pins into its heap goal (with GOGC=100 every byte live
// in the heap costs about two of resident memory) nor scans them. Where
// mapping is not supported or fails, the memory comes from the heap
// instead (the table works the same).
//
// The memory is unmapped when the table that owns it becomes unreachable
// (a cleanup attached by newPinTableBuilder; see release). Nothing may
// keep a slice into it beyond the table's life: the table's methods copy
// what they hand out (each unpacks ids into new memory, Pin returns
// jurisdiction names from the heap) and end with runtime.KeepAlive of the
// table, so it stays reachable while they read the mapping.
//
// A pinMem is used by one goroutine (the builder's) until its table is
// finished; release runs once the table is unreachable.
type pinMem struct {
	regions [][]byte // mapped regions, each at its full mapped length
}

// pinMappedBytes is the memory mapped for pin tables in this process now
// (what release has not yet given back). Tests read it; Pins.MappedBytes
// reports the current table's share.
var pinMappedBytes atomic.Int64

// mapPages maps n bytes of anonymous memory (mapMem), or returns nil when
// it cannot; a variable so that a test can make every mapping fail.
var mapPages = mapMem

// pageSize is the operating system's page size.
var pageSize = max(4096, osPageSize())

// roundPage rounds n up to whole pages.
func roundPage(n int) int { return (n + pageSize - 1) / pageSize * pageSize }

// bytes returns n zero bytes (len and cap n), mapped when it can (a nil
// m: from the heap).
func (m *pinMem) bytes(n int) []byte {
	if n <= 0 {
		return nil
	}
	if m == nil {
		return make([]byte, n)
	}
	if b := mapPages(roundPage(n)); b != nil {
		m.regions = append(m.regions, b)
		pinMappedBytes.Add(int64(len(b)))
		return b[:n:n]
	}
	return make([]byte, n)
}

// words returns n zero words, mapped when it can.
func (m *pinMem) words(n int) []uint64 {
	b := m.bytes(8 * n)
	if b == nil {
		return nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), n)
}

// region returns the index of the mapped region starting at p, or -1 (a
// slice from the heap, or none).
func (m *pinMem) region(p unsafe.Pointer) int {
	if m == nil || p == nil {
		return -1
	}
	for i, r := range m.regions {
		if unsafe.Pointer(unsafe.SliceData(r)) == p {
			return i
		}
	}
	return -1
}

// free gives back the memory starting at p (from bytes or words); the
// caller holds no slice into it any more. Heap memory is left to the GC.
func (m *pinMem) free(p unsafe.Pointer) {
	i := m.region(p)
	if i < 0 {
		return
	}
	r := m.regions[i]
	// slices.Delete clears the slot the list no longer uses: a pointer
	// left there, into memory unmapped, would still be scanned.
	m.regions = slices.Delete(m.regions, i, i+1)
	unmapMem(r)
	pinMappedBytes.Add(-int64(len(r)))
}

// trim gives back the whole pages of the region starting at p beyond its
// first keep bytes (an arena sized for more ids than came). It returns the
// bytes that stay usable from p: keep rounded up to a page, or -1 when p
// is not mapped (heap memory, which the caller may copy instead).
func (m *pinMem) trim(p unsafe.Pointer, keep int) int {
	i := m.region(p)
	if i < 0 {
		return -1
	}
	r := m.regions[i]
	k := max(roundPage(keep), pageSize)
	if k < len(r) {
		unmapMem(r[k:])
		pinMappedBytes.Add(-int64(len(r) - k))
		m.regions[i] = r[:k:k]
	}
	return len(m.regions[i])
}

// mapped returns the bytes mapped for this table now.
func (m *pinMem) mapped() int {
	if m == nil {
		return 0
	}
	n := 0
	for _, r := range m.regions {
		n += len(r)
	}
	return n
}

// release gives back every region. It is the cleanup of the table that
// owns m (runtime.AddCleanup), run once the table is unreachable; it must
// not refer to the table.
func (m *pinMem) release() {
	for _, r := range m.regions {
		unmapMem(r)
		pinMappedBytes.Add(-int64(len(r)))
	}
	m.regions = nil
}

// ownMem gives t a pinMem, released when t becomes unreachable.
func ownMem(t *pinTable) *pinMem {
	m := &pinMem{}
	t.mem = m
	runtime.AddCleanup(t, func(m *pinMem) { m.release() }, m)
	return m
}
