package schemas

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// userEventV1 and userEventV2 are two versions of the canonical event's
// full name that a catalogue may hold next to the embedded one: v2 adds a
// nullable field before country, as the ingest contract recommends.
const (
	userEventV1 = `{"type":"record","name":"UserEvent","namespace":"io.residency.events","fields":[
		{"name":"event_id","type":"string"},
		{"name":"user_id","type":"string"},
		{"name":"country","type":["null","string"],"default":null}]}`
	userEventV2 = `{"type":"record","name":"UserEvent","namespace":"io.residency.events","fields":[
		{"name":"event_id","type":"string"},
		{"name":"user_id","type":"string"},
		{"name":"referrer","type":["null","string"],"default":null},
		{"name":"country","type":["null","string"],"default":null}]}`
)

// versionsCatalogue writes v1 and v2 (and any extra files) to a fresh
// catalogue directory and returns it.
func versionsCatalogue(t *testing.T, extra map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"user_event_v1.avsc": userEventV1, "user_event_v2.avsc": userEventV2}
	for k, v := range extra {
		files[k] = v
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustFingerprint(t testing.TB, schema string) uint64 {
	t.Helper()
	fp, err := Fingerprint(schema)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// Observation 1 of issue 12: a raw topic configured by a full name that
// several catalogue (and embedded) schemas carry is refused at start,
// naming the field, instead of being read with whichever came last.
func TestRawSchemaAmbiguousNameIsRefused(t *testing.T) {
	dir := versionsCatalogue(t, nil)
	_, err := NewExtractor(ExtractorConfig{
		Framings:     map[string]Framing{"legacy-events": FramingRaw},
		RawSchemas:   map[string]string{"legacy-events": "io.residency.events.UserEvent"},
		CatalogueDir: dir,
	})
	if err == nil {
		t.Fatal("NewExtractor accepts a raw schema name that matches three schemas")
	}
	msg := err.Error()
	want := `raw_schemas["legacy-events"]: name io.residency.events.UserEvent matches 3 schemas (fingerprints `
	if !strings.HasPrefix(msg, want) || !strings.HasSuffix(msg, "): name one with NAME@FINGERPRINT or a file path") {
		t.Fatalf("error %q, want %q…", msg, want)
	}
	for _, s := range []string{UserEventSchema, userEventV1, userEventV2} {
		if fp := fmt.Sprintf("%016x", mustFingerprint(t, s)); !strings.Contains(msg, fp) {
			t.Errorf("error %q does not list fingerprint %s", msg, fp)
		}
	}
	// The default entry too.
	_, err = NewExtractor(ExtractorConfig{DefaultFraming: FramingRaw,
		RawSchemas: map[string]string{DefaultTopic: "io.residency.events.UserEvent"}, CatalogueDir: dir})
	if err == nil || !strings.HasPrefix(err.Error(), `raw_schemas["*"]: name io.residency.events.UserEvent matches 3 schemas`) {
		t.Fatalf("default raw schema: %v", err)
	}
}

// A raw topic names one schema: NAME@FINGERPRINT or a file reads exactly
// that version, and a name that only one known schema carries reads it.
func TestRawSchemaResolvedExactly(t *testing.T) {
	dir := versionsCatalogue(t, nil)
	fp1, fp2 := mustFingerprint(t, userEventV1), mustFingerprint(t, userEventV2)
	v2File := filepath.Join(dir, "user_event_v2.avsc")
	e, err := NewExtractor(ExtractorConfig{
		DefaultFraming: FramingRaw,
		RawSchemas: map[string]string{
			"v1":         fmt.Sprintf("io.residency.events.UserEvent@%016x", fp1),
			"v2":         fmt.Sprintf("io.residency.events.UserEvent@%016X", fp2), // upper case too
			"v2-file":    v2File,
			"v3":         fmt.Sprintf("io.residency.events.UserEvent@%016x", mustFingerprint(t, UserEventSchema)),
			DefaultTopic: fmt.Sprintf("io.residency.events.UserEvent@%016x", fp1),
		},
		CatalogueDir: dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b1 := encode(t, userEventV1, map[string]any{"event_id": "e", "user_id": "u1", "country": map[string]any{"string": "US"}})
	b2 := encode(t, userEventV2, map[string]any{"event_id": "e", "user_id": "u2", "referrer": map[string]any{"string": "x"}, "country": map[string]any{"string": "DE"}})
	for _, c := range []struct {
		topic   string
		body    []byte
		country string
		fp      uint64
	}{
		{"v1", b1, "US", fp1}, {"other", b1, "US", fp1}, {"v2", b2, "DE", fp2}, {"v2-file", b2, "DE", fp2},
	} {
		f, err := e.Extract(ctx, c.topic, c.body)
		if err != nil || string(f.Country) != c.country {
			t.Fatalf("%s: %q, %v; want %s", c.topic, f.Country, err, c.country)
		}
		if want := (WriterRef{Framing: FramingRaw, Fingerprint: c.fp}); f.Writer != want {
			t.Fatalf("%s: writer %v, want %v", c.topic, f.Writer, want)
		}
	}
	// Read with the other version, the same bytes are not a whole record:
	// refused, never read with the wrong layout.
	if _, err := e.Extract(ctx, "v1", b2); err == nil {
		t.Fatal("a v2 event on the v1 topic is read")
	}
	if _, err := e.Extract(ctx, "v2", b1); err == nil {
		t.Fatal("a v1 event on the v2 topic is read")
	}

	// A name only one known schema carries is enough.
	other := strings.ReplaceAll(userEventV1, `"UserEvent"`, `"LegacyEvent"`)
	dir2 := versionsCatalogue(t, map[string]string{"legacy.avsc": other})
	e, err = NewExtractor(ExtractorConfig{DefaultFraming: FramingRaw, CatalogueDir: dir2,
		RawSchemas: map[string]string{DefaultTopic: "io.residency.events.LegacyEvent"}})
	if err != nil {
		t.Fatal(err)
	}
	if f, err := e.Extract(ctx, "t", b1); err != nil || string(f.Country) != "US" || f.Writer.Fingerprint != mustFingerprint(t, other) {
		t.Fatalf("unique name: %+v, %v", f, err)
	}
	// So is the embedded name without a catalogue.
	e, err = NewExtractor(ExtractorConfig{DefaultFraming: FramingRaw,
		RawSchemas: map[string]string{DefaultTopic: "io.residency.events.UserEvent"}})
	if err != nil {
		t.Fatal(err)
	}
	if f, err := e.Extract(ctx, "t", encode(t, UserEventSchema, sampleEvent(1, "IN"))); err != nil || string(f.Country) != "IN" {
		t.Fatalf("embedded name: %+v, %v", f, err)
	}
}

// Bad NAME@FINGERPRINT references name the field and say what is wrong.
func TestRawSchemaBadReferences(t *testing.T) {
	dir := versionsCatalogue(t, nil)
	fp1 := mustFingerprint(t, userEventV1)
	cases := []struct{ ref, want string }{
		{"io.residency.events.UserEvent@0000000000000001", "no embedded or catalogue schema has fingerprint 0000000000000001"},
		{fmt.Sprintf("io.residency.events.Other@%016x", fp1), fmt.Sprintf("fingerprint %016x is io.residency.events.UserEvent, not io.residency.events.Other", fp1)},
		{"io.residency.events.UserEvent@12ab", "16 hex digits"},
		{"io.residency.events.UserEvent@zzzzzzzzzzzzzzzz", "16 hex digits"},
		{"io.residency.events.Nothing", "neither a known schema name nor a readable .avsc file"},
	}
	for _, c := range cases {
		_, err := NewExtractor(ExtractorConfig{Framings: map[string]Framing{"legacy-events": FramingRaw},
			RawSchemas: map[string]string{"legacy-events": c.ref}, CatalogueDir: dir})
		if err == nil || !strings.HasPrefix(err.Error(), `raw_schemas["legacy-events"]: `) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want raw_schemas[\"legacy-events\"]: …%s…", c.ref, err, c.want)
		}
	}
}

// Catalogue entries are keyed by fingerprint: files with the same
// fingerprint are the same schema (whichever text comes first is kept), the
// same name with other content is another entry, and nothing shadows
// anything: every version stays readable in single-object framing.
func TestCatalogueKeyedByFingerprint(t *testing.T) {
	// The same schema as the embedded one, and v1 twice (once reformatted
	// with a doc string, which the canonical form drops).
	v1Doc := strings.Replace(userEventV1, `"fields"`, `"doc":"v1 again","fields"`, 1)
	dir := versionsCatalogue(t, map[string]string{"copy_of_embedded.avsc": UserEventSchema, "v1_again.avsc": v1Doc})
	e, err := NewExtractor(ExtractorConfig{CatalogueDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(e.byName["io.residency.events.UserEvent"]); n != 3 {
		t.Fatalf("%d schemas named UserEvent, want 3 (embedded, v1, v2)", n)
	}
	ctx := context.Background()
	for _, c := range []struct {
		schema string
		native map[string]any
	}{
		{userEventV1, map[string]any{"event_id": "e", "user_id": "u", "country": map[string]any{"string": "US"}}},
		{userEventV2, map[string]any{"event_id": "e", "user_id": "u", "referrer": nil, "country": map[string]any{"string": "US"}}},
		{UserEventSchema, sampleEvent(2, "US")},
	} {
		fp := mustFingerprint(t, c.schema)
		f, err := e.Extract(ctx, "t", AppendSingleObject(nil, fp, encode(t, c.schema, c.native)))
		if err != nil || string(f.Country) != "US" || f.Writer.Fingerprint != fp {
			t.Fatalf("fingerprint %016x: %+v, %v", fp, f, err)
		}
	}
}

// Two schemas never share a key: a schema whose fingerprint is goavro's
// fingerprint of another known schema (which the extractor accepts for
// goavro producers) is refused, naming both.
func TestCatalogueFingerprintCollisionRefused(t *testing.T) {
	e, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	w := e.byFP[mustFingerprint(t, UserEventSchema)]
	if w.codec.Rabin == w.fp {
		t.Fatal("the embedded schema has no goavro fingerprint of its own; pick another")
	}
	// Pretend another schema's fingerprint is the embedded one's goavro
	// fingerprint.
	other, err := e.newWriter(userEventV1, "test v1")
	if err != nil {
		t.Fatal(err)
	}
	other.fp = w.codec.Rabin
	if _, err := e.register(other); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%016x", w.codec.Rabin)) {
		t.Fatalf("register of a colliding fingerprint: %v", err)
	}
}
