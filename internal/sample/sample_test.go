package sample

import (
	"context"
	"errors"
	"testing"

	"github.com/residency-router/residency/schemas"
)

func TestEncoderRoundTripsThroughExtractor(t *testing.T) {
	enc, err := NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	ex, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, full := range []bool{false, true} {
		v, err := enc.Encode(Event{ID: "e1", UserID: "u1", Country: "DE", Full: full})
		if err != nil {
			t.Fatal(err)
		}
		f, err := ex.Extract(context.Background(), "t", v)
		if err != nil {
			t.Fatal(err)
		}
		if !f.HasCountry || string(f.Country) != "DE" || string(f.UserID) != "u1" {
			t.Fatalf("full %v: fields = %+v", full, f)
		}
	}
	v, _ := enc.Encode(Event{ID: "e2", UserID: "u2"})
	if f, err := ex.Extract(context.Background(), "t", v); err != nil || f.HasCountry {
		t.Fatalf("null country: %+v, %v", f, err)
	}
}

// TestMalformedEventsAreDeadLetteredForTheirReason: each malformation makes
// the extractor fail with the dead-letter reason it is named after.
func TestMalformedEventsAreDeadLetteredForTheirReason(t *testing.T) {
	enc, err := NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	ex, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []Malformation{BadMagic, Truncated, EmptyValue, UnknownSchema} {
		v, err := enc.Malformed(Event{ID: "e", UserID: "u", Country: "US"}, m)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ex.Extract(context.Background(), "t", v)
		if m == EmptyValue {
			if len(v) != 0 {
				t.Errorf("%s: %d bytes", m, len(v))
			}
			continue // the router refuses an empty value before extracting
		}
		if err == nil || schemas.Reason(err) != string(m) {
			t.Errorf("%s: extract = %v (reason %q)", m, err, schemas.Reason(errors.Unwrap(err)))
		}
	}
}
