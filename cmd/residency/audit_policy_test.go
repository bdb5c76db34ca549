package main

import (
	"os"
	"reflect"
	"testing"

	"github.com/residency-router/residency/auditwire"
	"github.com/residency-router/residency/router/rules"
)

// TestAuditPolicyOf: verify derives a ruleset leaf's policy from its content
// exactly as the router logs it, and refuses content that is no ruleset.
func TestAuditPolicyOf(t *testing.T) {
	b, err := os.ReadFile("demo_rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policyOf(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, auditwire.Policy(rs)) {
		t.Fatalf("policy %+v, want %+v", p, auditwire.Policy(rs))
	}
	if r, ok := p.RegionOf("US"); !ok || r == "" {
		t.Fatalf("the demo ruleset's policy has no region for US: %q %v", r, ok)
	}
	if _, err := policyOf([]byte("jurisdictions: [")); err == nil {
		t.Fatal("content that is no ruleset gave a policy")
	}
}
