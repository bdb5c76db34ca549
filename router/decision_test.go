package router

import (
	"errors"
	"testing"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

const testRules = `
jurisdictions:
  - name: US
    region: us
    countries: [US, PR]
  - name: EU
    region: eu
    countries: [DE, FR, IE]
  - name: UK
    region: uk
    countries: [GB]
  - name: IN
    region: in
    countries: [IN]
regions:
  - name: us
    cluster: a
    topic: residency.us
  - name: eu
    cluster: b
    topic: residency.eu
  - name: uk
    cluster: b
    topic: residency.uk
  - name: in
    cluster: a
    topic: residency.in
stores:
  - name: us-postgres
    regions: [us]
`

func mustRules(t testing.TB, src string) *rules.Ruleset {
	t.Helper()
	rs, err := rules.Parse([]byte(src))
	if err != nil {
		t.Fatalf("parse rules: %v", err)
	}
	rs.SetVersion(7)
	return rs
}

func country(c string) schemas.Fields {
	return schemas.Fields{Country: []byte(c), HasCountry: true, UserID: []byte("u1")}
}

func TestDecide(t *testing.T) {
	rs := mustRules(t, testRules)
	tests := []struct {
		name   string
		fields schemas.Fields
		pin    string
		want   Decision
	}{
		{"us", country("US"), "", Decision{Outcome: Routed, Jurisdiction: "US", Region: "us", Cluster: "a", Topic: "residency.us"}},
		{"territory", country("PR"), "", Decision{Outcome: Routed, Jurisdiction: "US", Region: "us", Cluster: "a", Topic: "residency.us"}},
		{"eu lower case", country("de"), "", Decision{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "residency.eu"}},
		{"uk", country("GB"), "", Decision{Outcome: Routed, Jurisdiction: "UK", Region: "uk", Cluster: "b", Topic: "residency.uk"}},
		{"null country", schemas.Fields{UserID: []byte("u")}, "", Decision{Outcome: Quarantined, Reason: ReasonNoCountry}},
		{"empty country", schemas.Fields{HasCountry: true, Country: []byte{}}, "", Decision{Outcome: Quarantined, Reason: ReasonNoCountry}},
		{"unknown country", country("ZZ"), "", Decision{Outcome: Quarantined, Reason: ReasonUnknownCountry}},
		{"not a code", country("USA"), "", Decision{Outcome: Quarantined, Reason: ReasonUnknownCountry}},
		{"non ascii", country("D\xc3"), "", Decision{Outcome: Quarantined, Reason: ReasonUnknownCountry}},
		{"pin overrides country", country("US"), "EU", Decision{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "residency.eu", Pinned: true}},
		{"pin without country", schemas.Fields{}, "IN", Decision{Outcome: Routed, Jurisdiction: "IN", Region: "in", Cluster: "a", Topic: "residency.in", Pinned: true}},
		{"pin to unknown jurisdiction", country("US"), "XX", Decision{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: "XX", Pinned: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(tt.fields, tt.pin, rs); got != tt.want {
				t.Errorf("Decide = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDeadLetterReason(t *testing.T) {
	d := DeadLetter(errors.Join(errors.New("x"), schemas.ErrBadMagic))
	if d.Outcome != DeadLettered || d.Reason != "bad_magic" {
		t.Fatalf("DeadLetter = %+v", d)
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	rs := mustRules(t, testRules)
	f := country("fr")
	allocs := testing.AllocsPerRun(1000, func() {
		if Decide(f, "", rs).Outcome != Routed {
			t.Fatal("not routed")
		}
		_ = Decide(f, "UK", rs)
		_ = Decide(schemas.Fields{}, "", rs)
	})
	if allocs != 0 {
		t.Fatalf("Decide allocates %v times per call", allocs)
	}
}

func BenchmarkDecide(b *testing.B) {
	rs := mustRules(b, testRules)
	f := country("IE")
	b.ReportAllocs()
	for b.Loop() {
		_ = Decide(f, "", rs)
	}
}
