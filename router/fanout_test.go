package router

import (
	"sync"
	"testing"
)

// TestFanOutCoversEachItemOnce: every item of [0, n) is given to exactly
// one call, in no more ranges than workers, each range of at least minPer
// items (one range when n < 2*minPer).
func TestFanOutCoversEachItemOnce(t *testing.T) {
	for _, c := range []struct{ n, workers, minPer, wantCalls int }{
		{0, 4, 64, 1}, {1, 4, 64, 1}, {127, 4, 64, 1}, {128, 4, 64, 2}, {500, 2, 64, 2},
		{500, 8, 64, 7}, {500, 1, 64, 1}, {10, 8, 0, 8}, {3, 8, 1, 3}, {193, 3, 64, 3}, {257, 4, 64, 4},
	} {
		var mu sync.Mutex
		seen := make([]int, c.n)
		calls := 0
		fanOut(c.n, c.workers, c.minPer, func(lo, hi int) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if c.n >= 2*c.minPer && c.workers > 1 && hi-lo < c.minPer {
				t.Errorf("%+v: range [%d, %d) below %d items", c, lo, hi, c.minPer)
			}
			for i := lo; i < hi; i++ {
				seen[i]++
			}
		})
		if calls != c.wantCalls {
			t.Errorf("%+v: %d calls, want %d", c, calls, c.wantCalls)
		}
		for i, k := range seen {
			if k != 1 {
				t.Fatalf("%+v: item %d given %d times", c, i, k)
			}
		}
	}
}
