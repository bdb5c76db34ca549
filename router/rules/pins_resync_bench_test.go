package rules

import (
	"context"
	"runtime"
	"strings"
	"testing"
)

// pageStore is a PinStore over a fixed slice of pins, read in pages as
// Redis's HSCAN is: every page is new memory (its strings copied, as a
// client decoding a reply allocates them), garbage once the reader is
// done with it. Every gcEvery pages it collects and records the live heap:
// the largest is the heap's peak during a full read.
type pageStore struct {
	pins    []Pin
	gcEvery int
	pages   int
	peak    uint64
	// peakMapped is the most memory mapped for pin tables (outside the
	// heap) seen at a page.
	peakMapped int64
}

func (s *pageStore) CountPins(context.Context) (int, error) { return len(s.pins), nil }

func (s *pageStore) ScanPins(_ context.Context, cursor uint64, count int) ([]Pin, uint64, error) {
	if s.pages++; s.pages%s.gcEvery == 0 {
		s.peak = max(s.peak, heapAfterGC())
	}
	s.peakMapped = max(s.peakMapped, pinMappedBytes.Load())
	end := min(int(cursor)+count, len(s.pins))
	page := make([]Pin, 0, end-int(cursor))
	for _, p := range s.pins[cursor:end] {
		page = append(page, Pin{UserID: strings.Clone(p.UserID), Jurisdiction: strings.Clone(p.Jurisdiction)})
	}
	if end == len(s.pins) {
		return page, 0, nil
	}
	return page, uint64(end), nil
}

func (s *pageStore) LookupPins(_ context.Context, ids [][]byte) ([]string, error) {
	return make([]string, len(ids)), nil
}

func (s *pageStore) WatchPins(context.Context) <-chan PinEvent { return nil }

// BenchmarkPinsResyncMemory measures the heap of a Pins following 1M UUID
// pins through its first full read (the load, which builds the table) and
// a later one (the periodic resync, which compares with the table in
// place), in bytes per pin: the live heap after the load (liveB/pin), its
// peak during the load (loadPeakB/pin) and during the resync with 1000
// pins changed in the store (resyncPeakB/pin), all above the heap before
// the first read; and the memory the table maps outside the heap after
// the load (mappedB/pin) and at most during the reads (mappedPeakB/pin).
// The store's own pins are not counted (they are in the baseline).
func BenchmarkPinsResyncMemory(b *testing.B) {
	const n = 1_000_000
	jurs := []string{"US", "EU", "UK", "IN", "BR"}
	for b.Loop() {
		s := &pageStore{pins: make([]Pin, n), gcEvery: 25}
		for i := range s.pins {
			s.pins[i] = Pin{UserID: uuid(), Jurisdiction: jurs[i%len(jurs)]}
		}
		ctx := context.Background()
		p := NewPins(s, PinsOptions{})
		base := heapAfterGC()
		if err := p.resync(ctx, nil); err != nil {
			b.Fatal(err)
		}
		live := heapAfterGC()
		mapped := pinMappedBytes.Load()
		loadPeak := max(s.peak, live)
		for i := 0; i < n; i += n / 1000 {
			s.pins[i].Jurisdiction = jurs[(i+1)%len(jurs)]
		}
		s.peak = 0
		if err := p.resync(ctx, nil); err != nil {
			b.Fatal(err)
		}
		resyncPeak := max(s.peak, heapAfterGC())
		if got := p.Len(); got != n {
			b.Fatalf("%d pins after the resync, want %d", got, n)
		}
		v, err := p.Pins()
		if err != nil {
			b.Fatal(err)
		}
		if got, want := v.Pin([]byte(s.pins[0].UserID)), jurs[1]; got != want {
			b.Fatalf("a pin changed in the store reads %q after the resync, want %q", got, want)
		}
		b.ReportMetric(float64(live-base)/n, "liveB/pin")
		b.ReportMetric(float64(loadPeak-base)/n, "loadPeakB/pin")
		b.ReportMetric(float64(resyncPeak-base)/n, "resyncPeakB/pin")
		b.ReportMetric(float64(mapped)/n, "mappedB/pin")
		b.ReportMetric(float64(max(s.peakMapped, mapped))/n, "mappedPeakB/pin")
		runtime.KeepAlive(p)
	}
}
