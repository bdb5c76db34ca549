package bench

import (
	"bytes"
	"fmt"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"sync"
	"time"
)

// heapWatchInterval is how often heapWatch samples the live heap.
const heapWatchInterval = 100 * time.Millisecond

// heapWatch follows a contender process's live heap (the bytes the last
// completed GC cycle marked live) and, when asked, keeps a heap profile
// taken when it was largest: the profile's inuse_space is then the heap at
// (about) the run's peak, which is what the process's peak RSS is made
// of, less the garbage the GC let accumulate on top (GOGC) and the
// runtime's own memory.
type heapWatch struct {
	stopc    chan struct{}
	done     chan struct{}
	once     sync.Once
	peak     int64        // the largest live heap seen
	profiled int64        // the live heap when prof was taken
	prof     bytes.Buffer // the heap profile near the peak, when profiling
	err      error
}

// startHeapWatch starts sampling; profile also takes a heap profile at
// every new peak (at most one per sample).
func startHeapWatch(profile bool) *heapWatch {
	w := &heapWatch{stopc: make(chan struct{}), done: make(chan struct{})}
	go w.run(profile)
	return w
}

func (w *heapWatch) run(profile bool) {
	defer close(w.done)
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(heapWatchInterval)
	defer t.Stop()
	for {
		metrics.Read(sample)
		if v := sample[0].Value; v.Kind() == metrics.KindUint64 {
			live := int64(v.Uint64())
			w.peak = max(w.peak, live)
			if profile && live > w.profiled+w.profiled/50 { // a new peak by 2% at least: profile again
				w.profiled = live
				w.prof.Reset()
				w.err = pprof.Lookup("heap").WriteTo(&w.prof, 0)
			}
		}
		select {
		case <-w.stopc:
			return
		case <-t.C:
		}
	}
}

// halt ends the sampling; it may be called more than once.
func (w *heapWatch) halt() {
	w.once.Do(func() { close(w.stopc) })
	<-w.done
}

// stop ends the sampling and returns the largest live heap seen; with a
// file name it writes there the heap profile taken at the last sample
// that grew the live heap by 2% or more (so within 2% of the peak).
func (w *heapWatch) stop(file string) (int64, error) {
	w.halt()
	if file == "" {
		return w.peak, nil
	}
	if w.err != nil {
		return w.peak, fmt.Errorf("heap profile: %w", w.err)
	}
	if err := os.WriteFile(file, w.prof.Bytes(), 0o644); err != nil {
		return w.peak, fmt.Errorf("heap profile: %w", err)
	}
	return w.peak, nil
}
