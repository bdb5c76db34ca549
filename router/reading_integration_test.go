package router_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
)

// Issue 12, observations 1 and 2, on real Kafka through the real pipeline
// (router.New over connectors/kafka): the router reads every event with
// exactly the writer schema the configuration names, and routes only
// whole, valid records.

// Two versions of one full name, as a catalogue holds them: v2 adds a
// nullable field before country (the habit the ingest contract
// recommends). Read with v2, a v1 event's country is taken for the
// referrer and its locale for the country.
const (
	rawUserEventV1 = `{"type":"record","name":"UserEvent","namespace":"io.residency.events","fields":[
		{"name":"event_id","type":"string"},
		{"name":"user_id","type":"string"},
		{"name":"country","type":["null","string"],"default":null},
		{"name":"locale","type":["null","string"],"default":null}]}`
	rawUserEventV2 = `{"type":"record","name":"UserEvent","namespace":"io.residency.events","fields":[
		{"name":"event_id","type":"string"},
		{"name":"user_id","type":"string"},
		{"name":"referrer","type":["null","string"],"default":null},
		{"name":"country","type":["null","string"],"default":null},
		{"name":"locale","type":["null","string"],"default":null}]}`
)

// rawEvent encodes an event of schema (v1 or v2) as bare Avro; "" encodes
// null.
func rawEvent(t *testing.T, schema, id, country, locale string) []byte {
	t.Helper()
	c, err := goavro.NewCodec(schema)
	if err != nil {
		t.Fatal(err)
	}
	opt := func(s string) any {
		if s == "" {
			return nil
		}
		return goavro.Union("string", s)
	}
	native := map[string]any{"event_id": id, "user_id": "u-" + id, "country": opt(country), "locale": opt(locale)}
	if schema == rawUserEventV2 {
		native["referrer"] = opt("https://example.com/" + id)
	}
	b, err := c.BinaryFromNative(nil, native)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIntegrationRawSchemaResolvedExactly: a raw-framed ingest topic with a
// catalogue holding v1 and v2 of its schema. Named by its bare full name
// the configuration is refused at start, naming the field (it used to
// read with whichever catalogue file came last: a US event with a German
// locale was routed to the EU). Named by NAME@FINGERPRINT or by file, US
// and DE events reach their pinned topics, each with the residency-schema
// header of the schema it was read with.
func TestIntegrationRawSchemaResolvedExactly(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{"user_event_v1.avsc": rawUserEventV1, "user_event_v2.avsc": rawUserEventV2} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fp1, err := schemas.Fingerprint(rawUserEventV1)
	if err != nil {
		t.Fatal(err)
	}
	fp2, err := schemas.Fingerprint(rawUserEventV2)
	if err != nil {
		t.Fatal(err)
	}

	// By bare name: refused at start, naming the field.
	_, err = schemas.NewExtractor(schemas.ExtractorConfig{
		Framings: map[string]schemas.Framing{"legacy-events": schemas.FramingRaw}, CatalogueDir: dir,
		RawSchemas: map[string]string{"legacy-events": "io.residency.events.UserEvent"},
	})
	if err == nil || !strings.HasPrefix(err.Error(), `raw_schemas["legacy-events"]: name io.residency.events.UserEvent matches 3 schemas`) ||
		!strings.Contains(err.Error(), fmt.Sprintf("%016x", fp1)) || !strings.Contains(err.Error(), fmt.Sprintf("%016x", fp2)) {
		t.Fatalf("a raw schema name that matches v1, v2 and the embedded schema: %v", err)
	}

	for _, c := range []struct {
		name, schema, ref string
		fp                uint64
	}{
		{"v1 by name and fingerprint", rawUserEventV1, fmt.Sprintf("io.residency.events.UserEvent@%016x", fp1), fp1},
		{"v2 by file", rawUserEventV2, filepath.Join(dir, "user_event_v2.avsc"), fp2},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStack(t)
			ctx := testenv.Context(t, 90*time.Second)
			if s.fields, err = schemas.NewExtractor(schemas.ExtractorConfig{
				Framings: map[string]schemas.Framing{s.ingest: schemas.FramingRaw}, CatalogueDir: dir,
				RawSchemas: map[string]string{s.ingest: c.ref},
			}); err != nil {
				t.Fatal(err)
			}
			samples := []produced{
				{id: "us-de-locale", key: "k1", value: rawEvent(t, c.schema, "us-de-locale", "US", "DE"), dest: "region:us"},
				{id: "us", key: "k2", value: rawEvent(t, c.schema, "us", "US", ""), dest: "region:us"},
				{id: "de", key: "k3", value: rawEvent(t, c.schema, "de", "DE", ""), dest: "region:eu"},
				{id: "de-us-locale", key: "k4", value: rawEvent(t, c.schema, "de-us-locale", "DE", "US"), dest: "region:eu"},
				{id: "none", key: "k5", value: rawEvent(t, c.schema, "none", "", "US"), dest: "quarantine:no_country"},
			}
			r, _ := s.newRouter(t, "router-raw", nil)
			stop := runRouter(t, r)
			s.produce(t, ctx, samples)
			s.waitCommitted(t, ctx)
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			found, byID := s.collect(t, ctx)
			checkPlacement(t, samples, found, true)
			want := fmt.Sprintf("raw:%016x", c.fp)
			for _, sm := range samples {
				m := byID[sm.id]
				if v, _ := router.HeaderValue(m.Headers, router.HeaderSchema); string(v) != want {
					t.Errorf("event %s: %s header %q, want %q", sm.id, router.HeaderSchema, v, want)
				}
				if !bytes.Equal(m.Value, sm.value) {
					t.Errorf("event %s: value bytes changed", sm.id)
				}
			}
		})
	}
}

// TestIntegrationOnlyWholeRecordsRouted: values damaged after the country,
// which the router used to route because it stopped reading after the
// fields it needs, are dead-lettered with their reason (and the
// residency-schema header of the writer schema they were read with), never
// routed; whole events beside them are routed.
func TestIntegrationOnlyWholeRecordsRouted(t *testing.T) {
	s := newStack(t)
	ctx := testenv.Context(t, 90*time.Second)
	fp := s.enc.Fingerprint()
	body := func(id string) []byte {
		b, err := s.enc.Body(sample.Event{ID: id, UserID: "u-" + id, Country: "US"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// afterCountry is the offset after the country "US" (union index,
	// length, two letters); the body ends with client_ip_hash (null) and
	// schema_version (3).
	afterCountry := func(b []byte) int {
		i := bytes.Index(b, []byte{0x02, 0x04, 'U', 'S'})
		if i < 0 || !bytes.HasSuffix(b, []byte{0x00, 0x06}) {
			t.Fatalf("unexpected layout %x", b)
		}
		return i + 4
	}
	frame := func(b []byte) []byte { return schemas.AppendSingleObject(nil, fp, b) }
	cut := body("cut")
	count := body("count")
	at := afterCountry(count)
	if count[at] != 0x02 { // tags: one item
		t.Fatalf("tags count %x", count[at])
	}
	count = append(append(append([]byte(nil), count[:at]...), 0xd0, 0x0f), count[at+1:]...) // 1000 items
	union := body("union")
	union[len(union)-2] = 0x04 // client_ip_hash: branch 2 of ["null", fixed]
	samples := []produced{
		{id: "cut", key: "k", value: frame(cut[:afterCountry(cut)]), dest: "deadletter:truncated"},
		{id: "count", key: "k", value: frame(count), dest: "deadletter:truncated"},
		{id: "trailing", key: "k", value: append(frame(body("trailing")), 0x00, 0x01), dest: "deadletter:trailing_bytes"},
		{id: "union", key: "k", value: frame(union), dest: "deadletter:corrupt"},
		{id: "whole", key: "k", value: frame(body("whole")), dest: "region:us"},
	}
	noCountry, _ := s.enc.Encode(sample.Event{ID: "nc", UserID: "u-nc"})
	samples = append(samples, produced{id: "nc", key: "k", value: noCountry, dest: "quarantine:no_country"},
		produced{id: "magic", key: "k", value: []byte("not avro"), dest: "deadletter:bad_magic"})
	r, _ := s.newRouter(t, "router-whole", nil)
	stop := runRouter(t, r)
	s.produce(t, ctx, samples)
	s.waitCommitted(t, ctx)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	found, byID := s.collect(t, ctx)
	checkPlacement(t, samples, found, true)
	want := fmt.Sprintf("single-object:%016x", fp)
	for _, sm := range samples {
		m := byID[sm.id]
		if !bytes.Equal(m.Value, sm.value) {
			t.Errorf("event %s: value bytes changed", sm.id)
		}
		w := want
		if sm.id == "magic" {
			w = "" // never unframed: how it was read is not known
		}
		if v, _ := router.HeaderValue(m.Headers, router.HeaderSchema); string(v) != w {
			t.Errorf("event %s (%s): %s header %q, want %q", sm.id, sm.dest, router.HeaderSchema, v, w)
		}
	}
}
