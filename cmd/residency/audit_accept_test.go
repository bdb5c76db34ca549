package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
)

// auditStack is a small deployment on the dev stack whose routers and sink
// are played by the test: events on an ingest topic of cluster a, each
// routed (with its leaf on the audit topic and an attestation tag on the
// record) to the US pinned topic on a, the EU one on b or the quarantine;
// the US records stored in PostgreSQL with their sink_write leaves. Then
// `audit integrate`, `verify`, `prove` and `check-proof` run on it as a
// reviewer would.
type auditStack struct {
	a, b                                       *testenv.Kafka
	sinkQuarantine                             string
	ingest, quarantine, deadLetter, auditTopic string
	us, eu                                     string
	dir, bucketDir, cfgFile, logKey, logPub    string
	attester                                   *audit.Attester
	policy                                     *audit.Policy
	rs                                         audit.RulesetRef
	pg                                         *postgres.Store
	clA, clB                                   *kgo.Client
	time                                       int64
	pending                                    []audit.Leaf
	ps                                         *audit.Pseudonymizer
	usRecords                                  []*kgo.Record
	euRecords                                  []*kgo.Record
	obj                                        *objectstore.Store
}

func newAuditStack(t *testing.T) *auditStack {
	t.Helper()
	s := &auditStack{a: testenv.KafkaA(t), b: testenv.KafkaB(t), time: time.Now().UnixMilli()}
	s.ingest = s.a.Topic(t, "ingest", 2)
	s.quarantine = s.a.Topic(t, "quarantine", 1)
	s.deadLetter = s.a.Topic(t, "dead", 1)
	s.auditTopic = s.a.Topic(t, "audit", 1)
	s.sinkQuarantine = s.a.Topic(t, "sinkq", 1)
	s.us = s.a.Topic(t, "us", 2)
	s.eu = s.b.Topic(t, "eu", 2)
	s.clA = s.a.Franz(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	s.clB = s.b.Franz(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	s.dir = t.TempDir()
	s.bucketDir = filepath.Join(s.dir, "bucket")
	if err := os.MkdirAll(s.bucketDir, 0o700); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(s.dir, "keys")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"audit", "keygen", "--origin", "residency.test/audit", "--attest", "k1", "--out", keys}, nil, &out, &errb); code != exitOK {
		t.Fatalf("keygen = %d: %s", code, errb.String())
	}
	s.logKey, s.logPub = filepath.Join(keys, "log.key"), filepath.Join(keys, "log.pub")
	k, err := audit.LoadAttestKey("k1", filepath.Join(keys, "attest-k1.key"))
	if err != nil {
		t.Fatal(err)
	}
	s.attester, _ = audit.NewAttester(k)
	subject := filepath.Join(keys, "subject.key")
	if err := os.WriteFile(subject, []byte(strings.Repeat("s", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	s.ps, _ = audit.NewPseudonymizer([]byte(strings.Repeat("s", 40)))
	pg := testenv.NewPostgres(t)
	ctx := testenv.Context(t, 30*time.Second)
	s.pg, err = postgres.Open(ctx, postgres.Config{DSN: pg.DSN, Table: "audit_events"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.pg.Close(context.Background()) })
	// The ruleset the leaves are decided under, and the policy it defines
	// (audit verify derives it from the content and compares).
	content := []byte(fmt.Sprintf("jurisdictions:\n  - {name: US, region: us, countries: [US]}\n  - {name: EU, region: eu, countries: [DE]}\n"+
		"regions:\n  - {name: us, cluster: a, topic: %s}\n  - {name: eu, cluster: b, topic: %s}\n"+
		"stores:\n  - {name: us-postgres, regions: [us]}\n  - {name: eu-objectstore, regions: [eu]}\n", s.us, s.eu))
	if s.policy, err = policyOf(content); err != nil {
		t.Fatal(err)
	}
	objURL := "file://" + filepath.Join(s.dir, "objects") + "?no_tmp_dir=true"
	if err := os.MkdirAll(filepath.Join(s.dir, "objects"), 0o700); err != nil {
		t.Fatal(err)
	}
	if s.obj, err = objectstore.Open(ctx, objectstore.Config{URL: objURL}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.obj.Close(context.Background()) })
	rl, err := audit.NewRulesetLeaf(3, content, s.policy, "router-test", s.time)
	if err != nil {
		t.Fatal(err)
	}
	s.rs = rl.Ruleset
	s.pending = append(s.pending, rl)
	s.cfgFile = filepath.Join(s.dir, "residency.yaml")
	cfg := fmt.Sprintf(`
log_level: warn
http: {listen: "off"}
kafka:
  clusters:
    a: {brokers: [%s]}
    b: {brokers: [%s]}
  ingest_cluster: a
router:
  ingest_topics: [%s]
  quarantine_topic: %s
  dead_letter_topic: %s
audit:
  topic: %s
  bucket: file://%s
  log_key_file: %s
  log_public_key_file: %s
  subject_key_file: %s
  attestation:
    verify_keys: [{id: k1, file: %s}]
sinks:
  - {store: us-postgres, region: us, cluster: a, topic: %s, quarantine_topic: %s, postgres: {dsn: %q, table: audit_events}}
  - {store: eu-objectstore, region: eu, cluster: b, topic: %s, quarantine_topic: %s, objectstore: {url: %q}}
`, strings.Join(s.a.Brokers, ","), strings.Join(s.b.Brokers, ","), s.ingest, s.quarantine, s.deadLetter, s.auditTopic,
		s.bucketDir, s.logKey, s.logPub, subject, filepath.Join(keys, "attest-k1.key"), s.us, s.sinkQuarantine, pg.DSN, s.eu, s.sinkQuarantine, objURL)
	if err := os.WriteFile(s.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func produce(t *testing.T, cl *kgo.Client, r *kgo.Record) *kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	got, err := cl.ProduceSync(ctx, r).First()
	if err != nil {
		t.Fatalf("produce to %s/%d: %v", r.Topic, r.Partition, err)
	}
	return got
}

// route puts n events per ingest partition and routes each as a router
// would: US and EU to their pinned topics, every 5th to the quarantine.
func (s *auditStack) route(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		for p := int32(0); p < 2; p++ {
			jur := []string{"US", "EU"}[i%2]
			if i%5 == 3 {
				jur = "ZZ"
			}
			key := []byte(fmt.Sprintf("user-%d-%d", p, i))
			// A real event (the verifier decodes the rows' values again).
			val := sinktest.Event(int(p)*1000+i, map[string]string{"US": "US", "EU": "DE", "ZZ": "ZZ"}[jur])
			src := produce(t, s.clA, &kgo.Record{Topic: s.ingest, Partition: p, Key: key, Value: val})
			s.routeRecord(t, src, jur, fmt.Sprintf("ev-%d-%d", p, i))
		}
	}
	s.flush(t)
}

// routeRecord routes the ingest record src, of jurisdiction jur and event
// id event, as a router would: its record on the pinned topic or the
// quarantine, its leaf pending.
func (s *auditStack) routeRecord(t *testing.T, src *kgo.Record, jur, event string) {
	t.Helper()
	p, key, val := src.Partition, src.Key, src.Value
	s.time++
	l := audit.Leaf{Kind: audit.KindRoute, Time: s.time, Actor: "router-test", Src: audit.Source{Topic: s.ingest, Partition: p, Offset: src.Offset}, Ruleset: s.rs}
	l.SetRecord(key, val)
	l.Event = s.ps.Event([]byte(event))
	hs := []kgo.RecordHeader{{Key: "residency-ruleset-version", Value: []byte(strconv.FormatInt(s.rs.Version, 10))},
		{Key: "residency-source-topic", Value: []byte(s.ingest)}, {Key: "residency-source-partition", Value: []byte(strconv.Itoa(int(p)))},
		{Key: "residency-source-offset", Value: []byte(strconv.FormatInt(src.Offset, 10))}}
	var cl *kgo.Client
	var cluster, topic string
	role := audit.RolePinned
	if region, ok := map[string]string{"US": "us", "EU": "eu"}[jur]; ok {
		g, _ := s.policy.Region(region)
		l.Decision, l.DecidedBy, l.Jurisdiction, l.Region = audit.Routed, "country", jur, region
		cluster, topic = g.Cluster, g.Topic
		hs = append(hs, kgo.RecordHeader{Key: "residency-jurisdiction", Value: []byte(jur)}, kgo.RecordHeader{Key: "residency-region", Value: []byte(region)})
	} else {
		l.Decision, l.Reason = audit.Quarantined, "unknown_country"
		cluster, topic, role = "a", s.quarantine, audit.RoleQuarantine
		hs = append(hs, kgo.RecordHeader{Key: "residency-reason", Value: []byte("unknown_country")})
	}
	cl = s.clA
	if cluster == "b" {
		cl = s.clB
	}
	var ahs []audit.Header
	for _, h := range hs {
		ahs = append(ahs, audit.Header{Key: h.Key, Value: h.Value})
	}
	in := audit.AttestationInputOf(cluster, topic, role, key, val, ahs)
	in.Decision, in.Reason = l.Decision, l.Reason
	hs = append(hs, kgo.RecordHeader{Key: audit.HeaderAttestation, Value: s.attester.AppendTag(nil, &in)})
	dp := p
	if role == audit.RoleQuarantine {
		dp = 0
	}
	out := produce(t, cl, &kgo.Record{Topic: topic, Partition: dp, Key: key, Value: val, Headers: hs})
	l.Dest = audit.Destination{Cluster: cluster, Topic: topic, Partition: dp, Offset: out.Offset}
	s.pending = append(s.pending, l)
	switch topic {
	case s.us:
		s.usRecords = append(s.usRecords, out)
	case s.eu:
		s.euRecords = append(s.euRecords, out)
	}
}

// flush writes the pending leaves as one audit record.
func (s *auditStack) flush(t *testing.T) {
	t.Helper()
	if len(s.pending) == 0 {
		return
	}
	rec, err := audit.EncodeWireRecord(s.pending)
	if err != nil {
		t.Fatal(err)
	}
	produce(t, s.clA, &kgo.Record{Topic: s.auditTopic, Partition: 0, Value: rec})
	s.pending = nil
}

// sink stores the US records in PostgreSQL with their sink_write leaves.
func (s *auditStack) sink(t *testing.T) {
	t.Helper()
	var batch []sink.Record
	for _, r := range s.usRecords {
		s.time++
		l := audit.Leaf{Kind: audit.KindSinkWrite, Time: s.time, Actor: "sink:us-postgres",
			Src:      audit.Source{Cluster: "a", Topic: r.Topic, Partition: r.Partition, Offset: r.Offset},
			Decision: audit.Written, Jurisdiction: "US", Region: "us", Ruleset: s.rs, Dest: audit.Destination{Store: "us-postgres"}}
		l.SetRecord(r.Key, r.Value)
		s.pending = append(s.pending, l)
		id, user, doc := s.decoded(t, r.Value)
		batch = append(batch, sink.Record{EventID: id, UserID: user, Jurisdiction: "US", Region: "us", RulesetVersion: "3", SourceTopic: s.ingest,
			Topic: r.Topic, Partition: int(r.Partition), Offset: r.Offset, Time: r.Timestamp, Event: doc, Raw: r.Value})
	}
	s.flush(t)
	if err := s.pg.Write(testenv.Context(t, 30*time.Second), batch); err != nil {
		t.Fatal(err)
	}
}

// decoded is what a sink reads from a value: its event and user ids and
// the event as a JSON document (the columns audit verify compares with the
// value decoded again).
func (s *auditStack) decoded(t *testing.T, value []byte) (eventID, userID string, doc []byte) {
	t.Helper()
	x, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	doc, keys, err := x.DecodeJSONFast(context.Background(), s.ingest, value)
	if err != nil {
		t.Fatal(err)
	}
	return keys.EventID, keys.UserID, doc
}

// sinkEU stores the EU records in the object store with their sink_write
// leaves.
func (s *auditStack) sinkEU(t *testing.T) {
	t.Helper()
	var batch []sink.Record
	for _, r := range s.euRecords {
		s.time++
		l := audit.Leaf{Kind: audit.KindSinkWrite, Time: s.time, Actor: "sink:eu-objectstore",
			Src:      audit.Source{Cluster: "b", Topic: r.Topic, Partition: r.Partition, Offset: r.Offset},
			Decision: audit.Written, Jurisdiction: "EU", Region: "eu", Ruleset: s.rs, Dest: audit.Destination{Store: "eu-objectstore"}}
		l.SetRecord(r.Key, r.Value)
		s.pending = append(s.pending, l)
		id, user, doc := s.decoded(t, r.Value)
		batch = append(batch, sink.Record{EventID: id, UserID: user, Jurisdiction: "EU", Region: "eu", RulesetVersion: "3", SourceTopic: s.ingest,
			Topic: r.Topic, Partition: int(r.Partition), Offset: r.Offset, Time: r.Timestamp, Event: doc, Raw: r.Value})
	}
	s.flush(t)
	for p := int32(0); p < 2; p++ { // one object per partition run
		var part []sink.Record
		for _, r := range batch {
			if int32(r.Partition) == p {
				part = append(part, r)
			}
		}
		if len(part) > 0 {
			if err := s.obj.Write(testenv.Context(t, 30*time.Second), part); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// cmd runs `residency audit args...` and returns its exit code, stdout and
// stderr.
func (s *auditStack) cmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx := testenv.Context(t, 120*time.Second)
	code := run(ctx, append([]string{"audit"}, args...), nil, &out, &errb)
	return code, out.String(), errb.String()
}

func (s *auditStack) integrate(t *testing.T) {
	t.Helper()
	if code, out, errb := s.cmd(t, "integrate", "--config", s.cfgFile, "--once", "--idle", "2s", "--output", "json"); code != exitOK {
		t.Fatalf("integrate = %d: %s %s", code, out, errb)
	}
}

// verify runs audit verify --output json and returns the exit code and the
// codes of its findings.
func (s *auditStack) verify(t *testing.T, extra ...string) (int, []string, *audit.Report) {
	t.Helper()
	code, out, errb := s.cmd(t, append([]string{"verify", "--config", s.cfgFile, "--output", "json"}, extra...)...)
	if code != exitOK && code != exitFailure {
		t.Fatalf("verify = %d: %s", code, errb)
	}
	var rep audit.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("verify output: %v: %s", err, out)
	}
	var codes []string
	for _, f := range rep.Findings {
		codes = append(codes, string(f.Code))
	}
	return code, codes, &rep
}

func hasCode(codes []string, c string) bool {
	for _, x := range codes {
		if x == c {
			return true
		}
	}
	return false
}

// TestAuditAcceptanceCleanThenTampered is the acceptance of issue 14 on
// the reviewer side: a clean deployment verifies (exit 0), a proof of one
// decision checks offline, and each tampering is caught and named.
func TestAuditAcceptanceCleanThenTampered(t *testing.T) {
	s := newAuditStack(t)
	s.route(t, 10)
	s.sink(t)
	s.sinkEU(t)
	s.integrate(t)
	code, codes, rep := s.verify(t)
	if code != exitOK {
		t.Fatalf("clean verify = %d, findings %v: %+v", code, codes, rep.Findings)
	}
	if rep.Checked.Offsets != 20 || rep.Checked.Records != 20 || rep.Checked.Rows != int64(len(s.usRecords)+len(s.euRecords)) || len(s.euRecords) == 0 ||
		rep.Checked.RowContents != rep.Checked.Rows {
		t.Fatalf("clean verify checked %+v, want 20 offsets, 20 records, %d rows", rep.Checked, len(s.usRecords)+len(s.euRecords))
	}
	cleanSize := rep.Checkpoint.Size
	// A time window holding everything, and an offset range of the ingest.
	since := time.UnixMilli(s.time - 10*60*1000).UTC().Format(time.RFC3339)
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if code, codes, rep := s.verify(t, "--since", since, "--until", until); code != exitOK || rep.Checked.Offsets != 20 || !strings.Contains(rep.Window, since) {
		t.Fatalf("verify --since %s --until %s = %d %v, checked %+v, window %q", since, until, code, codes, rep.Checked, rep.Window)
	}
	if code, codes, rep := s.verify(t, "--offsets", s.ingest+"/0/0-5", "--no-stores"); code != exitOK || rep.Checked.Offsets != 5 {
		t.Fatalf("verify --offsets = %d %v, checked %+v", code, codes, rep.Checked)
	}
	prev, err := os.ReadFile(filepath.Join(s.bucketDir, "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	prevFile := filepath.Join(s.dir, "prev-checkpoint")
	if err := os.WriteFile(prevFile, prev, 0o600); err != nil {
		t.Fatal(err)
	}

	// A proof of one US decision, checked offline.
	r0 := s.usRecords[0]
	code, proof, errb := s.cmd(t, "prove", "--config", s.cfgFile, "--source", fmt.Sprintf("%s/%d/%d", s.ingest, 0, 0))
	if code != exitOK {
		t.Fatalf("prove = %d: %s", code, errb)
	}
	proofFile := filepath.Join(s.dir, "proof.json")
	if err := os.WriteFile(proofFile, []byte(proof), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errb := s.cmd(t, "check-proof", "--log-key", s.logPub, "--output", "json", proofFile); code != exitOK || !strings.Contains(out, `"verified":true`) {
		t.Fatalf("check-proof = %d: %s %s", code, out, errb)
	}
	// An altered proof does not check.
	bad := strings.Replace(proof, `\"region\":\"us\"`, `\"region\":\"eu\"`, 1)
	if bad == proof {
		t.Fatalf("proof of %s/%d holds no region us: %s", r0.Topic, r0.Offset, proof)
	}
	badFile := filepath.Join(s.dir, "bad-proof.json")
	_ = os.WriteFile(badFile, []byte(bad), 0o600)
	if code, _, errb := s.cmd(t, "check-proof", "--log-key", s.logPub, badFile); code != exitFailure {
		t.Fatalf("check-proof of an altered proof = %d, want 1: %s", code, errb)
	}
	// The same decision found by its event id.
	if code, proof2, errb := s.cmd(t, "prove", "--config", s.cfgFile, "--event-id", "ev-0-0"); code != exitOK || proof2 != proof {
		t.Fatalf("prove --event-id = %d (%s), not the proof of its source", code, errb)
	}
	// With another log's key, neither the proof nor the log verifies.
	other := filepath.Join(s.dir, "other")
	if code, _, errb := s.cmd(t, "keygen", "--origin", "residency.test/audit", "--out", other); code != exitOK {
		t.Fatal(errb)
	}
	if code, _, _ := s.cmd(t, "check-proof", "--log-key", filepath.Join(other, "log.pub"), proofFile); code != exitFailure {
		t.Fatalf("check-proof with the wrong key = %d, want 1", code)
	}
	if code, codes, _ := s.verify(t, "--log-key", filepath.Join(other, "log.pub")); code != exitFailure || !hasCode(codes, "bad_signature") {
		t.Fatalf("verify with the wrong key = %d %v, want 1 and bad_signature", code, codes)
	}
	// The text and HTML reports of the clean run.
	if code, out, _ := s.cmd(t, "verify", "--config", s.cfgFile); code != exitOK || !strings.Contains(out, "us") {
		t.Fatalf("verify (text) = %d:\n%s", code, out)
	}
	code, page, _ := s.cmd(t, "verify", "--config", s.cfgFile, "--output", "html")
	if code != exitOK || !strings.Contains(page, "<html") {
		t.Fatalf("verify --output html = %d", code)
	}
	renderHTML(t, page)
	// A witness cosigns the clean log's checkpoint; a reviewer who requires
	// the witness verifies at the cosigned checkpoint and refuses one the
	// witness did not cosign.
	wkeys := filepath.Join(s.dir, "witness")
	if code, _, errb := s.cmd(t, "keygen", "--witness", "w1", "--out", wkeys); code != exitOK {
		t.Fatalf("keygen --witness = %d: %s", code, errb)
	}
	wkey, wpub := filepath.Join(wkeys, "witness-w1.key"), filepath.Join(wkeys, "witness-w1.pub")
	wstate := "file://" + filepath.Join(s.dir, "witness-state")
	_ = os.MkdirAll(filepath.Join(s.dir, "witness-state"), 0o700)
	cosigned := filepath.Join(s.dir, "cosigned-checkpoint")
	if code, _, errb := s.cmd(t, "cosign", "--config", s.cfgFile, "--witness-key", wkey, "--state", wstate, "--out", cosigned); code != exitOK {
		t.Fatalf("cosign = %d: %s", code, errb)
	}
	if code, codes, _ := s.verify(t, "--checkpoint", cosigned, "--witness-key", wpub); code != exitOK {
		t.Fatalf("verify at the cosigned checkpoint, witness required = %d %v", code, codes)
	}
	if code, codes, _ := s.verify(t, "--witness-key", wpub); code != exitFailure || !hasCode(codes, "unwitnessed_checkpoint") {
		t.Fatalf("verify at the log's own checkpoint, witness required = %d %v, want 1 and unwitnessed_checkpoint", code, codes)
	}
	if code, _, errb := s.cmd(t, "cosign", "--config", s.cfgFile, "--witness-key", wkey, "--state", "file://"+s.bucketDir); code != exitUsage || !strings.Contains(errb, "apart from the log") {
		t.Fatalf("cosign with its state in the log's bucket = %d, want 2: %s", code, errb)
	}
	if code, _, errb := s.cmd(t, "cosign", "--config", s.cfgFile, "--witness-key", wpub, "--state", wstate); code != exitUsage || !strings.Contains(errb, "--witness-key") {
		t.Fatalf("cosign with the public key = %d, want 2: %s", code, errb)
	}
	// No leaf for an offset nobody routed: exit 1.
	if code, _, _ := s.cmd(t, "prove", "--config", s.cfgFile, "--source", s.ingest+"/0/999"); code != exitFailure {
		t.Fatalf("prove of an unknown source = %d, want 1", code)
	}

	ctx := testenv.Context(t, 60*time.Second)
	t.Run("RecordWithCopiedHeaders", func(t *testing.T) {
		// Someone writes straight into the US pinned topic, copying every
		// header (the attestation too) from a real record.
		forged := produce(t, s.clA, &kgo.Record{Topic: s.us, Partition: r0.Partition, Key: r0.Key, Value: []byte("forged event"), Headers: r0.Headers})
		_, codes, rep := s.verify(t)
		if !hasCode(codes, "unlogged_record") || !hasCode(codes, "bad_attestation") {
			t.Fatalf("forged record: findings %v, want unlogged_record and bad_attestation", codes)
		}
		named := false
		for _, f := range rep.Findings {
			named = named || (f.Topic == s.us && f.Offset == forged.Offset)
		}
		if !named {
			t.Fatalf("findings do not name %s/%d/%d: %+v", s.us, forged.Partition, forged.Offset, rep.Findings)
		}
	})
	// From here on the US pinned topic holds the forged record; the next
	// checks look for their own finding.
	t.Run("RowInserted", func(t *testing.T) {
		if _, err := s.pg.Pool().Exec(ctx, `INSERT INTO audit_events (event_id, region, jurisdiction, topic, partition, kafka_offset, raw) VALUES ('forged', 'us', 'US', $1, 0, 9999, 'x')`, s.us); err != nil {
			t.Fatal(err)
		}
		_, codes, _ := s.verify(t)
		if !hasCode(codes, "unlogged_row") {
			t.Fatalf("inserted row: findings %v, want unlogged_row", codes)
		}
		if _, err := s.pg.Pool().Exec(ctx, `DELETE FROM audit_events WHERE event_id = 'forged'`); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("RowRegionChanged", func(t *testing.T) {
		if _, err := s.pg.Pool().Exec(ctx, `UPDATE audit_events SET region = 'eu' WHERE event_id = $1`, sinktest.EventID(0)); err != nil {
			t.Fatal(err)
		}
		_, codes, _ := s.verify(t)
		if !hasCode(codes, "row_mismatch") {
			t.Fatalf("row region changed: findings %v, want row_mismatch", codes)
		}
		if _, err := s.pg.Pool().Exec(ctx, `UPDATE audit_events SET region = 'us' WHERE event_id = $1`, sinktest.EventID(0)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("RowDropped", func(t *testing.T) {
		if _, err := s.pg.Pool().Exec(ctx, `DELETE FROM audit_events WHERE event_id = $1`, sinktest.EventID(1000)); err != nil {
			t.Fatal(err)
		}
		_, codes, _ := s.verify(t)
		if !hasCode(codes, "missing_row") {
			t.Fatalf("row dropped (rewritten store): findings %v, want missing_row", codes)
		}
	})
	t.Run("ObjectRemoved", func(t *testing.T) {
		// An object of the EU store removed (a rewritten store): the
		// object store's rows are checked as PostgreSQL's are.
		var objs []string
		_ = filepath.Walk(filepath.Join(s.dir, "objects"), func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() && strings.HasSuffix(p, ".avro") {
				objs = append(objs, p)
			}
			return nil
		})
		if len(objs) == 0 {
			t.Fatal("no object written")
		}
		// Removing one object is the simplest rewrite: its rows go missing.
		b, err := os.ReadFile(objs[0])
		if err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(objs[0])
		_, codes, _ := s.verify(t)
		if !hasCode(codes, "missing_row") {
			t.Fatalf("object removed: findings %v, want missing_row", codes)
		}
		_ = os.WriteFile(objs[0], b, 0o600)
	})
	t.Run("IngestRecordWithoutLeaf", func(t *testing.T) {
		// An event read and placed with its leaf never logged.
		rec := produce(t, s.clA, &kgo.Record{Topic: s.ingest, Partition: 1, Key: []byte("k"), Value: []byte("unrouted")})
		_, codes, rep := s.verify(t)
		if !hasCode(codes, "missing_leaf") {
			t.Fatalf("unlogged ingest record: findings %v, want missing_leaf", codes)
		}
		named := false
		for _, f := range rep.Findings {
			named = named || (f.Code == "missing_leaf" && f.Topic == s.ingest && f.Partition == 1 && f.Offset == rec.Offset)
		}
		if !named {
			t.Fatalf("missing_leaf does not name %s/1/%d", s.ingest, rec.Offset)
		}
	})
	t.Run("RecordDropped", func(t *testing.T) {
		// The first US record is deleted from the pinned topic (as a
		// compacted tombstone or a rewritten topic would): its leaf wrote
		// it there, the topic no longer has it.
		a, err := kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: s.a.Brokers})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if _, err := a.DeleteRecords(ctx, s.us, map[int]int64{int(r0.Partition): r0.Offset + 1}); err != nil {
			t.Fatal(err)
		}
		_, codes, rep := s.verify(t)
		if !hasCode(codes, "missing_record") {
			t.Fatalf("record dropped: findings %v, want missing_record", codes)
		}
		named := false
		for _, f := range rep.Findings {
			named = named || (f.Code == "missing_record" && f.Topic == s.us && f.Partition == r0.Partition && f.Offset == r0.Offset)
		}
		if !named {
			t.Fatalf("missing_record does not name %s/%d/%d: %+v", s.us, r0.Partition, r0.Offset, rep.Findings)
		}
	})
	t.Run("AlterLeaf", func(t *testing.T) {
		bundle := firstBundle(t, s.bucketDir)
		b, _ := os.ReadFile(bundle)
		nb := bytes.Replace(b, []byte(`"region":"eu"`), []byte(`"region":"us"`), 1)
		if bytes.Equal(b, nb) {
			t.Fatal("nothing altered")
		}
		_ = os.WriteFile(bundle, nb, 0o600)
		code, codes, _ := s.verify(t)
		if code != exitFailure || !hasCode(codes, "altered_log") {
			t.Fatalf("altered leaf: exit %d, findings %v, want altered_log", code, codes)
		}
		_ = os.WriteFile(bundle, b, 0o600)
	})
	t.Run("DeleteLeaf", func(t *testing.T) {
		bundle := firstBundle(t, s.bucketDir)
		b, _ := os.ReadFile(bundle)
		leaves, err := audit.SplitBundle(b)
		if err != nil {
			t.Fatal(err)
		}
		var nb []byte
		for i, l := range leaves {
			if i != 5 {
				nb = audit.AppendBundle(nb, l)
			}
		}
		_ = os.WriteFile(bundle, nb, 0o600)
		code, codes, _ := s.verify(t)
		if code != exitFailure || !hasCode(codes, "altered_log") {
			t.Fatalf("deleted leaf: exit %d, findings %v, want altered_log", code, codes)
		}
		_ = os.WriteFile(bundle, b, 0o600)
	})
	t.Run("CheckpointNotExtending", func(t *testing.T) {
		// A second log, rebuilt from scratch and signed with the real key,
		// does not extend the checkpoint verified before.
		other := filepath.Join(s.dir, "bucket2")
		_ = os.MkdirAll(other, 0o700)
		cfg2 := filepath.Join(s.dir, "residency2.yaml")
		b, _ := os.ReadFile(s.cfgFile)
		_ = os.WriteFile(cfg2, bytes.Replace(b, []byte("file://"+s.bucketDir), []byte("file://"+other), 1), 0o600)
		// The same leaves integrated into a second bucket: the same tree.
		code, out, errb := s.cmd(t, "integrate", "--config", cfg2, "--once", "--idle", "2s")
		if code != exitOK {
			t.Fatalf("integrate = %d: %s %s", code, out, errb)
		}
		code, out, errb = s.cmd(t, "verify", "--config", cfg2, "--previous-checkpoint", prevFile, "--output", "json", "--no-stores")
		if (code != exitOK && code != exitFailure) || strings.Contains(out, "checkpoint_not_extending") {
			t.Fatalf("the same leaves in another bucket extend the previous checkpoint: exit %d %s %s", code, out, errb)
		}
		s.route(t, 1)
		s.integrate(t)
		forgedPrev := filepath.Join(s.dir, "forged-prev")
		cp2, _ := os.ReadFile(filepath.Join(s.bucketDir, "checkpoint"))
		_ = os.WriteFile(forgedPrev, cp2, 0o600)
		// The second bucket, behind, does not extend the newer checkpoint.
		code, out, _ = s.cmd(t, "verify", "--config", cfg2, "--previous-checkpoint", forgedPrev, "--output", "json", "--no-stores")
		if code != exitFailure || !strings.Contains(out, "checkpoint_not_extending") {
			t.Fatalf("a log that does not extend the previous checkpoint: exit %d %s", code, out)
		}
		// A log rebuilt from scratch with other leaves, longer than the
		// previous one and signed with the real key, does not extend it.
		forked := s.a.Topic(t, "audit-fork", 1)
		real := s.auditTopic
		s.auditTopic = forked
		s.route(t, 30)
		s.auditTopic = real
		bucket3 := filepath.Join(s.dir, "bucket3")
		_ = os.MkdirAll(bucket3, 0o700)
		cfg3 := filepath.Join(s.dir, "residency3.yaml")
		b = bytes.Replace(b, []byte("file://"+s.bucketDir), []byte("file://"+bucket3), 1)
		b = bytes.Replace(b, []byte("topic: "+real+"\n"), []byte("topic: "+forked+"\n"), 1)
		_ = os.WriteFile(cfg3, b, 0o600)
		if code, out, errb := s.cmd(t, "integrate", "--config", cfg3, "--once", "--idle", "2s"); code != exitOK {
			t.Fatalf("integrate the fork = %d: %s %s", code, out, errb)
		}
		code, out, _ = s.cmd(t, "verify", "--config", cfg3, "--previous-checkpoint", prevFile, "--output", "json", "--no-stores")
		var rep audit.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		if code != exitFailure || rep.Checkpoint.Size <= cleanSize || !strings.Contains(out, "checkpoint_not_extending") {
			t.Fatalf("a rebuilt log of %d leaves: exit %d %s", rep.Checkpoint.Size, code, out)
		}
		// The witness that cosigned the real log refuses the fork, and goes
		// on cosigning the real log as it grows.
		if code, _, errb := s.cmd(t, "cosign", "--config", cfg3, "--witness-key", wkey, "--state", wstate); code != exitFailure || !strings.Contains(errb, "does not extend") {
			t.Fatalf("cosign of a forked log = %d, want 1: %s", code, errb)
		}
		if code, out, errb := s.cmd(t, "cosign", "--config", s.cfgFile, "--witness-key", wkey, "--state", wstate); code != exitOK || !strings.Contains(out, "residency.test/audit") {
			t.Fatalf("cosign of the grown real log = %d: %s %s", code, out, errb)
		}
	})
	_ = ctx
}

// firstBundle returns the path of the first entry bundle file of the log
// in dir.
func firstBundle(t *testing.T, dir string) string {
	t.Helper()
	var found string
	_ = filepath.Walk(filepath.Join(dir, "tile", "entries"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && found == "" {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no entry bundle under %s", dir)
	}
	return found
}

// renderHTML opens the report in headless Chromium, where installed, and
// checks the page rendered.
func renderHTML(t *testing.T, page string) {
	t.Helper()
	bin := os.Getenv("RESIDENCY_TEST_CHROMIUM")
	if bin == "" {
		bin, _ = exec.LookPath("chromium")
	}
	if bin == "" {
		t.Log("Chromium not installed: the HTML report is not rendered")
		return
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "report.html")
	if err := os.WriteFile(f, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dom, err := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--dump-dom", "file://"+f).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	if !strings.Contains(string(dom), "PASS") {
		t.Fatalf("Chromium rendered no PASS:\n%s", dom)
	}
}

// TestAuditIntegrateService runs `audit integrate` as a service: it
// integrates what arrives on the audit topic, /readyz says ready, /metrics
// shows the log's size, and the end of its context stops it with exit 0.
// With the ingest cluster out of reach it reports not ready, naming the
// integrator.
func TestAuditIntegrateService(t *testing.T) {
	s := newAuditStack(t)
	s.route(t, 2)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var out, errb testenv.SyncBuffer
	go func() {
		done <- run(ctx, []string{"audit", "integrate", "--config", s.cfgFile, "--listen", addr}, nil, &out, &errb)
	}()
	testenv.Eventually(t, 30*time.Second, "the integrator to publish the log of 5 leaves", func() bool {
		code, body := get(addr, "/metrics")
		return code == 200 && strings.Contains(body, "residency_audit_log_size 5")
	})
	if code, body := get(addr, "/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	s.route(t, 1)
	testenv.Eventually(t, 30*time.Second, "the next leaves to be integrated", func() bool {
		_, body := get(addr, "/metrics")
		return strings.Contains(body, "residency_audit_log_size 7")
	})
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("integrate stopped with %d: %s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("integrate did not stop")
	}

	// The ingest cluster out of reach: not ready, and it says why.
	b, _ := os.ReadFile(s.cfgFile)
	down := filepath.Join(s.dir, "down.yaml")
	_ = os.WriteFile(down, bytes.Replace(b, []byte("a: {brokers: ["+strings.Join(s.a.Brokers, ",")+"]}"), []byte(`a: {brokers: ["127.0.0.1:1"]}`), 1), 0o600)
	addr2 := freeAddr(t)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	done2 := make(chan int, 1)
	go func() {
		done2 <- run(ctx2, []string{"audit", "integrate", "--config", down, "--listen", addr2}, nil, &out, &errb)
	}()
	testenv.Eventually(t, 30*time.Second, "/readyz to report the integrator not ready", func() bool {
		code, body := get(addr2, "/readyz")
		return code == 503 && strings.Contains(body, "audit integrator")
	})
	cancel2()
	if code := <-done2; code != exitOK {
		t.Fatalf("integrate stopped with %d", code)
	}
}
