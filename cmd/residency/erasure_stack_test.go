package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
)

// The acceptance tests of issue 15 run the commands (route, sink, purge,
// erase, residue, replay) in process on the dev stack: two real Kafka
// clusters, Redis, PostgreSQL, file:// buckets and the S3 server.

// erasureRules places US in region us (cluster a) and DE, FR in region eu
// (cluster b); every store named in the config is approved for its
// region.
const erasureRules = `
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE, FR]}
regions:
  - {name: us, cluster: a, topic: %s}
  - {name: eu, cluster: b, topic: %s}
stores:
  - {name: us-postgres, regions: [us]}
  - {name: us-files, regions: [us]}
  - {name: us-s3, regions: [us]}
  - {name: eu-files, regions: [eu]}
`

// erasureStack is a deployment on the dev stack: topics, the ruleset in
// Redis, a subject key, and a config file with the sinks a test names.
type erasureStack struct {
	a, b                                   *testenv.Kafka
	r                                      *testenv.Redis
	ingest, quarantine, deadLetter, us, eu string
	sinkQuarantine, group                  string
	rulesDB                                *redis.Rules
	admins                                 map[string]*kafka.Admin
	enc                                    *sample.Encoder
	keyFile, cfgFile                       string
	sinks                                  map[string]sinkSpec
	fa, fb                                 *kgo.Client
}

// sinkSpec is one sink of the config: its store's YAML and the group.
type sinkSpec struct {
	region, yaml, group, listen string
}

func newErasureStack(t *testing.T, ingestPartitions int) *erasureStack {
	t.Helper()
	s := &erasureStack{a: testenv.KafkaA(t), b: testenv.KafkaB(t), r: testenv.NewRedis(t), admins: map[string]*kafka.Admin{}, sinks: map[string]sinkSpec{}}
	s.ingest = s.a.Topic(t, "ingest", ingestPartitions)
	s.quarantine = s.a.Topic(t, "quarantine", 1)
	s.deadLetter = s.a.Topic(t, "deadletter", 1)
	s.sinkQuarantine = s.a.Topic(t, "sinkq", 1)
	s.us = s.a.Topic(t, "us", 2)
	s.eu = s.b.Topic(t, "eu", 2)
	s.group = testenv.Name(t, "routers")
	s.rulesDB = redis.NewRules(s.r.Client(t), s.r.Prefix)
	var err error
	if s.enc, err = sample.NewEncoder(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []*testenv.Kafka{s.a, s.b} {
		if s.admins[k.Name], err = kafka.NewAdmin(kafka.Cluster{Name: k.Name, Brokers: k.Brokers}); err != nil {
			t.Fatal(err)
		}
	}
	s.fa = s.a.Franz(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	s.fb = s.b.Franz(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	s.keyFile = writeFile(t, "subject.key", strings.Repeat("k", 48))
	ctx := testenv.Context(t, 10*time.Second)
	if _, err := s.rulesDB.Apply(ctx, []byte(fmt.Sprintf(erasureRules, s.us, s.eu)), rules.ApplyOptions{Author: "test"}); err != nil {
		t.Fatal(err)
	}
	return s
}

// addSink adds a sink of store (region us or eu) writing to the store
// whose YAML is storeYAML (postgres: {...} or objectstore: {...}).
func (s *erasureStack) addSink(t *testing.T, store, region, storeYAML string) {
	t.Helper()
	s.sinks[store] = sinkSpec{region: region, yaml: storeYAML, group: testenv.Name(t, "sink-"+store), listen: freeAddr(t)}
}

// writeConfig writes the config file (extra: more YAML at the end).
func (s *erasureStack) writeConfig(t *testing.T, extra string) string {
	t.Helper()
	var sinks strings.Builder
	for store, sp := range s.sinks {
		fmt.Fprintf(&sinks, "  - {store: %s, region: %s, consumer_group: %s, quarantine_topic: %s, batch_size: 20, batch_timeout: 50ms, write_timeout: 2s, drain_timeout: 3s, listen: %q, %s}\n",
			store, sp.region, sp.group, s.sinkQuarantine, sp.listen, sp.yaml)
	}
	cfg := "log_level: warn\n" + routeYAML{Listen: "off", A: s.a.Brokers, B: s.b.Brokers, Ingest: s.ingest, Group: s.group,
		Quarantine: s.quarantine, DeadLetter: s.deadLetter, Rest: fmt.Sprintf(`redis: {addr: %q, prefix: %q}
rules: {poll_interval: 100ms}
audit: {subject_key_file: %s}
erasure: {settle: 3s}
sinks:
%s%s`, s.r.Addr, s.r.Prefix, s.keyFile, sinks.String(), extra)}.String()
	s.cfgFile = filepath.Join(t.TempDir(), "residency.yaml")
	if err := os.WriteFile(s.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return s.cfgFile
}

// record is an ingest event: key the event id, the sample encoding.
func (s *erasureStack) record(t *testing.T, partition int32, id, user, country string, at time.Time) *kgo.Record {
	t.Helper()
	v, err := s.enc.Encode(sample.Event{ID: id, UserID: user, Country: country, OccurredAt: at})
	if err != nil {
		t.Fatal(err)
	}
	return &kgo.Record{Topic: s.ingest, Partition: partition, Key: []byte(id), Value: v, Timestamp: at}
}

// produce writes records (on cluster a unless their topic is s.eu).
func (s *erasureStack) produce(t *testing.T, recs ...*kgo.Record) {
	t.Helper()
	ctx := testenv.Context(t, 20*time.Second)
	for _, r := range recs {
		c := s.fa
		if r.Topic == s.eu {
			c = s.fb
		}
		if err := c.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// bg is a command running in the background.
type bg struct {
	name           string
	stop           context.CancelFunc
	done           chan int
	stdout, stderr *testenv.SyncBuffer
}

// start runs the residency command line args until stopped.
func start(t *testing.T, args ...string) *bg {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &bg{name: strings.Join(args, " "), stop: cancel, done: make(chan int, 1), stdout: &testenv.SyncBuffer{}, stderr: &testenv.SyncBuffer{}}
	go func() { b.done <- run(ctx, args, nil, b.stdout, b.stderr) }()
	t.Cleanup(func() { b.halt(t) })
	return b
}

// halt stops the command and returns its exit code (-1 if it had
// stopped already).
func (b *bg) halt(t *testing.T) int {
	t.Helper()
	if b.done == nil {
		return -1
	}
	b.stop()
	select {
	case c := <-b.done:
		b.done = nil
		return c
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop; stderr:\n%s", b.name, b.stderr.String())
	}
	return -1
}

// stopOK stops the command and fails the test unless it exited with
// exitOK.
func (b *bg) stopOK(t *testing.T) {
	t.Helper()
	if code := b.halt(t); code != exitOK {
		t.Fatalf("%s exited %d; stderr:\n%s", b.name, code, b.stderr.String())
	}
}

// topicLen is how many records topic holds now (from its log start), -1
// when admin cannot read it.
func topicLen(ctx context.Context, admin *kafka.Admin, topic string) int {
	got, err := admin.ReadAll(ctx, topic)
	if err != nil {
		return -1
	}
	return len(got)
}

// gauge is the value of the unlabelled (or fully labelled) series name in
// a /metrics page, "absent" when the page has none.
func gauge(metrics, name string) string {
	for _, l := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return "absent"
}

// alive fails the test if the command has exited.
func (b *bg) alive(t *testing.T) {
	t.Helper()
	select {
	case c := <-b.done:
		b.done = nil
		t.Fatalf("%s exited with %d; stderr:\n%s", b.name, c, b.stderr.String())
	default:
	}
}

// cmd runs one command to its end.
func cmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errs testenv.SyncBuffer
	code = run(testenv.Context(t, 3*time.Minute), args, nil, &out, &errs)
	return code, out.String(), errs.String()
}

// waitFor polls cond every 100ms for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool, running ...*bg) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(100 * time.Millisecond) {
		for _, b := range running {
			b.alive(t)
		}
		if time.Now().After(deadline) {
			var logs strings.Builder
			for _, b := range running {
				fmt.Fprintf(&logs, "--- %s:\n%s\n", b.name, b.stderr.String())
			}
			t.Fatalf("timed out waiting for %s\n%s", what, logs.String())
		}
	}
}

// lag is how many records of topic (on cluster) group has not committed;
// -1 when it cannot tell.
func (s *erasureStack) lag(t *testing.T, cluster, group, topic string) int64 {
	t.Helper()
	n, err := s.admins[cluster].Lag(testenv.Context(t, 10*time.Second), group, topic)
	if err != nil {
		return -1
	}
	return n
}

// keys returns the keys of every record of topic on cluster (as the
// broker holds them now, from the log start).
func (s *erasureStack) keys(t *testing.T, cluster, topic string) map[string]int {
	t.Helper()
	k := s.a
	if cluster == "b" {
		k = s.b
	}
	out := map[string]int{}
	for _, r := range k.ReadTopic(t, testenv.Context(t, 60*time.Second), topic) {
		out[string(r.Key)]++
	}
	return out
}

// watermarks returns the log start and high-water mark per partition.
func (s *erasureStack) watermarks(t *testing.T, cluster, topic string) (low, high map[int]int64) {
	t.Helper()
	low, high, err := s.admins[cluster].Watermarks(testenv.Context(t, 10*time.Second), topic)
	if err != nil {
		t.Fatal(err)
	}
	return low, high
}

// committed returns group's committed offsets on topic.
func (s *erasureStack) committed(t *testing.T, cluster, group, topic string) map[int]int64 {
	t.Helper()
	c, err := s.admins[cluster].CommittedOffsets(testenv.Context(t, 10*time.Second), group, topic)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// openStore opens a store of the test as the commands do, to read it.
func openStore(t *testing.T, pgDSN, url string) erasure.RowStore {
	t.Helper()
	ctx := testenv.Context(t, 20*time.Second)
	if pgDSN != "" {
		st, err := postgres.Open(ctx, postgres.Config{DSN: pgDSN})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close(context.Background()) })
		return st
	}
	st, err := objectstore.Open(ctx, objectstore.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(context.Background()) })
	return st
}

// rows returns every row of st by event id (Object left out: a rewritten
// object may be named alike or not).
func rows(t *testing.T, st erasure.Store) map[string]erasure.Row {
	t.Helper()
	out := map[string]erasure.Row{}
	if err := st.Scan(testenv.Context(t, 30*time.Second), func(r erasure.Row) error {
		out[r.EventID] = r
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
