package router_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/redis"

	goredis "github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// stack is a routing set-up on the two test clusters: ingest, quarantine,
// dead-letter and the us/in pinned topics on A; eu/uk pinned topics on B.
type stack struct {
	a, b       *testenv.Kafka
	ingest     string
	quarantine string
	deadLetter string
	pinned     map[string]string // region -> topic
	cluster    map[string]string // region -> cluster name
	group      string
	rules      *rulesBox
	enc        *sample.Encoder
	fields     *schemas.Extractor
}

const ingestPartitions = 4

func newStack(t testing.TB) *stack {
	t.Helper()
	s := &stack{a: testenv.KafkaA(t), b: testenv.KafkaB(t), rules: &rulesBox{}, pinned: map[string]string{}, cluster: map[string]string{}}
	s.ingest = s.a.Topic(t, "ingest", ingestPartitions)
	s.quarantine = s.a.Topic(t, "quarantine", 2)
	s.deadLetter = s.a.Topic(t, "deadletter", 2)
	for _, r := range []struct{ region, cluster string }{{"us", "a"}, {"in", "a"}, {"eu", "b"}, {"uk", "b"}} {
		k := s.a
		if r.cluster == "b" {
			k = s.b
		}
		s.pinned[r.region] = k.Topic(t, "pinned_"+r.region, 3)
		s.cluster[r.region] = r.cluster
	}
	s.group = testenv.Name(t, "routers")
	var err error
	if s.enc, err = sample.NewEncoder(); err != nil {
		t.Fatal(err)
	}
	if s.fields, err = schemas.NewExtractor(schemas.ExtractorConfig{}); err != nil {
		t.Fatal(err)
	}
	s.rules.set(mustRulesFrom(t, s.rulesYAML(), 1), nil)
	return s
}

// rulesYAML is testRules with the stack's pinned topic names.
func (s *stack) rulesYAML() string {
	src := testRules
	for region, topic := range s.pinned {
		src = strings.Replace(src, "topic: pinned."+region+"}", "topic: "+topic+"}", 1)
	}
	return src
}

func (s *stack) clusterOf(name string) *testenv.Kafka {
	if name == "b" {
		return s.b
	}
	return s.a
}

// newRouter returns a router named instance with its own reader and writers.
// mod, if not nil, adjusts the config first.
func (s *stack) newRouter(t testing.TB, instance string, mod func(*router.Config)) (*router.Router, *kafka.Reader) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	rd, err := kafka.NewReader(kafka.ReaderConfig{
		Cluster: kafka.Cluster{Name: "a", Brokers: s.a.Brokers}, GroupID: s.group, Topics: []string{s.ingest},
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 5 * time.Second, HeartbeatInterval: 500 * time.Millisecond,
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Close() })
	pubs := map[string]stream.Publisher{}
	for _, c := range []*testenv.Kafka{s.a, s.b} {
		w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: c.Name, Brokers: c.Brokers}, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Close() })
		pubs[c.Name] = w
	}
	cfg := router.Config{
		Subscriber: rd, Publishers: pubs, IngestCluster: "a",
		QuarantineTopic: s.quarantine, DeadLetterTopic: s.deadLetter,
		Fields: s.fields, Rules: s.rules, Instance: instance, Logger: log,
		RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond, GiveUp: 20 * time.Second,
		RulesPoll: 20 * time.Millisecond, BatchSize: 100, MaxValueBytes: 100 << 10,
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := router.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, rd
}

func runRouter(t testing.TB, r *router.Router) (stop func() error) {
	return testenv.Start(t, 30*time.Second, r.Run)
}

// produced is one produced event and where it must end up.
type produced struct {
	id, key string
	value   []byte
	dest    string // "region:<r>", "quarantine:<reason>" or "deadletter:<reason>"
}

var jurisdictionCountries = map[string][]string{"us": {"US", "PR"}, "eu": {"DE", "FR", "IE"}, "uk": {"GB"}, "in": {"IN"}}

// goodEvents returns n routable events over the four regions, keyed by user.
func (s *stack) goodEvents(t testing.TB, prefix string, n int) []produced {
	t.Helper()
	regions := []string{"us", "eu", "uk", "in"}
	var out []produced
	for i := range n {
		region := regions[i%len(regions)]
		cs := jurisdictionCountries[region]
		user := fmt.Sprintf("%s-user-%s-%d", prefix, region, i%5)
		id := fmt.Sprintf("%s-%d", prefix, i)
		v, err := s.enc.Encode(sample.Event{ID: id, UserID: user, Country: cs[i%len(cs)]})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, produced{id: id, key: user, value: v, dest: "region:" + region})
	}
	return out
}

func (s *stack) produce(t testing.TB, ctx context.Context, samples []produced) {
	t.Helper()
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "a", Brokers: s.a.Brokers}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	msgs := make([]stream.Message, len(samples))
	for i, sm := range samples {
		msgs[i] = stream.Message{Topic: s.ingest, Key: []byte(sm.key), Value: sm.value,
			Headers: []stream.Header{{Key: "event-id", Value: []byte(sm.id)}}}
	}
	if err := w.Publish(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// waitCommitted waits until the group has committed every ingest offset.
func (s *stack) waitCommitted(t testing.TB, ctx context.Context) {
	t.Helper()
	c := &kafkago.Client{Addr: kafkago.TCP(s.a.Brokers...), Timeout: 10 * time.Second}
	var high, committed map[int]int64
	for {
		var req []kafkago.OffsetRequest
		for p := range ingestPartitions {
			req = append(req, kafkago.LastOffsetOf(p))
		}
		lo, err1 := c.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{s.ingest: req}})
		of, err2 := c.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: s.group, Topics: map[string][]int{s.ingest: {0, 1, 2, 3}}})
		if err1 == nil && err2 == nil {
			high = map[int]int64{}
			for _, p := range lo.Topics[s.ingest] {
				high[p.Partition] = p.LastOffset
			}
			committed = map[int]int64{}
			for _, p := range of.Topics[s.ingest] {
				committed[p.Partition] = p.CommittedOffset
			}
			done := len(high) == ingestPartitions
			for p, h := range high {
				if h > 0 && committed[p] < h {
					done = false
				}
			}
			if done {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ingest offsets not all committed (end %v, committed %v): %v %v %v", high, committed, ctx.Err(), err1, err2)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readAll reads every record of topic on k.
func readAll(t *testing.T, ctx context.Context, k *testenv.Kafka, topic string) []stream.Message {
	t.Helper()
	c := &kafkago.Client{Addr: kafkago.TCP(k.Brokers...), Timeout: 10 * time.Second}
	md, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(md.Topics) != 1 {
		t.Fatalf("metadata of %s: %v", topic, err)
	}
	var out []stream.Message
	for _, p := range md.Topics[0].Partitions {
		lo, err := c.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: {kafkago.LastOffsetOf(p.ID)}}})
		if err != nil {
			t.Fatalf("list offsets of %s: %v", topic, err)
		}
		last := lo.Topics[topic][0].LastOffset
		if last == 0 {
			continue
		}
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: k.Brokers, Topic: topic, Partition: p.ID, MaxWait: 200 * time.Millisecond})
		for {
			m, err := r.ReadMessage(ctx) // no group: nothing is committed
			if err != nil {
				_ = r.Close()
				t.Fatalf("read %s/%d: %v", topic, p.ID, err)
			}
			hs := make([]stream.Header, len(m.Headers))
			for i, h := range m.Headers {
				hs[i] = stream.Header{Key: h.Key, Value: h.Value}
			}
			out = append(out, stream.Message{Topic: topic, Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value, Headers: hs})
			if m.Offset >= last-1 {
				break
			}
		}
		_ = r.Close()
	}
	return out
}

// placement is where each event id was found ("region:us", ...) and how often.
type placement map[string][]string

func (s *stack) collect(t *testing.T, ctx context.Context) (placement, map[string]stream.Message) {
	t.Helper()
	found := placement{}
	byID := map[string]stream.Message{}
	add := func(k *testenv.Kafka, topic, label string, withReason bool) {
		for _, m := range readAll(t, ctx, k, topic) {
			id, _ := router.HeaderValue(m.Headers, "event-id")
			l := label
			if withReason {
				r, _ := router.HeaderValue(m.Headers, router.HeaderReason)
				l += ":" + string(r)
			}
			found[string(id)] = append(found[string(id)], l)
			byID[string(id)] = m
		}
	}
	for region, topic := range s.pinned {
		add(s.clusterOf(s.cluster[region]), topic, "region:"+region, false)
	}
	// A pinned topic name must not exist on the other cluster either.
	add(s.a, s.quarantine, "quarantine", true)
	add(s.a, s.deadLetter, "deadletter", true)
	return found, byID
}

// checkPlacement asserts every sample is at its destination at least once
// (exactly once when exact) and nowhere else.
func checkPlacement(t *testing.T, samples []produced, found placement, exact bool) {
	t.Helper()
	want := map[string]string{}
	for _, sm := range samples {
		want[sm.id] = sm.dest
	}
	for id, places := range found {
		w, ok := want[id]
		if !ok {
			t.Errorf("unexpected event %q found in %v", id, places)
			continue
		}
		for _, p := range places {
			if p != w {
				t.Errorf("event %s found in %s, want only %s", id, p, w)
			}
		}
		if exact && len(places) != 1 {
			t.Errorf("event %s found %d times", id, len(places))
		}
	}
	for id, w := range want {
		if len(found[id]) == 0 {
			t.Errorf("event %s lost (want %s)", id, w)
		}
	}
}

func TestIntegrationRoutesAcrossClusters(t *testing.T) {
	s := newStack(t)
	ctx := testenv.Context(t, 90*time.Second)
	samples := s.goodEvents(t, "good", 400)
	// Bad input, each class with its reason.
	bad := func(id, key string, v []byte, dest string) produced {
		return produced{id: id, key: key, value: v, dest: dest}
	}
	noCountry, _ := s.enc.Encode(sample.Event{ID: "q-null", UserID: "u-null"})
	unknown, _ := s.enc.Encode(sample.Event{ID: "q-zz", UserID: "u-zz", Country: "ZZ"})
	notCode, _ := s.enc.Encode(sample.Event{ID: "q-usa", UserID: "u-usa", Country: "USA"})
	good, _ := s.enc.Encode(sample.Event{ID: "x", UserID: "u", Country: "US"})
	unknownSchema := append([]byte{0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8}, good[10:]...)
	samples = append(samples,
		bad("q-null", "u-null", noCountry, "quarantine:no_country"),
		bad("q-zz", "u-zz", unknown, "quarantine:unknown_country"),
		bad("q-usa", "u-usa", notCode, "quarantine:unknown_country"),
		bad("d-magic", "k", []byte("{\"json\": true}"), "deadletter:bad_magic"),
		bad("d-trunc", "k", good[:len(good)/2], "deadletter:truncated"),
		bad("d-schema", "k", unknownSchema, "deadletter:unknown_schema"),
		bad("d-empty", "k", nil, "deadletter:empty_value"),
		bad("d-large", "k", append(append([]byte{}, good...), make([]byte, 200<<10)...), "deadletter:too_large"),
	)
	s.produce(t, ctx, samples[:200])
	r, _ := s.newRouter(t, "router-1", nil)
	stop := runRouter(t, r)
	s.produce(t, ctx, samples[200:])
	s.waitCommitted(t, ctx)
	if err := r.Ready(); err != nil {
		t.Errorf("Ready while routing: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	found, byID := s.collect(t, ctx)
	checkPlacement(t, samples, found, true)

	lastOffset := map[string]int64{}
	for _, sm := range samples {
		m, ok := byID[sm.id]
		if !ok {
			continue
		}
		if sm.dest == "deadletter:too_large" {
			// The oversized value is not copied (it would block the write);
			// its size and source coordinates say where it is.
			if m.Value != nil || string(m.Key) != sm.key {
				t.Errorf("event %s: too_large record has a %d-byte value or key %q", sm.id, len(m.Value), m.Key)
			}
			if v, _ := router.HeaderValue(m.Headers, router.HeaderOmittedBytes); len(v) == 0 {
				t.Errorf("event %s: too_large record lacks %s", sm.id, router.HeaderOmittedBytes)
			}
		} else if string(m.Value) != string(sm.value) || string(m.Key) != sm.key {
			t.Errorf("event %s: key or value bytes changed", sm.id)
		}
		for _, h := range []string{router.HeaderSourceTopic, router.HeaderSourcePartition, router.HeaderSourceOffset, router.HeaderRouter} {
			if _, ok := router.HeaderValue(m.Headers, h); !ok {
				t.Errorf("event %s lacks header %s", sm.id, h)
			}
		}
		if strings.HasPrefix(sm.dest, "region:") {
			region := strings.TrimPrefix(sm.dest, "region:")
			if v, _ := router.HeaderValue(m.Headers, router.HeaderRegion); string(v) != region {
				t.Errorf("event %s: region header %q", sm.id, v)
			}
			if v, _ := router.HeaderValue(m.Headers, router.HeaderRulesetVersion); string(v) != "1" {
				t.Errorf("event %s: ruleset version header %q", sm.id, v)
			}
			// Per-key order: a key's events sit in one partition in source order.
			var off int64
			v, _ := router.HeaderValue(m.Headers, router.HeaderSourceOffset)
			fmt.Sscan(string(v), &off)
			if last, ok := lastOffset[sm.key]; ok && off <= last {
				t.Errorf("key %s: order lost", sm.key)
			}
			lastOffset[sm.key] = off
		}
		if strings.HasPrefix(sm.dest, "deadletter:") {
			if v, _ := router.HeaderValue(m.Headers, router.HeaderError); len(v) == 0 {
				t.Errorf("dead-letter %s lacks the error header", sm.id)
			}
		}
	}
	// Same key, same pinned partition.
	keyPart := map[string]int{}
	for _, sm := range samples {
		if m, ok := byID[sm.id]; ok && strings.HasPrefix(sm.dest, "region:") {
			if p, seen := keyPart[sm.key]; seen && p != m.Partition {
				t.Errorf("key %s in partitions %d and %d", sm.key, p, m.Partition)
			}
			keyPart[sm.key] = m.Partition
		}
	}
}

// crashingPub publishes part of a batch and then fails forever, like a
// process that died mid-flush. It counts records, not calls: the router's
// senders may hand it any number of batches in one call.
type crashingPub struct {
	stream.Publisher
	after   int32 // records published before the crash
	records atomic.Int32
	crashed atomic.Bool
}

func (p *crashingPub) Publish(ctx context.Context, msgs ...stream.Message) error {
	if !p.crashed.Load() && p.records.Add(int32(len(msgs))) <= p.after {
		return p.Publisher.Publish(ctx, msgs...)
	}
	if !p.crashed.Swap(true) && len(msgs) > 1 {
		_ = p.Publisher.Publish(ctx, msgs[:len(msgs)/2]...)
	}
	return errors.New("crashed")
}

func TestIntegrationCrashAndRestart(t *testing.T) {
	s := newStack(t)
	ctx := testenv.Context(t, 120*time.Second)
	samples := s.goodEvents(t, "crash", 1200)
	s.produce(t, ctx, samples)

	var crash *crashingPub
	r1, rd1 := s.newRouter(t, "router-1", func(c *router.Config) {
		crash = &crashingPub{Publisher: c.Publishers["b"], after: 100}
		c.Publishers["b"] = crash
		c.GiveUp = 300 * time.Millisecond
		c.ShutdownTimeout = 300 * time.Millisecond
	})
	// The router never exits for a cluster that stays down: it reports it
	// (past give_up) and, stopped, says what it leaves uncommitted.
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r1.Run(rctx) }()
	testenv.Eventually(t, 30*time.Second, "cluster b reported down", func() bool {
		err := r1.Ready()
		return err != nil && strings.Contains(err.Error(), "cluster b down")
	})
	cancel()
	err := <-done
	if !errors.Is(err, router.ErrUncommitted) {
		t.Fatalf("crashed router's Run = %v, want ErrUncommitted", err)
	}
	_ = rd1.Close() // no commit
	if !crash.crashed.Load() {
		t.Fatal("the router never reached the crash")
	}

	r2, _ := s.newRouter(t, "router-2", nil)
	stop := runRouter(t, r2)
	s.waitCommitted(t, ctx)
	if err := stop(); err != nil {
		t.Fatalf("Run after restart: %v", err)
	}
	found, _ := s.collect(t, ctx)
	checkPlacement(t, samples, found, false)
	dups := 0
	for _, p := range found {
		dups += len(p) - 1
	}
	t.Logf("%d events redelivered after the crash (allowed: at-least-once)", dups)
}

func TestIntegrationTwoRoutersRebalance(t *testing.T) {
	s := newStack(t)
	ctx := testenv.Context(t, 120*time.Second)
	samples := s.goodEvents(t, "rebal", 2000)
	r1, _ := s.newRouter(t, "router-1", nil)
	stop1 := runRouter(t, r1)
	// The second half is produced once router-2 holds partitions, so that
	// it has events to route however long the rebalance takes (on a loaded
	// host router-1 could route all 2000 before router-2 was in the group).
	produced, r2in := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < len(samples); i += 100 {
			if i == len(samples)/2 {
				select {
				case <-r2in:
				case <-ctx.Done():
					return
				}
			}
			s.produce(t, ctx, samples[i:i+100])
			time.Sleep(40 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	r2, rd2 := s.newRouter(t, "router-2", nil) // joins: rebalance while routing
	stop2 := runRouter(t, r2)
	testenv.Eventually(t, 60*time.Second, "router-2 in the group", rd2.Joined)
	close(r2in)
	<-produced
	s.waitCommitted(t, ctx)
	if err := stop1(); err != nil {
		t.Fatalf("router-1: %v", err)
	}
	if err := stop2(); err != nil {
		t.Fatalf("router-2: %v", err)
	}
	found, _ := s.collect(t, ctx)
	checkPlacement(t, samples, found, false)
	// Both members routed something: the group split the partitions.
	by := map[string]int{}
	for _, region := range []string{"us", "eu", "uk", "in"} {
		for _, m := range readAll(t, ctx, s.clusterOf(s.cluster[region]), s.pinned[region]) {
			v, _ := router.HeaderValue(m.Headers, router.HeaderRouter)
			by[string(v)]++
		}
	}
	if by["router-1"] == 0 || by["router-2"] == 0 {
		t.Fatalf("events routed per router: %v; want both routers to have routed", by)
	}
}

func TestIntegrationNoRulesetNoConsumption(t *testing.T) {
	s := newStack(t)
	ctx := testenv.Context(t, 60*time.Second)
	s.rules.set(nil, errors.New("no ruleset loaded"))
	samples := s.goodEvents(t, "norules", 40)
	s.produce(t, ctx, samples)
	r, _ := s.newRouter(t, "router-1", nil)
	stop := runRouter(t, r)
	time.Sleep(time.Second)
	err := r.Ready()
	if !errors.Is(err, router.ErrNotReady) || !strings.Contains(err.Error(), "no ruleset loaded") {
		t.Fatalf("Ready = %v, want not ready because of the ruleset", err)
	}
	c := &kafkago.Client{Addr: kafkago.TCP(s.a.Brokers...), Timeout: 10 * time.Second}
	of, err := c.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: s.group, Topics: map[string][]int{s.ingest: {0, 1, 2, 3}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range of.Topics[s.ingest] {
		if p.CommittedOffset > 0 {
			t.Fatalf("partition %d committed to %d without a ruleset", p.Partition, p.CommittedOffset)
		}
	}
	for region, topic := range s.pinned {
		if n := len(readAll(t, ctx, s.clusterOf(s.cluster[region]), topic)); n != 0 {
			t.Fatalf("%d events routed to %s without a ruleset", n, region)
		}
	}
	s.rules.set(mustRulesFrom(t, s.rulesYAML(), 2), nil)
	s.waitCommitted(t, ctx)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	found, _ := s.collect(t, ctx)
	checkPlacement(t, samples, found, true)
}

// TestIntegrationRedisOutageFailsClosed: the router follows the real rules
// cache over Redis; when Redis goes away past the staleness bound it stops
// routing (nothing is committed, /readyz would say why) and resumes by
// itself when Redis is back.
func TestIntegrationRedisOutageFailsClosed(t *testing.T) {
	s := newStack(t)
	ctx := testenv.Context(t, 90*time.Second)
	rd := testenv.NewRedis(t)
	proxy := testenv.NewProxy(t, rd.Addr)
	client := goredis.NewClient(&goredis.Options{Addr: proxy.Addr, DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	store := redis.NewRules(client, rd.Prefix)
	if _, err := store.Apply(ctx, []byte(s.rulesYAML()), rules.ApplyOptions{Author: "test"}); err != nil {
		t.Fatal(err)
	}
	cache := rules.NewCache(store, rules.CacheOptions{PollInterval: 50 * time.Millisecond, StalenessBound: 400 * time.Millisecond, CheckTimeout: 200 * time.Millisecond})
	cctx, stopCache := context.WithCancel(ctx)
	defer stopCache()
	go func() { _ = cache.Run(cctx) }()

	r, _ := s.newRouter(t, "router-1", func(c *router.Config) { c.Rules = cache })
	stop := runRouter(t, r)
	first := s.goodEvents(t, "before", 40)
	s.produce(t, ctx, first)
	s.waitCommitted(t, ctx)

	proxy.Cut()
	deadline := time.Now().Add(10 * time.Second)
	for r.Ready() == nil {
		if time.Now().After(deadline) {
			t.Fatal("router still ready 10s into a Redis outage")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := r.Ready(); !strings.Contains(err.Error(), "stale") {
		t.Fatalf("Ready during the outage = %v, want it to say the ruleset is stale", err)
	}
	during := s.goodEvents(t, "during", 40)
	s.produce(t, ctx, during)
	time.Sleep(time.Second)
	admin, err := kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: s.a.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	if lag, err := admin.Lag(ctx, s.group, s.ingest); err != nil || lag != int64(len(during)) {
		t.Fatalf("lag during the outage = %d, %v; want %d (nothing routed or committed)", lag, err, len(during))
	}
	found, _ := s.collect(t, ctx)
	for _, sm := range during {
		if len(found[sm.id]) != 0 {
			t.Fatalf("event %s routed during the outage", sm.id)
		}
	}

	proxy.Restore()
	s.waitCommitted(t, ctx)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	found, _ = s.collect(t, ctx)
	checkPlacement(t, append(first, during...), found, true)
}

// TestIntegrationRulesAndPinsFromRedis runs the router on the real rules
// machinery (connectors/redis.Rules, Cache, Pins on real Redis): a newly applied
// version is in force within a second and the events routed after it carry
// it and go where it says; a pin moves a user's events to the pinned
// jurisdiction's region and an unpin moves them back.
func TestIntegrationRulesAndPinsFromRedis(t *testing.T) {
	s := newStack(t)
	ctx := testenv.Context(t, 120*time.Second)
	rd := testenv.NewRedis(t)
	store := redis.NewRules(rd.Client(t), rd.Prefix)
	v1 := s.rulesYAML()
	if _, err := store.Apply(ctx, []byte(v1), rules.ApplyOptions{Author: "test"}); err != nil {
		t.Fatal(err)
	}
	cache := rules.NewCache(store, rules.CacheOptions{}) // production defaults
	pins := rules.NewPins(store, rules.PinsOptions{})
	stopCache := testenv.Start(t, 30*time.Second, cache.Run)
	stopPins := testenv.Start(t, 30*time.Second, pins.Run)
	defer func() { _ = stopPins(); _ = stopCache() }()
	testenv.Eventually(t, 10*time.Second, "version 1 loaded", func() bool { r, err := cache.Current(); return err == nil && r.Version() == 1 })

	r, _ := s.newRouter(t, "router-1", func(c *router.Config) { c.Rules = cache; c.Pins = pins })
	stop := runRouter(t, r)
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	ev := func(id, user, country string) produced {
		v, err := s.enc.Encode(sample.Event{ID: id, UserID: user, Country: country})
		if err != nil {
			t.Fatal(err)
		}
		return produced{id: id, key: user, value: v}
	}
	route := func(samples ...produced) map[string]stream.Message {
		s.produce(t, ctx, samples)
		s.waitCommitted(t, ctx)
		_, byID := s.collect(t, ctx)
		return byID
	}
	where := func(m stream.Message) (region, version, by string) {
		g, _ := router.HeaderValue(m.Headers, router.HeaderRegion)
		v, _ := router.HeaderValue(m.Headers, router.HeaderRulesetVersion)
		b, _ := router.HeaderValue(m.Headers, router.HeaderDecidedBy)
		return string(g), string(v), string(b)
	}
	expect := func(byID map[string]stream.Message, id, region, version, by string) {
		t.Helper()
		m, ok := byID[id]
		if !ok {
			t.Fatalf("event %s not found in any pinned topic", id)
		}
		if g, v, b := where(m); g != region || v != version || b != by {
			t.Errorf("event %s: region %q, ruleset version %q, decided by %q; want %q, %q, %q", id, g, v, b, region, version, by)
		}
	}

	byID := route(ev("ie-1", "user-ie", "IE"))
	expect(byID, "ie-1", "eu", "1", "country")

	// Version 2 moves IE from EU to UK.
	v2 := strings.Replace(v1, "countries: [DE, FR, IE]", "countries: [DE, FR]", 1)
	v2 = strings.Replace(v2, "countries: [GB]", "countries: [GB, IE]", 1)
	applied := time.Now()
	if _, err := store.Apply(ctx, []byte(v2), rules.ApplyOptions{Author: "test", Base: 1}); err != nil {
		t.Fatal(err)
	}
	inForce := testenv.Eventually(t, 10*time.Second, "version 2 in force", func() bool { r, err := cache.Current(); return err == nil && r.Version() == 2 })
	if d := inForce.Sub(applied); d > time.Second {
		t.Errorf("version 2 in force %v after apply, want within 1s", d)
	}
	byID = route(ev("ie-2", "user-ie", "IE"))
	expect(byID, "ie-2", "uk", "2", "country")

	// A pin overrides the country; an unpin moves the user back.
	if err := store.Pin(ctx, "user-pinned", "IN"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the pin visible", func() bool {
		got, err := pins.Lookup(ctx, [][]byte{[]byte("user-pinned")})
		return err == nil && got[0] == "IN"
	})
	byID = route(ev("pin-1", "user-pinned", "US"))
	expect(byID, "pin-1", "in", "2", "pin")
	if err := store.Unpin(ctx, "user-pinned"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the unpin visible", func() bool {
		got, err := pins.Lookup(ctx, [][]byte{[]byte("user-pinned")})
		return err == nil && got[0] == ""
	})
	byID = route(ev("pin-2", "user-pinned", "US"))
	expect(byID, "pin-2", "us", "2", "country")
}
