package erasure_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/erasure"
)

// bareStore is a Store that cannot look up single events.
type bareStore struct{ erasure.Store }

// TestResidueClean removes the jurisdiction's rows from stores outside its
// places only where an approved store holds the same event, logs a leaf
// per row first, and keeps (and names) the rows without a copy.
func TestResidueClean(t *testing.T) {
	a, b, us, eu := residueFixture()
	us.add(row("e3", "u3", "US", "us")) // e3 was moved: its copy is in the US store
	s := residueScanner(t, a, b, us, eu)
	ctx := context.Background()
	p := pseudonymizer(t)

	dry, err := s.Clean(ctx, "US", erasure.CleanOptions{DryRun: true, Hashes: p, Ledger: &memLedger{}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(dry.Stores) != "[{eu-objectstore eu 2 1 1 [e4] }]" || !dry.DryRun || len(eu.rows) != 4 {
		t.Fatalf("dry run %+v; eu %v", dry.Stores, eu.users())
	}
	ledger := &memLedger{}
	rep, err := s.Clean(ctx, "US", erasure.CleanOptions{Hashes: p, Ledger: ledger, Locker: &fakeLocker{}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 1 || rep.Kept != 1 || rep.Leaves != 1 {
		t.Fatalf("report %+v", rep)
	}
	if got := fmt.Sprint(eu.users()); got != "[u2:e2 u-pin6:e4 u9:e5]" {
		t.Fatalf("eu store after: %s", got)
	}
	if got := fmt.Sprint(us.users()); got != "[u1:e1 u3:e3]" {
		t.Fatalf("the approved store changed: %s", got)
	}
	l := ledger.all()[0]
	if l.Kind != audit.KindErasure || l.Event != p.Event([]byte("e3")) || l.Subject != p.Subject([]byte("u3")) || l.Reason != "residue" ||
		l.Dest.Store != "eu-objectstore" || l.Jurisdiction != "US" || l.Count != 1 {
		t.Fatalf("leaf %+v", l)
	}
	var txt bytes.Buffer
	rep.WriteText(&txt)
	if !strings.Contains(txt.String(), "removed 1") || strings.Contains(txt.String(), "u3") {
		t.Fatalf("text:\n%s", txt.String())
	}

	// Refusals.
	if _, err := s.Clean(ctx, "XX", erasure.CleanOptions{}); !errors.Is(err, erasure.ErrUnknownJurisdiction) {
		t.Errorf("unknown jurisdiction: %v", err)
	}
	if _, err := s.Clean(ctx, "US", erasure.CleanOptions{Ledger: ledger}); !errors.Is(err, erasure.ErrConfig) {
		t.Errorf("leaves without a key: %v", err)
	}
	ledger.fail = errors.New("audit topic down")
	us.add(row("e4", "u-pin6", "DE", "us"))
	if _, err := s.Clean(ctx, "US", erasure.CleanOptions{Hashes: p, Ledger: ledger}); !errors.Is(err, erasure.ErrIncomplete) || len(eu.rows) != 3 {
		t.Errorf("ledger down: %v; eu %v", err, eu.users())
	}
	for _, cfg := range []erasure.ResidueConfig{
		{Stores: []erasure.StoreRef{{Name: "eu-objectstore", Region: "eu", Store: bareStore{eu}}, {Name: "us-postgres", Region: "us", Store: us}}},
		{Stores: []erasure.StoreRef{{Name: "eu-objectstore", Region: "eu", Store: eu}}},
	} {
		cfg.Rules = staticRules{testRuleset(t)}
		sc, err := erasure.NewResidueScanner(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sc.Clean(ctx, "US", erasure.CleanOptions{}); !errors.Is(err, erasure.ErrConfig) {
			t.Errorf("Clean with %+v: %v", cfg.Stores, err)
		}
	}
}
