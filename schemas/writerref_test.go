package schemas

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWriterRefTextRoundTrip(t *testing.T) {
	for _, c := range []struct {
		ref  WriterRef
		text string
	}{
		{WriterRef{Framing: FramingConfluent, ID: 42}, "confluent:42"},
		{WriterRef{Framing: FramingConfluent, ID: 1<<32 - 1}, "confluent:4294967295"},
		{WriterRef{Framing: FramingSingleObject, Fingerprint: 0x0123456789abcdef}, "single-object:0123456789abcdef"},
		{WriterRef{Framing: FramingRaw, Fingerprint: 0xff}, "raw:00000000000000ff"},
		{WriterRef{}, ""},
	} {
		if got := c.ref.String(); got != c.text {
			t.Errorf("%+v.String() = %q, want %q", c.ref, got, c.text)
		}
		if c.ref.IsZero() {
			continue
		}
		back, err := ParseWriterRef(c.text)
		if err != nil || back != c.ref {
			t.Errorf("ParseWriterRef(%q) = %+v, %v; want %+v", c.text, back, err, c.ref)
		}
		var u WriterRef
		if err := u.UnmarshalText([]byte(c.text)); err != nil || u != c.ref {
			t.Errorf("UnmarshalText(%q) = %+v, %v", c.text, u, err)
		}
	}
	for _, bad := range []string{"", "confluent", "confluent:", "confluent:x", "confluent:4294967296", "confluent:-1",
		"single-object:123", "single-object:0123456789abcdeg", "raw:0123456789abcdef0", "avro:0123456789abcdef", ":1"} {
		if _, err := ParseWriterRef(bad); !errors.Is(err, ErrBadWriterRef) {
			t.Errorf("ParseWriterRef(%q): err = %v, want ErrBadWriterRef", bad, err)
		}
	}
}

func TestWriterRefAppendTextDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 64)
	ref := WriterRef{Framing: FramingSingleObject, Fingerprint: 0xdeadbeef}
	if n := testing.AllocsPerRun(100, func() { buf, _ = ref.AppendText(buf[:0]) }); n != 0 {
		t.Errorf("AppendText allocates %v times", n)
	}
}

// Extract says how it read each event, and a sink reading by that
// reference (DecodeRef, ExtractRef) reads the same record whatever framing
// its own topic is configured with.
func TestExtractRefAndDecodeRefAgree(t *testing.T) {
	ctx := context.Background()
	fp, err := Fingerprint(UserEventSchema)
	if err != nil {
		t.Fatal(err)
	}
	reg := newFakeRegistry(t)
	id := reg.register("ingest-value", UserEventSchema)
	dir := t.TempDir()
	rawFile := filepath.Join(dir, "user_event.avsc")
	if err := os.WriteFile(rawFile, []byte(UserEventSchema), 0o600); err != nil {
		t.Fatal(err)
	}
	router, err := NewExtractor(ExtractorConfig{
		Framings:   map[string]Framing{"c": FramingConfluent, "r": FramingRaw, "s": FramingSingleObject},
		RawSchemas: map[string]string{"r": rawFile},
		Registry:   RegistryConfig{URL: reg.URL},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The sink consumes a pinned topic configured with yet another framing.
	sink, err := NewExtractor(ExtractorConfig{
		DefaultFraming: FramingSingleObject,
		RawSchemas:     map[string]string{"r": rawFile},
		Registry:       RegistryConfig{URL: reg.URL},
	})
	if err != nil {
		t.Fatal(err)
	}
	body := encode(t, UserEventSchema, sampleEvent(7, "DE"))
	for _, c := range []struct {
		topic string
		value []byte
		want  WriterRef
	}{
		{"c", AppendConfluent(nil, id, body), WriterRef{Framing: FramingConfluent, ID: id}},
		{"s", AppendSingleObject(nil, fp, body), WriterRef{Framing: FramingSingleObject, Fingerprint: fp}},
		{"r", body, WriterRef{Framing: FramingRaw, Fingerprint: fp}},
	} {
		f, err := router.Extract(ctx, c.topic, c.value)
		if err != nil {
			t.Fatalf("%s: Extract: %v", c.topic, err)
		}
		if f.Writer != c.want {
			t.Errorf("%s: Writer = %v, want %v", c.topic, f.Writer, c.want)
		}
		g, err := sink.ExtractRef(ctx, f.Writer, c.value)
		if err != nil || string(g.Country) != "DE" || string(g.UserID) != "u-1007" || g.Writer != c.want {
			t.Errorf("%s: ExtractRef = %+v, %v", c.topic, g, err)
		}
		if _, _, err := sink.DecodeRef(ctx, f.Writer, c.value); err != nil {
			t.Errorf("%s: DecodeRef: %v", c.topic, err)
		}
		if _, keys, err := sink.DecodeJSONFastRef(ctx, f.Writer, c.value); err != nil || keys.UserID != "u-1007" {
			t.Errorf("%s: DecodeJSONFastRef: %+v, %v", c.topic, keys, err)
		}
	}

	// A reference the value's own framing bytes contradict is refused.
	other := WriterRef{Framing: FramingSingleObject, Fingerprint: fp ^ 1}
	if _, _, err := sink.DecodeRef(ctx, other, AppendSingleObject(nil, fp, body)); !errors.Is(err, ErrUnknownSchema) {
		t.Errorf("unknown fingerprint: err = %v, want ErrUnknownSchema", err)
	}
	if _, _, err := sink.DecodeRef(ctx, WriterRef{Framing: FramingConfluent, ID: id + 1}, AppendConfluent(nil, id, body)); !errors.Is(err, ErrBadMagic) {
		t.Errorf("other registry id: err = %v, want ErrBadMagic", err)
	}
	if _, _, err := sink.DecodeRef(ctx, WriterRef{Framing: FramingSingleObject, Fingerprint: fp}, body); !errors.Is(err, ErrBadMagic) {
		t.Errorf("raw value read as single-object: err = %v, want ErrBadMagic", err)
	}
	if _, _, err := sink.DecodeRef(ctx, WriterRef{}, body); !errors.Is(err, ErrUnknownSchema) {
		t.Errorf("zero ref: err = %v, want ErrUnknownSchema", err)
	}

	// A dead-lettered event still says how far it was read.
	f, err := router.Extract(ctx, "s", AppendSingleObject(nil, fp^1, body))
	if !errors.Is(err, ErrUnknownSchema) || f.Writer.Framing != FramingSingleObject || f.Writer.Fingerprint != fp^1 {
		t.Errorf("unknown fingerprint: %+v, %v", f.Writer, err)
	}
}
