package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/stream"
)

// routeAuditStack is a route config with the audit on, over fresh topics of
// the dev stack's clusters.
type routeAuditStack struct {
	a, b                             *testenv.Kafka
	ingest, quarantine, dead, us, eu string
	auditTopic, group, addr, cfgFile string
	key                              audit.AttestKey
	admin                            *kafka.Admin
}

func newRouteAuditStack(t *testing.T, createAudit bool) *routeAuditStack {
	t.Helper()
	s := &routeAuditStack{a: testenv.KafkaA(t), b: testenv.KafkaB(t)}
	s.ingest, s.quarantine, s.dead = s.a.Topic(t, "ingest", 2), s.a.Topic(t, "quarantine", 1), s.a.Topic(t, "deadletter", 1)
	s.us, s.eu = s.a.Topic(t, "us", 2), s.b.Topic(t, "eu", 2)
	s.auditTopic = testenv.Name(t, "audit")
	if createAudit {
		s.a.CreateTopic(t, s.auditTopic, 1)
	} else {
		s.a.DeleteAfter(t, s.auditTopic)
	}
	s.group, s.addr = testenv.Name(t, "g"), freeAddr(t)
	secret := bytes.Repeat([]byte("k"), 32)
	s.key = audit.AttestKey{ID: "route-k1", Secret: secret}
	signFile := writeEventFile(t, "sign.key", secret)
	subjFile := writeEventFile(t, "subject.key", bytes.Repeat([]byte("s"), 32))
	rulesFile := writeRules(t, twoRegionRules(s.us, "b", s.eu, "DE, FR"))
	s.cfgFile = routeYAML{Listen: s.addr, A: s.a.Brokers, B: s.b.Brokers, Ingest: s.ingest, Group: s.group, Quarantine: s.quarantine,
		DeadLetter: s.dead, Router: []string{"retry_max: 500ms"}, Rest: fmt.Sprintf(`rules: {file: %s}
audit:
  enabled: true
  topic: %s
  subject_key_file: %s
  attestation:
    sign_key: {id: route-k1, file: %s}
`, rulesFile, s.auditTopic, subjFile, signFile)}.write(t)
	var err error
	if s.admin, err = kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: s.a.Brokers}); err != nil {
		t.Fatal(err)
	}
	return s
}

// produce writes n sample events (some routed to each region, some
// quarantined, one in seven undecodable) to the ingest topic.
func (s *routeAuditStack) produce(t *testing.T, ctx context.Context, from, n int) {
	t.Helper()
	enc, err := sample.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "a", Brokers: s.a.Brokers}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var msgs []stream.Message
	for i := from; i < from+n; i++ {
		v, _ := enc.Encode(sample.Event{ID: fmt.Sprint(i), UserID: fmt.Sprint("user-", i%11), Country: []string{"US", "DE", "FR", "", "ZZ"}[i%5]})
		if i%7 == 6 {
			v = []byte("not avro")
		}
		msgs = append(msgs, stream.Message{Topic: s.ingest, Key: []byte(fmt.Sprint("k", i%13)), Value: v})
	}
	if err := w.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

// committed returns the group's committed offset per ingest partition.
func (s *routeAuditStack) committed(t *testing.T, ctx context.Context) map[int]int64 {
	t.Helper()
	got, err := s.admin.CommittedOffsets(ctx, s.group, s.ingest)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// leaves reads the audit topic (kafka-go) and decodes every leaf.
func (s *routeAuditStack) leaves(t *testing.T, ctx context.Context) []audit.Leaf {
	t.Helper()
	// A fresh client: kafka-go caches metadata, and the topic may be new.
	adm, err := kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: s.a.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	recs, err := adm.ReadAll(ctx, s.auditTopic)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Leaf
	for _, r := range recs {
		if r.Partition != 0 {
			t.Errorf("audit record in partition %d", r.Partition)
		}
		ls, err := audit.DecodeWireRecord(r.Value)
		if err != nil {
			t.Fatalf("audit record at %d: %v", r.Offset, err)
		}
		out = append(out, ls...)
	}
	return out
}

// checkLeaves fails unless every committed ingest offset has a route leaf
// whose digests are its record's; it returns the leaves by source.
func (s *routeAuditStack) checkLeaves(t *testing.T, ctx context.Context, leaves []audit.Leaf) map[string][]*audit.Leaf {
	t.Helper()
	bySrc := map[string][]*audit.Leaf{}
	rulesetLeaves := 0
	for i := range leaves {
		l := &leaves[i]
		switch l.Kind {
		case audit.KindRuleset:
			rulesetLeaves++
		case audit.KindRoute:
			k := fmt.Sprintf("%d/%d", l.Src.Partition, l.Src.Offset)
			bySrc[k] = append(bySrc[k], l)
			if l.Src.Topic != s.ingest || l.Actor == "" {
				t.Errorf("leaf %+v: wrong source topic or no actor", l)
			}
		}
	}
	if rulesetLeaves == 0 {
		t.Error("no ruleset leaf")
	}
	ingest, err := s.admin.ReadAll(ctx, s.ingest)
	if err != nil {
		t.Fatal(err)
	}
	committed := s.committed(t, ctx)
	n := 0
	for _, m := range ingest {
		if m.Offset >= committed[m.Partition] {
			continue
		}
		n++
		ls := bySrc[fmt.Sprintf("%d/%d", m.Partition, m.Offset)]
		if len(ls) == 0 {
			t.Errorf("committed ingest offset %d/%d has no leaf", m.Partition, m.Offset)
		}
		for _, l := range ls {
			if l.Value != audit.Sum(m.Value) || l.Key != audit.Sum(m.Key) {
				t.Errorf("leaf of %d/%d: digests are not its record's", m.Partition, m.Offset)
			}
		}
	}
	if n == 0 {
		t.Error("nothing committed")
	}
	return bySrc
}

// checkAttestations fails unless every record in the pinned, quarantine
// and dead-letter topics verifies (as a sink and the verifier check it).
// It returns how many records there are and how many no leaf names as
// its destination (written by a router killed before it recorded them).
func (s *routeAuditStack) checkAttestations(t *testing.T, ctx context.Context, bySrc map[string][]*audit.Leaf) (n, unlogged int) {
	t.Helper()
	v, err := audit.NewAttestVerifier(s.key)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		k            *testenv.Kafka
		cluster, top string
		role         audit.Role
	}{{s.a, "a", s.us, audit.RolePinned}, {s.b, "b", s.eu, audit.RolePinned}, {s.a, "a", s.quarantine, audit.RoleQuarantine},
		{s.a, "a", s.dead, audit.RoleDeadLetter}} {
		adm, err := kafka.NewAdmin(kafka.Cluster{Name: c.cluster, Brokers: c.k.Brokers})
		if err != nil {
			t.Fatal(err)
		}
		defer adm.Close()
		recs, err := adm.ReadAll(ctx, c.top)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range recs {
			n++
			hs := make([]audit.Header, len(m.Headers))
			for i, h := range m.Headers {
				hs[i] = audit.Header{Key: h.Key, Value: h.Value}
			}
			in := audit.AttestationInputOf(c.cluster, c.top, c.role, m.Key, m.Value, hs)
			var tag []byte
			for _, h := range m.Headers {
				if h.Key == audit.HeaderAttestation {
					tag = h.Value
				}
			}
			if err := v.Verify(tag, &in); err != nil {
				t.Errorf("%s/%s %d/%d: attestation: %v", c.cluster, c.top, m.Partition, m.Offset, err)
			}
			named := false
			for _, l := range bySrc[fmt.Sprintf("%d/%d", in.SrcPartition, in.SrcOffset)] {
				named = named || l.Dest == audit.Destination{Cluster: c.cluster, Topic: c.top, Partition: int32(m.Partition), Offset: m.Offset}
			}
			if !named {
				unlogged++
			}
		}
	}
	return n, unlogged
}

// TestRouteAuditOn runs `residency route` with the audit on and the audit
// topic missing: the router reports not ready with its "ledger" problem
// and commits nothing; once the topic exists it resumes by itself, and
// then every committed ingest offset has a leaf on the audit topic (with
// its record's digests), every record routed, quarantined or
// dead-lettered carries a valid attestation, and its leaf names where it
// went.
func TestRouteAuditOn(t *testing.T) {
	s := newRouteAuditStack(t, false)
	ctx := testenv.Context(t, 90*time.Second)
	s.produce(t, ctx, 0, 70)
	rt := start(t, "route", "--config", s.cfgFile)
	waitFor := func(what string, cond func() bool) { t.Helper(); waitFor(t, 40*time.Second, what, cond, rt) }
	waitFor("/readyz to name the ledger", func() bool {
		code, body := get(s.addr, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "ledger") && strings.Contains(body, s.auditTopic)
	})
	time.Sleep(time.Second)
	if c := s.committed(t, ctx); c[0]+c[1] != 0 {
		t.Fatalf("committed %v with the audit topic missing", c)
	}
	s.a.CreateTopic(t, s.auditTopic, 1)
	waitFor("everything committed", func() bool { lag, err := s.admin.Lag(ctx, s.group, s.ingest); return err == nil && lag == 0 })
	waitFor("ready", func() bool { code, _ := get(s.addr, "/readyz"); return code == 200 })
	s.produce(t, ctx, 70, 30)
	waitFor("everything committed again", func() bool { lag, err := s.admin.Lag(ctx, s.group, s.ingest); return err == nil && lag == 0 })
	rt.stopOK(t)
	bySrc := s.checkLeaves(t, ctx, s.leaves(t, ctx))
	if n, unlogged := s.checkAttestations(t, ctx, bySrc); n != 100 || unlogged != 0 {
		t.Errorf("%d records written (%d named by no leaf), want 100 (0)", n, unlogged)
	}
	logs := rt.stderr.String()
	if !strings.Contains(logs, `"msg":"audit on`) || !strings.Contains(logs, "route-k1") {
		t.Errorf("no audit-on log line with the key id:\n%s", logs)
	}
	for _, leak := range []string{"user-1", string(bytes.Repeat([]byte("k"), 32))} {
		if strings.Contains(logs, leak) {
			t.Errorf("logs contain %q", leak)
		}
	}
}

// TestRouteAuditKill9 runs the residency binary with the audit on while
// events flow, kills it with SIGKILL at random moments while it commits, three times
// (restarting it each time), then lets it drain: every offset the group
// committed has its leaf on the audit topic (duplicates allowed), and
// every record written carries a valid attestation.
func TestRouteAuditKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	s := newRouteAuditStack(t, true)
	ctx := testenv.Context(t, 2*time.Minute)
	bin := filepath.Join(t.TempDir(), "residency")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var logs testenv.SyncBuffer
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "route", "--config", s.cfgFile)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	produced := 0
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	total := func() int64 {
		var n int64
		for _, c := range s.committed(t, ctx) {
			n += c
		}
		return n
	}
	for round := range 3 {
		cmd := start()
		// Kill it while it commits: once the new member commits (after the
		// killed one's session expired), at a random moment.
		before := total()
		for wait := time.Now().Add(30 * time.Second); total() == before; {
			if time.Now().After(wait) {
				t.Fatalf("round %d: nothing committed; logs:\n%s", round, logs.String())
			}
			s.produce(t, ctx, produced, 40)
			produced += 40
			time.Sleep(50 * time.Millisecond)
		}
		deadline := time.Now().Add(time.Duration(100+rng.IntN(1000)) * time.Millisecond)
		for time.Now().Before(deadline) {
			s.produce(t, ctx, produced, 40)
			produced += 40
			time.Sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond)
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		t.Logf("round %d: killed after %d events produced, %d committed", round, produced, total())
	}
	cmd := start()
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	for deadline := time.Now().Add(40 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if lag, err := s.admin.Lag(ctx, s.group, s.ingest); err == nil && lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not drained; logs:\n%s", logs.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	leaves := s.leaves(t, ctx)
	bySrc := s.checkLeaves(t, ctx, leaves)
	if len(bySrc) != produced {
		t.Errorf("%d ingest offsets with a leaf, want %d", len(bySrc), produced)
	}
	n, unlogged := s.checkAttestations(t, ctx, bySrc)
	t.Logf("%d events, %d leaves (%d more than offsets), %d records written, %d of them named by no leaf (written before a kill, never recorded)",
		produced, len(leaves), len(leaves)-len(bySrc), n, unlogged)
	if n < produced {
		t.Errorf("%d records written for %d events", n, produced)
	}
}
