package rules

import (
	"strings"
	"testing"
)

func mustParse(t *testing.T, doc string) *Ruleset {
	t.Helper()
	r, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCompare(t *testing.T) {
	from := mustParse(t, small)
	to := mustParse(t, strings.NewReplacer(
		// DE leaves EU for a new jurisdiction; PR becomes unassigned.
		"countries: [US, PR]", "countries: [US]",
		"    countries: [FR, DE]\n", "    countries: [FR]\n  - name: DE\n    region: de\n    countries: [DE, AT]\n",
		// EU maps to another region; a region moves cluster and topic.
		"    region: eu\n", "    region: eu2\n",
		"{name: us, cluster: ingest, topic: residency.us}", "{name: us, cluster: us, topic: residency.us.v2}",
		"{name: eu, cluster: eu, topic: residency.eu}", "{name: eu2, cluster: eu, topic: residency.eu2}\n  - {name: de, cluster: eu, topic: residency.de}",
		// Stores gain and lose regions, one is added.
		"{name: eu-objectstore, regions: [eu]}", "{name: eu-objectstore, regions: [eu2, de]}\n  - {name: de-postgres, regions: [de]}",
	).Replace(small))
	to.SetVersion(2)
	d := Compare(from, to)
	if d.From != 0 || d.To != 2 {
		t.Fatalf("versions %d %d", d.From, d.To)
	}
	want := []string{
		"country AT: unassigned (quarantined) → jurisdiction DE, region de",
		"country DE: jurisdiction EU, region eu → jurisdiction DE, region de",
		"country FR: jurisdiction EU, region eu → jurisdiction EU, region eu2",
		"country PR: jurisdiction US, region us → unassigned (its events will be quarantined)",
		"jurisdiction DE is added, mapped to region de",
		"jurisdiction EU maps to region eu2 instead of eu",
		"region de is added: pinned topic residency.de on cluster eu",
		"region eu is removed (pinned topic residency.eu on cluster eu)",
		"region eu2 is added: pinned topic residency.eu2 on cluster eu",
		"region us: pinned topic changes from residency.us to residency.us.v2",
		"region us: cluster changes from ingest to us",
		"store de-postgres is added, approved for region de",
		"store eu-objectstore is now also approved for regions de, eu2",
		"store eu-objectstore is no longer approved for region eu",
	}
	if got := d.Lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("Lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !Compare(from, from).Empty() || Compare(from, to).Empty() {
		t.Fatal("Empty is wrong")
	}

	// Countries that move together are grouped in one line.
	moved := mustParse(t, strings.Replace(small, "    region: eu\n", "    region: us\n", 1))
	if got := Compare(from, moved).Lines(); len(got) != 2 || got[0] != "2 countries (DE, FR): jurisdiction EU, region eu → jurisdiction EU, region us" {
		t.Fatalf("grouped: %q", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(small))
	f.Add([]byte("jurisdictions: [{name: X, region: x, countries: [US]}]\nregions: [{name: x, cluster: c, topic: t}]\n"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse(data)
		if err != nil {
			if r != nil {
				t.Fatal("a ruleset with an error")
			}
			return
		}
		// A valid ruleset places every listed country in a jurisdiction
		// whose region exists.
		for _, j := range r.Jurisdictions {
			if j.RegionRef() == nil {
				t.Fatalf("jurisdiction %q without a region", j.Name)
			}
			for _, c := range j.Countries {
				if got, ok := r.JurisdictionOf([]byte(c)); !ok || got.Name != j.Name {
					t.Fatalf("country %q not placed in %q", c, j.Name)
				}
			}
		}
	})
}
