package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/leaves.json from the Go leaves")

// vectorLeaves are the leaves of testdata/leaves.json, one per kind and
// per optional-field rule.
func vectorLeaves() []struct {
	name string
	leaf Leaf
} {
	rs := RulesetRef{Version: 7, Digest: Sum([]byte("jurisdictions: []\n"))}
	return []struct {
		name string
		leaf Leaf
	}{
		{"route routed, empty key", func() Leaf {
			l := Leaf{Kind: KindRoute, Time: 1764028800123, Actor: "router-a",
				Src:      Source{Topic: "events", Partition: 3, Offset: 42},
				Decision: Routed, DecidedBy: "country", Jurisdiction: "EU", Region: "eu", Ruleset: rs,
				Dest: Destination{Cluster: "b", Topic: "residency.eu", Partition: 1, Offset: 9000}}
			l.SetRecord([]byte{}, []byte("value bytes"))
			return l
		}()},
		{"route quarantined, null key", func() Leaf {
			l := Leaf{Kind: KindRoute, Time: 1764028800124, Actor: "router-a",
				Src:      Source{Topic: "events", Partition: 0, Offset: 0},
				Decision: Quarantined, Reason: "unknown_country", Ruleset: rs,
				Dest: Destination{Cluster: "ingest", Topic: "residency.quarantine", Partition: 0, Offset: 17}}
			l.SetRecord(nil, []byte("v"))
			return l
		}()},
		{"sink write with keyed hashes", func() Leaf {
			l := Leaf{Kind: KindSinkWrite, Time: 1764028801000, Actor: "sink:eu-objectstore",
				Src:   Source{Cluster: "b", Topic: "residency.eu", Partition: 1, Offset: 9000},
				Event: Sum([]byte("event")), Subject: Sum([]byte("subject")),
				Decision: Written, Jurisdiction: "EU", Region: "eu", Ruleset: rs,
				Dest: Destination{Store: "eu-objectstore"}}
			l.SetRecord([]byte("k"), []byte("value bytes"))
			return l
		}()},
		{"purge", Leaf{Kind: KindPurge, Time: 1764028900000, Actor: "purge",
			Src:      Source{Topic: "events", Partition: 3, Offset: 0, EndOffset: 43},
			Decision: Purged, Count: 43}},
		{"erasure", Leaf{Kind: KindErasure, Time: 1764029000000, Actor: "erase",
			Subject: Sum([]byte("subject")), Decision: Erased, Dest: Destination{Store: "us-postgres"}, Count: 12}},
		{"ruleset with escapes", Leaf{Kind: KindRuleset, Time: 1764028000000, Actor: "router-a",
			Ruleset: RulesetRef{Version: 7, Digest: Sum([]byte("name: \"é\"\n\tx\x01\b\f"))},
			Policy: NewPolicy(
				[]PolicyJurisdiction{{Name: "US", Region: "us"}, {Name: "EU", Region: "eu"}},
				[]PolicyRegion{{Name: "us", Cluster: "a", Topic: "residency.us"}, {Name: "eu", Cluster: "b", Topic: "residency.eu"}},
				[]PolicyStore{{Name: "us-postgres", Regions: []string{"us"}}, {Name: "eu-objectstore", Regions: []string{"eu"}}}),
			Content: "name: \"é\"\n\tx\x01\b\f"}},
	}
}

type vector struct {
	Name     string `json:"name"`
	Leaf     string `json:"leaf"`
	LeafHash string `json:"leaf_hash"`
}

func TestLeafVectors(t *testing.T) {
	path := filepath.Join("testdata", "leaves.json")
	var got []vector
	for _, v := range vectorLeaves() {
		b, err := v.leaf.Encode()
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		got = append(got, vector{Name: v.name, Leaf: string(b), LeafHash: LeafHash(b).String()})
	}
	if *update {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want []vector
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(got) {
		t.Fatalf("%d vectors in %s, %d built", len(want), path, len(got))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("vector %q:\n got %s %s\nwant %s %s", want[i].Name, got[i].Leaf, got[i].LeafHash, want[i].Leaf, want[i].LeafHash)
		}
		l, err := ParseLeaf([]byte(want[i].Leaf))
		if err != nil {
			t.Errorf("vector %q: ParseLeaf: %v", want[i].Name, err)
			continue
		}
		again, _ := l.Encode()
		if string(again) != want[i].Leaf {
			t.Errorf("vector %q: parse and encode changed it", want[i].Name)
		}
	}
}

func TestParseLeafRejectsNonCanonical(t *testing.T) {
	l := vectorLeaves()[0].leaf
	good, err := l.Encode()
	if err != nil {
		t.Fatal(err)
	}
	s := string(good)
	bad := map[string]string{
		"space":           strings.Replace(s, `"kind":`, `"kind": `, 1),
		"field order":     strings.Replace(s, `{"v":1,"kind":"route",`, `{"kind":"route","v":1,`, 1),
		"upper-case hex":  strings.Replace(s, l.Value.String(), strings.ToUpper(l.Value.String()), 1),
		"unknown field":   strings.Replace(s, `"v":1,`, `"v":1,"x":1,`, 1),
		"version 2":       strings.Replace(s, `"v":1`, `"v":2`, 1),
		"escaped slash":   strings.Replace(s, `residency.eu`, `residency\/eu`, 1),
		"trailing":        s + "\n",
		"empty string":    strings.Replace(s, `"actor":"router-a"`, `"actor":""`, 1),
		"key without val": strings.Replace(s, `,"value_sha256":"`+l.Value.String()+`"`, "", 1),
		"unknown kind":    strings.Replace(s, `"kind":"route"`, `"kind":"routes"`, 1),
		"leading zero":    strings.Replace(s, `"offset":42`, `"offset":042`, 1),
		"not json":        "{",
	}
	for name, b := range bad {
		if _, err := ParseLeaf([]byte(b)); !errors.Is(err, ErrInvalidLeaf) {
			t.Errorf("%s: ParseLeaf = %v, want ErrInvalidLeaf", name, err)
		}
	}
}

func TestLeafKeyNullAndEmptyDiffer(t *testing.T) {
	var a, b Leaf
	a.Kind, b.Kind = KindRoute, KindRoute
	a.SetRecord(nil, []byte("v"))
	b.SetRecord([]byte{}, []byte("v"))
	ea, _ := a.Encode()
	eb, _ := b.Encode()
	if bytes.Equal(ea, eb) || !bytes.Contains(ea, []byte(`"key_sha256":null`)) ||
		!bytes.Contains(eb, []byte(`"key_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"`)) {
		t.Fatalf("null and empty key:\n%s\n%s", ea, eb)
	}
}

func TestLeafEncodeErrors(t *testing.T) {
	if _, err := (&Leaf{Kind: "nope"}).Encode(); !errors.Is(err, ErrInvalidLeaf) {
		t.Errorf("unknown kind: %v", err)
	}
	if _, err := (&Leaf{Kind: KindRoute, Actor: "\xff"}).Encode(); !errors.Is(err, ErrInvalidLeaf) {
		t.Errorf("invalid UTF-8: %v", err)
	}
	if _, err := (&Leaf{Kind: KindRuleset, Content: strings.Repeat("x", MaxLeafSize)}).Encode(); !errors.Is(err, ErrInvalidLeaf) {
		t.Errorf("too large: %v", err)
	}
	unsorted := &Policy{Jurisdictions: []PolicyJurisdiction{{Name: "US"}, {Name: "EU"}}}
	if _, err := (&Leaf{Kind: KindRuleset, Policy: unsorted}).Encode(); !errors.Is(err, ErrInvalidLeaf) {
		t.Errorf("unsorted policy: %v", err)
	}
}

func TestAppendLeafDoesNotAllocate(t *testing.T) {
	l := vectorLeaves()[0].leaf
	buf := make([]byte, 0, 1024)
	n := testing.AllocsPerRun(100, func() {
		buf, _ = AppendLeaf(buf[:0], &l)
	})
	if n != 0 {
		t.Fatalf("AppendLeaf allocates %v times per leaf", n)
	}
}

func TestPolicyLookups(t *testing.T) {
	p := vectorLeaves()[5].leaf.Policy
	if r, ok := p.RegionOf("EU"); !ok || r != "eu" {
		t.Errorf("RegionOf(EU) = %q %v", r, ok)
	}
	if _, ok := p.RegionOf("UK"); ok {
		t.Error("RegionOf(UK) found")
	}
	if g, ok := p.Region("us"); !ok || g.Topic != "residency.us" || g.Cluster != "a" {
		t.Errorf("Region(us) = %+v %v", g, ok)
	}
	if !p.Approves("us-postgres", "us") || p.Approves("us-postgres", "eu") || p.Approves("x", "us") {
		t.Error("Approves wrong")
	}
}

func TestNewRulesetLeaf(t *testing.T) {
	p := vectorLeaves()[5].leaf.Policy
	l, err := NewRulesetLeaf(4, []byte("small: true\n"), p, "rules-apply", 1)
	if err != nil || l.Content != "small: true\n" || l.Ruleset.Digest != Sum([]byte("small: true\n")) {
		t.Fatalf("small ruleset: %+v, %v", l, err)
	}
	big := []byte(strings.Repeat("# comment\n", 10000))
	l, err = NewRulesetLeaf(5, big, p, "rules-apply", 1)
	if err != nil || l.Content != "" || l.Ruleset.Digest != Sum(big) || l.Policy == nil {
		t.Fatalf("big ruleset: content %d bytes, %v", len(l.Content), err)
	}
	if _, err := l.Encode(); err != nil {
		t.Fatal(err)
	}
}
