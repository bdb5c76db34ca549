package routertest

import (
	"context"
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
	v, err := enc.Encode(Event{ID: "e1", UserID: "u1", Country: "DE"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ex.Extract(context.Background(), "t", v)
	if err != nil {
		t.Fatal(err)
	}
	if !f.HasCountry || string(f.Country) != "DE" || string(f.UserID) != "u1" {
		t.Fatalf("fields = %+v", f)
	}
	v, _ = enc.Encode(Event{ID: "e2", UserID: "u2"})
	if f, err = ex.Extract(context.Background(), "t", v); err != nil || f.HasCountry {
		t.Fatalf("null country: %+v, %v", f, err)
	}
}
