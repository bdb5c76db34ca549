package replay_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/replay"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// srcAttester tags a record with its decision, destination and source
// coordinates.
type srcAttester struct{}

func (srcAttester) AppendAttestation(dst []byte, r *router.AttestedRecord) []byte {
	m := r.Event.Msg
	return fmt.Appendf(dst, "%s|%s/%s|%s/%d/%d|v%d", r.Event.Decision.Outcome, r.Cluster, r.Topic, m.Topic, m.Partition, m.Offset, r.RulesetVersion)
}

// memLedger keeps what Record was given.
type memLedger struct {
	mu  sync.Mutex
	got []string
}

func (l *memLedger) AppendLeaf(dst []byte, s *router.Settled) ([]byte, error) {
	m := s.Event.Msg
	return fmt.Appendf(dst, "%s/%d/%d>%s/%s/%d/%d", m.Topic, m.Partition, m.Offset, s.Cluster, s.Topic, s.Partition, s.Offset), nil
}

func (l *memLedger) Append(_ context.Context, _ []*rules.Ruleset, leaves [][]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, lf := range leaves {
		l.got = append(l.got, string(lf))
	}
	return nil
}

// TestReplayAudit replays quarantined events with an Attester and a
// Ledger: every record replay writes carries the attestation of its
// decision, destination and original ingest coordinates (under the
// replay's ruleset version), and the Ledger got one settled event per
// record written, naming the same source and destination, down to the
// partition and offset the record was written at.
func TestReplayAudit(t *testing.T) {
	e := newEnv(t)
	e.apply(t, rulesV1)
	vals := map[string][]byte{}
	for i := range 8 {
		vals[fmt.Sprintf("ca-%d", i)] = e.event(t, eventID("0ca0", i), fmt.Sprintf("ca-%d", i), "CA")
	}
	e.produce(t, vals)
	fx := fields(t, schemas.ExtractorConfig{})
	e.route(t, fx)
	v2 := e.apply(t, rulesV2)
	cfg := e.config(e.plan(t, "audit-1", replay.SourceQuarantine, e.quarantine), v2, fx)
	led := &memLedger{}
	cfg.Attester, cfg.Ledger = srcAttester{}, led
	if rep := run(t, cfg); !rep.Complete {
		t.Fatalf("report: %+v", rep)
	}
	recs := e.readAll(t, "a", e.us)
	if len(recs) != 8 {
		t.Fatalf("%d records in the us topic, want 8", len(recs))
	}
	want := map[string]bool{}
	for _, m := range recs {
		src := fmt.Sprintf("%s/%s/%s", header(m, router.HeaderSourceTopic), header(m, router.HeaderSourcePartition), header(m, router.HeaderSourceOffset))
		tag := fmt.Sprintf("routed|a/%s|%s|v%d", e.us, src, v2.Version())
		if got := header(m, router.HeaderAttestation); got != tag {
			t.Errorf("attestation %q, want %q", got, tag)
		}
		// The ledger names the record's own partition and offset (the
		// produce responses' base offsets).
		want[fmt.Sprintf("%s>a/%s/%d/%d", src, e.us, m.Partition, m.Offset)] = true
	}
	if len(led.got) != len(recs) {
		t.Errorf("ledger got %d events, want %d: %v", len(led.got), len(recs), led.got)
	}
	for _, g := range led.got {
		if !want[g] {
			t.Errorf("ledger got %s, which names no record written (%s)", g, strings.Join(led.got, " "))
		}
	}
}
