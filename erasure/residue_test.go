package erasure_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/router"
)

// TestLocate lists where a user's events sit in Kafka topics (consecutive
// offsets merged), counts unreadable records, and says when retention
// removes them.
func TestLocate(t *testing.T) {
	a, b := newMemKafka(), newMemKafka()
	a.create("events", 2)
	a.create("dead-letter", 1)
	b.create("residency.eu", 1)
	for i, v := range []string{"US|" + alice, "US|" + alice, "US|bob", "US|" + alice, "!garbled"} {
		a.produce("events", 0, v, t0.Add(time.Duration(i)*time.Minute))
	}
	a.produce("events", 1, "US|bob", t0)
	a.produce("dead-letter", 0, "!x", t0)
	b.produce("residency.eu", 0, "DE|"+alice, t0.Add(time.Hour))
	b.configs["residency.eu"] = map[string]string{"cleanup.policy": "compact", "retention.ms": "-1"}
	topics := []erasure.Topic{
		{Cluster: "a", Name: "events", Role: erasure.RoleIngest},
		{Cluster: "a", Name: "dead-letter", Role: erasure.RoleDeadLetter},
		{Cluster: "b", Name: "residency.eu", Role: erasure.RolePinned, Region: "eu"},
	}
	var progress []erasure.ScanProgress
	l, err := erasure.NewLocator(erasure.LocateConfig{Clusters: map[string]erasure.Cluster{"a": a.cluster(), "b": b.cluster()},
		Topics: topics, Events: textEvents{}, Batch: 2, Progress: func(p erasure.ScanProgress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := l.Locate(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 3 {
		t.Fatalf("holdings %+v", hs)
	}
	ev := hs[0]
	if ev.Records != 3 || ev.Scanned != 6 || ev.Unreadable != 1 || fmt.Sprint(ev.Partitions[0].Ranges) != "[{0 2} {3 4}]" || len(ev.Partitions) != 1 {
		t.Fatalf("events: %+v", ev)
	}
	if r := ev.Retention; r == nil || r.Never || !r.NotBefore.Equal(t0.Add(3*time.Minute).Add(7*24*time.Hour)) || !strings.Contains(r.Note, "purge") {
		t.Fatalf("events retention %+v", r)
	}
	if dl := hs[1]; dl.Records != 0 || dl.Unreadable != 1 || dl.Retention != nil {
		t.Fatalf("dead-letter: %+v", dl)
	}
	if eu := hs[2]; eu.Records != 1 || eu.Retention == nil || !eu.Retention.Never || !strings.Contains(eu.Retention.Note, "tombstone") {
		t.Fatalf("eu pinned: %+v", eu)
	}
	if len(progress) == 0 || progress[len(progress)-1].Place != "b/residency.eu" {
		t.Fatalf("progress %+v", progress)
	}
	if _, err := l.Locate(context.Background(), ""); !errors.Is(err, erasure.ErrEmptyUser) {
		t.Fatalf("empty user: %v", err)
	}
	if _, err := erasure.NewLocator(erasure.LocateConfig{Topics: topics, Events: textEvents{}}); !errors.Is(err, erasure.ErrConfig) {
		t.Fatalf("no clusters: %v", err)
	}
}

// residueFixture seeds residue of US: a US event in the EU pinned topic,
// US events left in the ingest topic, an EU-recorded row of a US user in
// the EU store and a DE-country row of a user pinned to US in the EU store;
// plus everything in its right place, and a dead-lettered record.
func residueFixture() (a, b *memKafka, us, eu *memStore) {
	a, b = newMemKafka(), newMemKafka()
	a.create("events", 1)
	a.create("quarantine", 1)
	a.create("dead-letter", 1)
	a.create("residency.us", 1)
	b.create("residency.eu", 1)
	for _, v := range []string{"US|u1", "DE|u2", "PR|u3", "DE|u-pin6"} {
		a.produce("events", 0, v, t0)
	}
	a.produce("quarantine", 0, "ZZ|u4", t0, router.HeaderReason, "unknown_country")
	a.produce("residency.us", 0, "US|u1", t0) // approved: not residue
	b.produce("residency.eu", 0, "DE|u2", t0)
	b.produce("residency.eu", 0, "US|u5", t0) // residue
	us, eu = &memStore{}, &memStore{}
	us.add(row("e1", "u1", "US", "us"))
	eu.add(row("e2", "u2", "DE", "eu"))
	eu.add(row("e3", "u3", "US", "eu")) // residue: a US event recorded as eu
	eu.add(row("e4", "u-pin6", "DE", "eu"))
	eu.add(row("e5", "u9", "", "eu")) // no country, not pinned: not US
	return a, b, us, eu
}

func residueScanner(t *testing.T, a, b *memKafka, us, eu *memStore) *erasure.ResidueScanner {
	t.Helper()
	s, err := erasure.NewResidueScanner(erasure.ResidueConfig{
		Rules: staticRules{testRuleset(t)}, Pins: mapPins{"u-pin6": "US"},
		Clusters: map[string]erasure.Cluster{"a": a.cluster(), "b": b.cluster()},
		Topics: []erasure.Topic{
			{Cluster: "a", Name: "events", Role: erasure.RoleIngest},
			{Cluster: "a", Name: "quarantine", Role: erasure.RoleQuarantine},
			{Cluster: "a", Name: "dead-letter", Role: erasure.RoleDeadLetter},
		},
		Stores: []erasure.StoreRef{{Name: "us-postgres", Region: "us", Store: us}, {Name: "eu-objectstore", Region: "eu", Store: eu}},
		Events: textEvents{}, Batch: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func placeLines(r *erasure.ResidueReport) string {
	var s []string
	for _, p := range r.Places {
		name := p.Store
		if p.Kind == "topic" {
			name = p.Topic.Name
		}
		if p.Approved {
			s = append(s, name+":approved")
			continue
		}
		line := fmt.Sprintf("%s:%d/%d", name, p.Residue, p.Scanned)
		for _, pr := range p.Partitions {
			line += fmt.Sprint(pr.Ranges)
		}
		for _, r := range p.Rows {
			line += "[" + r.EventID + " by " + r.DecidedBy + "]"
		}
		s = append(s, line)
	}
	return strings.Join(s, " ")
}

// TestResidueScan finds exactly the seeded residue, then, once it is
// purged and erased, nothing.
func TestResidueScan(t *testing.T) {
	a, b, us, eu := residueFixture()
	s := residueScanner(t, a, b, us, eu)
	ctx := context.Background()
	rep, err := s.Scan(ctx, "US")
	if err != nil {
		t.Fatal(err)
	}
	// events: US|u1 (0), PR|u3 (2), DE|pinned (3, pinned to US).
	want := "events:3/4[{0 1} {2 4}] quarantine:0/1 dead-letter:0/0 residency.us:approved residency.eu:1/2[{1 2}] us-postgres:approved eu-objectstore:2/4[e3 by country][e4 by pin]"
	if got := placeLines(rep); got != want {
		t.Fatalf("places\n got %s\nwant %s", got, want)
	}
	if rep.Residue != 6 || rep.Verdict != erasure.VerdictResidue || rep.Region != "us" || rep.RulesetVersion != 7 {
		t.Fatalf("report %+v", rep)
	}
	var js, txt bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	rep.WriteText(&txt)
	for _, secret := range []string{"u1", "u3", "u-pin6", "geo"} {
		if strings.Contains(js.String(), secret) || strings.Contains(txt.String(), secret) {
			t.Fatalf("the report holds %q:\n%s\n%s", secret, js.String(), txt.String())
		}
	}
	if !strings.Contains(txt.String(), "residue") || !strings.Contains(txt.String(), "e3") {
		t.Fatalf("text:\n%s", txt.String())
	}

	// EU's residue is the DE event in the ingest topic only (the DE row in
	// the EU store is approved; the pinned user is US's).
	if rep, err = s.Scan(ctx, "EU"); err != nil || rep.Residue != 1 || placeLines(rep) != "events:1/4[{1 2}] quarantine:0/1 dead-letter:0/0 residency.us:0/1 residency.eu:approved us-postgres:0/1 eu-objectstore:approved" {
		t.Fatalf("EU: %s, %v", placeLines(rep), err)
	}

	// Purge the ingest topic, move the stray record out of the EU pinned
	// topic, erase the rows: clean.
	if _, err := a.DeleteRecords(ctx, "events", map[int]int64{0: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.DeleteRecords(ctx, "residency.eu", map[int]int64{0: 2}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"u3", "u-pin6"} {
		if _, err := eu.Erase(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err = s.Scan(ctx, "US"); err != nil || rep.Verdict != erasure.VerdictClean || rep.Residue != 0 {
		t.Fatalf("after purge and erase: %s, %s, %v", rep.Verdict, placeLines(rep), err)
	}

	// An unreadable record (dead-letter) makes a scan without residue
	// inconclusive, never clean.
	a.produce("dead-letter", 0, "!corrupt", t0)
	if rep, err = s.Scan(ctx, "US"); err != nil || rep.Verdict != erasure.VerdictInconclusive || rep.Unreadable != 1 {
		t.Fatalf("with a dead-lettered record: %+v, %v", rep, err)
	}

	if _, err := s.Scan(ctx, "XX"); !errors.Is(err, erasure.ErrUnknownJurisdiction) || !strings.Contains(err.Error(), "US, EU") {
		t.Fatalf("unknown jurisdiction: %v", err)
	}
	noRules, _ := erasure.NewResidueScanner(erasure.ResidueConfig{Rules: staticRules{}})
	if _, err := noRules.Scan(ctx, "US"); err == nil {
		t.Fatal("no ruleset in force: no error")
	}
}

// TestResidueProgressAndLimits: progress after every batch; rows listed
// up to MaxListed with exact counts; a transient read error stops the scan.
func TestResidueProgressAndLimits(t *testing.T) {
	a, b, us, eu := residueFixture()
	for i := range 5 {
		eu.add(row(fmt.Sprintf("x%d", i), "ux", "US", "eu"))
	}
	var progress []erasure.ScanProgress
	s, err := erasure.NewResidueScanner(erasure.ResidueConfig{
		Rules: staticRules{testRuleset(t)}, Clusters: map[string]erasure.Cluster{"a": a.cluster(), "b": b.cluster()},
		Stores: []erasure.StoreRef{{Name: "us-postgres", Region: "us", Store: us}, {Name: "eu-objectstore", Region: "eu", Store: eu}},
		Events: textEvents{}, Batch: 3, MaxListed: 2, Progress: func(p erasure.ScanProgress) { progress = append(progress, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Scan(context.Background(), "US")
	if err != nil {
		t.Fatal(err)
	}
	var store erasure.PlaceScan
	for _, p := range rep.Places {
		if p.Store == "eu-objectstore" {
			store = p
		}
	}
	if store.Residue != 6 || len(store.Rows) != 2 || !store.Truncated {
		t.Fatalf("store scan %+v", store)
	}
	if len(progress) == 0 || progress[len(progress)-1].Place != "store eu-objectstore" || progress[len(progress)-1].Done != 9 {
		t.Fatalf("progress %+v", progress)
	}
	// A store whose scan fails stops the scan with the error.
	eu.fail = nil
	bad := &failingScan{}
	s, _ = erasure.NewResidueScanner(erasure.ResidueConfig{Rules: staticRules{testRuleset(t)}, Events: textEvents{},
		Clusters: map[string]erasure.Cluster{"a": a.cluster(), "b": b.cluster()},
		Stores:   []erasure.StoreRef{{Name: "us-mysql", Region: "eu", Store: bad}}})
	if _, err := s.Scan(context.Background(), "US"); err == nil || !strings.Contains(err.Error(), "us-mysql") {
		t.Fatalf("failing store: %v", err)
	}
}

type failingScan struct{ memStore }

func (*failingScan) Scan(context.Context, func(erasure.Row) error) error {
	return errors.New("permission denied")
}
