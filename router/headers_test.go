package router

import (
	"errors"
	"strings"
	"testing"
)

func TestOutHeaders(t *testing.T) {
	m := &Message{Topic: "in", Partition: 2, Offset: 41, Headers: []Header{
		{"a", []byte("1")}, {HeaderRegion, []byte("forged")}, {"b", []byte("2")},
	}}
	d := &Decision{Outcome: DeadLettered, Reason: "corrupt"}
	hs := outHeaders(m, d, "9", "r1", errors.New(strings.Repeat("x", 500)))
	if hs[0].Key != "a" || hs[1].Key != "b" {
		t.Fatalf("original headers not first and in order: %v", hs)
	}
	if _, ok := HeaderValue(hs, HeaderRegion); ok {
		t.Fatal("forged region header kept")
	}
	if _, ok := HeaderValue(hs, HeaderRulesetVersion); ok {
		t.Fatal("dead-letter carries a ruleset version")
	}
	for k, want := range map[string]string{HeaderSourceTopic: "in", HeaderSourcePartition: "2", HeaderSourceOffset: "41", HeaderRouter: "r1", HeaderReason: "corrupt"} {
		if v, _ := HeaderValue(hs, k); string(v) != want {
			t.Errorf("%s = %q, want %q", k, v, want)
		}
	}
	if v, _ := HeaderValue(hs, HeaderError); len(v) != maxErrorHeader {
		t.Errorf("error header is %d bytes, want it cut to %d", len(v), maxErrorHeader)
	}
	routed := outHeaders(m, &Decision{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Pinned: true}, "9", "r1", nil)
	for k, want := range map[string]string{HeaderJurisdiction: "EU", HeaderRegion: "eu", HeaderRulesetVersion: "9", HeaderDecidedBy: "pin"} {
		if v, _ := HeaderValue(routed, k); string(v) != want {
			t.Errorf("routed %s = %q, want %q", k, v, want)
		}
	}
	if _, ok := HeaderValue(routed, HeaderReason); ok {
		t.Error("routed event has a reason")
	}
}
