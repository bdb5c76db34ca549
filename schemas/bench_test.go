package schemas

import (
	"context"
	"github.com/residency-router/residency/internal/benchtest"
	"testing"

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
	defer benchtest.ReportCPU(b)()
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
	defer benchtest.ReportCPU(b)()
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
	defer benchtest.ReportCPU(b)()
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
	defer benchtest.ReportCPU(b)()
	for b.Loop() {
		if err := w.check(body); err != nil {
			b.Fatal(err)
		}
	}
}
