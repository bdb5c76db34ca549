package router

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
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

// TestHeaderBuilderMatchesOutHeaders checks that the router's per-batch
// header builder writes exactly outHeaders' headers (names, values, order)
// for every kind of decision, that no event's headers share room to grow
// with another's, and that a new batch leaves the previous one's intact.
func TestHeaderBuilderMatchesOutHeaders(t *testing.T) {
	orig := []Header{{"a", []byte("1")}, {HeaderReason, []byte("forged")}, {"b", []byte("2")}}
	decodeErr := errors.New(strings.Repeat("y", 300))
	cases := []struct {
		d   Decision
		err error
	}{
		{Decision{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu"}, nil},
		{Decision{Outcome: Routed, Jurisdiction: "US", Region: "us", Cluster: "a", Topic: "pinned.us", Pinned: true}, nil},
		{Decision{Outcome: Quarantined, Reason: ReasonNoCountry}, nil},
		{Decision{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: "XX", Pinned: true}, nil},
		{Decision{Outcome: Quarantined, Reason: ReasonUnknownCountry}, nil},
		// EU again, without a region (its cluster unreachable): the cached
		// EU headers must not be reused.
		{Decision{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: "EU"}, nil},
		{Decision{Outcome: DeadLettered, Reason: "truncated"}, decodeErr},
		{Decision{Outcome: DeadLettered, Reason: "empty"}, errors.New("short")},
	}
	var batch []Message
	for i := range 3 * len(cases) {
		var hs []Header
		if i%2 == 0 {
			hs = orig
		}
		batch = append(batch, Message{Topic: fmt.Sprint("in-", i%2), Partition: i, Offset: int64(i) * 1_000_003, Headers: hs})
	}
	want := func(i int) []Header {
		c := cases[i%len(cases)]
		return outHeaders(&batch[i], &c.d, "7", "r1", c.err)
	}
	equal := func(a, b []Header) bool {
		return slices.EqualFunc(a, b, func(x, y Header) bool { return x.Key == y.Key && bytes.Equal(x.Value, y.Value) })
	}
	var hb headerBuilder
	var first [][]Header
	for round, ver := range []string{"7", "8"} {
		hb.startBatch(batch, ver, "r1")
		var got [][]Header
		for i := range batch {
			c := cases[i%len(cases)]
			got = append(got, hb.headers(&batch[i], &c.d, c.err))
		}
		for i, hs := range got {
			w := want(i)
			if ver != "7" {
				for k := range w {
					if w[k].Key == HeaderRulesetVersion {
						w[k].Value = []byte(ver)
					}
				}
			}
			if !equal(hs, w) {
				t.Fatalf("round %d, event %d: headers\n%v\nwant\n%v", round, i, hs, w)
			}
			if cap(hs) != len(hs) {
				t.Fatalf("event %d: headers have room to grow into the next event's", i)
			}
			for _, h := range hs {
				if cap(h.Value) != len(h.Value) {
					t.Fatalf("event %d: header %s has room to grow into another value", i, h.Key)
				}
			}
		}
		// Appending to one event's headers must not touch the next one's.
		next := slices.Clone(got[1])
		_ = append(got[0], Header{"x", []byte("x")})
		if !equal(got[1], next) {
			t.Fatal("appending to one event's headers changed the next event's")
		}
		if round == 0 {
			first = got
		}
	}
	for i, hs := range first {
		if !equal(hs, want(i)) {
			t.Fatalf("event %d of the first batch changed when the second was built: %v", i, hs)
		}
	}
}

// TestHeaderBuilderAllocations checks the per-event allocation budget of
// the router's headers: none once the batch is started (and the values
// cached), except residency-error for dead-letters.
func TestHeaderBuilderAllocations(t *testing.T) {
	m := Message{Topic: "in", Partition: 3, Offset: 1_234_567, Headers: []Header{{"producer", []byte("app-1")}}}
	d := Decision{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "b", Topic: "pinned.eu"}
	q := Decision{Outcome: Quarantined, Reason: ReasonUnknownCountry}
	batch := make([]Message, 2000)
	for i := range batch {
		batch[i] = m
	}
	var hb headerBuilder
	hb.startBatch(batch[:2], "7", "r1")
	hb.headers(&m, &d, nil) // cache the values
	hb.headers(&m, &q, nil)
	hb.startBatch(batch, "7", "r1")
	allocs := testing.AllocsPerRun(500, func() {
		hb.headers(&m, &d, nil)
		hb.headers(&m, &q, nil)
	})
	if allocs != 0 {
		t.Fatalf("headers allocate %v times per two events", allocs)
	}
}
