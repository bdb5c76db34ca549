package main

import (
	"context"
	"log/slog"
	"math"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/router/rules"
)

// Where the soft memory limit of `residency route` comes from.
const (
	memLimitConfig    = "router.memory_limit"
	memLimitEnv       = "GOMEMLIMIT"
	memLimitContainer = "container"
	memLimitNone      = "none"
)

// containerMemoryShare is the share of the container's memory, less the
// binary's mapped pages, that route makes its soft memory limit when
// nothing else sets one: the rest is left for what the Go runtime does not
// count against the limit exactly (memory not yet returned to the system,
// fragmentation).
const containerMemoryShare = 0.9

// memoryLimit returns the soft memory limit for route, in bytes (0: none),
// and where it comes from: router.memory_limit when set; else GOMEMLIMIT
// (which the Go runtime has already applied: the limit is then returned
// as 0, nothing to set); else containerMemoryShare of the container's
// memory limit (cgroup v2 memory.max of the process's cgroup, or cgroup v1
// memory.limit_in_bytes) less the process's file-backed resident memory
// (RssFile: the binary's pages, which count against the container's limit
// but not the Go runtime's; about 25 MiB); else none.
func memoryLimit(configured int64, lookupEnv func(string) (string, bool), readFile func(string) ([]byte, error)) (int64, string) {
	if configured > 0 {
		return configured, memLimitConfig
	}
	if v, ok := lookupEnv("GOMEMLIMIT"); ok && v != "" {
		return 0, memLimitEnv
	}
	if c := containerMemory(readFile); c > 0 {
		avail := c - fileRSS(readFile)
		if avail < c/2 {
			avail = c / 2 // a container hardly larger than the binary: the limit is still half of it
		}
		return int64(float64(avail) * containerMemoryShare), memLimitContainer
	}
	return 0, memLimitNone
}

// containerMemory returns the memory limit of the process's cgroup in
// bytes, or 0 when there is none (or it cannot be read).
func containerMemory(readFile func(string) ([]byte, error)) int64 {
	var files []string
	if b, err := readFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok { // cgroup v2
				files = append(files, path.Join("/sys/fs/cgroup", strings.TrimSpace(p), "memory.max"))
			}
		}
	}
	files = append(files, "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
	for _, f := range files {
		b, err := readFile(f)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 { // cgroup v1 says "no limit" with a page-rounded 2^63-1
			return 0
		}
		return n
	}
	return 0
}

// fileRSS returns the process's file-backed resident memory in bytes
// (RssFile in /proc/self/status), or 0 when it cannot be read.
func fileRSS(readFile func(string) ([]byte, error)) int64 {
	b, err := readFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil || kb < 0 {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// applyMemoryLimit sets route's soft memory limit (memoryLimit) and logs
// it. It returns the limit it set and where it came from.
func applyMemoryLimit(cfg *config.Config, log *slog.Logger) (int64, string) {
	limit, from := memoryLimit(cfg.Router.MemoryLimit, os.LookupEnv, os.ReadFile)
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	cur := debug.SetMemoryLimit(-1)
	if cur == math.MaxInt64 {
		cur = 0 // the runtime's "no limit"
	}
	log.Info("memory limit", "bytes", cur, "from", from)
	return limit, from
}

// limitLessPins returns the container-derived limit less the memory of
// the pin set, which the pin table holds outside the Go heap (mapped
// memory the container counts and the Go runtime's limit does not); never
// below half of limit.
func limitLessPins(limit int64, pinBytes int) int64 {
	return max(limit-int64(pinBytes), limit/2)
}

// pinsLimitEvery is how often route reads again how much of the pin set is
// mapped outside the heap, to follow a table a later resync rebuilt
// larger or smaller.
const pinsLimitEvery = time.Minute

// lowerLimitForPins waits for the first load of pins (or ctx's end) and
// then lowers a limit route took from the container by the pin set's
// memory, so that heap and pins together stay within the container's
// share; every `every` until ctx ends it reads the pins' memory again and
// follows it (a resync may have built a larger or a smaller table). A
// limit from router.memory_limit or GOMEMLIMIT is the operator's and is
// left alone (it bounds the heap only: the pins come on top).
func lowerLimitForPins(ctx context.Context, limit int64, from string, pins *rules.Pins, log *slog.Logger, every time.Duration) {
	if from != memLimitContainer || limit <= 0 || pins == nil {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-pins.Loaded():
	}
	set := limit // what applyMemoryLimit set
	follow := func() {
		// Only what is mapped outside the heap: a table that fell back to
		// the heap is inside the limit already.
		mapped := pins.MappedBytes()
		l := limit
		if mapped > 0 {
			l = limitLessPins(limit, mapped)
		}
		if l == set {
			return
		}
		debug.SetMemoryLimit(l)
		set = l
		log.Info("memory limit less the pins held outside the heap", "bytes", l, "pins_bytes", mapped)
	}
	follow()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			follow()
		}
	}
}
