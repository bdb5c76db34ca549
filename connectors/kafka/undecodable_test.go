package kafka

import "testing"

// TestScanStopsAtUndecompressableBatch: a batch whose checksum holds but
// whose records do not decompress (garbage behind a codec bit, a codec
// this build lacks) ends the scan with an error and a next AT that batch,
// not past it: the consumer and the range reader fetch it again (and say
// why) instead of passing over its records without a word. The batches
// before it are delivered.
func TestScanStopsAtUndecompressableBatch(t *testing.T) {
	// gzip, but the records are not gzip
	bad := testBatch(t, 2, -1, 1, "b2", "b3")
	var raw []byte
	raw = append(raw, testBatch(t, 0, -1, 0, "a0", "a1")...)
	raw = append(raw, bad...)
	raw = append(raw, testBatch(t, 4, -1, 0, "a4")...)
	for _, from := range []int64{0, 2} {
		views, next, err := scanBatches(raw, from, false, nil, nil, nil)
		if err == nil {
			t.Fatalf("from %d: no error for the batch at 2-3", from)
		}
		if next != 2 {
			t.Errorf("from %d: next = %d, want 2 (the undecompressable batch, fetched again)", from, next)
		}
		if want := map[int64]int{0: 1, 2: 0}[from]; len(views) != want {
			t.Errorf("from %d: %d batches delivered, want %d", from, len(views), want)
		}
	}
}
