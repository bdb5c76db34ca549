package bench

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// heapWatchSink keeps the test's allocation alive where the compiler
// cannot drop it.
var heapWatchSink []byte

// TestHeapWatchPeak: a 64 MiB live allocation that is freed again shows
// as the peak live heap, and a heap profile is written.
func TestHeapWatchPeak(t *testing.T) {
	const size = 64 << 20
	file := filepath.Join(t.TempDir(), "heap.pprof")
	w := startHeapWatch(true)
	heapWatchSink = make([]byte, size)
	for i := range heapWatchSink {
		heapWatchSink[i] = byte(i)
	}
	runtime.GC()
	time.Sleep(3 * heapWatchInterval)
	heapWatchSink = nil
	runtime.GC()
	time.Sleep(2 * heapWatchInterval)
	peak, err := w.stop(file)
	if err != nil {
		t.Fatal(err)
	}
	if peak < size {
		t.Errorf("peak live heap %d bytes, want at least %d", peak, size)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("heap profile is not a gzipped profile: %v", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil || !bytes.Contains(raw, []byte("inuse_space")) {
		t.Errorf("heap profile (%d bytes, %v): no inuse_space sample type", len(raw), err)
	}
	w.halt() // twice is fine
}
