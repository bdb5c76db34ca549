package erasure_test

import (
	"context"
	"testing"

	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// TestEventReader reads records as the router and the sinks do: ingest
// records by their topic's framing whatever residency-schema header a
// producer forged, other topics' records by their residency-schema header.
func TestEventReader(t *testing.T) {
	x, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := sample.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	framed, err := enc.Encode(sample.Event{ID: "e1", UserID: "u1", Country: "DE"})
	if err != nil {
		t.Fatal(err)
	}
	body, err := enc.Body(sample.Event{ID: "e2", UserID: "u2", Country: "US"})
	if err != nil {
		t.Fatal(err)
	}
	raw := schemas.WriterRef{Framing: schemas.FramingRaw, Fingerprint: enc.Fingerprint()}.String()
	r := erasure.NewEventReader(x)
	ctx := context.Background()
	ingest := erasure.Topic{Cluster: "a", Name: "events", Role: erasure.RoleIngest}
	pinned := erasure.Topic{Cluster: "b", Name: "residency.eu", Role: erasure.RolePinned}

	// An ingest record with a forged header is read by its topic's framing.
	f, err := r.Fields(ctx, ingest, &stream.Message{Topic: "events", Value: framed, Headers: []stream.Header{{Key: router.HeaderSchema, Value: []byte(raw)}}})
	if err != nil || string(f.Country) != "DE" || string(f.UserID) != "u1" {
		t.Fatalf("ingest: %q %q, %v", f.Country, f.UserID, err)
	}
	// A pinned record of bare Avro is read by its header.
	f, err = r.Fields(ctx, pinned, &stream.Message{Topic: "residency.eu", Value: body, Headers: []stream.Header{{Key: router.HeaderSchema, Value: []byte(raw)}}})
	if err != nil || string(f.Country) != "US" || string(f.UserID) != "u2" {
		t.Fatalf("pinned raw: %q %q, %v", f.Country, f.UserID, err)
	}
	// Without the header, by the topic's framing (single-object): bare Avro
	// does not read, and is not guessed.
	if _, err := r.Fields(ctx, pinned, &stream.Message{Topic: "residency.eu", Value: body}); err == nil {
		t.Fatal("bare Avro without a header was read")
	}
	// A bad header falls back to the topic's framing.
	f, err = r.Fields(ctx, pinned, &stream.Message{Topic: "residency.eu", Value: framed, Headers: []stream.Header{{Key: router.HeaderSchema, Value: []byte("nonsense")}}})
	if err != nil || string(f.UserID) != "u1" {
		t.Fatalf("bad header: %q, %v", f.UserID, err)
	}
}

// TestResidueCountryField reads the country of stored rows at a nested
// path.
func TestResidueCountryField(t *testing.T) {
	eu := &memStore{}
	eu.add(row("e1", "u1", "US", "eu"))
	bad := row("e2", "u2", "US", "eu")
	bad.Event = []byte(`{"geo":{"country":7}}`)
	eu.add(bad)
	s, err := erasure.NewResidueScanner(erasure.ResidueConfig{Rules: staticRules{testRuleset(t)}, CountryField: "geo.country",
		Clusters: map[string]erasure.Cluster{"a": newMemKafka().cluster(), "b": newMemKafka().cluster()},
		Stores:   []erasure.StoreRef{{Name: "eu-objectstore", Region: "eu", Store: eu}}, Events: textEvents{}})
	if err != nil {
		t.Fatal(err)
	}
	// The ruleset's pinned topics do not exist in these clusters: a scan
	// that cannot read a topic fails rather than skipping it.
	if _, err := s.Scan(context.Background(), "US"); err == nil {
		t.Fatal("a topic that cannot be read was skipped")
	}
	a, b := newMemKafka(), newMemKafka()
	a.create("residency.us", 1)
	b.create("residency.eu", 1)
	s, _ = erasure.NewResidueScanner(erasure.ResidueConfig{Rules: staticRules{testRuleset(t)}, CountryField: "geo.country",
		Clusters: map[string]erasure.Cluster{"a": a.cluster(), "b": b.cluster()},
		Stores:   []erasure.StoreRef{{Name: "eu-objectstore", Region: "eu", Store: eu}}, Events: textEvents{}})
	rep, err := s.Scan(context.Background(), "US")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Residue != 1 || rep.Unreadable != 1 || rep.Verdict != erasure.VerdictResidue {
		t.Fatalf("report %+v", rep)
	}
}
