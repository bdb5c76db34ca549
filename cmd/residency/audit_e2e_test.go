package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
)

// e2eStack is a deployment on the dev stack run only through the real
// commands (`topics apply`, `rules apply`, `route`, `sink`, `replay`,
// `audit …`) with one config file whose audit is on: an ingest topic on
// cluster a, the US pinned topic on a, the EU one on b, quarantine and
// dead-letter on a, a US PostgreSQL store.
type e2eStack struct {
	a, b                             *testenv.Kafka
	redis                            *testenv.Redis
	dsn, table                       string
	ingest, quarantine, dead, us, eu string
	sinkQuarantine, auditTopic       string
	euSinkQuarantine, euSinkGroup    string
	group, sinkGroup                 string
	dir, bucket, keys, cfgFile       string
	routeAddr, sinkAddr              string
	cl                               *kgo.Client
	enc                              *sample.Encoder
	produced                         int
}

func newE2EStack(t *testing.T) *e2eStack {
	t.Helper()
	s := &e2eStack{a: testenv.KafkaA(t), b: testenv.KafkaB(t), redis: testenv.NewRedis(t)}
	n := func(p string) string { return testenv.Name(t, p) }
	s.ingest, s.quarantine, s.dead, s.us, s.eu = n("ingest"), n("quar"), n("dead"), n("us"), n("eu")
	s.sinkQuarantine, s.auditTopic, s.group, s.sinkGroup = n("sinkq"), n("audit"), n("g"), n("sg")
	s.euSinkQuarantine, s.euSinkGroup = n("eusinkq"), n("esg")
	history := n("rulesets")
	s.a.DeleteAfter(t, s.ingest, s.quarantine, s.dead, s.us, s.sinkQuarantine, s.auditTopic, history)
	s.b.DeleteAfter(t, s.eu, s.euSinkQuarantine)
	s3 := testenv.NewS3(t).URL()
	pg := testenv.NewPostgres(t)
	s.dsn, s.table = pg.DSN, "e2e_events"
	s.dir = t.TempDir()
	s.bucket, s.keys = filepath.Join(s.dir, "bucket"), filepath.Join(s.dir, "keys")
	if err := os.MkdirAll(s.bucket, 0o700); err != nil {
		t.Fatal(err)
	}
	s.routeAddr, s.sinkAddr = freeAddr(t), freeAddr(t)
	code, out, errs := cmd(t, "audit", "keygen", "--origin", "residency.e2e/audit", "--attest", "k1", "--out", s.keys)
	mustCode(t, exitOK, code, out, errs)
	subject := filepath.Join(s.keys, "subject.key")
	if err := os.WriteFile(subject, bytes.Repeat([]byte("s"), 32), 0o600); err != nil {
		t.Fatal(err)
	}
	attest := filepath.Join(s.keys, "attest-k1.key")
	s.cfgFile = filepath.Join(s.dir, "residency.yaml")
	cfg := fmt.Sprintf(`
log_level: warn
instance: e2e-router
http: {listen: "%s"}
kafka:
  clusters:
    a: {brokers: [%s]}
    b: {brokers: [%s]}
  ingest_cluster: a
  compression: lz4
  session_timeout: 6s
  rebalance_timeout: 5s
topics:
  replication_factor: 1
  ingest: {partitions: 2}
  pinned: {partitions: 2}
redis: {addr: "%s", prefix: "%s"}
rules: {poll_interval: 50ms, history_topic: %s}
router:
  ingest_topics: [%s]
  consumer_group: %s
  quarantine_topic: %s
  dead_letter_topic: %s
  shutdown_timeout: 5s
  retry_max: 500ms
audit:
  enabled: true
  topic: %s
  bucket: file://%s
  log_key_file: %s
  log_public_key_file: %s
  subject_key_file: %s
  attestation:
    sign_key: {id: k1, file: %s}
    verify_keys: [{id: k1, file: %s}]
sinks:
  - store: us-postgres
    region: us
    cluster: a
    topic: %s
    consumer_group: %s
    quarantine_topic: %s
    batch_size: 50
    batch_timeout: 50ms
    drain_timeout: 3s
    listen: "%s"
    postgres: {dsn: %q, table: %s}
  - store: eu-objectstore
    region: eu
    cluster: b
    topic: %s
    consumer_group: %s
    quarantine_topic: %s
    batch_size: 50
    batch_timeout: 50ms
    drain_timeout: 3s
    listen: "%s"
    objectstore: {url: %q}
`, s.routeAddr, strings.Join(s.a.Brokers, ","), strings.Join(s.b.Brokers, ","), s.redis.Addr, s.redis.Prefix, history,
		s.ingest, s.group, s.quarantine, s.dead, s.auditTopic, s.bucket,
		filepath.Join(s.keys, "log.key"), filepath.Join(s.keys, "log.pub"), subject, attest, attest,
		s.us, s.sinkGroup, s.sinkQuarantine, s.sinkAddr, s.dsn, s.table, s.eu, s.euSinkGroup, s.euSinkQuarantine, freeAddr(t), s3)
	if err := os.WriteFile(s.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// As an operator sets up: the topics the config and the first ruleset
	// need, then the ruleset (into Redis, its history topic and the log).
	code, out, errs = cmd(t, "topics", "apply", "--config", s.cfgFile, "--rules", s.rulesFile(t, ""))
	mustCode(t, exitOK, code, out, errs)
	s.applyRules(t, "")
	var err error
	if s.enc, err = sample.NewEncoder(); err != nil {
		t.Fatal(err)
	}
	s.cl = s.a.Franz(t, kgo.DefaultProduceTopic(s.ingest))
	return s
}

// rulesFile writes the ruleset (US to us on a, DE and FR to eu on b;
// extra countries added to US) and returns its path.
func (s *e2eStack) rulesFile(t *testing.T, extraUS string) string {
	t.Helper()
	return writeFile(t, "rules.yaml", fmt.Sprintf(`
jurisdictions:
  - {name: US, region: us, countries: [US%s]}
  - {name: EU, region: eu, countries: [DE, FR]}
regions:
  - {name: us, cluster: a, topic: %s}
  - {name: eu, cluster: b, topic: %s}
stores:
  - {name: us-postgres, regions: [us]}
  - {name: eu-objectstore, regions: [eu]}
`, extraUS, s.us, s.eu))
}

// applyRules applies the ruleset of rulesFile with `rules apply`.
func (s *e2eStack) applyRules(t *testing.T, extraUS string) {
	t.Helper()
	code, out, errs := cmd(t, "rules", "apply", "--config", s.cfgFile, s.rulesFile(t, extraUS))
	mustCode(t, exitOK, code, out, errs)
}

// e2eProduce writes n events with franz-go to the ingest topic: US, DE,
// FR, no country and one no jurisdiction holds (JP) in turn, every seventh not Avro.
func (s *e2eStack) e2eProduce(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	var recs []*kgo.Record
	for i := s.produced; i < s.produced+n; i++ {
		v, err := s.enc.Encode(sample.Event{ID: fmt.Sprint("e2e-", i), UserID: fmt.Sprint("user-", i%11), Country: []string{"US", "DE", "FR", "", "JP"}[i%5]})
		if err != nil {
			t.Fatal(err)
		}
		if i%7 == 6 {
			v = []byte("not avro")
		}
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprint("k", i%13)), Value: v})
	}
	if err := s.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	s.produced += n
}

// e2eLag is how many records of topic on cluster k group has not
// committed (-1 when it cannot tell).
func e2eLag(t *testing.T, ctx context.Context, k *testenv.Kafka, group, topic string) int64 {
	t.Helper()
	adm, err := kafka.NewAdmin(kafka.Cluster{Name: k.Name, Brokers: k.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	lag, err := adm.Lag(ctx, group, topic)
	if err != nil {
		return -1
	}
	return lag
}

// e2eVerify runs `audit verify --output json` and returns its exit code,
// the codes of its findings and notes, and the report.
func (s *e2eStack) e2eVerify(t *testing.T, extra ...string) (int, []string, []string, *audit.Report) {
	t.Helper()
	code, out, errs := cmd(t, append([]string{"audit", "verify", "--config", s.cfgFile, "--output", "json"}, extra...)...)
	if code != exitOK && code != exitFailure {
		t.Fatalf("verify = %d: %s", code, errs)
	}
	var rep audit.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("verify output: %v: %s", err, out)
	}
	var findings, notes []string
	for _, f := range rep.Findings {
		findings = append(findings, string(f.Code))
	}
	for _, f := range rep.Notes {
		notes = append(notes, string(f.Code))
	}
	return code, findings, notes, &rep
}

func (s *e2eStack) e2eIntegrate(t *testing.T) {
	t.Helper()
	code, out, errs := cmd(t, "audit", "integrate", "--config", s.cfgFile, "--once", "--idle", "2s")
	mustCode(t, exitOK, code, out, errs)
}

// e2eSinkDrain runs `residency sink` until the US pinned topic is drained.
func (s *e2eStack) e2eSinkDrain(t *testing.T, ctx context.Context) {
	t.Helper()
	sk := start(t, "sink", "--config", s.cfgFile, "--store", "us-postgres")
	waitFor(t, 40*time.Second, "the sink to drain the US pinned topic", func() bool {
		return e2eLag(t, ctx, s.a, s.sinkGroup, s.us) == 0
	}, sk)
	if c := sk.halt(t); c != exitOK {
		t.Fatalf("sink exited %d: %s", c, sk.stderr.String())
	}
}

// e2eSinkDrainEU runs the EU object store's `residency sink` until the EU
// pinned topic (cluster b) is drained.
func (s *e2eStack) e2eSinkDrainEU(t *testing.T, ctx context.Context) {
	t.Helper()
	sk := start(t, "sink", "--config", s.cfgFile, "--store", "eu-objectstore")
	waitFor(t, 40*time.Second, "the sink to drain the EU pinned topic", func() bool {
		return e2eLag(t, ctx, s.b, s.euSinkGroup, s.eu) == 0
	}, sk)
	if c := sk.halt(t); c != exitOK {
		t.Fatalf("sink exited %d: %s", c, sk.stderr.String())
	}
}

func (s *e2eStack) e2eExec(t *testing.T, ctx context.Context, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func e2eHeader(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func e2eHas(codes []string, c string) bool {
	for _, x := range codes {
		if x == c {
			return true
		}
	}
	return false
}

// TestAuditE2E is issue 14's acceptance with the real router, replay and
// sink: route a mixed stream across both clusters, sink the US events into
// PostgreSQL, replay the quarantine after a rule change, integrate, then
// `audit verify` passes with per-region counts and a proof checks
// offline; then each tampering is caught and named; and the sink refuses
// a record copied into the pinned topic with another record's attestation
// as sink_bad_attestation.
func TestAuditE2E(t *testing.T) {
	s := newE2EStack(t)
	ctx := testenv.Context(t, 3*time.Minute)
	s.e2eProduce(t, ctx, 70)
	rt := start(t, "route", "--config", s.cfgFile)
	waitFor(t, 40*time.Second, "the router to commit every event", func() bool {
		return e2eLag(t, ctx, s.a, s.group, s.ingest) == 0
	}, rt)
	if c := rt.halt(t); c != exitOK {
		t.Fatalf("route exited %d: %s", c, rt.stderr.String())
	}
	// A rule change puts JP under US; the quarantine is replayed.
	s.applyRules(t, ", JP")
	code, out, errs := cmd(t, "replay", "--config", s.cfgFile, "--source", "quarantine", "--id", "e2e-replay", "--progress", "off", "--output", "json")
	mustCode(t, exitOK, code, out, errs)
	s.e2eSinkDrain(t, ctx)
	s.e2eSinkDrainEU(t, ctx)
	s.e2eIntegrate(t)

	code, findings, notes, rep := s.e2eVerify(t)
	if code != exitOK {
		t.Fatalf("clean verify = %d, findings %v (notes %v): %+v", code, findings, notes, rep.Findings)
	}
	if rep.Checked.Offsets != 70 || rep.Checked.Rows != 48 {
		t.Errorf("clean verify checked %+v, want 70 offsets and 48 rows (24 US, 24 EU)", rep.Checked)
	}
	code, text, _ := cmd(t, "audit", "verify", "--config", s.cfgFile)
	if code != exitOK || !strings.Contains(text, "us") || !strings.Contains(text, "eu") {
		t.Errorf("verify (text) = %d, want 0 and counts of us and eu:\n%s", code, text)
	}
	t.Logf("clean verify: %+v, notes %v\n%s", rep.Checked, notes, text)

	// A proof of the first US event (ingest offset of an event with
	// country US), checked offline.
	first := s.a.ReadTopic(t, ctx, s.us)[0]
	src := fmt.Sprintf("%s/%s/%s", s.ingest, e2eHeader(first, "residency-source-partition"), e2eHeader(first, "residency-source-offset"))
	code, proof, errs := cmd(t, "audit", "prove", "--config", s.cfgFile, "--source", src)
	mustCode(t, exitOK, code, proof, errs)
	proofFile := writeFile(t, "proof.json", proof)
	code, out, errs = cmd(t, "audit", "check-proof", "--log-key", filepath.Join(s.keys, "log.pub"), proofFile)
	mustCode(t, exitOK, code, out, errs)

	prev, err := os.ReadFile(filepath.Join(s.bucket, "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	prevFile := writeFile(t, "prev-checkpoint", string(prev))

	usRecs := s.a.ReadTopic(t, ctx, s.us)
	if len(usRecs) < 2 {
		t.Fatalf("%d records in the US pinned topic", len(usRecs))
	}
	// The router wrote them with kafka.compression lz4, as this test's
	// config asks (the sinks and verify above read them so): Kafka's codec 3.
	for _, r := range usRecs {
		if c := r.Attrs.CompressionType(); c != 3 {
			t.Fatalf("US pinned record at offset %d written with compression codec %d, want 3 (lz4, kafka.compression)", r.Offset, c)
		}
	}
	// Tamperings, one at a time, each undone (where it can be) before the
	// next.
	t.Run("LeafAltered", func(t *testing.T) {
		bundle := firstBundle(t, s.bucket)
		b, _ := os.ReadFile(bundle)
		nb := bytes.Replace(b, []byte(`"region":"eu"`), []byte(`"region":"us"`), 1)
		if bytes.Equal(b, nb) {
			t.Fatal("nothing altered")
		}
		_ = os.WriteFile(bundle, nb, 0o600)
		defer func() { _ = os.WriteFile(bundle, b, 0o600) }()
		if code, findings, _, _ := s.e2eVerify(t); code != exitFailure || !e2eHas(findings, "altered_log") {
			t.Fatalf("altered leaf: exit %d, findings %v, want altered_log", code, findings)
		}
	})
	t.Run("LeafDeleted", func(t *testing.T) {
		bundle := firstBundle(t, s.bucket)
		b, _ := os.ReadFile(bundle)
		leaves, err := audit.SplitBundle(b)
		if err != nil {
			t.Fatal(err)
		}
		var nb []byte
		for i, l := range leaves {
			if i != 3 {
				nb = audit.AppendBundle(nb, l)
			}
		}
		_ = os.WriteFile(bundle, nb, 0o600)
		defer func() { _ = os.WriteFile(bundle, b, 0o600) }()
		if code, findings, _, _ := s.e2eVerify(t); code != exitFailure || !e2eHas(findings, "altered_log") {
			t.Fatalf("deleted leaf: exit %d, findings %v, want altered_log", code, findings)
		}
	})
	t.Run("RowInserted", func(t *testing.T) {
		s.e2eExec(t, ctx, fmt.Sprintf(`INSERT INTO %s (event_id, region, jurisdiction, topic, partition, kafka_offset, raw) VALUES ('forged', 'us', 'US', $1, 0, 9999, 'x')`, s.table), s.us)
		defer s.e2eExec(t, ctx, fmt.Sprintf(`DELETE FROM %s WHERE event_id = 'forged'`, s.table))
		if code, findings, _, _ := s.e2eVerify(t); code != exitFailure || !e2eHas(findings, "unlogged_row") {
			t.Fatalf("inserted row: exit %d, findings %v, want unlogged_row", code, findings)
		}
	})
	t.Run("RowRegionChanged", func(t *testing.T) {
		s.e2eExec(t, ctx, fmt.Sprintf(`UPDATE %s SET region = 'eu' WHERE event_id = 'e2e-0'`, s.table))
		defer s.e2eExec(t, ctx, fmt.Sprintf(`UPDATE %s SET region = 'us' WHERE event_id = 'e2e-0'`, s.table))
		if code, findings, _, _ := s.e2eVerify(t); code != exitFailure || !e2eHas(findings, "row_mismatch") {
			t.Fatalf("row region changed: exit %d, findings %v, want row_mismatch", code, findings)
		}
	})
	t.Run("RowColumnsChanged", func(t *testing.T) {
		// D6: everything but raw, region and jurisdiction, which readers
		// of the store query.
		s.e2eExec(t, ctx, fmt.Sprintf(`CREATE TABLE %s_saved AS SELECT * FROM %s WHERE event_id = 'e2e-0'`, s.table, s.table))
		defer s.e2eExec(t, ctx, fmt.Sprintf(`DROP TABLE %s_saved`, s.table))
		s.e2eExec(t, ctx, fmt.Sprintf(`UPDATE %s SET event_id = 'renamed', user_id = 'someone-else', event = jsonb_set(event, '{country}', '"DE"'), ruleset_version = '99' WHERE event_id = 'e2e-0'`, s.table))
		defer s.e2eExec(t, ctx, fmt.Sprintf(`INSERT INTO %s SELECT * FROM %s_saved`, s.table, s.table))
		defer s.e2eExec(t, ctx, fmt.Sprintf(`DELETE FROM %s WHERE event_id = 'renamed'`, s.table))
		code, findings, _, rep := s.e2eVerify(t)
		js, _ := json.Marshal(rep)
		out := string(js)
		if code != exitFailure || !e2eHas(findings, "row_mismatch") {
			t.Fatalf("row columns changed: exit %d, findings %v, want row_mismatch", code, findings)
		}
		for _, col := range []string{"ruleset_version", "event_id", "user_id", "event"} {
			if !strings.Contains(out, col) {
				t.Errorf("the report does not name column %s:\n%s", col, out)
			}
		}
		for _, v := range []string{"renamed", "someone-else", `"DE"`, `\"DE\"`} {
			if strings.Contains(out, v) {
				t.Errorf("the report holds the value %q", v)
			}
		}
	})
	t.Run("RowCopiedUnderNewEventID", func(t *testing.T) {
		// D3: a real row copied at its own coordinates under a new id.
		s.e2eExec(t, ctx, fmt.Sprintf(`INSERT INTO %s (event_id, user_id, jurisdiction, region, occurred_at, ruleset_version, source_topic, source_partition, source_offset, topic, partition, kafka_offset, event, raw)
			SELECT 'copied', user_id, jurisdiction, region, occurred_at, ruleset_version, source_topic, source_partition, source_offset, topic, partition, kafka_offset, event, raw
			FROM %s WHERE event_id = 'e2e-0'`, s.table, s.table))
		defer s.e2eExec(t, ctx, fmt.Sprintf(`DELETE FROM %s WHERE event_id = 'copied'`, s.table))
		if code, findings, _, _ := s.e2eVerify(t); code != exitFailure || !e2eHas(findings, "row_mismatch") {
			t.Fatalf("row copied under a new event id: exit %d, findings %v, want row_mismatch", code, findings)
		}
	})
	if code, findings, _, _ := s.e2eVerify(t); code != exitOK {
		t.Fatalf("after undoing the tamperings: verify = %d, findings %v", code, findings)
	}
	t.Run("CheckpointNotExtending", func(t *testing.T) {
		// The log rebuilt from scratch in another bucket with the real key:
		// it holds the same leaves; once the real log has grown, the rebuilt
		// one does not extend the real one's newer checkpoint.
		other := filepath.Join(s.dir, "bucket2")
		_ = os.MkdirAll(other, 0o700)
		b, _ := os.ReadFile(s.cfgFile)
		cfg2 := writeFile(t, "residency2.yaml", string(bytes.Replace(b, []byte("file://"+s.bucket), []byte("file://"+other), 1)))
		code, out, errs := cmd(t, "audit", "integrate", "--config", cfg2, "--once", "--idle", "2s")
		mustCode(t, exitOK, code, out, errs)
		code, out, _ = cmd(t, "audit", "verify", "--config", cfg2, "--previous-checkpoint", prevFile, "--output", "json", "--no-stores")
		if strings.Contains(out, "checkpoint_not_extending") {
			t.Fatalf("the same leaves in another bucket do not extend the checkpoint: %d %s", code, out)
		}
		// The real log grows (a rebuilt one would have to be altered to
		// match); a leaf appended to bucket2's audit feed differs.
		s.e2eProduce(t, ctx, 2)
		rt := start(t, "route", "--config", s.cfgFile)
		waitFor(t, 40*time.Second, "the router to commit", func() bool { return e2eLag(t, ctx, s.a, s.group, s.ingest) == 0 }, rt)
		rt.halt(t)
		s.e2eIntegrate(t)
		newer := writeFile(t, "newer-checkpoint", string(must(os.ReadFile(filepath.Join(s.bucket, "checkpoint")))))
		code, out, _ = cmd(t, "audit", "verify", "--config", cfg2, "--previous-checkpoint", newer, "--output", "json", "--no-stores")
		if code != exitFailure || !strings.Contains(out, "checkpoint_not_extending") {
			t.Fatalf("a log behind the previous checkpoint: exit %d %s", code, out)
		}
	})
	t.Run("RecordWithCopiedHeaders", func(t *testing.T) {
		// A record written straight into the US pinned topic with another
		// event's value and every header (the attestation too) copied from
		// a real record: verify names it, and the sink refuses it.
		r0, r1 := usRecs[0], usRecs[1]
		forged := &kgo.Record{Topic: s.us, Partition: r0.Partition, Key: r1.Key, Value: r1.Value, Headers: r0.Headers}
		if err := s.a.Franz(t, kgo.RecordPartitioner(kgo.ManualPartitioner())).ProduceSync(ctx, forged).FirstErr(); err != nil {
			t.Fatal(err)
		}
		code, findings, _, rep := s.e2eVerify(t)
		if code != exitFailure || !e2eHas(findings, "unlogged_record") || !e2eHas(findings, "bad_attestation") {
			t.Fatalf("forged record: exit %d, findings %v, want unlogged_record and bad_attestation", code, findings)
		}
		named := false
		for _, f := range rep.Findings {
			named = named || (f.Topic == s.us && f.Partition == forged.Partition && f.Offset == forged.Offset)
		}
		if !named {
			t.Fatalf("findings do not name %s/%d/%d: %+v", s.us, forged.Partition, forged.Offset, rep.Findings)
		}
		s.e2eSinkDrain(t, ctx)
		var refused bool
		for _, r := range s.a.ReadTopic(t, ctx, s.sinkQuarantine) {
			for _, h := range r.Headers {
				refused = refused || (h.Key == "residency-reason" && string(h.Value) == "sink_bad_attestation" && bytes.Equal(r.Value, r1.Value))
			}
		}
		if !refused {
			t.Fatal("the sink did not refuse the forged record as sink_bad_attestation")
		}
	})
	t.Run("RowDropped", func(t *testing.T) {
		s.e2eExec(t, ctx, fmt.Sprintf(`DELETE FROM %s WHERE event_id = 'e2e-0'`, s.table))
		if code, findings, _, _ := s.e2eVerify(t); code != exitFailure || !e2eHas(findings, "missing_row") {
			t.Fatalf("row dropped: exit %d, findings %v, want missing_row", code, findings)
		}
	})
	t.Run("RecordDropped", func(t *testing.T) {
		// The first US record deleted from its pinned topic (as a rewritten
		// topic would): its leaf wrote it there.
		r0 := usRecs[0]
		adm, err := kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: s.a.Brokers})
		if err != nil {
			t.Fatal(err)
		}
		defer adm.Close()
		if _, err := adm.DeleteRecords(ctx, s.us, map[int]int64{int(r0.Partition): r0.Offset + 1}); err != nil {
			t.Fatal(err)
		}
		_, findings, _, rep := s.e2eVerify(t)
		named := false
		for _, f := range rep.Findings {
			named = named || (f.Code == "missing_record" && f.Topic == s.us && f.Partition == r0.Partition && f.Offset == r0.Offset)
		}
		if !named {
			t.Fatalf("record dropped: findings %v, want missing_record naming %s/%d/%d", findings, s.us, r0.Partition, r0.Offset)
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestAuditE2EKill9 kills the router binary with SIGKILL at random moments
// while events flow, restarts it each time, drains, sinks and integrates:
// `audit verify` passes, a crash's duplicates reported as notes.
func TestAuditE2EKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	s := newE2EStack(t)
	ctx := testenv.Context(t, 3*time.Minute)
	bin := filepath.Join(t.TempDir(), "residency")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var logs testenv.SyncBuffer
	startRouter := func() *exec.Cmd {
		c := exec.Command(bin, "route", "--config", s.cfgFile)
		c.Stdout, c.Stderr = &logs, &logs
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	for round := range 3 {
		c := startRouter()
		before := s.produced
		s.e2eProduce(t, ctx, 10)
		waitFor(t, 30*time.Second, "the router to commit", func() bool {
			lag := e2eLag(t, ctx, s.a, s.group, s.ingest)
			return lag >= 0 && lag < int64(s.produced-before)
		})
		for deadline := time.Now().Add(time.Duration(100+rng.IntN(800)) * time.Millisecond); time.Now().Before(deadline); {
			s.e2eProduce(t, ctx, 10)
			time.Sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond)
		}
		_ = c.Process.Kill()
		_ = c.Wait()
		t.Logf("round %d: killed after %d events", round, s.produced)
	}
	c := startRouter()
	waitFor(t, 40*time.Second, "the router to drain", func() bool { return e2eLag(t, ctx, s.a, s.group, s.ingest) == 0 })
	_ = c.Process.Signal(os.Interrupt)
	_ = c.Wait()
	s.e2eSinkDrain(t, ctx)
	s.e2eIntegrate(t)
	code, findings, notes, rep := s.e2eVerify(t)
	if code != exitOK {
		show := rep.Findings
		if len(show) > 10 {
			show = show[:10]
		}
		t.Fatalf("verify after kill -9 = %d, findings %v (first %+v), notes %d", code, findings, show, len(notes))
	}
	byCode := map[string]int{}
	for _, c := range notes {
		byCode[c]++
	}
	for c := range byCode {
		if c != string(audit.CodeDuplicateLeaf) && c != string(audit.CodeDuplicateRecord) {
			t.Errorf("note %s after kill -9: %+v", c, rep.Notes)
		}
	}
	t.Logf("%d events, checked %+v, notes %v", s.produced, rep.Checked, byCode)
}
