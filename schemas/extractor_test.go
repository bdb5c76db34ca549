package schemas

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"gopkg.in/yaml.v3"
)

// framed returns body in each of the three framings, with an extractor that
// reads topic "t-<framing>" in that framing.
func framed(t *testing.T, schema string, body []byte) (*Extractor, map[Framing][]byte) {
	t.Helper()
	reg := newFakeRegistry(t)
	id := reg.register("user-events-value", schema)
	fp, err := Fingerprint(schema)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "writer.avsc"), []byte(schema), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := NewExtractor(ExtractorConfig{
		Framings: map[string]Framing{
			"t-confluent": FramingConfluent, "t-single-object": FramingSingleObject, "t-raw": FramingRaw,
		},
		RawSchemas:   map[string]string{"t-raw": filepath.Join(dir, "writer.avsc")},
		CatalogueDir: dir,
		Registry:     RegistryConfig{URL: reg.URL},
	})
	if err != nil {
		t.Fatalf("NewExtractor: %v", err)
	}
	return e, map[Framing][]byte{
		FramingConfluent:    AppendConfluent(nil, id, body),
		FramingSingleObject: AppendSingleObject(nil, fp, body),
		FramingRaw:          body,
	}
}

func TestExtractAllFramings(t *testing.T) {
	ctx := context.Background()
	for _, country := range []any{"US", nil, "", "DE"} {
		body := encode(t, UserEventSchema, sampleEvent(7, country))
		e, values := framed(t, UserEventSchema, body)
		for f, v := range values {
			got, err := e.Extract(ctx, "t-"+string(f), v)
			if err != nil {
				t.Fatalf("%s, country %v: %v", f, country, err)
			}
			if string(got.UserID) != "u-1007" {
				t.Errorf("%s: user id %q, want u-1007", f, got.UserID)
			}
			if country == nil {
				if got.HasCountry || got.Country != nil {
					t.Errorf("%s: null country read as %q (HasCountry %v)", f, got.Country, got.HasCountry)
				}
				continue
			}
			if !got.HasCountry || string(got.Country) != country.(string) {
				t.Errorf("%s: country %q (HasCountry %v), want %q", f, got.Country, got.HasCountry, country)
			}
		}
	}
}

func TestExtractZeroConfigReadsEmbeddedSingleObject(t *testing.T) {
	e, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	fp, err := Fingerprint(UserEventSchema)
	if err != nil {
		t.Fatal(err)
	}
	v := AppendSingleObject(nil, fp, encode(t, UserEventSchema, sampleEvent(1, "IN")))
	got, err := e.Extract(context.Background(), "any-topic", v)
	if err != nil || string(got.Country) != "IN" {
		t.Fatalf("Extract = %q, %v; want IN", got.Country, err)
	}
	// goavro's single-object encoder uses its own (non-standard, see
	// Fingerprint) fingerprint; its producers are read too.
	c, _ := goavro.NewCodec(UserEventSchema)
	soe, err := c.SingleFromNative(nil, sampleEvent(1, "IN"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := e.Extract(context.Background(), "any-topic", soe); err != nil || string(got.Country) != "IN" {
		t.Fatalf("Extract(goavro single-object) = %q, %v", got.Country, err)
	}
}

func TestExtractBadValues(t *testing.T) {
	ctx := context.Background()
	body := encode(t, UserEventSchema, sampleEvent(3, "GB"))
	e, values := framed(t, UserEventSchema, body)
	cases := []struct {
		name, topic string
		value       []byte
		want        error
		reason      string
	}{
		{"empty", "t-raw", nil, ErrEmptyValue, "empty_value"},
		{"too large", "t-raw", make([]byte, DefaultMaxValueSize+1), ErrTooLarge, "too_large"},
		{"confluent magic", "t-confluent", append([]byte{1}, values[FramingConfluent][1:]...), ErrBadMagic, "bad_magic"},
		{"single-object magic", "t-single-object", append([]byte{0xC3, 0x02}, values[FramingSingleObject][2:]...), ErrBadMagic, "bad_magic"},
		{"confluent header cut", "t-confluent", values[FramingConfluent][:3], ErrTruncated, "truncated"},
		{"single-object header cut", "t-single-object", values[FramingSingleObject][:9], ErrTruncated, "truncated"},
		{"unknown id", "t-confluent", AppendConfluent(nil, 999999, body), ErrUnknownSchema, "unknown_schema"},
		{"unknown fingerprint", "t-single-object", AppendSingleObject(nil, 0xdeadbeef, body), ErrUnknownSchema, "unknown_schema"},
		{"union index out of range", "t-raw", corruptAt(t, body, "session_id", 0x7e), ErrCorrupt, "corrupt"},
		{"negative length", "t-raw", corruptAt(t, body, "event_id", 0x01), ErrCorrupt, "corrupt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.Extract(ctx, c.topic, c.value)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if got := Reason(err); got != c.reason {
				t.Fatalf("Reason = %q, want %q", got, c.reason)
			}
		})
	}
}

// corruptAt overwrites the first byte of field's encoding in a sample event
// body (found by encoding the prefix of fields before it).
func corruptAt(t *testing.T, body []byte, fieldName string, b byte) []byte {
	t.Helper()
	off := map[string]int{"event_id": 0, "session_id": -1}[fieldName]
	if off < 0 {
		// event_id (36+1) user_id (6+1) occurred_at (varint) event_type (1)
		_, i, _ := varint(body, 0, 10)
		i += 36
		n, j, _ := varint(body, i, 10)
		i = j + int(n)
		_, i, _ = varint(body, i, 10)
		off = i + 1
	}
	out := append([]byte(nil), body...)
	out[off] = b
	return out
}

// Older and newer writer schemas: the field is found by name wherever it is.
func TestExtractSchemaEvolution(t *testing.T) {
	v1 := `{"type":"record","name":"UserEvent","namespace":"io.residency.events","fields":[
		{"name":"user_id","type":"string"},
		{"name":"event_id","type":"string"},
		{"name":"occurred_at","type":"long"},
		{"name":"country","type":"string"}]}`
	v4 := `{"type":"record","name":"UserEvent","namespace":"io.residency.events","fields":[
		{"name":"event_id","type":"string"},
		{"name":"experiments","type":{"type":"array","items":{"type":"record","name":"Exp","fields":[
			{"name":"id","type":"int"},{"name":"arm","type":["null","string"]},{"name":"w","type":"float"}]}}},
		{"name":"labels","type":{"type":"map","values":["null","long","bytes"]}},
		{"name":"consent","type":{"type":"fixed","name":"Consent","size":3}},
		{"name":"country","type":["null",{"type":"enum","name":"Country","symbols":["US","DE","IN"]}],"default":null},
		{"name":"user_id","type":["null","string"],"default":null}]}`
	ctx := context.Background()
	b1 := encode(t, v1, map[string]any{"user_id": "u1", "event_id": "e1", "occurred_at": int64(5), "country": "DE"})
	e1, vals1 := framed(t, v1, b1)
	for f, v := range vals1 {
		got, err := e1.Extract(ctx, "t-"+string(f), v)
		if err != nil || string(got.Country) != "DE" || string(got.UserID) != "u1" {
			t.Fatalf("v1 %s: %+v, %v", f, got, err)
		}
	}
	b4 := encode(t, v4, map[string]any{
		"event_id": "e4",
		"experiments": []any{
			map[string]any{"id": int32(1), "arm": goavro.Union("string", "a"), "w": float32(0.5)},
			map[string]any{"id": int32(-2), "arm": nil, "w": float32(1)},
		},
		"labels":  map[string]any{"x": goavro.Union("long", int64(-7)), "y": nil, "z": goavro.Union("bytes", []byte{0, 1})},
		"consent": []byte{1, 0, 1},
		"country": goavro.Union("io.residency.events.Country", "IN"),
		"user_id": goavro.Union("string", "u4"),
	})
	e4, vals4 := framed(t, v4, b4)
	for f, v := range vals4 {
		got, err := e4.Extract(ctx, "t-"+string(f), v)
		if err != nil || string(got.Country) != "IN" || !got.HasCountry || string(got.UserID) != "u4" {
			t.Fatalf("v4 %s: %+v, %v", f, got, err)
		}
	}
}

func TestExtractNestedPathAndMissingField(t *testing.T) {
	s := `{"type":"record","name":"E","fields":[
		{"name":"user","type":{"type":"record","name":"User","fields":[{"name":"id","type":"string"},{"name":"n","type":"int"}]}},
		{"name":"geo","type":["null",{"type":"record","name":"Geo","fields":[{"name":"lat","type":"double"},{"name":"country","type":["null","string"]}]}],"default":null}]}`
	dir := t.TempDir()
	path := filepath.Join(dir, "e.avsc")
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := NewExtractor(ExtractorConfig{
		CountryField: "geo.country", UserIDField: "user.id",
		DefaultFraming: FramingRaw, RawSchemas: map[string]string{DefaultTopic: path},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	with := encode(t, s, map[string]any{"user": map[string]any{"id": "u9", "n": int32(3)},
		"geo": goavro.Union("Geo", map[string]any{"lat": 1.5, "country": goavro.Union("string", "BR")})})
	got, err := e.Extract(ctx, "x", with)
	if err != nil || string(got.Country) != "BR" || string(got.UserID) != "u9" {
		t.Fatalf("nested: %+v, %v", got, err)
	}
	without := encode(t, s, map[string]any{"user": map[string]any{"id": "u9", "n": int32(3)}, "geo": nil})
	got, err = e.Extract(ctx, "x", without)
	if err != nil || got.HasCountry || string(got.UserID) != "u9" {
		t.Fatalf("null geo: %+v, %v", got, err)
	}

	// A writer schema without the country field: no country, no error.
	e2, err := NewExtractor(ExtractorConfig{CountryField: "region", DefaultFraming: FramingRaw,
		RawSchemas: map[string]string{DefaultTopic: "io.residency.events.UserEvent"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err = e2.Extract(ctx, "x", encode(t, UserEventSchema, sampleEvent(1, "US")))
	if err != nil || got.HasCountry || string(got.UserID) != "u-1001" {
		t.Fatalf("missing field: %+v, %v", got, err)
	}
}

func TestExtractWrongFieldTypeIsCorrupt(t *testing.T) {
	bad := `{"type":"record","name":"UserEvent","namespace":"io.residency.events","fields":[
		{"name":"user_id","type":"string"},{"name":"country","type":"int"}]}`
	reg := newFakeRegistry(t)
	id := reg.register("s", bad)
	e, err := NewExtractor(ExtractorConfig{DefaultFraming: FramingConfluent, Registry: RegistryConfig{URL: reg.URL}})
	if err != nil {
		t.Fatal(err)
	}
	v := AppendConfluent(nil, id, encode(t, bad, map[string]any{"user_id": "u", "country": int32(840)}))
	_, err = e.Extract(context.Background(), "t", v)
	if !errors.Is(err, ErrFieldType) || !errors.Is(err, ErrCorrupt) || Reason(err) != "corrupt" {
		t.Fatalf("err = %v; want ErrFieldType (corrupt)", err)
	}
	if !strings.Contains(err.Error(), "country") {
		t.Fatalf("error does not name the field: %v", err)
	}
	// The same schema configured for a raw topic is refused up front.
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.avsc")
	_ = os.WriteFile(p, []byte(bad), 0o644)
	_, err = NewExtractor(ExtractorConfig{Framings: map[string]Framing{"t": FramingRaw}, RawSchemas: map[string]string{"t": p}})
	if err == nil || !strings.Contains(err.Error(), `raw_schemas["t"]`) {
		t.Fatalf("NewExtractor with a bad raw schema: %v", err)
	}
}

func TestNewExtractorNamesTheBadField(t *testing.T) {
	cases := []struct {
		cfg  ExtractorConfig
		want string
	}{
		{ExtractorConfig{CountryField: "geo..country"}, "country_field"},
		{ExtractorConfig{UserIDField: "user-id"}, "user_id_field"},
		{ExtractorConfig{UserIDField: "country"}, "user_id_field"},
		{ExtractorConfig{MaxValueSize: -1}, "max_value_size"},
		{ExtractorConfig{DefaultFraming: "protobuf"}, "default_framing"},
		{ExtractorConfig{Framings: map[string]Framing{"a": "avro"}}, `framings["a"]`},
		{ExtractorConfig{Framings: map[string]Framing{"a": FramingRaw}}, `raw_schemas["a"]`},
		{ExtractorConfig{DefaultFraming: FramingRaw}, `raw_schemas["*"]`},
		{ExtractorConfig{DefaultFraming: FramingConfluent}, "registry.url"},
		{ExtractorConfig{Registry: RegistryConfig{URL: "registry:8081"}}, "registry.url"},
		{ExtractorConfig{Registry: RegistryConfig{URL: "http://r", BearerToken: "x", Username: "u"}}, "registry.bearer_token"},
		{ExtractorConfig{Registry: RegistryConfig{URL: "http://r", Password: "p"}}, "registry.username"},
		{ExtractorConfig{CatalogueDir: "/nonexistent/catalogue"}, "catalogue_dir"},
		{ExtractorConfig{Framings: map[string]Framing{"a": FramingRaw}, RawSchemas: map[string]string{"a": "no.such.Schema"}}, `raw_schemas["a"]`},
	}
	for _, c := range cases {
		_, err := NewExtractor(c.cfg)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want one starting with %q", c.cfg, err, c.want)
		}
	}
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "broken.avsc"), []byte(`{"type":"record"`), 0o644)
	_, err := NewExtractor(ExtractorConfig{CatalogueDir: dir})
	if err == nil || !strings.Contains(err.Error(), "broken.avsc") || !errors.Is(err, ErrBadSchema) {
		t.Errorf("broken catalogue file: %v", err)
	}
}

func TestDecodeAndJSON(t *testing.T) {
	ctx := context.Background()
	ev := sampleEvent(5, "JP")
	body := encode(t, UserEventSchema, ev)
	e, values := framed(t, UserEventSchema, body)
	for f, v := range values {
		native, schema, err := e.Decode(ctx, "t-"+string(f), v)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if schema != UserEventSchema {
			t.Errorf("%s: writer schema not returned", f)
		}
		m := native.(map[string]any)
		if m["country"].(map[string]any)["string"] != "JP" || m["user_id"] != "u-1005" {
			t.Errorf("%s: decoded %v", f, m)
		}
		if !m["occurred_at"].(time.Time).Equal(ev["occurred_at"].(time.Time)) {
			t.Errorf("%s: occurred_at %v", f, m["occurred_at"])
		}
		doc, _, err := e.DecodeJSON(ctx, "t-"+string(f), v)
		if err != nil {
			t.Fatalf("%s: DecodeJSON: %v", f, err)
		}
		var plain map[string]any
		if err := json.Unmarshal(doc, &plain); err != nil {
			t.Fatalf("%s: not JSON: %v", f, err)
		}
		if plain["country"] != "JP" || plain["device"].(map[string]any)["os"] != "ANDROID" ||
			plain["occurred_at"].(float64) != float64(ev["occurred_at"].(time.Time).UnixMilli()) {
			t.Errorf("%s: JSON %s", f, doc)
		}
	}
	if _, _, err := e.Decode(ctx, "t-raw", append(append([]byte(nil), body...), 0)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("trailing byte: %v, want ErrCorrupt", err)
	}
	if _, _, err := e.Decode(ctx, "t-raw", body[:len(body)-3]); !errors.Is(err, ErrTruncated) {
		t.Errorf("truncated: %v, want ErrTruncated", err)
	}
}

func TestExtractRegistryConcurrentFirstUse(t *testing.T) {
	reg := newFakeRegistry(t)
	reg.delay = 20 * time.Millisecond
	id := reg.register("s", UserEventSchema)
	e, err := NewExtractor(ExtractorConfig{DefaultFraming: FramingConfluent, Registry: RegistryConfig{URL: reg.URL}})
	if err != nil {
		t.Fatal(err)
	}
	v := AppendConfluent(nil, id, encode(t, UserEventSchema, sampleEvent(2, "CA")))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			got, err := e.Extract(context.Background(), "t", v)
			if err == nil && string(got.Country) != "CA" {
				err = errors.New("wrong country " + string(got.Country))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := reg.requests.Load(); n != 1 {
		t.Fatalf("%d registry requests for 16 concurrent first uses of one id, want 1", n)
	}
	before := reg.requests.Load()
	for range 100 {
		if _, err := e.Extract(context.Background(), "t", v); err != nil {
			t.Fatal(err)
		}
	}
	if reg.requests.Load() != before {
		t.Fatalf("cached schema fetched again: %d requests", reg.requests.Load()-before)
	}
}

func TestExtractRegistryDownIsTransient(t *testing.T) {
	reg := newFakeRegistry(t)
	id := reg.register("s", UserEventSchema)
	reg.failNext.Store(1000)
	e, err := NewExtractor(ExtractorConfig{DefaultFraming: FramingConfluent,
		Registry: RegistryConfig{URL: reg.URL, Retries: 1, Backoff: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	v := AppendConfluent(nil, id, encode(t, UserEventSchema, sampleEvent(2, "CA")))
	_, err = e.Extract(context.Background(), "t", v)
	if !errors.Is(err, ErrRegistryUnavailable) {
		t.Fatalf("err = %v, want ErrRegistryUnavailable", err)
	}
	reg.failNext.Store(0)
	if got, err := e.Extract(context.Background(), "t", v); err != nil || string(got.Country) != "CA" {
		t.Fatalf("after recovery: %q, %v", got.Country, err)
	}
}

func TestExtractDoesNotAllocate(t *testing.T) {
	body := encode(t, UserEventSchema, sampleEvent(2, "US"))
	e, values := framed(t, UserEventSchema, body)
	ctx := context.Background()
	for f, v := range values {
		topic := "t-" + string(f)
		if _, err := e.Extract(ctx, topic, v); err != nil {
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(200, func() { _, _ = e.Extract(ctx, topic, v) })
		if allocs > 1 {
			t.Errorf("%s: %.1f allocations per Extract, want at most 1", f, allocs)
		}
	}
}

func TestExtractorConfigFromYAML(t *testing.T) {
	dir := t.TempDir()
	doc := `
country_field: country
default_framing: confluent
framings:
  legacy: raw
raw_schemas:
  legacy: io.residency.events.UserEvent
max_value_size: 4096
catalogue_dir: ` + dir + `
registry:
  url: http://registry:8081
  timeout: 2s
  retries: 5
  backoff: 50ms
  username: router
  password: secret
`
	var cfg ExtractorConfig
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Registry.Timeout != 2*time.Second || cfg.Registry.Backoff != 50*time.Millisecond || cfg.Framings["legacy"] != FramingRaw {
		t.Fatalf("decoded %+v", cfg)
	}
	e, err := NewExtractor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if e.Framing("legacy") != FramingRaw || e.Framing("other") != FramingConfluent {
		t.Fatal("framings not applied")
	}
	got, err := e.Extract(context.Background(), "legacy", encode(t, UserEventSchema, sampleEvent(1, "MX")))
	if err != nil || string(got.Country) != "MX" {
		t.Fatalf("raw topic from YAML config: %q, %v", got.Country, err)
	}
	if _, err := e.Extract(context.Background(), "legacy", make([]byte, 4097)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("max_value_size not applied: %v", err)
	}
}
