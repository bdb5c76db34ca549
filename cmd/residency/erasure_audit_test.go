package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/internal/testenv"
)

// TestPurgeAndEraseLeaves runs purge and erase with audit.enabled on the dev
// stack: purge appends a purge leaf per range it deletes (topic, partition,
// offset range, count) and erase an erasure leaf per store (the user only
// as its keyed hash, the store, the rows removed) to the audit topic, which
// is what the verifier explains purged records and erased rows with; with
// the audit topic missing, purge deletes nothing.
func TestPurgeAndEraseLeaves(t *testing.T) {
	s := newErasureStack(t, 1)
	pg := testenv.NewPostgres(t)
	s.addSink(t, "us-postgres", "us", fmt.Sprintf("postgres: {dsn: %q}", pg.DSN))
	plain := s.writeConfig(t, "")
	auditTopic := testenv.Name(t, "audit")
	s.a.DeleteAfter(t, auditTopic)
	b, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	signKey := writeFile(t, "sign.key", strings.Repeat("g", 40))
	withAudit := strings.Replace(string(b), "audit: {subject_key_file: "+s.keyFile+"}",
		fmt.Sprintf("audit: {enabled: true, topic: %s, subject_key_file: %s, attestation: {sign_key: {id: k1, file: %s}}}", auditTopic, s.keyFile, signKey), 1)
	if withAudit == string(b) {
		t.Fatal("the audit section was not replaced")
	}
	cfg := filepath.Join(t.TempDir(), "audit.yaml")
	if err := os.WriteFile(cfg, []byte(withAudit), 0o600); err != nil {
		t.Fatal(err)
	}

	user := "carol-" + testenv.Name(t, "u")
	at := time.Now().UTC().Add(-time.Hour)
	var recs []*kgo.Record
	for i := range 8 {
		u := user
		if i%2 == 1 {
			u = fmt.Sprintf("dave-%d", i)
		}
		recs = append(recs, s.record(t, 0, fmt.Sprintf("ev-%d", i), u, "US", at.Add(time.Duration(i)*time.Second)))
	}
	s.produce(t, recs...)
	// Routed and stored with the audit off (this branch's router does not
	// attest yet).
	router := start(t, "route", "--config", plain, "--listen", "off")
	sinkRun := start(t, "sink", "--config", plain, "--store", "us-postgres")
	st := openStore(t, pg.DSN, "")
	waitFor(t, 90*time.Second, "the store to hold the 8 events", func() bool { return len(rows(t, st)) == 8 }, router, sinkRun)
	router.halt(t)
	sinkRun.halt(t)

	// The audit topic missing: purge deletes nothing.
	if code, out, errs := cmd(t, "purge", "--config", cfg); code == exitOK {
		t.Fatalf("purge without an audit topic: exit 0\n%s%s", out, errs)
	}
	ctx := testenv.Context(t, 60*time.Second)
	if low, _, err := s.admins["a"].Watermarks(ctx, s.ingest); err != nil || low[0] != 0 {
		t.Fatalf("purge deleted records without its leaf: log start %v (%v)", low, err)
	}
	s.a.CreateTopic(t, auditTopic, 1)
	if code, out, errs := cmd(t, "purge", "--config", cfg); code != exitOK {
		t.Fatalf("purge: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := cmd(t, "erase", "--config", cfg, "--user", user); code != exitOK {
		t.Fatalf("erase: exit %d\n%s%s", code, out, errs)
	}

	var purges, erasures []audit.Leaf
	for _, rec := range s.a.ReadTopic(t, ctx, auditTopic) {
		leaves, err := audit.DecodeWireRecord(rec.Value)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leaves {
			switch l.Kind {
			case audit.KindPurge:
				purges = append(purges, l)
			case audit.KindErasure:
				erasures = append(erasures, l)
			}
		}
		if strings.Contains(string(rec.Value), user) {
			t.Error("an audit record holds the user id")
		}
	}
	ingest := false
	for _, l := range purges {
		if l.Src.Topic == s.ingest {
			ingest = true
			if l.Src.Cluster != "a" || l.Src.Partition != 0 || l.Src.Offset != 0 || l.Src.EndOffset != 8 || l.Count != 8 || l.Decision != audit.Purged {
				t.Errorf("purge leaf of the ingest topic %+v", l)
			}
		}
	}
	if !ingest {
		t.Errorf("no purge leaf of the ingest topic in %+v", purges)
	}
	pz, err := audit.NewPseudonymizer([]byte(strings.Repeat("k", 48)))
	if err != nil {
		t.Fatal(err)
	}
	var removed int64
	for _, l := range erasures {
		if l.Subject != pz.Subject([]byte(user)) || l.Decision != audit.Erased {
			t.Errorf("erasure leaf %+v", l)
		}
		if l.Dest.Store == "us-postgres" {
			removed += l.Count
		}
	}
	if removed != 4 {
		t.Errorf("erasure leaves of us-postgres count %d rows, want 4 (%+v)", removed, erasures)
	}
}
