package schemas

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
)

// The extraction benchmarks read the country of the same canonical event
// (schemas/avro/user_event.avsc, country is its 18th field) in the
// single-object framing. See docs/performance.md for how to run and compare
// them.

func benchValue(b *testing.B) []byte {
	fp, err := Fingerprint(UserEventSchema)
	if err != nil {
		b.Fatal(err)
	}
	return AppendSingleObject(nil, fp, encode(b, UserEventSchema, sampleEvent(1, "US")))
}

// BenchmarkExtractCountry is the router's hot path: Extract with the writer
// schema cached.
func BenchmarkExtractCountry(b *testing.B) {
	e, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		b.Fatal(err)
	}
	v := benchValue(b)
	ctx := context.Background()
	b.SetBytes(int64(len(v)))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		f, err := e.Extract(ctx, "user-events", v)
		if err != nil || !f.HasCountry {
			b.Fatal(err)
		}
	}
}

// BenchmarkGoavroNativeFromBinary is the baseline: goavro's full decode of
// the same bytes (after the same 10-byte header) and a lookup of the country.
func BenchmarkGoavroNativeFromBinary(b *testing.B) {
	c, err := goavro.NewCodec(UserEventSchema)
	if err != nil {
		b.Fatal(err)
	}
	v := benchValue(b)
	b.SetBytes(int64(len(v)))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		native, _, err := c.NativeFromBinary(v[singleObjectHeaderLen:])
		if err != nil {
			b.Fatal(err)
		}
		if native.(map[string]any)["country"] == nil {
			b.Fatal("no country")
		}
	}
}

// BenchmarkDecode is the sinks' full decode: a validating walk of the whole
// record, then goavro's NativeFromBinary.
func BenchmarkDecode(b *testing.B) {
	e, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		b.Fatal(err)
	}
	v := benchValue(b)
	ctx := context.Background()
	b.SetBytes(int64(len(v)))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, _, err := e.Decode(ctx, "user-events", v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWalk is the validating walk of the whole record alone
// (writer.check), which Decode runs before goavro's decode.
func BenchmarkWalk(b *testing.B) {
	e, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		b.Fatal(err)
	}
	w := e.byName["io.residency.events.UserEvent"][0]
	body := benchValue(b)[singleObjectHeaderLen:]
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if err := w.check(body); err != nil {
			b.Fatal(err)
		}
	}
}

// reportCPU reports the process's CPU time per operation (cpu-ns/op) when
// the benchmark returns: steadier than the wall time on a shared host,
// where the wall time includes waiting for a core. Use as
// `defer reportCPU(b)()` just before a benchmark's b.Loop loop.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() { b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op") }
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
