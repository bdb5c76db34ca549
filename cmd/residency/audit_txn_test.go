package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/internal/testenv"
)

// TestAuditVerifyTransactionalIngest: an ingest topic written by a
// transactional producer (committed and aborted transactions, as Java's
// kafka-clients writes them) verifies, without --allow-gaps, at both
// isolation levels: a transaction marker is never missing a leaf (it was
// at every marker: verify could never pass), an aborted record needs a
// leaf read_uncommitted (the router routes it) and none read_committed
// (the router skips it), and a data record without its leaf is still
// missing_leaf. The router is played by the test, as in
// TestAuditAcceptanceCleanThenTampered.
func TestAuditVerifyTransactionalIngest(t *testing.T) {
	for _, level := range []string{"read_uncommitted", "read_committed"} {
		t.Run(level, func(t *testing.T) {
			s := newAuditStack(t)
			setIsolationLevel(t, s.cfgFile, level)
			committed := level == "read_committed"
			ctx := testenv.Context(t, 60*time.Second)
			txn := s.a.Franz(t, kgo.TransactionalID(testenv.Name(t, "txn")), kgo.RecordPartitioner(kgo.ManualPartitioner()))
			n := 0
			// inTxn produces one event per partition in p (jurisdiction
			// jur) in a transaction, ends it, and returns the records.
			inTxn := func(commit bool, jur string, ps ...int32) []*kgo.Record {
				t.Helper()
				if err := txn.BeginTransaction(); err != nil {
					t.Fatal(err)
				}
				var out []*kgo.Record
				for _, p := range ps {
					n++
					r, err := txn.ProduceSync(ctx, &kgo.Record{Topic: s.ingest, Partition: p,
						Key: fmt.Appendf(nil, "txn-user-%d", n), Value: fmt.Appendf(nil, "event %d of %s", n, jur)}).First()
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, r)
				}
				if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
					t.Fatal(err)
				}
				return out
			}
			// The router: every committed record; an aborted one only
			// read_uncommitted.
			routeAll := func(recs []*kgo.Record, aborted bool) {
				t.Helper()
				if aborted && committed {
					return
				}
				for _, r := range recs {
					s.routeRecord(t, r, strings.Fields(string(r.Value))[3], "ev-"+string(r.Key))
				}
			}
			s.route(t, 2)
			routeAll(inTxn(true, "US", 0, 1, 0), false)
			routeAll(inTxn(false, "EU", 0, 1), true)
			routeAll(inTxn(true, "EU", 1), false)
			routeAll(inTxn(false, "US", 0), true)
			s.flush(t)
			s.route(t, 1)
			s.integrate(t)
			code, codes, rep := s.verify(t, "--no-stores")
			if code != exitOK || len(codes) != 0 {
				t.Fatalf("verify of a transactional ingest topic = %d, findings %v", code, findingsOf(rep))
			}
			for _, f := range rep.Notes {
				if f.Code == audit.CodeGap {
					t.Fatalf("gap note %s/%d@%d: a marker needs no note", f.Topic, f.Partition, f.Offset)
				}
			}
			// A marker per partition of each transaction: 2 + 2 + 1 + 1.
			if rep.Checked.TxnMarkers != 6 {
				t.Errorf("checked %d transaction markers, want 6", rep.Checked.TxnMarkers)
			}
			if wantAborted := map[bool]int64{true: 3, false: 0}[committed]; rep.Checked.Aborted != wantAborted {
				t.Errorf("checked %d aborted records, want %d", rep.Checked.Aborted, wantAborted)
			}

			// A committed record the router never logged is missing its
			// leaf; an aborted one is too, unless read_committed.
			lost := inTxn(true, "US", 1)[0]
			unrouted := inTxn(false, "EU", 0)[0]
			code, _, rep = s.verify(t, "--no-stores")
			want := map[string]bool{fmt.Sprintf("%s/%d@%d", s.ingest, lost.Partition, lost.Offset): true}
			if !committed {
				want[fmt.Sprintf("%s/%d@%d", s.ingest, unrouted.Partition, unrouted.Offset)] = true
			}
			got := map[string]bool{}
			for _, f := range rep.Findings {
				if f.Code != audit.CodeMissingLeaf {
					t.Errorf("finding %s at %s/%d@%d", f.Code, f.Topic, f.Partition, f.Offset)
				}
				got[fmt.Sprintf("%s/%d@%d", f.Topic, f.Partition, f.Offset)] = true
			}
			if code != exitFailure || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("verify with unlogged records = %d, missing leaves at %v, want %v", code, got, want)
			}
		})
	}
}

// findingsOf lists a report's findings with their coordinates.
func findingsOf(r *audit.Report) []string {
	var out []string
	for _, f := range r.Findings {
		out = append(out, fmt.Sprintf("%s %s/%d@%d: %s", f.Code, f.Topic, f.Partition, f.Offset, f.Detail))
	}
	return out
}

// setIsolationLevel sets kafka.isolation_level in the config file.
func setIsolationLevel(t *testing.T, cfgFile, level string) {
	t.Helper()
	cfg, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), "kafka:\n", "kafka:\n  isolation_level: "+level+"\n", 1))
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
}
