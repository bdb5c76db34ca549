package router_test

import (
	"crypto/sha256"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/stream"
)

// fakeAttester tags a record with a readable summary of what it was
// given: decision, reason, jurisdiction, region, ruleset version,
// destination, source, and the digests of key and value, so a test can
// recompute the tag from the record as written.
type fakeAttester struct{ calls atomic.Int64 }

func (a *fakeAttester) AppendAttestation(dst []byte, r *router.AttestedRecord) []byte {
	a.calls.Add(1)
	d := &r.Event.Decision
	m := r.Event.Msg
	return fmt.Appendf(dst, "%s|%s|%s|%s|%d|%s/%s|%s/%d/%d|%x|%t|%x", d.Outcome, d.Reason, d.Jurisdiction, d.Region,
		r.RulesetVersion, r.Cluster, r.Topic, m.Topic, m.Partition, m.Offset, sha256.Sum256(r.Key), r.Key == nil, sha256.Sum256(r.Value))
}

// expectedTag recomputes fakeAttester's tag from a record as written, from
// its headers, key and value only (as a sink would).
func expectedTag(cluster, topic string, m stream.Message) string {
	outcome := map[string]string{quarantine: "quarantined", deadLetter: "dead-lettered"}[topic]
	if outcome == "" {
		outcome = "routed"
	}
	v, _ := strconv.ParseInt(header(m, router.HeaderRulesetVersion), 10, 64)
	p, _ := strconv.Atoi(header(m, router.HeaderSourcePartition))
	o, _ := strconv.ParseInt(header(m, router.HeaderSourceOffset), 10, 64)
	return fmt.Sprintf("%s|%s|%s|%s|%d|%s/%s|%s/%d/%d|%x|%t|%x", outcome, header(m, router.HeaderReason),
		header(m, router.HeaderJurisdiction), header(m, router.HeaderRegion), v, cluster, topic,
		header(m, router.HeaderSourceTopic), p, o, sha256.Sum256(m.Key), m.Key == nil, sha256.Sum256(m.Value))
}

// TestRouterAttestsEveryRecord routes pinned, quarantined and
// dead-lettered events (too_large among them) over several batches with an
// Attester: every record written carries exactly one attestation header,
// whose value is the attester's tag of that record as written (so the tags
// of earlier batches were not overwritten by later ones: the memory
// contract), and the residency headers are unchanged otherwise. Without an
// Attester no record carries the header.
func TestRouterAttestsEveryRecord(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("attester %t", on), func(t *testing.T) {
			f := newFixture(t)
			att := &fakeAttester{}
			if on {
				f.cfg.Attester = att
			}
			f.cfg.BatchSize = 7
			var sent []stream.Message
			for i := range 120 {
				c := []string{"US", "DE", "GB", "-", "ZZ", "IN"}[i%6]
				sent = append(sent, event(c, fmt.Sprintf("user-%d", i%5), fmt.Sprintf("id%d", i)))
			}
			sent = append(sent, stream.Message{Key: []byte("k"), Value: []byte("X|garbage")},
				stream.Message{Value: []byte("E")}, stream.Message{Key: []byte("k"), Value: make([]byte, 2<<20)})
			sent[0].Headers = append(sent[0].Headers, stream.Header{Key: router.HeaderAttestation, Value: []byte("forged")})
			f.produce(t, sent...)
			_, stop := f.start(t)
			testenv.Eventually(t, 10*time.Second, "all events committed", func() bool { return f.committed() == int64(len(sent)) })
			if err := stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			n := 0
			for _, c := range []struct {
				name   string
				topics []string
			}{{"a", []string{"pinned.us", "pinned.in", quarantine, deadLetter}}, {"b", []string{"pinned.eu", "pinned.uk"}}} {
				b := map[string]interface{ Records(string) []stream.Message }{"a": f.a, "b": f.b}[c.name]
				for _, topic := range c.topics {
					for _, m := range b.Records(topic) {
						n++
						count := 0
						for _, h := range m.Headers {
							if h.Key == router.HeaderAttestation {
								count++
							}
						}
						got := header(m, router.HeaderAttestation)
						switch {
						case !on && count != 0:
							t.Errorf("%s/%s: attestation header %q without an attester", c.name, topic, got)
						case on && count != 1:
							t.Errorf("%s/%s: %d attestation headers, want 1", c.name, topic, count)
						case on && got != expectedTag(c.name, topic, m):
							t.Errorf("%s/%s: attestation\n%q, want\n%q", c.name, topic, got, expectedTag(c.name, topic, m))
						}
					}
				}
			}
			if n != len(sent) {
				t.Errorf("%d records written, want %d", n, len(sent))
			}
			if on && att.calls.Load() < int64(len(sent)) {
				t.Errorf("attester called %d times for %d records", att.calls.Load(), len(sent))
			}
		})
	}
}
