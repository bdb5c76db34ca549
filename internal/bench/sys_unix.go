//go:build unix

package bench

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// processCPUTicks returns the user+system CPU time process pid has used:
// utime+stime of /proc/PID/stat (every thread of it), in clock ticks
// (clockTicksPerSecond). It fails where there is no /proc (not Linux) or
// no such process.
func processCPUTicks(pid int) (uint64, error) {
	s, err := readProcStat(pid)
	if err != nil {
		return 0, err
	}
	return s.UTime + s.STime, nil
}

// atClkTck is AT_CLKTCK, the auxiliary vector's entry for the clock ticks
// per second of times(2) and /proc (Linux's USER_HZ).
const atClkTck = 17

// clockTicksPerSecond is sysconf(_SC_CLK_TCK) without cgo: what glibc
// returns for it, AT_CLKTCK from the process's auxiliary vector, or 100
// (Linux's USER_HZ on every architecture Go runs on) without one.
var clockTicksPerSecond = sync.OnceValue(func() int {
	if auxv, err := unix.Auxv(); err == nil {
		for _, kv := range auxv {
			if kv[0] == atClkTck && kv[1] > 0 {
				return int(kv[1])
			}
		}
	}
	return 100
})

// cpuSeconds returns the user+system CPU time this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// peakRSS returns the process's peak resident set size in bytes: VmHWM
// from /proc/self/status, or 0 where there is no /proc.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// loadAverage returns the 1-, 5- and 15-minute load averages, or zeros.
func loadAverage() [3]float64 {
	var out [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	fs := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(fs); i++ {
		out[i], _ = strconv.ParseFloat(fs[i], 64)
	}
	return out
}
