//go:build linux

package rules

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

func osPageSize() int { return os.Getpagesize() }

// mapMem maps n bytes (a whole number of pages) of zeroed, private,
// anonymous memory, or returns nil when it cannot.
func mapMem(n int) []byte {
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil
	}
	return unsafe.Slice((*byte)(p), n)
}

// unmapMem unmaps b, whole pages of a region mapMem returned.
func unmapMem(b []byte) {
	if len(b) == 0 {
		return
	}
	if err := unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b))); err != nil {
		// Only a bad address or length fails, which would be a bug here.
		panic("rules: unmapping pin memory: " + err.Error())
	}
}
