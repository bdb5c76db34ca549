package auditwire_test

import (
	"bytes"
	"context"
	"fmt"
	"github.com/residency-router/residency/internal/benchtest"
	"testing"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/auditwire"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
)

// The audit's per-event work as the router and a sink do it, named for
// `go test -bench 'Attest|Leaf|Subject|Wire'` (docs/performance.md, "The
// audit's cost per event").

// benchEvent is a routed event of the bench mix's size (a ~250-byte value).
func benchEvent(i int) *router.Event {
	m := &stream.Message{Topic: "events", Partition: i % 6, Offset: int64(4_000_000 + i),
		Key: fmt.Appendf(nil, "u-%07d", i%100_000), Value: bytes.Repeat([]byte{byte(i)}, 250)}
	return &router.Event{Msg: m, Fields: schemas.Fields{UserID: m.Key},
		Decision: router.Decision{Outcome: router.Routed, Jurisdiction: "EU", Region: "eu"}}
}

// BenchmarkAttestation is the router's attestation of one record
// (auditwire.Attester: value and key digests, the tag).
func BenchmarkAttestation(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	a, err := auditwire.NewAttester(key("k1", 1))
	if err != nil {
		b.Fatal(err)
	}
	ev := benchEvent(1)
	rec := router.AttestedRecord{Event: ev, RulesetVersion: 7, Cluster: "b", Topic: "residency.eu", Key: ev.Msg.Key, Value: ev.Msg.Value}
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev.Msg.Offset = int64(4_000_000 + i)
		buf = a.AppendAttestation(buf[:0], &rec)
	}
}

// BenchmarkAttestationParallel is BenchmarkAttestation from every core
// at once, sharing one Attester (the pipelines of a router share it).
func BenchmarkAttestationParallel(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	a, err := auditwire.NewAttester(key("k1", 1))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ev := benchEvent(1)
		rec := router.AttestedRecord{Event: ev, RulesetVersion: 7, Cluster: "b", Topic: "residency.eu", Key: ev.Msg.Key, Value: ev.Msg.Value}
		buf := make([]byte, 0, 128)
		for pb.Next() {
			buf = a.AppendAttestation(buf[:0], &rec)
		}
	})
}

// BenchmarkLeafLedger is the router ledger's work per event in a batch of
// 500 (a decision leaf with its subject, wire-encoded; the digests shared
// by the attestation), per event.
func BenchmarkLeafLedger(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	log := &discardLog{}
	led, err := auditwire.NewLedger(log, auditwire.LedgerConfig{Actor: "router-a", Subjects: pseudonymizer(b)})
	if err != nil {
		b.Fatal(err)
	}
	rs := ruleset(b, testRules, 7)
	settled := make([]router.Settled, 500)
	for i := range settled {
		ev := benchEvent(i)
		ev.Sums = router.RecordSums{Value: audit.Sum(ev.Msg.Value), Key: audit.Sum(ev.Msg.Key), Set: true}
		settled[i] = router.Settled{Event: ev, Ruleset: rs, Cluster: "b", Topic: "pinned.eu", Partition: 1, Offset: int64(9_000_000 + i)}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := led.Record(ctx, settled); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/500, "ns/event")
}

// BenchmarkLedgerAppend is the router committer's Ledger.Append of a
// flush's leaves, already encoded by AppendLeaf (the senders' part): 3 500
// leaves (a flush at the commit interval in the bench) and 20 000 (one at
// half the settled backlog's default bound), copied into audit records of
// at most DefaultMaxRecordBytes, per leaf.
func BenchmarkLedgerAppend(b *testing.B) {
	for _, n := range []int{3500, 20000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			defer benchtest.ReportCPU(b)()
			led, err := auditwire.NewLedger(&discardLog{}, auditwire.LedgerConfig{Actor: "router-a", Subjects: pseudonymizer(b)})
			if err != nil {
				b.Fatal(err)
			}
			rs := ruleset(b, testRules, 7)
			leaves := make([][]byte, n)
			for i := range leaves {
				ev := benchEvent(i)
				ev.Sums = router.RecordSums{Value: audit.Sum(ev.Msg.Value), Key: audit.Sum(ev.Msg.Key), Set: true}
				s := router.Settled{Event: ev, Ruleset: rs, Cluster: "b", Topic: "pinned.eu", Partition: 1, Offset: int64(9_000_000 + i)}
				if leaves[i], err = led.AppendLeaf(nil, &s); err != nil {
					b.Fatal(err)
				}
			}
			rss := []*rules.Ruleset{rs}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := led.Append(ctx, rss, leaves); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/leaf")
		})
	}
}

// BenchmarkSinkAttestAndLeaf is a sink's audit work per record in a batch
// of 500: the attestation check, then the sink_write leaves (keyed event
// and subject hashes, wire encoding), per record.
func BenchmarkSinkAttestAndLeaf(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	k := key("k1", 1)
	v, err := audit.NewAttestVerifier(key("k0", 2), k)
	if err != nil {
		b.Fatal(err)
	}
	check, err := auditwire.NewSinkAttestation(v)
	if err != nil {
		b.Fatal(err)
	}
	log := &discardLog{}
	led, err := auditwire.NewSinkLedger(log, auditwire.SinkLedgerConfig{Store: "eu-store", Cluster: "b", QuarantineCluster: "a", Pseudonymizer: pseudonymizer(b)})
	if err != nil {
		b.Fatal(err)
	}
	rs := sinktest.Ruleset(7, "residency.us", "residency.eu", "eu-store", "eu")
	msgs := make([]stream.Message, 500)
	entries := make([]sink.Entry, 500)
	for i := range msgs {
		m := Attest(b, k, "b", "residency.eu", sinktest.Message("residency.eu", i, "EU", "eu", "DE"))
		m.Partition, m.Offset = i%3, int64(4_000_000+i)
		msgs[i] = m
		entries[i] = sink.Entry{Msg: &msgs[i], Written: true, EventID: sinktest.EventID(i), UserID: sinktest.UserID(i), Ruleset: rs}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		for i := range msgs {
			if err := check.Check("b", "residency.eu", &msgs[i], &entries[i].Sums); err != nil {
				b.Fatal(err)
			}
		}
		if err := led.Record(ctx, entries); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/500, "ns/record")
}

// discardLog is a Log that keeps nothing.
type discardLog struct{ n int }

func (d *discardLog) Append(_ context.Context, recs ...[]byte) error {
	d.n += len(recs)
	return nil
}
