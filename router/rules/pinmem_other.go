//go:build !linux

package rules

func osPageSize() int { return 4096 }

// mapMem returns nil: outside Linux the pin table's memory comes from the
// Go heap.
func mapMem(int) []byte { return nil }

// unmapMem is never called outside Linux (nothing is mapped).
func unmapMem([]byte) {}
