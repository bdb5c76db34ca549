package auditwire_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
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
			err := check.Check(tc.cluster, tc.topic, &tc.m)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
		})
	}
	// After the rotation's last step the old key is refused.
	v2, _ := audit.NewAttestVerifier(cur)
	check2, _ := auditwire.NewSinkAttestation(v2)
	m := Attest(t, old, "a", us, sinktest.Message(us, 1, "US", "us", "US"))
	if err := check2.Check("a", us, &m); !errors.Is(err, audit.ErrUnknownAttestationKey) {
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

// memLog is an auditwire.Log in memory; while fail is set Append fails.
type memLog struct {
	mu   sync.Mutex
	fail bool
	recs [][]byte
}

func (l *memLog) Append(_ context.Context, records ...[]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail {
		return errors.New("audit topic unavailable")
	}
	for _, r := range records {
		l.recs = append(l.recs, bytes.Clone(r))
	}
	return nil
}

func (l *memLog) leaves(t *testing.T) []audit.Leaf {
	t.Helper()
	var out []audit.Leaf
	for _, r := range l.recs {
		ls, err := audit.DecodeWireRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ls...)
	}
	return out
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
	log.fail = true
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
	log.fail = true
	if err := led.Append(context.Background(), in); err == nil {
		t.Error("Append succeeded while the log fails")
	}
}
