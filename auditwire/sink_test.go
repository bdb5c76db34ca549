package auditwire_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/auditwire"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
)

func key(id string, b byte) audit.AttestKey {
	return audit.AttestKey{ID: id, Secret: bytes.Repeat([]byte{b}, 32)}
}

// Attest returns m with a router's attestation, made with k, of m as
// written to topic on cluster (what a router does; tests only).
func Attest(t testing.TB, k audit.AttestKey, cluster, topic string, m stream.Message) stream.Message {
	t.Helper()
	a, err := audit.NewAttester(k)
	if err != nil {
		t.Fatal(err)
	}
	hs := make([]audit.Header, len(m.Headers))
	for i, h := range m.Headers {
		hs[i] = audit.Header{Key: h.Key, Value: h.Value}
	}
	in := audit.AttestationInputOf(cluster, topic, audit.RolePinned, m.Key, m.Value, hs)
	return sinktest.WithHeader(m, audit.HeaderAttestation, string(a.AppendTag(nil, &in)))
}

func TestSinkAttestation(t *testing.T) {
	old, cur, other := key("k2025", 1), key("k2026", 2), key("stranger", 3)
	v, err := audit.NewAttestVerifier(old, cur)
	if err != nil {
		t.Fatal(err)
	}
	check, err := auditwire.NewSinkAttestation(v)
	if err != nil {
		t.Fatal(err)
	}
	const us, eu = "residency.us", "residency.eu"
	good := Attest(t, cur, "a", us, sinktest.Message(us, 1, "US", "us", "US"))
	another := Attest(t, cur, "a", us, sinktest.Message(us, 2, "US", "us", "US"))
	// Issue 12: an EU user's event written straight to the US pinned topic,
	// its residency headers (and tag) copied from a real US record.
	forged := sinktest.Message(us, 3, "EU", "eu", "DE")
	forged.Headers = good.Headers
	for name, tc := range map[string]struct {
		m       stream.Message
		cluster string
		topic   string
		want    error
	}{
		"valid (new key)":          {good, "a", us, nil},
		"valid (old key)":          {Attest(t, old, "a", us, sinktest.Message(us, 1, "US", "us", "US")), "a", us, nil},
		"no tag":                   {sinktest.Message(us, 1, "US", "us", "US"), "a", us, audit.ErrNoAttestation},
		"unknown key":              {Attest(t, other, "a", us, sinktest.Message(us, 1, "US", "us", "US")), "a", us, audit.ErrUnknownAttestationKey},
		"another record's tag":     {sinktest.WithHeader(good, audit.HeaderAttestation, string(mustHeader(t, another, audit.HeaderAttestation))), "a", us, audit.ErrBadAttestation},
		"copied headers":           {forged, "a", us, audit.ErrBadAttestation},
		"region header changed":    {sinktest.WithHeader(good, router.HeaderRegion, "eu"), "a", us, audit.ErrBadAttestation},
		"read from another topic":  {good, "a", eu, audit.ErrBadAttestation},
		"read on another cluster":  {good, "b", us, audit.ErrBadAttestation},
		"garbage tag":              {sinktest.WithHeader(good, audit.HeaderAttestation, "v1.k2026.!!"), "a", us, audit.ErrBadAttestation},
		"sink headers do not bind": {sinktest.WithHeader(good, router.HeaderReason, "sink_region_moved"), "a", us, nil},
	} {
		t.Run(name, func(t *testing.T) {
			var sums router.RecordSums
			err := check.Check(tc.cluster, tc.topic, &tc.m, &sums)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
			// The digests the sink hands its ledger, valid or not.
			if !sums.Set || sums.Value != audit.Sum(tc.m.Value) || sums.Key != audit.Sum(tc.m.Key) {
				t.Errorf("Check's digests %+v are not the record's", sums)
			}
		})
	}
	// After the rotation's last step the old key is refused.
	v2, _ := audit.NewAttestVerifier(cur)
	check2, _ := auditwire.NewSinkAttestation(v2)
	m := Attest(t, old, "a", us, sinktest.Message(us, 1, "US", "us", "US"))
	if err := check2.Check("a", us, &m, nil); !errors.Is(err, audit.ErrUnknownAttestationKey) {
		t.Errorf("retired key: %v", err)
	}
}

func mustHeader(t *testing.T, m stream.Message, k string) []byte {
	t.Helper()
	v, ok := router.HeaderValue(m.Headers, k)
	if !ok {
		t.Fatalf("no %s header", k)
	}
	return v
}

func TestSinkLedgerLeaves(t *testing.T) {
	pz, err := audit.NewPseudonymizer(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	log := &memLog{}
	led, err := auditwire.NewSinkLedger(log, auditwire.SinkLedgerConfig{Store: "us-postgres", Cluster: "b", QuarantineCluster: "a", Pseudonymizer: pz})
	if err != nil {
		t.Fatal(err)
	}
	rs := sinktest.Ruleset(7, "residency.us", "residency.eu", "us-postgres", "us")
	stored := sinktest.Message("residency.us", 1, "US", "us", "US")
	stored.Partition, stored.Offset = 2, 40
	refused := sinktest.Message("residency.us", 2, "EU", "eu", "DE")
	refused.Partition, refused.Offset = 0, 41
	err = led.Record(context.Background(), []sink.Entry{
		{Msg: &stored, Written: true, EventID: sinktest.EventID(1), UserID: sinktest.UserID(1), Ruleset: rs},
		{Msg: &refused, Reason: sink.ReasonBadAttestation, EventID: sinktest.EventID(2), UserID: sinktest.UserID(2), Ruleset: rs,
			QuarantineTopic: "residency.sink-quarantine", QuarantinePartition: 0, QuarantineOffset: 9},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(log.recs) != 1 {
		t.Fatalf("%d audit records, want 1 per call", len(log.recs))
	}
	ls := log.leaves(t)
	if len(ls) != 2 {
		t.Fatalf("%d leaves", len(ls))
	}
	w, r := ls[0], ls[1]
	digest, _ := audit.ParseDigest(rs.Digest())
	if w.Kind != audit.KindSinkWrite || w.Decision != audit.Written || w.Actor != "sink:us-postgres" ||
		w.Src != (audit.Source{Cluster: "b", Topic: "residency.us", Partition: 2, Offset: 40}) ||
		w.Dest != (audit.Destination{Store: "us-postgres"}) || w.Value != audit.Sum(stored.Value) || w.Key != audit.Sum(stored.Key) ||
		w.Event != pz.Event([]byte(sinktest.EventID(1))) || w.Subject != pz.Subject([]byte(sinktest.UserID(1))) ||
		w.Jurisdiction != "US" || w.Region != "us" || w.Ruleset != (audit.RulesetRef{Version: 7, Digest: digest}) {
		t.Errorf("sink_write leaf %+v", w)
	}
	if r.Kind != audit.KindSinkRefusal || r.Decision != audit.Refused || r.Reason != sink.ReasonBadAttestation ||
		r.Dest != (audit.Destination{Cluster: "a", Topic: "residency.sink-quarantine", Partition: 0, Offset: 9}) ||
		r.Src.Offset != 41 || r.Region != "eu" {
		t.Errorf("sink_refusal leaf %+v", r)
	}
	// No payload, key or raw id in the audit record.
	for _, b := range [][]byte{stored.Value, stored.Key, []byte(sinktest.EventID(1)), []byte(sinktest.UserID(2))} {
		if bytes.Contains(log.recs[0], b) {
			t.Errorf("the audit record holds %q", b)
		}
	}
	// An erased user's event: refused, not quarantined, no destination.
	if err := led.Record(context.Background(), []sink.Entry{{Msg: &refused, Reason: sink.ReasonErased, UserID: sinktest.UserID(2), Ruleset: rs,
		QuarantinePartition: -1, QuarantineOffset: -1}}); err != nil {
		t.Fatal(err)
	}
	if ls := log.leaves(t); len(ls) != 3 || ls[2].Kind != audit.KindSinkRefusal || ls[2].Reason != sink.ReasonErased || ls[2].Dest != (audit.Destination{}) {
		t.Errorf("leaf of an erased event %+v", ls[len(ls)-1])
	}
	log.fail = 1 << 30
	if err := led.Record(context.Background(), []sink.Entry{{Msg: &stored, Written: true, Ruleset: rs}}); err == nil {
		t.Error("Record succeeded while the log fails")
	}
}

func TestLeafLedger(t *testing.T) {
	log := &memLog{}
	led, err := auditwire.NewLeafLedger(log)
	if err != nil {
		t.Fatal(err)
	}
	in := []audit.Leaf{
		{Kind: audit.KindPurge, Time: 5, Actor: "purge", Src: audit.Source{Cluster: "a", Topic: "events", Partition: 1, Offset: 0, EndOffset: 10}, Decision: audit.Purged, Count: 10},
		{Kind: audit.KindErasure, Time: 6, Actor: "erase", Subject: audit.Sum([]byte("s")), Decision: audit.Erased, Dest: audit.Destination{Store: "us-postgres"}, Count: 3},
	}
	if err := led.Append(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	got := log.leaves(t)
	if len(got) != 2 || got[0].Src != in[0].Src || got[0].Count != 10 || got[1].Subject != in[1].Subject || got[1].Dest.Store != "us-postgres" {
		t.Errorf("leaves %+v", got)
	}
	log.fail = 1 << 30
	if err := led.Append(context.Background(), in); err == nil {
		t.Error("Append succeeded while the log fails")
	}
}

// Fetch and Read make memLog the integrator's feed (one partition; Fetch
// returns at once, empty when nothing is new).
func (l *memLog) Fetch(_ context.Context, from audit.Cursor, max int) ([]audit.AuditRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []audit.AuditRecord
	for off := from[0]; off < int64(len(l.recs)) && len(out) < max; off++ {
		out = append(out, audit.AuditRecord{Partition: 0, Offset: off, Value: l.recs[off]})
	}
	return out, nil
}

func (l *memLog) Read(_ context.Context, p int32, from, to int64) ([]audit.AuditRecord, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p != 0 || from < 0 || to > int64(len(l.recs)) || from > to {
		return nil, errors.New("out of range")
	}
	var out []audit.AuditRecord
	for off := from; off < to; off++ {
		out = append(out, audit.AuditRecord{Partition: 0, Offset: off, Value: l.recs[off]})
	}
	return out, nil
}

// topics and rows are what the verifier reads: records by topic, rows.
type world struct {
	topics map[string][]stream.Message
	rows   []audit.Row
}

func (w *world) Records(_ context.Context, r audit.TopicRange, fn func(*audit.Record) error) error {
	for _, m := range w.topics[r.Topic] {
		rec := audit.Record{Partition: int32(m.Partition), Offset: m.Offset, Key: m.Key, Value: m.Value}
		for _, h := range m.Headers {
			rec.Headers = append(rec.Headers, audit.Header{Key: h.Key, Value: h.Value})
		}
		if err := fn(&rec); err != nil {
			return err
		}
	}
	return nil
}

func (w *world) Rows(_ context.Context, _ string, fn func(*audit.Row) error) error {
	for i := range w.rows {
		if err := fn(&w.rows[i]); err != nil {
			return err
		}
	}
	return nil
}

// TestSinkLeavesVerify: what a sink with the audit on logs (its leaves over
// a router's, the rows it stored, the copy of a refused record in its
// quarantine topic with the sink's headers) integrates into a log the
// verifier passes without a finding; a row no leaf wrote is caught.
func TestSinkLeavesVerify(t *testing.T) {
	ctx := context.Background()
	const us, quar = "residency.us", "residency.sink-quarantine"
	k := key("k1", 1)
	verifier, _ := audit.NewAttestVerifier(k)
	check, _ := auditwire.NewSinkAttestation(verifier)
	rs := sinktest.Ruleset(7, us, "residency.eu", "us-store", "us")
	digest, err := audit.ParseDigest(rs.Digest())
	if err != nil {
		t.Fatal(err)
	}
	ref := audit.RulesetRef{Version: 7, Digest: digest}
	log := &memLog{}
	leaves, _ := auditwire.NewLeafLedger(log)
	// The router's part: the ruleset leaf and a route leaf per record it
	// wrote into the US pinned topic, attested.
	policy := audit.NewPolicy([]audit.PolicyJurisdiction{{Name: "EU", Region: "eu"}, {Name: "US", Region: "us"}},
		[]audit.PolicyRegion{{Name: "eu", Cluster: "ingest", Topic: "residency.eu"}, {Name: "us", Cluster: "ingest", Topic: us}},
		[]audit.PolicyStore{{Name: "us-store", Regions: []string{"us"}}})
	routed := []audit.Leaf{{Kind: audit.KindRuleset, Time: 1, Actor: "router-0", Ruleset: ref, Policy: policy}}
	w := &world{topics: map[string][]stream.Message{}}
	for i := range 3 {
		m := Attest(t, k, "ingest", us, sinktest.Message(us, i, "US", "us", "US"))
		m.Offset = int64(i)
		w.topics[us] = append(w.topics[us], m)
		l := audit.Leaf{Kind: audit.KindRoute, Time: 2, Actor: "router-0", Src: audit.Source{Topic: "events", Partition: int32(i % 3), Offset: int64(10_000 + i)},
			Decision: audit.Routed, DecidedBy: "country", Jurisdiction: "US", Region: "us", Ruleset: ref,
			Dest: audit.Destination{Cluster: "ingest", Topic: us, Partition: 0, Offset: int64(i)}}
		l.SetRecord(m.Key, m.Value)
		routed = append(routed, l)
	}
	if err := leaves.Append(ctx, routed); err != nil {
		t.Fatal(err)
	}
	// The sink's part: records 0 and 1 stored, 2 refused (say its region
	// moved) to the quarantine topic with the sink's headers.
	sl, _ := auditwire.NewSinkLedger(log, auditwire.SinkLedgerConfig{Store: "us-store", Cluster: "ingest", QuarantineCluster: "ingest"})
	var entries []sink.Entry
	for i, m := range w.topics[us] {
		var sums router.RecordSums
		if err := check.Check("ingest", us, &m, &sums); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if i < 2 {
			// Record 0's leaf takes the check's digests, record 1's hashes
			// the record itself: both must verify.
			if i == 1 {
				sums = router.RecordSums{}
			}
			entries = append(entries, sink.Entry{Msg: &w.topics[us][i], Written: true, EventID: sinktest.EventID(i), Ruleset: rs, Sums: sums})
			w.rows = append(w.rows, audit.Row{Topic: us, Partition: 0, Offset: int64(i), Value: audit.Sum(m.Value), Region: "us", Jurisdiction: "US", RulesetVersion: "7"})
			continue
		}
		q := sinktest.WithHeader(sinktest.WithHeader(m, router.HeaderReason, sink.ReasonRegionMoved), sink.HeaderStore, "us-store")
		q.Topic, q.Offset = quar, 0
		w.topics[quar] = append(w.topics[quar], q)
		entries = append(entries, sink.Entry{Msg: &w.topics[us][i], Reason: sink.ReasonRegionMoved, Ruleset: rs,
			QuarantineTopic: quar, QuarantinePartition: 0, QuarantineOffset: 0})
	}
	if err := sl.Record(ctx, entries); err != nil {
		t.Fatal(err)
	}

	skey, vkey, err := audit.GenerateLogKey("test.example/log")
	if err != nil {
		t.Fatal(err)
	}
	store := &audit.MemStore{}
	it, err := audit.NewIntegrator(audit.IntegratorConfig{Store: store, Feed: log, SignerKey: skey})
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, err := it.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	verify := func() *audit.Report {
		t.Helper()
		v, err := audit.VerifyLog(ctx, store, audit.VerifyConfig{LogKey: vkey, IngestCluster: "ingest", Attestation: verifier})
		if err != nil {
			t.Fatal(err)
		}
		ranges := []audit.TopicRange{
			{Cluster: "ingest", Topic: us, Role: audit.RolePinned, Partition: 0, From: 0, To: 3},
			{Cluster: "ingest", Topic: quar, Role: audit.RoleSinkQuarantine, Partition: 0, From: 0, To: 1},
		}
		if err := v.VerifyPlacement(ctx, ranges, w); err != nil {
			t.Fatal(err)
		}
		if err := v.VerifyStores(ctx, []audit.StoreCheck{{Store: "us-store", Cluster: "ingest"}}, w); err != nil {
			t.Fatal(err)
		}
		return v.Report()
	}
	if r := verify(); len(r.Findings) != 0 || r.Checked.Rows != 2 || r.Checked.Records != 4 {
		t.Fatalf("findings %+v, checked %+v", r.Findings, r.Checked)
	}
	// A row no sink logged.
	w.rows = append(w.rows, audit.Row{Topic: us, Partition: 0, Offset: 2, Value: audit.Sum(w.topics[us][2].Value), Region: "us", Jurisdiction: "US"})
	r := verify()
	if len(r.Findings) != 1 || r.Findings[0].Code != audit.CodeUnloggedRow {
		t.Fatalf("findings %+v, want one unlogged_row", r.Findings)
	}
}
