//go:build !unix

package bench

import (
	"fmt"
	"runtime"
)

// processCPUTicks: another process's CPU time is read from Linux's /proc
// only.
func processCPUTicks(pid int) (uint64, error) {
	return 0, fmt.Errorf("cannot read the CPU time of process %d on %s: it is read from Linux's /proc", pid, runtime.GOOS)
}

// clockTicksPerSecond is not used on this platform.
func clockTicksPerSecond() int { return 100 }

// cpuSeconds is not measured on this platform.
func cpuSeconds() float64 { return 0 }

// peakRSS is not measured on this platform.
func peakRSS() int64 { return 0 }

// loadAverage is not measured on this platform.
func loadAverage() [3]float64 { return [3]float64{} }
