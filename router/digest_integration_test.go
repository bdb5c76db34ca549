package router_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
)

// TestIntegrationRedisLostItsData is issue 13's first observation on the
// real stack (Kafka A and B, Redis): the router routes FR events to the EU
// under version 1; Redis loses its data (the test's keys are deleted) and
// the rules are applied again without FR, again as version 1. The router
// never routes under the old content of a version number Redis gives to
// other content: it stops (not ready) and holds the events that arrive,
// and routes them under the next version, which quarantines FR. The
// events before and after carry different digests, none is in a region
// the content its headers name forbids, and no event carries version 1
// with the reused number's new content.
func TestIntegrationRedisLostItsData(t *testing.T) {
	s := newStack(t)
	ctx := testenv.Context(t, 180*time.Second)
	rd := testenv.NewRedis(t)
	store := redis.NewRules(rd.Client(t), rd.Prefix)
	v1 := s.rulesYAML()
	info1, err := store.Apply(ctx, []byte(v1), rules.ApplyOptions{Author: "test"})
	if err != nil {
		t.Fatal(err)
	}
	cache := rules.NewCache(store, rules.CacheOptions{}) // production defaults: poll 500ms, bound 30s
	pins := rules.NewPins(store, rules.PinsOptions{})
	stopCache := testenv.Start(t, 30*time.Second, cache.Run)
	stopPins := testenv.Start(t, 30*time.Second, pins.Run)
	defer func() { _ = stopPins(); _ = stopCache() }()
	testenv.Eventually(t, 10*time.Second, "version 1 loaded", func() bool { r, err := cache.Current(); return err == nil && r.Version() == 1 })
	<-pins.Loaded()

	r, _ := s.newRouter(t, "router-1", func(c *router.Config) { c.Rules = cache; c.Pins = pins })
	stop := runRouter(t, r)
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	fr := func(prefix string, n int) []produced {
		var out []produced
		for i := range n {
			id := fmt.Sprintf("%s-%d", prefix, i)
			v, err := s.enc.Encode(sample.Event{ID: id, UserID: fmt.Sprintf("%s-user-%d", prefix, i%4), Country: "FR"})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, produced{id: id, key: fmt.Sprintf("%s-user-%d", prefix, i%4), value: v})
		}
		return out
	}
	before := fr("before", 20)
	s.produce(t, ctx, before)
	s.waitCommitted(t, ctx)

	// Redis loses its data; the rules are applied again without FR, and
	// get version 1 again.
	rd.DeleteKeys(t)
	noFR := strings.Replace(v1, "countries: [DE, FR, IE]", "countries: [DE, IE]", 1)
	if noFR == v1 {
		t.Fatal("the test rules changed: FR not found")
	}
	info1b, err := store.Apply(ctx, []byte(noFR), rules.ApplyOptions{Author: "test"})
	if err != nil || info1b.Number != 1 || info1b.SHA256 == info1.SHA256 {
		t.Fatalf("re-applied as %+v, %v; want version 1 with other content", info1b, err)
	}
	testenv.Eventually(t, 5*time.Second, "the cache to fail closed on version 1's new content", func() bool {
		_, err := cache.Current()
		return errors.Is(err, rules.ErrContentChanged)
	})
	testenv.Eventually(t, 5*time.Second, "the router not ready", func() bool {
		err := r.Ready()
		return err != nil && strings.Contains(err.Error(), "ruleset content changed")
	})
	t.Logf("not ready: %v", r.Ready())

	// Events arriving now wait: nothing is routed.
	during := fr("during", 20)
	s.produce(t, ctx, during)
	time.Sleep(2 * time.Second)
	found, _ := s.collect(t, ctx)
	for _, sm := range during {
		if len(found[sm.id]) > 0 {
			t.Fatalf("event %s routed (%v) while the ruleset's content was in doubt", sm.id, found[sm.id])
		}
	}

	// A new version above the one the router used: in force; the held
	// events are routed under it (FR: quarantined).
	info2, err := store.Apply(ctx, []byte(noFR+"# applied again as a new version\n"), rules.ApplyOptions{Author: "test", Base: 1})
	if err != nil || info2.Number != 2 {
		t.Fatalf("version 2: %+v, %v", info2, err)
	}
	s.waitCommitted(t, ctx)
	after := fr("after", 10)
	s.produce(t, ctx, after)
	s.waitCommitted(t, ctx)

	_, byID := s.collect(t, ctx)
	d1, d1b, d2 := rules.ShortDigest(info1.SHA256), rules.ShortDigest(info1b.SHA256), rules.ShortDigest(info2.SHA256)
	check := func(samples []produced, topic, version, digest string) {
		t.Helper()
		for _, sm := range samples {
			m, ok := byID[sm.id]
			if !ok {
				t.Errorf("event %s lost", sm.id)
				continue
			}
			v, _ := router.HeaderValue(m.Headers, router.HeaderRulesetVersion)
			d, _ := router.HeaderValue(m.Headers, router.HeaderRulesetDigest)
			if m.Topic != topic || string(v) != version || string(d) != digest {
				t.Errorf("event %s in %s under version %s digest %s; want %s under version %s digest %s", sm.id, m.Topic, v, d, topic, version, digest)
			}
		}
	}
	check(before, s.pinned["eu"], "1", d1)
	check(during, s.quarantine, "2", d2)
	check(after, s.quarantine, "2", d2)
	for id, m := range byID {
		if d, _ := router.HeaderValue(m.Headers, router.HeaderRulesetDigest); string(d) == d1b {
			t.Errorf("event %s routed under version 1's reused number (digest %s)", id, d)
		}
	}
	if d1 == d2 {
		t.Fatal("the two placements carry one digest")
	}
}
