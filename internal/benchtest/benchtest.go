// Package benchtest holds what the module's benchmarks share (tests only):
// the process's CPU time per operation, reported beside the wall time
// because the machines the benchmarks run on are shared (the wall time
// includes waiting for a core, the CPU time does not).
package benchtest

import "testing"

// ReportCPU reports the process's CPU time per operation (cpu-ns/op) when
// the benchmark returns. Use as `defer benchtest.ReportCPU(b)()` just
// before a benchmark's b.Loop loop.
func ReportCPU(b *testing.B) func() {
	start := CPUTime()
	return func() { b.ReportMetric(float64(CPUTime()-start)/float64(b.N), "cpu-ns/op") }
}
