package benchtest

import (
	"testing"
	"time"
)

// TestCPUTimeCountsWork: CPU time grows by at least part of a busy loop's
// wall time (and never goes backwards).
func TestCPUTimeCountsWork(t *testing.T) {
	before := CPUTime()
	start := time.Now()
	x := 0
	for time.Since(start) < 50*time.Millisecond {
		x++
	}
	after := CPUTime()
	if after < before+10*time.Millisecond {
		t.Fatalf("CPU time grew by %v over a 50 ms busy loop (%d turns)", after-before, x)
	}
}
