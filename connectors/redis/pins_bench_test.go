package redis

import (
	"context"
	"crypto/rand"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/benchtest"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
)

func benchUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// BenchmarkPinsLoad loads 1M pins (UUID user ids, five jurisdictions) from
// the real Redis into memory, as a router does at start: HLEN, then HSCAN
// pages. It reports the time of one load, pins per second, the pin set's
// bytes per pin and the live heap it adds per pin.
func BenchmarkPinsLoad(b *testing.B) {
	const n = 1_000_000
	ctx := context.Background()
	s := newStore(b)
	jurs := []string{"US", "EU", "UK", "IN", "BR"}
	fill := time.Now()
	for i := 0; i < n; i += 10_000 {
		kv := make([]any, 0, 20_000)
		for k := i; k < i+10_000; k++ {
			kv = append(kv, benchUUID(), jurs[k%len(jurs)])
		}
		if err := s.client.HSet(ctx, s.pinsKey(), kv...).Err(); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("wrote %d pins to Redis in %s", n, time.Since(fill).Round(time.Millisecond))
	for _, page := range []int{rules.DefaultPinsPageSize, 10_000} {
		b.Run(fmt.Sprintf("page=%d", page), func(b *testing.B) {
			for b.Loop() {
				runtime.GC()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				p := rules.NewPins(s, rules.PinsOptions{PageSize: page})
				hscanBefore := hscanMicros(b, s)
				cpu0 := benchtest.CPUTime()
				start := time.Now()
				stop := testenv.Start(b, 5*time.Minute, p.Run)
				select {
				case <-p.Loaded():
				case <-time.After(5 * time.Minute):
					b.Fatal("not loaded within 5 minutes")
				}
				took := time.Since(start)
				cpu := benchtest.CPUTime() - cpu0
				b.ReportMetric(cpu.Seconds(), "cpu-s/load")
				b.ReportMetric(float64(hscanMicros(b, s)-hscanBefore)/1e6, "redis-hscan-s/load")
				if p.Len() != n {
					b.Fatalf("loaded %d pins, want %d", p.Len(), n)
				}
				runtime.GC()
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				b.ReportMetric(took.Seconds(), "s/load")
				b.ReportMetric(n/took.Seconds(), "pins/s")
				b.ReportMetric(float64(p.Bytes())/n, "B/pin")
				b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "heapB/pin")
				b.ReportMetric(float64(after.HeapSys)/(1<<20), "heapSysMiB")
				_ = stop()
				runtime.KeepAlive(p)
			}
		})
	}
}

// hscanMicros returns the microseconds Redis has spent in HSCAN since its
// start (INFO commandstats).
func hscanMicros(tb testing.TB, s *Rules) int64 {
	info, err := s.client.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_hscan:"); ok {
			for _, f := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(f, "usec="); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					return n
				}
			}
		}
	}
	return 0
}
