package router

import "sync"

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
	per := (n + w - 1) / w
	var wg sync.WaitGroup
	for lo := per; lo < n; lo += per {
		wg.Go(func() { fn(lo, min(lo+per, n)) })
	}
	fn(0, per)
	wg.Wait()
}

// minFanOut is the fewest records a goroutine of fanOut is given: starting
// one costs about a microsecond, an attestation tag or a decision leaf
// about half of one.
const minFanOut = 64
