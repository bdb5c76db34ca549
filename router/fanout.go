package router

import (
	"runtime"
	"sync"
)

// fanOut calls fn over [0, n) split into at most workers contiguous
// ranges of at least minPer items each, the first on the caller's
// goroutine and the others on goroutines of their own, and returns once
// every call has. With one range (n < 2*minPer, or workers < 2) it is
// fn(0, n) on the caller's goroutine.
//
// The sender uses it for the audit's per-record work (attestation tags,
// decision leaves): one sender per cluster would otherwise do all of it on
// one goroutine, and on a host with cores to spare that goroutine, not the
// cores, would bound the router's throughput with the audit on
// (docs/router.md, "The audit's work on every core").
func fanOut(n, workers, minPer int, fn func(lo, hi int)) {
	w := min(workers, n/max(minPer, 1))
	if w < 2 {
		fn(0, n)
		return
	}
	// Even ranges: range i is [i*n/w, (i+1)*n/w), at least n/w >= minPer
	// items each.
	var wg sync.WaitGroup
	for i := 1; i < w; i++ {
		wg.Go(func() { fn(i*n/w, (i+1)*n/w) })
	}
	fn(0, n/w)
	wg.Wait()
}

// workers is how many goroutines fanOut may spread a sender's audit work
// over: GOMAXPROCS, read at each use (the runtime changes it when a
// container's CPU limit changes).
func workers() int { return runtime.GOMAXPROCS(0) }

// minFanOut is the fewest records a goroutine of fanOut is given: starting
// one costs about a microsecond, an attestation tag or a decision leaf
// about half of one.
const minFanOut = 64
