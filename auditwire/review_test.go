package auditwire_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/auditwire"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
)

// TestReviewSinkLedgerForgedHeaders: a refused record's jurisdiction and
// region headers are whatever its writer put there (no valid attestation
// binds them). One such record must not make the sink's audit record
// undecodable, which loses the leaves of the whole batch (the integrator
// skips the record), the stored records' sink_write leaves included.
func TestReviewSinkLedgerForgedHeaders(t *testing.T) {
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
			n := 0
			for _, r := range log.recs {
				ls, err := audit.DecodeWireRecord(r)
				if err != nil {
					t.Fatalf("the sink's audit record does not decode (the integrator skips both leaves): %v", err)
				}
				for i := range ls {
					if _, err := ls[i].Encode(); err != nil {
						t.Fatalf("leaf %d does not encode (the integrator skips the record): %v", i, err)
					}
				}
				n += len(ls)
			}
			if n != 2 {
				t.Fatalf("%d leaves, want 2", n)
			}
		})
	}
}

// TestReviewSinkLedgerManyContexts: a batch whose refused records carry
// more than audit.MaxWireContexts distinct jurisdiction headers goes into
// one record of that many contexts, which DecodeWireRecord refuses.
func TestReviewSinkLedgerManyContexts(t *testing.T) {
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
	n := 0
	for _, r := range log.recs {
		ls, err := audit.DecodeWireRecord(r)
		if err != nil {
			t.Fatalf("%d records; one does not decode: %v", len(log.recs), err)
		}
		n += len(ls)
	}
	if n != len(entries) {
		t.Fatalf("%d leaves, want %d", n, len(entries))
	}
}
