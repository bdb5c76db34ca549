package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/schemas"
)

// TestRowDecoderRegistryOutOfReach: a row whose framing needs a schema
// registry that does not answer is audit.ErrUndecodable (its event
// columns go unchecked and the report says so), not an error that stops
// the verification; the source topic's later rows are not sent to the
// registry again; another topic's rows still decode.
func TestRowDecoderRegistryOutOfReach(t *testing.T) {
	cfg := &config.Config{Schemas: schemas.ExtractorConfig{
		Framings: map[string]schemas.Framing{"confluent-events": schemas.FramingConfluent},
		Registry: schemas.RegistryConfig{URL: "http://127.0.0.1:1", Retries: -1, Timeout: time.Second},
	}}
	dec, err := rowDecoder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	confluent := []byte{0, 0, 0, 0, 7, 2, 'x'} // magic 0, schema id 7
	_, _, _, err = dec(context.Background(), "confluent-events", confluent)
	if !errors.Is(err, audit.ErrUndecodable) || !errors.Is(err, schemas.ErrRegistryUnavailable) {
		t.Fatalf("registry out of reach: %v, want audit.ErrUndecodable wrapping schemas.ErrRegistryUnavailable", err)
	}
	began := time.Now()
	for range 50 {
		if _, _, _, err := dec(context.Background(), "confluent-events", confluent); !errors.Is(err, audit.ErrUndecodable) {
			t.Fatalf("a later row: %v", err)
		}
	}
	if d := time.Since(began); d > 500*time.Millisecond {
		t.Fatalf("50 later rows took %s: sent to the registry again", d)
	}
	// The default single-object framing needs no registry: junk there is
	// the row's own fault (a finding), not the verifier's.
	if _, _, _, err := dec(context.Background(), "events", []byte("junk")); !errors.Is(err, audit.ErrUndecodable) || errors.Is(err, schemas.ErrRegistryUnavailable) {
		t.Fatalf("an undecodable single-object value: %v, want audit.ErrUndecodable", err)
	}
}
