package auditwire_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/auditwire"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
)

// TestSinkLedgerForgedHeaders: a refused record's jurisdiction and
// region headers are whatever its writer put there (no valid attestation
// binds them). One such record must not make the sink's audit record
// undecodable, which loses the leaves of the whole batch (the integrator
// skips the record), the stored records' sink_write leaves included.
func TestSinkLedgerForgedHeaders(t *testing.T) {
	rs := sinktest.Ruleset(7, "residency.us", "residency.eu", "us-postgres", "us")
	for name, jur := range map[string]string{
		"not UTF-8":        "US\xff",
		"past a leaf size": strings.Repeat("J", audit.MaxLeafSize),
	} {
		t.Run(name, func(t *testing.T) {
			log := &memLog{}
			led, err := auditwire.NewSinkLedger(log, auditwire.SinkLedgerConfig{Store: "us-postgres", Cluster: "b", QuarantineCluster: "a"})
			if err != nil {
				t.Fatal(err)
			}
			stored := sinktest.Message("residency.us", 1, "US", "us", "US")
			forged := sinktest.Message("residency.us", 2, jur, "us", "US")
			err = led.Record(context.Background(), []sink.Entry{
				{Msg: &stored, Written: true, Ruleset: rs},
				{Msg: &forged, Reason: sink.ReasonBadAttestation, Ruleset: rs, QuarantineTopic: "q", QuarantineOffset: 3},
			})
			if err != nil {
				t.Fatal(err)
			}
			ls := log.leaves(t) // fails when a record does not decode (the integrator skips its leaves)
			for i := range ls {
				if _, err := ls[i].Encode(); err != nil {
					t.Fatalf("leaf %d does not encode (the integrator skips the record): %v", i, err)
				}
			}
			if len(ls) != 2 {
				t.Fatalf("%d leaves, want 2", len(ls))
			}
		})
	}
}

// TestSinkLedgerManyContexts: a batch whose refused records carry
// more than audit.MaxWireContexts distinct jurisdiction headers goes into
// one record of that many contexts, which DecodeWireRecord refuses.
func TestSinkLedgerManyContexts(t *testing.T) {
	rs := sinktest.Ruleset(7, "residency.us", "residency.eu", "us-postgres", "us")
	log := &memLog{}
	led, err := auditwire.NewSinkLedger(log, auditwire.SinkLedgerConfig{Store: "us-postgres", Cluster: "b", QuarantineCluster: "a"})
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]stream.Message, audit.MaxWireContexts+1)
	entries := make([]sink.Entry, len(msgs))
	for i := range msgs {
		msgs[i] = sinktest.Message("residency.us", i, fmt.Sprint("J", i), "us", "US")
		msgs[i].Offset = int64(i)
		entries[i] = sink.Entry{Msg: &msgs[i], Reason: sink.ReasonBadAttestation, Ruleset: rs, QuarantineTopic: "q", QuarantineOffset: int64(i)}
	}
	if err := led.Record(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
	if n := len(log.leaves(t)); n != len(entries) {
		t.Fatalf("%d leaves, want %d", n, len(entries))
	}
}

// TestLedgerCleansPinJurisdiction: a pin to a jurisdiction the ruleset
// lacks puts the pin's value, as Redis holds it, in the decision; a value
// that is not UTF-8, or longer than a name, must not make the router's
// audit record undecodable (the integrator would skip every leaf in it),
// nor make its Append fail for ever.
func TestLedgerCleansPinJurisdiction(t *testing.T) {
	rs := ruleset(t, testRules, 3)
	log := &memLog{}
	l, err := auditwire.NewLedger(log, auditwire.LedgerConfig{Actor: "router-1", Subjects: pseudonymizer(t)})
	if err != nil {
		t.Fatal(err)
	}
	var settled []router.Settled
	for i, pin := range []string{"EU", "ZZ\xff\xfe", strings.Repeat("Z", 70_000)} {
		d := router.Decision{Outcome: router.Quarantined, Reason: router.ReasonNoRule, Jurisdiction: pin, Pinned: true}
		settled = append(settled, settledEvent(i, d, rs, "a", "residency.quarantine"))
	}
	if err := l.Record(context.Background(), settled); err != nil {
		t.Fatal(err)
	}
	got := log.leaves(t) // fails when the router's audit record does not decode
	var js []string
	for i := range got {
		if got[i].Kind != audit.KindRoute {
			continue
		}
		if _, err := got[i].Encode(); err != nil {
			t.Fatalf("leaf %d does not encode: %v", i, err)
		}
		js = append(js, got[i].Jurisdiction)
	}
	if len(js) != 3 || js[0] != "EU" || js[1] != "ZZ\uFFFD" || len(js[2]) != 256 || got[len(got)-1].DecidedBy != "pin" {
		t.Fatalf("jurisdictions %q (cut to %d bytes)", js[:min(2, len(js))], len(js[len(js)-1]))
	}
}

// TestLeafLedgerSplits: purge and erasure leaves past what one record
// holds (audit.MaxWireContexts contexts here) go in several records, each
// decodable, in one Append.
func TestLeafLedgerSplits(t *testing.T) {
	log := &memLog{}
	led, err := auditwire.NewLeafLedger(log)
	if err != nil {
		t.Fatal(err)
	}
	leaves := make([]audit.Leaf, audit.MaxWireContexts+10)
	for i := range leaves {
		leaves[i] = audit.Leaf{Kind: audit.KindErasure, Time: int64(i), Actor: "erase", Reason: fmt.Sprint("request-", i),
			Dest: audit.Destination{Store: "us-postgres"}}
	}
	if err := led.Append(context.Background(), leaves); err != nil {
		t.Fatal(err)
	}
	got := log.leaves(t)
	for i := range got {
		if got[i].Time != int64(i) {
			t.Fatalf("leaf %d has time %d", i, got[i].Time)
		}
	}
	if len(got) != len(leaves) || len(log.recs) < 2 {
		t.Fatalf("%d leaves in %d records, want %d in at least 2", len(got), len(log.recs), len(leaves))
	}
}
