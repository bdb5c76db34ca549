package rules

import (
	"crypto/rand"
	"fmt"
	"runtime"
	"testing"
)

// uuid returns a random 36-character UUID string, the longest user id
// format in common use.
func uuid() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// benchPins returns a pin set of n UUID users over five jurisdictions,
// with overlay changes on top, and n ids pinned and n not.
func benchPins(tb testing.TB, n, overlay int) (s *pinSnapshot, pinned, other [][]byte) {
	tb.Helper()
	jurs := []string{"US", "EU", "UK", "IN", "BR"}
	b := newPinTableBuilder(n, 36*n)
	for i := range n {
		id := []byte(uuid())
		if err := b.add(id, jurs[i%len(jurs)]); err != nil {
			tb.Fatal(err)
		}
		pinned = append(pinned, id)
	}
	t := b.finish()
	s = &pinSnapshot{base: t, n: t.n}
	if overlay > 0 {
		ch := map[string]string{}
		for i := range overlay {
			ch[uuid()] = jurs[i%len(jurs)]
		}
		s = s.with(ch)
	}
	for range min(n, 100_000) {
		other = append(other, []byte(uuid()))
	}
	return s, pinned, other
}

// BenchmarkPinView: one lookup in the pin set in memory, for a pinned user
// (hit) and for a user without a pin (miss, the common case), with and
// without changes kept apart from the table (overlay).
func BenchmarkPinView(b *testing.B) {
	for _, c := range []struct{ n, overlay int }{{1000, 0}, {1_000_000, 0}, {1_000_000, 1000}} {
		s, pinned, other := benchPins(b, c.n, c.overlay)
		var v PinView = s
		if c.overlay == 0 {
			// The baseline: a Go map of the same pins (2.4x the memory).
			m := make(map[string]string, c.n)
			for i, id := range pinned {
				m[string(id)] = []string{"US", "EU"}[i%2]
			}
			b.Run(fmt.Sprintf("pins=%d/gomap/miss", c.n), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if m[string(other[i])] != "" {
						b.Fatal("hit")
					}
					if i++; i == len(other) {
						i = 0
					}
				}
			})
		}
		for _, k := range []struct {
			name string
			ids  [][]byte
			want bool
		}{{"hit", pinned, true}, {"miss", other, false}} {
			b.Run(fmt.Sprintf("pins=%d/overlay=%d/%s", c.n, c.overlay, k.name), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if got := v.Pin(k.ids[i]) != ""; got != k.want {
						b.Fatalf("Pin(%s) = %v", k.ids[i], got)
					}
					if i++; i == len(k.ids) {
						i = 0
					}
				}
			})
		}
	}
}

// heapAfterGC returns the live heap after a full collection.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkPinSetMemory measures the memory of 1M UUID pins: the table's
// own count (B/pin), the live heap it adds (heapB/pin), the memory it
// maps outside the heap (mappedB/pin; 0 outside Linux), and, for
// comparison, the live heap of a map[string]string of the same pins
// (mapB/pin).
func BenchmarkPinSetMemory(b *testing.B) {
	const n = 1_000_000
	for b.Loop() {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = uuid()
		}
		base := heapAfterGC()
		bld := newPinTableBuilder(n, 36*n)
		for i, id := range ids {
			if err := bld.add([]byte(id), []string{"US", "EU", "UK"}[i%3]); err != nil {
				b.Fatal(err)
			}
		}
		t := bld.finish()
		heap := heapAfterGC() - base
		b.ReportMetric(float64(t.bytes())/n, "B/pin")
		b.ReportMetric(float64(heap)/n, "heapB/pin")
		b.ReportMetric(float64(t.mem.mapped())/n, "mappedB/pin")
		runtime.KeepAlive(t)
		t = nil

		base = heapAfterGC()
		m := make(map[string]string)
		for i, id := range ids {
			m[string([]byte(id))] = []string{"US", "EU", "UK"}[i%3]
		}
		b.ReportMetric(float64(heapAfterGC()-base)/n, "mapB/pin")
		runtime.KeepAlive(m)
	}
}
