package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
)

// keyFile writes a 32-byte secret made of b to a file and returns its path.
func keyFile(t *testing.T, name string, b byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, bytes.Repeat([]byte{b}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// attested returns m with the attestation a router signing with k makes of
// m written to topic on cluster.
func attested(t *testing.T, k audit.AttestKey, cluster, topic string, m stream.Message) stream.Message {
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

type coord struct {
	cluster, topic string
	partition      int32
	offset         int64
}

// TestSinkAudit runs `residency sink` with audit.enabled on real Kafka,
// Redis and each store (PostgreSQL, the S3 object store): records attested
// with either key of a rotation are stored; a record without a tag, with a
// tag by an unknown key, with another record's tag, and an EU user's event
// written into the US pinned topic with a real record's headers copied are
// refused to the quarantine topic as sink_bad_attestation. While the audit
// topic cannot be written nothing is committed and the sink is not ready;
// once it can, the sink resumes, and the leaves on the audit topic match
// the rows stored and the quarantine topic's records.
func TestSinkAudit(t *testing.T) {
	for _, kind := range []string{"postgres", "s3"} {
		t.Run(kind, func(t *testing.T) { testSinkAudit(t, kind) })
	}
}

func testSinkAudit(t *testing.T, kind string) {
	a := testenv.KafkaA(t)
	r := testenv.NewRedis(t)
	var storeCfg string
	var st erasure.RowStore
	if kind == "postgres" {
		pg := testenv.NewPostgres(t)
		storeCfg = fmt.Sprintf("postgres: {dsn: %q}", pg.DSN)
		st = openStore(t, pg.DSN, "")
	} else {
		u := testenv.NewS3(t).URL()
		storeCfg = fmt.Sprintf("objectstore: {url: %q}", u)
		st = openStore(t, "", u)
	}
	ctx := testenv.Context(t, 5*time.Minute)
	us := a.Topic(t, "us", 2)
	quarantine := a.Topic(t, "sinkquar", 1)
	auditTopic := testenv.Name(t, "audit") // created later: the ledger is unavailable first
	a.DeleteAfter(t, auditTopic)
	group := testenv.Name(t, "g")
	addr := freeAddr(t)
	oldKey, newKey := audit.AttestKey{ID: "k-old", Secret: bytes.Repeat([]byte{'o'}, 32)}, audit.AttestKey{ID: "k-new", Secret: bytes.Repeat([]byte{'n'}, 32)}
	stranger := audit.AttestKey{ID: "k-stranger", Secret: bytes.Repeat([]byte{'x'}, 32)}
	cfg := fmt.Sprintf(`
kafka:
  clusters:
    a: {brokers: [%s]}
  session_timeout: 6s
  rebalance_timeout: 5s
redis: {addr: "%s", prefix: "%s"}
rules: {poll_interval: 50ms}
audit:
  enabled: true
  topic: %s
  subject_key_file: %s
  attestation:
    verify_keys:
      - {id: k-old, file: %s}
      - {id: k-new, file: %s}
sinks:
  - store: us-store
    region: us
    consumer_group: %s
    quarantine_topic: %s
    batch_size: 20
    batch_timeout: 50ms
    drain_timeout: 3s
    listen: "%s"
    %s
`, strings.Join(a.Brokers, ","), r.Addr, r.Prefix, auditTopic, keyFile(t, "subject", 's'), keyFile(t, "old", 'o'), keyFile(t, "new", 'n'),
		group, quarantine, addr, storeCfg)
	cfgFile := writeFile(t, "residency.yaml", cfg)
	rules := strings.ReplaceAll(sinkRules(us, "us"), "us-postgres", "us-store")
	code, out, errs := rulesCLI(t, r, "apply", writeFile(t, "rules.yaml", rules))
	mustCode(t, exitOK, code, out, errs)

	msg := func(i int, jur, region, country string) stream.Message {
		return sinktest.WithHeader(sinktest.Message(us, i, jur, region, country), router.HeaderRulesetVersion, "1")
	}
	var good []stream.Message
	for i := range 6 {
		k := oldKey
		if i%2 == 1 {
			k = newKey
		}
		good = append(good, attested(t, k, "a", us, msg(i, "US", "us", "US")))
	}
	// A null key and an empty key stay what they were (the tag binds which).
	nullKey, emptyKey := msg(6, "US", "us", "US"), msg(7, "US", "us", "US")
	nullKey.Key, emptyKey.Key = nil, []byte{}
	good = append(good, attested(t, newKey, "a", us, nullKey), attested(t, newKey, "a", us, emptyKey))
	otherTag, _ := router.HeaderValue(good[1].Headers, audit.HeaderAttestation)
	forged := msg(50, "EU", "eu", "DE") // issue 12: an EU user's event, headers copied from a real US record
	forged.Headers = good[0].Headers
	bad := []stream.Message{
		msg(40, "US", "us", "US"),                                                                 // no tag
		attested(t, stranger, "a", us, msg(41, "US", "us", "US")),                                 // unknown key
		sinktest.WithHeader(msg(42, "US", "us", "US"), audit.HeaderAttestation, string(otherTag)), // another record's tag
		forged,
	}
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "a", Brokers: a.Brokers}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Publish(ctx, append(append([]stream.Message(nil), good...), bad...)...); err != nil {
		t.Fatal(err)
	}
	admin, err := kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: a.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	committed := func() int64 {
		c, err := admin.CommittedOffsets(ctx, group, us)
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, o := range c {
			n += o
		}
		return n
	}

	s := start(t, "sink", "--config", cfgFile, "--store", "us-store")
	defer s.halt(t)
	// The audit topic does not exist: the ledger fails, nothing is
	// committed, the sink is not ready.
	waitFor(t, 60*time.Second, "the ledger to fail", func() bool { return strings.Contains(s.stderr.String(), "ledger") }, s)
	time.Sleep(time.Second)
	if code, body := get(addr, "/readyz"); code == http.StatusOK {
		t.Errorf("/readyz = %d %s while the audit topic cannot be written", code, body)
	}
	if n := committed(); n != 0 {
		t.Fatalf("%d offsets committed while the audit topic cannot be written", n)
	}
	a.CreateTopic(t, auditTopic, 1)
	waitFor(t, 60*time.Second, "every offset committed", func() bool { return committed() == int64(len(good)+len(bad)) }, s)
	waitFor(t, 30*time.Second, "/readyz", func() bool { code, _ := get(addr, "/readyz"); return code == http.StatusOK }, s)

	// The store holds exactly the attested records.
	stored := map[coord]bool{}
	rows := rows(t, st)
	for _, row := range rows {
		stored[coord{"a", row.Topic, int32(row.Partition), row.Offset}] = true
	}
	if len(rows) != len(good) {
		t.Errorf("the store holds %d rows, want %d", len(rows), len(good))
	}
	for i := range good {
		if _, ok := rows[sinktest.EventID(i)]; !ok {
			t.Errorf("event %d (attested) not stored", i)
		}
	}
	// The quarantine topic holds the others, as sink_bad_attestation.
	quarantined := map[coord]bool{}
	for _, rec := range a.ReadTopic(t, ctx, quarantine) {
		var reason string
		for _, h := range rec.Headers {
			if h.Key == router.HeaderReason {
				reason = string(h.Value)
			}
		}
		if reason != sink.ReasonBadAttestation {
			t.Errorf("quarantined %s: reason %q", rec.Key, reason)
		}
		quarantined[coord{"a", quarantine, rec.Partition, rec.Offset}] = true
	}
	if len(quarantined) != len(bad) {
		t.Errorf("the quarantine topic holds %d records, want %d", len(quarantined), len(bad))
	}
	// The leaves on the audit topic match them.
	writes, refusals := map[coord]bool{}, map[coord]bool{}
	pz, err := audit.NewPseudonymizer(bytes.Repeat([]byte{'s'}, 32))
	if err != nil {
		t.Fatal(err)
	}
	subjects := map[audit.Digest]bool{}
	for _, rec := range a.ReadTopic(t, ctx, auditTopic) {
		leaves, err := audit.DecodeWireRecord(rec.Value)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leaves {
			if l.Actor != "sink:us-store" || l.Ruleset.Version != 1 || l.Ruleset.Digest.IsZero() {
				t.Errorf("leaf %+v", l)
			}
			switch l.Kind {
			case audit.KindSinkWrite:
				writes[coord{l.Src.Cluster, l.Src.Topic, l.Src.Partition, l.Src.Offset}] = true
				subjects[l.Subject] = true
				if l.Dest.Store != "us-store" || l.Region != "us" || l.Jurisdiction != "US" || l.Event.IsZero() {
					t.Errorf("sink_write leaf %+v", l)
				}
			case audit.KindSinkRefusal:
				refusals[coord{l.Dest.Cluster, l.Dest.Topic, l.Dest.Partition, l.Dest.Offset}] = true
				if l.Reason != sink.ReasonBadAttestation || l.Src.Topic != us {
					t.Errorf("sink_refusal leaf %+v", l)
				}
			default:
				t.Errorf("unexpected leaf kind %s", l.Kind)
			}
		}
	}
	if !sameSet(writes, stored) {
		t.Errorf("sink_write leaves %v, rows %v", writes, stored)
	}
	if !sameSet(refusals, quarantined) {
		t.Errorf("sink_refusal leaves %v, quarantine records %v", refusals, quarantined)
	}
	if !subjects[pz.Subject([]byte(sinktest.UserID(0)))] {
		t.Error("no sink_write leaf names user 0 by its keyed hash")
	}
}

func sameSet(a, b map[coord]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
