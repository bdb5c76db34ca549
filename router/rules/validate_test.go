package rules

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// small is a valid ruleset the validation tests break one way at a time.
const small = `jurisdictions:
  - name: US
    region: us
    countries: [US, PR]
  - name: EU
    region: eu
    countries: [FR, DE]
regions:
  - {name: us, cluster: ingest, topic: residency.us}
  - {name: eu, cluster: eu, topic: residency.eu}
stores:
  - {name: us-postgres, regions: [us]}
  - {name: eu-objectstore, regions: [eu]}
unplaceable: quarantine
`

func TestParseExamples(t *testing.T) {
	for _, f := range []string{"rules.yaml", "rules-next.yaml"} {
		data, err := os.ReadFile("../../deploy/examples/" + f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		eu, ok := r.Jurisdiction("EU")
		if !ok || len(eu.Countries) < 30 {
			t.Fatalf("%s: EU jurisdiction missing or short: %+v", f, eu)
		}
		for _, c := range []string{"DE", "IS", "LI", "NO"} {
			if j, ok := r.JurisdictionOf([]byte(c)); !ok || j.Name != "EU" {
				t.Errorf("%s: %s not in EU", f, c)
			}
		}
		if j, ok := r.JurisdictionOf([]byte("gb")); !ok || j.Name != "UK" || j.RegionRef().Name != "uk" {
			t.Errorf("%s: gb -> %+v", f, j)
		}
		if !r.Approves("us-postgres", "us") || r.Approves("us-postgres", "eu") {
			t.Errorf("%s: approvals wrong", f)
		}
	}
}

func TestParseSmall(t *testing.T) {
	r, err := Parse([]byte(small))
	if err != nil {
		t.Fatal(err)
	}
	if r.Version() != 0 || r.VersionString() != "0" {
		t.Fatalf("version %d %q", r.Version(), r.VersionString())
	}
	for in, want := range map[string]string{"US": "US", "pr": "US", "fR": "EU", "XX": "", "": "", "USA": "", "u1": ""} {
		j, ok := r.JurisdictionOf([]byte(in))
		if got := ""; ok {
			got = j.Name
			if got != want {
				t.Errorf("JurisdictionOf(%q) = %q, want %q", in, got, want)
			}
		} else if want != "" {
			t.Errorf("JurisdictionOf(%q) not found, want %q", in, want)
		}
	}
	if g, ok := r.Region("eu"); !ok || g.Topic != "residency.eu" || g.Cluster != "eu" {
		t.Fatalf("Region(eu) = %+v", g)
	}
	r.SetVersion(42)
	if r.VersionString() != "42" {
		t.Fatal(r.VersionString())
	}
}

func TestCountryTable(t *testing.T) {
	if n := len(assigned); n != 249 {
		t.Fatalf("ISO 3166-1 table has %d codes, want 249", n)
	}
	for _, c := range []string{"US", "GB", "DE", "SS", "BQ", "CW", "SX", "AX", "ZW"} {
		if !IsCountryCode(c) {
			t.Errorf("%s should be assigned", c)
		}
	}
	for _, c := range []string{"UK", "EU", "XK", "XX", "AA", "ZZ", "us", "U", "USA", "AN", "YU", "CS"} {
		if IsCountryCode(c) {
			t.Errorf("%s should not be assigned", c)
		}
	}
}

// TestValidationClasses breaks the small ruleset once per class of problem
// and checks the message and its location.
func TestValidationClasses(t *testing.T) {
	cases := []struct {
		name, from, to string
		want           []string // substrings of one problem's String()
	}{
		{"unassigned country", "[FR, DE]", "[FR, XX]",
			[]string{"line 7: jurisdictions[1] (EU): ", `country "XX" is not an assigned ISO 3166-1 alpha-2 code`}},
		{"invalid country", "[FR, DE]", "[FR, DEU]",
			[]string{"jurisdictions[1] (EU): ", `country "DEU" is not an ISO 3166-1 alpha-2 code`}},
		{"reserved country", "[FR, DE]", "[FR, UK]",
			[]string{`country "UK" is not an assigned ISO 3166-1 alpha-2 code (use GB)`}},
		{"lower-case country", "[FR, DE]", "[FR, de]",
			[]string{`country "de" must be written in upper case: "DE"`}},
		{"country twice in one", "[FR, DE]", "[FR, DE, FR]",
			[]string{`jurisdictions[1] (EU): country "FR" is listed twice`}},
		{"country in two jurisdictions", "[FR, DE]", "[FR, DE, PR]",
			[]string{"line 7: jurisdictions[1] (EU): ", `country "PR" is already in jurisdiction "US" (jurisdictions[0])`}},
		{"jurisdiction without region", "    region: eu\n", "",
			[]string{"line 5: jurisdictions[1] (EU): jurisdiction has no region"}},
		{"jurisdiction with undefined region", "    region: eu\n", "    region: mars\n",
			[]string{"line 6: jurisdictions[1] (EU): ", `region "mars" is not defined in regions`}},
		{"region without topic", "{name: eu, cluster: eu, topic: residency.eu}", "{name: eu, cluster: eu}",
			[]string{"line 10: regions[1] (eu): region has no topic"}},
		{"region without cluster", "{name: eu, cluster: eu, topic: residency.eu}", "{name: eu, topic: residency.eu}",
			[]string{"line 10: regions[1] (eu): region has no cluster"}},
		{"regions sharing a topic", "{name: eu, cluster: eu, topic: residency.eu}", "{name: eu, cluster: ingest, topic: residency.us}",
			[]string{"regions[1] (eu): ", `pinned topic "residency.us" on cluster "ingest" is already region "us"'s`}},
		{"store for undefined region", "{name: eu-objectstore, regions: [eu]}", "{name: eu-objectstore, regions: [eu, mars]}",
			[]string{"line 13: stores[1] (eu-objectstore): ", `approved for region "mars", which is not defined in regions`}},
		{"duplicate jurisdiction", "  - name: EU\n", "  - name: US\n",
			[]string{"line 5: jurisdictions[1] (US): ", `duplicate jurisdiction name "US" (first defined at jurisdictions[0])`}},
		{"duplicate region", "{name: eu, cluster: eu, topic: residency.eu}", "{name: us, cluster: eu, topic: residency.eu}",
			[]string{"regions[1] (us): ", `duplicate region name "us" (first defined at regions[0])`}},
		{"duplicate store", "{name: eu-objectstore, regions: [eu]}", "{name: us-postgres, regions: [eu]}",
			[]string{"stores[1] (us-postgres): ", `duplicate store name "us-postgres" (first defined at stores[0])`}},
		{"unplaceable not quarantine", "unplaceable: quarantine", "unplaceable: us",
			[]string{"line 14: unplaceable: ", `"us" is not allowed: the only accepted value is "quarantine"`}},
		{"bad name", "  - name: EU\n", "  - name: E U\n",
			[]string{`jurisdictions[1] (E U): name "E U" may contain only`}},
		{"unknown field", "unplaceable: quarantine", "fallback: us",
			[]string{"line 14: ", "field fallback not found"}},
		{"not YAML", "regions:", "regions: [",
			[]string{"did not find expected"}},
		{"empty", small, "",
			[]string{"the document is empty"}},
		{"no jurisdictions", small, "regions: [{name: us, cluster: ingest, topic: t}]\n",
			[]string{"jurisdictions: no jurisdiction is defined"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := strings.Replace(small, c.from, c.to, 1)
			if doc == small {
				t.Fatalf("test case does not change the ruleset")
			}
			_, err := Parse([]byte(doc))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse = %v, want a *ValidationError", err)
			}
			found := false
			for _, p := range ve.Problems {
				ok := true
				for _, w := range c.want {
					ok = ok && strings.Contains(p.String(), w)
				}
				found = found || ok
			}
			if !found {
				t.Fatalf("no problem contains %q; got:\n%v", c.want, err)
			}
		})
	}
}

func TestValidationListsEveryProblem(t *testing.T) {
	doc := strings.NewReplacer("[FR, DE]", "[FR, XX, PR]", "{name: us-postgres, regions: [us]}", "{name: us-postgres, regions: [moon]}").Replace(small)
	_, err := Parse([]byte(doc))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Parse = %v", err)
	}
	if len(ve.Problems) != 3 {
		t.Fatalf("got %d problems, want 3:\n%v", len(ve.Problems), err)
	}
	if !strings.HasPrefix(err.Error(), "invalid ruleset: 3 problems:\n  line 7: ") {
		t.Fatalf("message: %v", err)
	}
}

// TestJurisdictionOfEveryTwoBytes looks up every two-byte value: only the
// ruleset's countries, in either case of ASCII letters, are found.
func TestJurisdictionOfEveryTwoBytes(t *testing.T) {
	r, err := Parse([]byte(small))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"US": "US", "PR": "US", "FR": "EU", "DE": "EU"}
	found := 0
	for a := range 256 {
		for b := range 256 {
			c := []byte{byte(a), byte(b)}
			j, ok := r.JurisdictionOf(c)
			name, wantOK := want[strings.ToUpper(string(c))]
			isLetters := (c[0]|0x20) >= 'a' && (c[0]|0x20) <= 'z' && (c[1]|0x20) >= 'a' && (c[1]|0x20) <= 'z'
			wantOK = wantOK && isLetters
			if ok != wantOK || (ok && j.Name != name) {
				t.Fatalf("JurisdictionOf(%q) = %v, %v; want %q, %v", c, j, ok, name, wantOK)
			}
			if ok {
				found++
			}
		}
	}
	if found != 16 { // four countries, four spellings each
		t.Fatalf("found %d spellings, want 16", found)
	}
	for _, c := range []string{"", "U", "USA", "U S"} {
		if _, ok := r.JurisdictionOf([]byte(c)); ok {
			t.Errorf("JurisdictionOf(%q) found", c)
		}
	}
}
