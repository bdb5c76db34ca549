package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

// faultEvents publishes n events for users u0..u{users-1} (even users in
// the US, odd users in DE) with ids from first on, and returns them by
// value so a test can find each at its destination.
type faultEvents struct {
	t     *testing.T
	enc   *sample.Encoder
	w     *kafka.Writer
	topic string
	users int
	next  int
	byVal map[string]faultEvent
}

type faultEvent struct {
	id   int
	user string
	us   bool
}

func newFaultEvents(t *testing.T, brokers []string, topic string, users int) *faultEvents {
	t.Helper()
	enc, err := sample.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "a", Brokers: brokers}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return &faultEvents{t: t, enc: enc, w: w, topic: topic, users: users, byVal: map[string]faultEvent{}}
}

// publish writes n more events and returns how many of them are US events.
func (f *faultEvents) publish(ctx context.Context, n int) (us int) {
	f.t.Helper()
	var msgs []stream.Message
	for i := 0; i < n; i++ {
		id := f.next
		f.next++
		u := id % f.users
		c := "DE"
		if u%2 == 0 {
			c, us = "US", us+1
		}
		user := fmt.Sprint("u", u)
		v, err := f.enc.Encode(sample.Event{ID: fmt.Sprint(id), UserID: user, Country: c})
		if err != nil {
			f.t.Fatal(err)
		}
		f.byVal[string(v)] = faultEvent{id: id, user: user, us: c == "US"}
		msgs = append(msgs, stream.Message{Topic: f.topic, Key: []byte(user), Value: v})
	}
	if err := f.w.Publish(ctx, msgs...); err != nil {
		f.t.Fatal(err)
	}
	return us
}

// check reads a pinned topic and reports the distinct events found,
// the duplicates, and any per-key order violation or misplaced event.
func (f *faultEvents) check(got []stream.Message, wantUS bool) (distinct, dups int, problems []string) {
	seen := map[int]bool{}
	last := map[string]int{}
	for _, m := range got {
		e, ok := f.byVal[string(m.Value)]
		if !ok {
			problems = append(problems, "an event nobody published")
			continue
		}
		if e.us != wantUS {
			problems = append(problems, fmt.Sprintf("event %d in the wrong region", e.id))
		}
		if seen[e.id] {
			dups++
			continue
		}
		seen[e.id] = true
		if prev, ok := last[e.user]; ok && e.id < prev {
			problems = append(problems, fmt.Sprintf("user %s: event %d after %d", e.user, e.id, prev))
		}
		last[e.user] = e.id
	}
	return len(seen), dups, problems
}

// TestRouteClusterOutageLongerThanGiveUp kills the private Kafka cluster
// holding the EU pinned topic for longer than give_up while events flow:
// the US region (on the ingest cluster) keeps receiving events during the
// outage, the router stays up and not ready naming the cluster, and once
// the cluster returns the EU events arrive, in order per key, none lost.
func TestRouteClusterOutageLongerThanGiveUp(t *testing.T) {
	t.Parallel()
	a := testenv.KafkaA(t)
	b := testenv.NewPrivateKafka(t, "b")
	ctx := testenv.Context(t, 150*time.Second)
	ingest := a.Topic(t, "ingest", 2)
	quarantine := a.Topic(t, "quarantine", 1)
	deadLetter := a.Topic(t, "deadletter", 1)
	us := a.Topic(t, "us", 2)
	eu := b.Topic(t, "eu", 2)
	addr := freeAddr(t)
	group := testenv.Name(t, "g")
	rulesFile := writeRules(t, twoRegionRules(us, "b", eu, "DE"))
	cfgFile := routeYAML{Listen: addr, A: a.Brokers, B: b.Brokers, Ingest: ingest, Group: group, Quarantine: quarantine,
		DeadLetter: deadLetter, Router: quickRetries, Rest: "rules: {file: " + rulesFile + "}\n"}.write(t)

	ev := newFaultEvents(t, a.Brokers, ingest, 10)
	rt := start(t, "route", "--config", cfgFile)
	aAdmin, err := kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: a.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	count := func(admin *kafka.Admin, topic string) int { return topicLen(ctx, admin, topic) }
	waitFor := func(d time.Duration, what string, cond func() bool) { t.Helper(); waitFor(t, d, what, cond, rt) }

	// Before: both regions flow.
	usBefore := ev.publish(ctx, 40)
	waitFor(30*time.Second, "the first US events", func() bool { return count(aAdmin, us) >= usBefore })
	waitFor(30*time.Second, "/readyz 200", func() bool { code, _ := get(addr, "/readyz"); return code == 200 })

	// Cluster b down for longer than give_up, events flowing.
	b.Kill()
	downAt := time.Now()
	usDuring := 0
	for i := 0; i < 5; i++ {
		usDuring += ev.publish(ctx, 20)
		time.Sleep(200 * time.Millisecond)
	}
	waitFor(30*time.Second, "US events during the outage", func() bool { return count(aAdmin, us) >= usBefore+usDuring })
	arrivedDuring := count(aAdmin, us) - usBefore
	waitFor(30*time.Second, "/readyz to name cluster b", func() bool {
		code, body := get(addr, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "cluster b")
	})
	_, metrics := get(addr, "/metrics")
	if !strings.Contains(metrics, "residency_router_ready 0") {
		t.Errorf("/readyz says not ready but residency_router_ready is not 0")
	}
	// Stay down well past give_up: the router must not exit.
	waitFor(10*time.Second, "three give_up periods", func() bool { return time.Since(downAt) > 3*time.Second })
	outage := time.Since(downAt)
	t.Logf("cluster b down %s (give_up 1s): %d US events arrived during the outage", outage.Round(time.Millisecond), arrivedDuring)

	b.Start()
	total := ev.next
	usTotal := usBefore + usDuring
	bAdmin, err := kafka.NewAdmin(kafka.Cluster{Name: "b", Brokers: b.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(60*time.Second, "the EU events after cluster b returns", func() bool { return count(bAdmin, eu) >= total-usTotal })
	waitFor(30*time.Second, "/readyz 200 again", func() bool { code, _ := get(addr, "/readyz"); return code == 200 })
	waitFor(30*time.Second, "everything committed", func() bool {
		lag, err := aAdmin.Lag(ctx, group, ingest)
		return err == nil && lag == 0
	})

	usGot, _ := aAdmin.ReadAll(ctx, us)
	euGot, _ := bAdmin.ReadAll(ctx, eu)
	usN, usDups, p1 := ev.check(usGot, true)
	euN, euDups, p2 := ev.check(euGot, false)
	for _, p := range append(p1, p2...) {
		t.Error(p)
	}
	if usN != usTotal || euN != total-usTotal {
		t.Errorf("distinct events: us %d of %d, eu %d of %d (lost some)", usN, usTotal, euN, total-usTotal)
	}
	t.Logf("after the outage: us %d events (%d duplicates), eu %d events (%d duplicates)", usN, usDups, euN, euDups)
	// The producers are idempotent and nothing crashed: a resend after the
	// cluster returns may duplicate at most what was in flight to it.
	if usDups != 0 {
		t.Errorf("%d duplicates on the healthy region", usDups)
	}
	rt.stopOK(t)
}

func header(m stream.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestRouteRedisOutageLongerThanGiveUp cuts Redis (through a proxy) for
// longer than give_up and the staleness bound while events flow: the
// router stays up, /readyz and residency_router_ready agree it is not
// ready, and it resumes by itself once Redis returns, nothing lost. A new
// ruleset (DE no longer placed) is applied during the outage: events
// published while the router is not ready are decided under it once Redis
// returns (DE quarantined, version 2); none is routed under the old one.
func TestRouteRedisOutageLongerThanGiveUp(t *testing.T) {
	t.Parallel()
	a := testenv.KafkaA(t)
	r := testenv.NewRedis(t)
	proxy := testenv.NewProxy(t, r.Addr)
	ctx := testenv.Context(t, 120*time.Second)
	ingest := a.Topic(t, "ingest", 2)
	quarantine := a.Topic(t, "quarantine", 1)
	deadLetter := a.Topic(t, "deadletter", 1)
	us := a.Topic(t, "us", 2)
	eu := a.Topic(t, "eu", 2)
	addr := freeAddr(t)
	group := testenv.Name(t, "g")
	cfgFile := routeYAML{Listen: addr, A: a.Brokers, Ingest: ingest, Group: group, Quarantine: quarantine, DeadLetter: deadLetter,
		Router: quickRetries, Rest: fmt.Sprintf("redis: {addr: %q, prefix: %q}\nrules: {poll_interval: 50ms, staleness_bound: 1s}\n", proxy.Addr, r.Prefix)}.write(t)
	client := goredis.NewClient(&goredis.Options{Addr: r.Addr})
	defer client.Close()
	applied := int64(0)
	apply := func(countriesEU string) {
		t.Helper()
		rs := twoRegionRules(us, "a", eu, countriesEU)
		if _, err := redis.NewRules(client, r.Prefix).Apply(ctx, []byte(rs), rules.ApplyOptions{Author: "test", Base: applied}); err != nil {
			t.Fatal(err)
		}
		applied++
	}
	apply("DE")

	ev := newFaultEvents(t, a.Brokers, ingest, 10)
	rt := start(t, "route", "--config", cfgFile)
	admin, err := kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: a.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	count := func(topic string) int { return topicLen(ctx, admin, topic) }
	waitFor := func(d time.Duration, what string, cond func() bool) { t.Helper(); waitFor(t, d, what, cond, rt) }
	readiness := func() (int, string) {
		code, _ := get(addr, "/readyz")
		_, m := get(addr, "/metrics")
		switch {
		case strings.Contains(m, "\nresidency_router_ready 1"):
			return code, "1"
		case strings.Contains(m, "\nresidency_router_ready 0"):
			return code, "0"
		}
		return code, "?"
	}

	usBefore := ev.publish(ctx, 40)
	euBefore := 40 - usBefore
	waitFor(30*time.Second, "the first events", func() bool { return count(us) >= usBefore && count(eu) >= euBefore })
	waitFor(30*time.Second, "ready", func() bool { code, m := readiness(); return code == 200 && m == "1" })

	// Cut Redis and publish at once: these may still be routed under
	// version 1, which stays in force until the staleness bound. Then apply
	// a ruleset without DE behind the router's back.
	proxy.Cut()
	cutAt := time.Now()
	usCut := ev.publish(ctx, 20)
	apply("FR")
	waitFor(30*time.Second, "/readyz 503 and residency_router_ready 0", func() bool {
		code, m := readiness()
		return code == http.StatusServiceUnavailable && m == "0"
	})
	staleAt := time.Now()
	// Published while the router knows its ruleset is stale: none of these
	// may be routed before Redis returns, and then only under version 2.
	firstStale := ev.next
	usStale := ev.publish(ctx, 40)
	// Past give_up and the staleness bound, sampled: the two agree throughout.
	disagree, samples := 0, 0
	for ; time.Since(cutAt) < 4*time.Second; samples++ {
		code, m := readiness()
		if (code == 200) != (m == "1") || code == 200 {
			disagree++
		}
		rt.alive(t)
		time.Sleep(100 * time.Millisecond)
	}
	if disagree > 0 {
		t.Errorf("/readyz and residency_router_ready disagreed (or said ready) in %d of %d samples during the outage", disagree, samples)
	}
	routedWhileStale := 0
	for _, topic := range []string{us, eu, quarantine} {
		got, _ := admin.ReadAll(ctx, topic)
		for _, m := range got {
			if ev.byVal[string(m.Value)].id >= firstStale {
				routedWhileStale++
			}
		}
	}
	if routedWhileStale != 0 {
		t.Errorf("%d events published after the router went not ready were routed during the outage", routedWhileStale)
	}
	proxy.Restore()
	t.Logf("redis cut for %s (not ready %s after the cut; give_up 1s, staleness_bound 1s), %d readiness samples",
		time.Since(cutAt).Round(time.Millisecond), staleAt.Sub(cutAt).Round(time.Millisecond), samples)

	waitFor(30*time.Second, "everything committed after Redis returns", func() bool {
		lag, err := admin.Lag(ctx, group, ingest)
		return err == nil && lag == 0
	})
	waitFor(10*time.Second, "ready again", func() bool { code, m := readiness(); return code == 200 && m == "1" })

	usGot, _ := admin.ReadAll(ctx, us)
	euGot, _ := admin.ReadAll(ctx, eu)
	qGot, _ := admin.ReadAll(ctx, quarantine)
	usN, _, p1 := ev.check(usGot, true)
	_, _, p2 := ev.check(euGot, false)
	for _, p := range append(p1, p2...) {
		t.Error(p)
	}
	if want := usBefore + usCut + usStale; usN != want {
		t.Errorf("us: %d distinct events, want %d", usN, want)
	}
	// Each DE event lands once, in eu under version 1 or in quarantine
	// under version 2: never in eu under version 2, never lost.
	de := map[int]string{}
	for _, m := range euGot {
		e, v := ev.byVal[string(m.Value)], header(m, "residency-ruleset-version")
		if v != "1" || e.id >= firstStale {
			t.Errorf("event %d in eu under version %q", e.id, v)
		}
		de[e.id] = "eu"
	}
	for _, m := range qGot {
		e, v := ev.byVal[string(m.Value)], header(m, "residency-ruleset-version")
		if v != "2" {
			t.Errorf("quarantined event %d under version %q, want 2", e.id, v)
		}
		if de[e.id] == "eu" {
			t.Errorf("event %d both in eu and in quarantine", e.id)
		}
		de[e.id] = "quarantine"
	}
	if want := ev.next - (usBefore + usCut + usStale); len(de) != want {
		t.Errorf("DE events: %d placed, want %d", len(de), want)
	}
	for _, m := range usGot {
		if e := ev.byVal[string(m.Value)]; e.id >= firstStale && header(m, "residency-ruleset-version") != "2" {
			t.Errorf("us event %d published while stale routed under version %q, want 2", e.id, header(m, "residency-ruleset-version"))
		}
	}
	rt.stopOK(t)
}

// TestRouteReadinessOneTruth walks one router through every readiness
// state it can reach from outside (no ruleset, destination topic missing,
// destination cluster down, ruleset stale, ruleset content changed, ingest
// Kafka down) and back to ready after each: in every state /readyz,
// residency_router_ready and the region's residency_router_region_ready
// agree in every sample, and the log says each state once, not per poll.
func TestRouteReadinessOneTruth(t *testing.T) {
	t.Parallel()
	ab := testenv.NewPrivateKafkas(t, "a", "b")
	a, b := ab[0], ab[1]
	r := testenv.NewRedis(t)
	proxy := testenv.NewProxy(t, r.Addr)
	ctx := testenv.Context(t, 240*time.Second)
	ingest := a.Topic(t, "ingest", 1)
	quarantine := a.Topic(t, "quarantine", 1)
	deadLetter := a.Topic(t, "deadletter", 1)
	us := a.Topic(t, "us", 1)
	eu := b.Topic(t, "eu", 1)
	missingTopic := testenv.Name(t, "missing")
	b.DeleteAfter(t, missingTopic)
	addr := freeAddr(t)
	group := testenv.Name(t, "g")
	cfgFile := routeYAML{Listen: addr, A: a.Brokers[:1], B: b.Brokers[:1], Ingest: ingest, Group: group, Quarantine: quarantine,
		DeadLetter: deadLetter, Router: quickRetries,
		Rest: fmt.Sprintf("redis: {addr: %q, prefix: %q}\nrules: {poll_interval: 50ms, staleness_bound: 2s}\n", proxy.Addr, r.Prefix)}.write(t)
	client := goredis.NewClient(&goredis.Options{Addr: r.Addr})
	defer client.Close()
	version := int64(0)
	apply := func(euTopic, countriesEU string) {
		t.Helper()
		rs := twoRegionRules(us, "b", euTopic, countriesEU)
		if _, err := redis.NewRules(client, r.Prefix).Apply(ctx, []byte(rs), rules.ApplyOptions{Author: "test", Base: version}); err != nil {
			t.Fatal(err)
		}
		version++
	}
	ev := newFaultEvents(t, a.Brokers, ingest, 2)

	rt := start(t, "route", "--config", cfgFile)
	stderr := rt.stderr

	type sample struct {
		code         int
		body         string
		ready, euRdy string
	}
	take := func() sample {
		code, body := get(addr, "/readyz")
		_, m := get(addr, "/metrics")
		return sample{code, body, gauge(m, "residency_router_ready"), gauge(m, `residency_router_region_ready{region="eu"}`)}
	}
	stateLogs := func() int {
		return strings.Count(stderr.String(), `"msg":"router not ready"`) + strings.Count(stderr.String(), `"msg":"router ready: routing every region"`)
	}
	type measured struct {
		state   string
		samples int
		extra   int
	}
	var table []measured
	// reach waits until /readyz answers want (200, or 503 with a body
	// naming the state), then samples for hold: every sample must agree
	// with the metric, and the log must not repeat the state.
	reach := func(state string, want int, contains string, euReady string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			s := take()
			if s.code == want && strings.Contains(s.body, contains) {
				break
			}
			rt.alive(t)
			if time.Now().After(deadline) {
				t.Fatalf("%s: never reached (last %d %q ready=%s); logs:\n%s", state, s.code, s.body, s.ready, stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		before := stateLogs()
		n := 0
		for end := time.Now().Add(time.Second); time.Now().Before(end); n++ {
			s := take()
			if (s.code == 200) != (s.ready == "1") {
				t.Errorf("%s: /readyz %d %q but residency_router_ready %s", state, s.code, s.body, s.ready)
			}
			if s.code != want {
				t.Errorf("%s: /readyz left the state while held: %d %q", state, s.code, s.body)
			}
			if euReady != "" && s.euRdy != euReady {
				t.Errorf("%s: residency_router_region_ready{region=\"eu\"} = %s, want %s", state, s.euRdy, euReady)
			}
			if strings.Contains(s.body, "not ready: not ready") {
				t.Errorf("%s: /readyz repeats itself: %q", state, s.body)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// A state may gain detail as its sources report (a second error
		// from the ingest cluster), a few lines; never one per poll.
		extra := stateLogs() - before
		if extra > 3 {
			all := strings.Split(stderr.String(), "\n")
			for _, l := range all[max(0, len(all)-extra-2):] {
				t.Log(l)
			}
			t.Errorf("%s: %d more readiness log lines while the state held (%d samples)", state, extra, n)
		}
		table = append(table, measured{state, n, extra})
	}

	reach("no ruleset", 503, "no ruleset", "")
	apply(eu, "DE")
	reach("ready", 200, "", "1")

	// A destination topic missing: the eu region's topic does not exist.
	apply(missingTopic, "DE")
	ev.publish(ctx, 2)
	reach("destination topic missing", 503, "missing", "0")
	b.CreateTopic(t, missingTopic, 1)
	reach("ready after the topic exists", 200, "", "1")

	// A destination cluster down.
	b.Kill()
	ev.publish(ctx, 2)
	reach("destination cluster down", 503, "cluster b down", "0")
	b.Start()
	reach("ready after cluster b returns", 200, "", "1")

	// The ruleset stale: Redis cut past the staleness bound.
	proxy.Cut()
	reach("ruleset stale", 503, "stale", "")
	proxy.Restore()
	reach("ready after Redis returns", 200, "", "1")

	// Redis loses its data; the same version number comes back with other
	// content.
	keys, err := client.Keys(ctx, r.Prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		if err := client.Del(ctx, keys...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	held := version
	version = 0
	for others := []string{"FR", "FR, IT", "FR, IT, ES", "FR, IT, ES, PT", "FR, IT, ES, PT, NL", "FR, IT, ES, PT, NL, BE"}; version < held; {
		apply(eu, others[version])
	}
	reach("ruleset content changed", 503, "content changed", "")
	apply(eu, "DE")
	reach("ready under a new version", 200, "", "1")

	// The ingest cluster down.
	a.Kill()
	reach("ingest kafka down", 503, "", "")
	a.Start()
	reach("ready after the ingest cluster returns", 200, "", "1")

	for _, m := range table {
		t.Logf("%-40s %3d samples agree; %d readiness log lines while held", m.state, m.samples, m.extra)
	}
	if n := stateLogs(); n > 4*len(table) {
		t.Errorf("%d readiness log lines for %d states", n, len(table))
	}
	rt.halt(t)
}

// TestRouteRebalanceDuplicates runs a second `residency route` joining the
// group of the first while events flow, and counts, by event id, how many
// events reached their pinned topic more than once. The first router
// commits what settled before giving its partitions up, so only what was
// in flight and unacknowledged at that moment can be read again: the
// bound asserted is the in-flight window of one router
// (router.max_inflight_events, set to 200 here); docs/router.md records
// the figure measured.
func TestRouteRebalanceDuplicates(t *testing.T) {
	t.Parallel()
	a := testenv.KafkaA(t)
	ctx := testenv.Context(t, 120*time.Second)
	ingest := a.Topic(t, "ingest", 4)
	quarantine := a.Topic(t, "quarantine", 1)
	deadLetter := a.Topic(t, "deadletter", 1)
	us := a.Topic(t, "us", 2)
	eu := a.Topic(t, "eu", 2)
	group := testenv.Name(t, "g")
	rulesFile := writeRules(t, twoRegionRules(us, "a", eu, "DE"))
	const window = 200
	config := func(addr string) string {
		return routeYAML{Listen: addr, A: a.Brokers, Ingest: ingest, Group: group, Quarantine: quarantine, DeadLetter: deadLetter,
			Router: []string{"batch_size: 100", fmt.Sprintf("max_inflight_events: %d", window)}, Rest: "rules: {file: " + rulesFile + "}\n"}.write(t)
	}
	ev := newFaultEvents(t, a.Brokers, ingest, 50)
	admin, err := kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: a.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	r1 := start(t, "route", "--config", config(freeAddr(t)))
	log1 := r1.stderr
	// The publisher runs until the rebalance happened and then a second
	// more (at least 30 batches of 100, at most 300): a fixed 3 seconds of
	// publishing could end before two routes started and rebalanced on a
	// loaded host.
	published, rebalanced := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(published)
		after := -1 // the batch during which the rebalance was seen
		for i := 0; i < 300 && ctx.Err() == nil; i++ {
			ev.publish(ctx, 100)
			time.Sleep(100 * time.Millisecond)
			select {
			case <-rebalanced:
				if after < 0 {
					after = i
				}
			default:
			}
			if i >= 29 && after >= 0 && i-after >= 10 {
				return
			}
		}
	}()
	joined := `"msg":"kafka: consumer joined the group"`
	log2 := &testenv.SyncBuffer{}
	// The rebalance must happen while events flow, or it proves nothing:
	// router-1 holds every partition first, router-2 takes some while the
	// publisher still runs.
	until := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-published:
				t.Fatalf("%s only after the last event was published; logs:\n%s\n%s", what, log1.String(), log2.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	until("router-1 joined", func() bool { return strings.Contains(log1.String(), joined) })
	r2 := start(t, "route", "--config", config(freeAddr(t)))
	log2 = r2.stderr
	until("router-2 took partitions and router-1 gave some up", func() bool {
		return strings.Contains(log2.String(), joined) && strings.Contains(log1.String(), "gave up its partitions")
	})
	close(rebalanced)
	<-published
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if lag, err := admin.Lag(ctx, group, ingest); err == nil && lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not everything committed; logs:\n%s\n%s", log1.String(), log2.String())
		}
	}
	r1.stopOK(t)
	r2.stopOK(t)
	usGot, _ := admin.ReadAll(ctx, us)
	euGot, _ := admin.ReadAll(ctx, eu)
	usN, usDups, p1 := ev.check(usGot, true)
	euN, euDups, p2 := ev.check(euGot, false)
	for _, p := range append(p1, p2...) {
		t.Error(p)
	}
	if usN+euN != ev.next {
		t.Errorf("%d distinct events at the destinations, %d published", usN+euN, ev.next)
	}
	dups := usDups + euDups
	t.Logf("a second route joining while %d events flowed: %d duplicates (bound: the window, %d)", ev.next, dups, window)
	if dups > window {
		t.Errorf("%d duplicates after one rebalance, more than one router's in-flight window (%d)", dups, window)
	}
}
