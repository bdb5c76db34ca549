package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	segkafka "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

// topicsDeployment is a config and a ruleset over both dev-stack clusters
// whose every topic name is this test's own: the ingest topic, the
// router's and a sink's quarantine, the dead-letter, the pinned topics of
// two regions (one per cluster), their hold topics (the regions' names
// are unique), the ruleset history and the audit topic.
type topicsDeployment struct {
	a, b                                                  *testenv.Kafka
	redis                                                 *testenv.Redis
	cfg, rules                                            string
	ingest, quarantine, deadLetter, sinkQ, history, audit string
	regionA, regionB, pinnedA, pinnedB                    string
}

func newTopicsDeployment(t *testing.T, extra string) *topicsDeployment {
	t.Helper()
	d := &topicsDeployment{a: testenv.KafkaA(t), b: testenv.KafkaB(t), redis: testenv.NewRedis(t)}
	n := func(p string) string { return testenv.Name(t, p) }
	d.ingest, d.quarantine, d.deadLetter, d.sinkQ, d.history, d.audit = n("in"), n("quar"), n("dl"), n("sq"), n("hist"), n("aud")
	d.regionA, d.regionB = n("ra"), n("rb")
	d.pinnedA, d.pinnedB = n("pa"), n("pb")
	d.a.DeleteAfter(t, d.ingest, d.quarantine, d.deadLetter, d.sinkQ, d.history, d.audit, d.pinnedA, "residency.hold."+d.regionA, "residency.hold."+d.regionB)
	d.b.DeleteAfter(t, d.pinnedB)
	d.rules = writeFile(t, "rules.yaml", fmt.Sprintf(`
jurisdictions:
  - {name: US, region: %s, countries: [US]}
  - {name: EU, region: %s, countries: [DE]}
regions:
  - {name: %s, cluster: a, topic: %s}
  - {name: %s, cluster: b, topic: %s}
stores:
  - {name: us-postgres, regions: [%s]}
`, d.regionA, d.regionB, d.regionA, d.pinnedA, d.regionB, d.pinnedB, d.regionA))
	d.cfg = writeFile(t, "residency.yaml", fmt.Sprintf(`
kafka:
  clusters:
    a: {brokers: [%q]}
    b: {brokers: [%q]}
  ingest_cluster: a
router: {ingest_topics: [%s], quarantine_topic: %s, dead_letter_topic: %s}
redis: {addr: %q, prefix: %q}
rules: {history_topic: %s}
audit: {topic: %s}
sinks:
  - {store: us-postgres, region: %s, quarantine_topic: %s, postgres: {dsn: "postgres://x@127.0.0.1:1/db"}}
topics:
  replication_factor: 1
  ingest: {partitions: 4}
  pinned: {partitions: 3}
%s`, d.a.Brokers[0], d.b.Brokers[0], d.ingest, d.quarantine, d.deadLetter, d.redis.Addr, d.redis.Prefix, d.history, d.audit,
		d.regionA, d.sinkQ, extra))
	return d
}

// topicsRun runs `residency topics SUB --config CFG --output json ARGS...`
// and returns its exit code and report.
func (d *topicsDeployment) run(t *testing.T, sub string, args ...string) (int, topicsReport, string) {
	t.Helper()
	code, out, errs := cli(t, append([]string{"topics", sub, "--config", d.cfg, "--output", "json"}, args...)...)
	var r topicsReport
	if out != "" {
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("topics %s: not JSON: %v\n%s\n%s", sub, err, out, errs)
		}
	}
	return code, r, errs
}

// actions returns each topic's action in r, by cluster/topic.
func actions(r topicsReport) map[string]string {
	out := map[string]string{}
	for _, cr := range r.Clusters {
		for _, t := range cr.Topics {
			out[cr.Name+"/"+t.Spec.Name] = t.Action
		}
	}
	return out
}

// TestTopicsPlanApplyCheck is issue 17's acceptance for topics, on both
// real clusters: from nothing, plan shows every topic the config and the
// ruleset need on its cluster, check fails, apply creates them, check
// passes; a topic deleted, one with fewer partitions and one with the
// wrong configs are each found by check and repaired by apply, which never
// lowers partitions and never changes an ingest topic that exists.
func TestTopicsPlanApplyCheck(t *testing.T) {
	addr := freeAddr(t)
	d := newTopicsDeployment(t, fmt.Sprintf("http: {listen: %q}\n", addr))
	ctx := testenv.Context(t, 2*time.Minute)
	want := map[string]string{
		"a/" + d.ingest: "ingest", "a/" + d.quarantine: "quarantine", "a/" + d.deadLetter: "dead-letter", "a/" + d.sinkQ: "sink-quarantine",
		"a/" + d.pinnedA: "pinned", "b/" + d.pinnedB: "pinned", "a/residency.hold." + d.regionA: "hold", "a/residency.hold." + d.regionB: "hold",
		"a/" + d.history: "rulesets", "a/" + d.audit: "audit",
	}

	code, plan, errs := d.run(t, "plan", "--rules", d.rules)
	if code != exitOK || !strings.HasPrefix(plan.Ruleset, "file ") {
		t.Fatalf("plan: exit %d, %+v, %s", code, plan, errs)
	}
	got := actions(plan)
	kinds := map[string]string{}
	for _, cr := range plan.Clusters {
		for _, tp := range cr.Topics {
			kinds[cr.Name+"/"+tp.Spec.Name] = tp.Kind
		}
	}
	for k, kind := range want {
		if got[k] != actionCreate || kinds[k] != kind {
			t.Errorf("plan: %s: %s %s, want create %s", k, got[k], kinds[k], kind)
		}
	}
	if len(got) != len(want) {
		t.Errorf("plan has %d topics, want %d: %v", len(got), len(want), got)
	}
	// The text form names every topic and what it is for.
	_, text, _ := cli(t, "topics", "plan", "--config", d.cfg, "--rules", d.rules)
	for _, s := range []string{"cluster a (1 broker)", "cluster b (1 broker)", "create  " + d.pinnedB, "pinned topic of region " + d.regionB,
		"retention.ms=2592000000 (30d)", "message.timestamp.type=CreateTime", "cleanup.policy=compact", "10 topics: 0 as wanted, 10 missing"} {
		if !strings.Contains(text, s) {
			t.Errorf("plan text lacks %q:\n%s", s, text)
		}
	}

	if code, _, _ := d.run(t, "check", "--rules", d.rules); code != exitFailure {
		t.Fatalf("check from nothing: exit %d, want 1", code)
	}
	code, applied, errs := d.run(t, "apply", "--rules", d.rules)
	if code != exitOK || !applied.OK {
		t.Fatalf("apply: exit %d, %+v, %s", code, applied, errs)
	}
	for _, cr := range applied.Clusters {
		for _, tp := range cr.Topics {
			if tp.Applied != "created" || tp.Action != actionOK {
				t.Errorf("apply: %s/%s: %+v", cr.Name, tp.Spec.Name, tp)
			}
		}
	}
	if code, r, errs := d.run(t, "check", "--rules", d.rules); code != exitOK || !r.OK {
		t.Fatalf("check after apply: exit %d, %+v, %s", code, r, errs)
	}
	d.routeOneEvent(t, addr)

	// What apply created, as the clusters have it.
	adminA, err := kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: d.a.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	adminB, err := kafka.NewAdmin(kafka.Cluster{Name: "b", Brokers: d.b.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	st, err := adminA.DescribeTopics(ctx, d.quarantine, d.history, d.audit, d.ingest)
	if err != nil {
		t.Fatal(err)
	}
	if q := st[d.quarantine]; q.Partitions != 3 || q.Configs["retention.ms"] != "2592000000" || q.Configs["cleanup.policy"] != "delete" ||
		q.Configs["message.timestamp.type"] != "CreateTime" || q.Configs["min.insync.replicas"] != "1" {
		t.Errorf("quarantine as created: %+v", q)
	}
	if h := st[d.history]; h.Partitions != 1 || h.Configs["cleanup.policy"] != "compact" {
		t.Errorf("history as created: %+v", h)
	}
	if a := st[d.audit]; a.Partitions != 1 || a.Configs["cleanup.policy"] != "delete" {
		t.Errorf("audit as created: %+v", a)
	}
	if in := st[d.ingest]; in.Partitions != 4 {
		t.Errorf("ingest as created: %+v", in)
	}
	stB, err := adminB.DescribeTopics(ctx, d.pinnedB)
	if err != nil || stB[d.pinnedB].Partitions != 3 || stB[d.pinnedB].Configs["retention.ms"] != "604800000" {
		t.Fatalf("pinned topic of cluster b: %+v, %v", stB, err)
	}

	// Drift: the pinned topic of cluster b deleted, the one of cluster a
	// recreated with one partition, the quarantine's retention shortened
	// and its timestamps switched to log-append time, the ingest topic's
	// retention changed by its producers.
	deleteTopics(t, d.b, d.pinnedB)
	deleteTopics(t, d.a, d.pinnedA)
	if err := adminA.CreateTopics(ctx, 1, 1, d.pinnedA); err != nil {
		t.Fatal(err)
	}
	if err := adminA.AlterTopic(ctx, d.quarantine, map[string]string{"retention.ms": "86400000", "message.timestamp.type": "LogAppendTime"}, 0); err != nil {
		t.Fatal(err)
	}
	if err := adminA.AlterTopic(ctx, d.ingest, map[string]string{"retention.ms": "3600000"}, 0); err != nil {
		t.Fatal(err)
	}
	code, check, _ := d.run(t, "check", "--rules", d.rules)
	got = actions(check)
	if code != exitFailure || got["b/"+d.pinnedB] != actionCreate || got["a/"+d.pinnedA] != actionAlter || got["a/"+d.quarantine] != actionAlter || got["a/"+d.ingest] != actionOK {
		t.Fatalf("check after drift: exit %d, %v", code, got)
	}
	_, text, _ = cli(t, "topics", "check", "--config", d.cfg, "--rules", d.rules)
	for _, s := range []string{"missing  " + d.pinnedB, "1 partition, want at least 3 (adding partitions moves keys",
		"retention.ms=86400000 (1d), want 2592000000 (30d)", "message.timestamp.type=LogAppendTime, want CreateTime"} {
		if !strings.Contains(text, s) {
			t.Errorf("check text lacks %q:\n%s", s, text)
		}
	}
	if code, r, errs := d.run(t, "apply", "--rules", d.rules); code != exitOK || !r.OK {
		t.Fatalf("apply after drift: exit %d, %+v, %s", code, r, errs)
	}
	st, err = adminA.DescribeTopics(ctx, d.pinnedA, d.quarantine, d.ingest)
	if err != nil {
		t.Fatal(err)
	}
	if st[d.pinnedA].Partitions != 3 || st[d.quarantine].Configs["retention.ms"] != "2592000000" || st[d.quarantine].Configs["message.timestamp.type"] != "CreateTime" {
		t.Errorf("after apply: %+v %+v", st[d.pinnedA], st[d.quarantine])
	}
	if st[d.ingest].Configs["retention.ms"] != "3600000" {
		t.Errorf("apply changed the ingest topic's retention: %+v", st[d.ingest])
	}
	// More partitions than wanted and a longer retention are kept.
	if err := adminA.AlterTopic(ctx, d.pinnedA, map[string]string{"retention.ms": "-1"}, 5); err != nil {
		t.Fatal(err)
	}
	if code, r, _ := d.run(t, "apply", "--rules", d.rules); code != exitOK || !r.OK {
		t.Fatalf("apply with a larger topic: exit %d, %+v", code, r)
	}
	st, _ = adminA.DescribeTopics(ctx, d.pinnedA)
	if st[d.pinnedA].Partitions != 5 || st[d.pinnedA].Configs["retention.ms"] != "-1" {
		t.Errorf("apply lowered a topic: %+v", st[d.pinnedA])
	}
}

// deleteTopics deletes topics on k (as an operator would by mistake) and
// waits until the cluster no longer has them.
// routeOneEvent starts `residency route` with the deployment's config and
// ruleset on the topics apply created: it becomes ready, routes a DE event
// to the pinned topic of cluster b, and stops cleanly.
func (d *topicsDeployment) routeOneEvent(t *testing.T, addr string) {
	t.Helper()
	ctx := testenv.Context(t, time.Minute)
	rt := start(t, "route", "--config", d.cfg, "--rules", d.rules)
	waitFor(t, 30*time.Second, "route ready", func() bool { code, _ := get(addr, "/readyz"); return code == http.StatusOK }, rt)
	enc, err := sample.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	v, err := enc.Encode(sample.Event{ID: "e-1", UserID: "u-1", Country: "DE"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "a", Brokers: d.a.Brokers}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Publish(ctx, stream.Message{Topic: d.ingest, Key: []byte("u-1"), Value: v}); err != nil {
		t.Fatal(err)
	}
	// franz-go learns of the topic apply just created by itself (kafka-go's
	// clients answer metadata from a cache for a few seconds).
	cl := d.b.Franz(t, kgo.ConsumeTopics(d.pinnedB), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var got []*kgo.Record
	for len(got) == 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("no event in the pinned topic of cluster b: %v\n%s", ctx.Err(), rt.stderr.String())
		}
		got = append(got, fs.Records()...)
	}
	if len(got) != 1 || string(got[0].Key) != "u-1" {
		t.Fatalf("pinned topic of cluster b holds %d records: %+v", len(got), got)
	}
	rt.stopOK(t)
}

func deleteTopics(t *testing.T, k *testenv.Kafka, names ...string) {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	c := &segkafka.Client{Addr: segkafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
	if _, err := c.DeleteTopics(ctx, &segkafka.DeleteTopicsRequest{Topics: names}); err != nil {
		t.Fatal(err)
	}
	a, err := kafka.NewAdmin(kafka.Cluster{Name: k.Name, Brokers: k.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "topics deleted", func() bool {
		st, err := a.DescribeTopics(ctx, names...)
		if err != nil {
			return false
		}
		for _, n := range names {
			if st[n].Exists {
				return false
			}
		}
		return true
	})
}

// TestTopicsRulesetFromRedisAndProblems: without --rules, the ruleset is
// the current version in the config's Redis; a region on a cluster the
// config lacks, and a replication factor above the brokers, are problems
// check fails on, each naming the field and what to do; a cluster that
// does not answer is exit 3.
func TestTopicsRulesetFromRedisAndProblems(t *testing.T) {
	d := newTopicsDeployment(t, "")
	ctx := testenv.Context(t, time.Minute)
	if code, _, errs := d.run(t, "plan"); code != exitFailure || !strings.Contains(errs, "no ruleset has been applied") {
		t.Fatalf("plan without a ruleset: exit %d, %s", code, errs)
	}
	client := d.redis.Client(t)
	data := strings.Replace(mustRead(t, d.rules), "cluster: b", "cluster: c", 1)
	if _, err := redis.NewRules(client, d.redis.Prefix).Apply(ctx, []byte(data), rules.ApplyOptions{Author: "t"}); err != nil {
		t.Fatal(err)
	}
	code, r, errs := d.run(t, "check")
	if code != exitFailure || !strings.Contains(r.Ruleset, "version 1 in Redis") {
		t.Fatalf("check: exit %d, %+v, %s", code, r, errs)
	}
	if len(r.Problems) != 1 || r.Problems[0].Field != "kafka.clusters" || !strings.Contains(r.Problems[0].Message, `cluster "c"`) ||
		!strings.Contains(r.Problems[0].Message, "kafka: {clusters: {c: {brokers: [HOST:PORT]}}}") {
		t.Errorf("problems %+v", r.Problems)
	}

	rf3 := newTopicsDeployment(t, "")
	cfg := strings.Replace(mustRead(t, rf3.cfg), "replication_factor: 1", "replication_factor: 3", 1)
	rf3.cfg = writeFile(t, "rf3.yaml", cfg)
	code, r, _ = rf3.run(t, "plan", "--rules", rf3.rules)
	if code != exitOK || len(r.Problems) == 0 || r.Problems[0].Field != "topics.replication_factor" || !strings.Contains(r.Problems[0].Message, "1 broker(s) of cluster a") {
		t.Errorf("plan with replication factor 3: exit %d, %+v", code, r.Problems)
	}

	down := newTopicsDeployment(t, "")
	down.cfg = writeFile(t, "down.yaml", strings.Replace(mustRead(t, down.cfg), d.b.Brokers[0], "127.0.0.1:1", 1))
	if code, r, errs := down.run(t, "check", "--rules", down.rules, "--timeout", "5s"); code != exitNotReady || r.OK {
		t.Errorf("check with cluster b down: exit %d, %+v, %s", code, r, errs)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
