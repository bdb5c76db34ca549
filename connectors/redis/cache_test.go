package redis

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
)

// runInBackground runs run (a Cache's or Pins' Run, named name) until the
// test ends, then waits for it to return and reports its error.
func runInBackground(t *testing.T, name string, run func(context.Context) error) {
	t.Helper()
	stop := testenv.Start(t, 30*time.Second, run)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("%s = %v", name, err)
		}
	})
}

func currentVersion(c *rules.Cache) int64 {
	r, err := c.Current()
	if err != nil {
		return -1
	}
	return r.Version()
}

// metric returns the value of the gauge or counter name (with label
// reason=want when want is not empty) gathered from reg, and how many series
// reg has in all; -1 when not found.
func metric(t *testing.T, reg *prometheus.Registry, name, reason string) (float64, int) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	v, n := -1.0, 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			n++
			if mf.GetName() != name {
				continue
			}
			if reason != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != reason) {
				continue
			}
			if m.GetGauge() != nil {
				v = m.GetGauge().GetValue()
			} else {
				v = m.GetCounter().GetValue()
			}
		}
	}
	return v, n
}

// noWatch hides a source's announcements, leaving only polling.
type noWatch struct{ rules.Source }

func (noWatch) Watch(context.Context) <-chan struct{} { return nil }

func TestCacheSeesNewVersionWithinASecond(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  func(*Rules) rules.Source
	}{
		{"announced", func(s *Rules) rules.Source { return s }},
		{"polling only", func(s *Rules) rules.Source { return noWatch{s} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testenv.Context(t, 30*time.Second)
			s := newStore(t)
			c := rules.NewCache(tc.src(s), rules.CacheOptions{})
			if _, err := c.Current(); !errors.Is(err, rules.ErrNoRuleset) {
				t.Fatalf("Current before Run = %v, want rules.ErrNoRuleset", err)
			}
			runInBackground(t, "Cache.Run", c.Run)
			if _, err := s.Apply(ctx, example(t, "rules.yaml"), rules.ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-c.Loaded():
			case <-time.After(5 * time.Second):
				t.Fatal("first version not loaded within 5s")
			}
			// Give the subscription time to be established: the first version
			// came by polling or by it.
			testenv.Eventually(t, 5*time.Second, "version 1", func() bool { return currentVersion(c) == 1 })

			applied := time.Now()
			if _, err := s.Apply(ctx, example(t, "rules-next.yaml"), rules.ApplyOptions{Base: 1}); err != nil {
				t.Fatal(err)
			}
			seen := testenv.Eventually(t, 10*time.Second, "version 2", func() bool { return currentVersion(c) == 2 })
			if lag := seen.Sub(applied); lag > time.Second {
				t.Fatalf("version 2 seen %s after it was applied, want within 1s", lag)
			} else {
				t.Logf("version 2 seen %s after it was applied", lag)
			}
			r, _ := c.Current()
			if j, ok := r.JurisdictionOf([]byte("CH")); !ok || j.Name != "EU" {
				t.Fatal("the cache's version 2 does not place CH in EU")
			}
		})
	}
}

func TestCacheOutage(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	r := testenv.NewRedis(t)
	direct := NewRules(r.Client(t), r.Prefix)
	proxy := testenv.NewProxy(t, r.Addr)
	client := goredis.NewClient(&goredis.Options{Addr: proxy.Addr})
	t.Cleanup(func() { _ = client.Close() })
	viaProxy := NewRules(client, r.Prefix)

	if _, err := direct.Apply(ctx, example(t, "rules.yaml"), rules.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	const bound = 500 * time.Millisecond
	const poll = 50 * time.Millisecond
	reg := prometheus.NewRegistry()
	var logs testenv.SyncBuffer
	c := rules.NewCache(viaProxy, rules.CacheOptions{PollInterval: poll, StalenessBound: bound, CheckTimeout: 200 * time.Millisecond,
		Registerer: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	runInBackground(t, "Cache.Run", c.Run)
	testenv.Eventually(t, 5*time.Second, "version 1", func() bool { return currentVersion(c) == 1 })

	proxy.Cut()
	cut := time.Now()
	// Until the bound, the last-known-good version stays in use.
	var staleErr error
	staleAt := testenv.Eventually(t, 5*time.Second, "ErrStale", func() bool {
		rs, err := c.Current()
		if err != nil {
			staleErr = err
			return true
		}
		if rs.Version() != 1 {
			t.Fatalf("during the outage Current returned version %d", rs.Version())
		}
		return false
	})
	if !errors.Is(staleErr, rules.ErrStale) || !strings.Contains(staleErr.Error(), "ruleset is stale since ") {
		t.Fatalf("Current after the bound = %v, want rules.ErrStale", staleErr)
	}
	// It says why once a check has failed: on a loaded host the first check
	// after the cut may not have ended when the bound passes (the error then
	// only says "not confirmed").
	testenv.Eventually(t, 5*time.Second, "ErrStale wrapping rules.ErrUnavailable", func() bool {
		_, staleErr = c.Current()
		return errors.Is(staleErr, rules.ErrStale) && errors.Is(staleErr, rules.ErrUnavailable)
	})
	if early := cut.Add(bound - 2*poll); staleAt.Before(early) {
		t.Fatalf("stale %s after the cut, before the bound %s", staleAt.Sub(cut), bound)
	}
	if late := cut.Add(bound + time.Second); staleAt.After(late) {
		t.Fatalf("stale only %s after the cut, bound %s", staleAt.Sub(cut), bound)
	}
	t.Logf("stale %s after the cut (bound %s): %v", staleAt.Sub(cut), bound, staleErr)
	// It stays stale while Redis is away, and says so.
	time.Sleep(3 * poll)
	if _, err := c.Current(); !errors.Is(err, rules.ErrStale) {
		t.Fatalf("Current later in the outage = %v, want rules.ErrStale", err)
	}
	if usable, _ := metric(t, reg, "residency_rules_usable", ""); usable != 0 {
		t.Fatalf("residency_rules_usable = %v during the outage, want 0", usable)
	}
	// Each failed load counts (one per poll, each waiting for its timeout:
	// on a busy machine they come slower, so wait for several).
	testenv.Eventually(t, 10*time.Second, "several load errors counted", func() bool {
		n, _ := metric(t, reg, "residency_rules_load_errors_total", "unavailable")
		return n >= 3
	})
	if age, _ := metric(t, reg, "residency_rules_age_seconds", ""); age < bound.Seconds() {
		t.Fatalf("residency_rules_age_seconds = %v, want past the bound", age)
	}
	testenv.Eventually(t, 5*time.Second, "the stale log line", func() bool {
		return strings.Contains(logs.String(), "level=ERROR msg=\"rules: ruleset is stale; routing must stop (fail closed)\"")
	})
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Fatalf("%d warnings logged during the outage, want 1 (no log per poll):\n%s", n, logs.String())
	}

	// A version applied during the outage is picked up on recovery.
	if _, err := direct.Apply(ctx, example(t, "rules-next.yaml"), rules.ApplyOptions{Base: 1}); err != nil {
		t.Fatal(err)
	}
	proxy.Restore()
	testenv.Eventually(t, 10*time.Second, "recovery with version 2", func() bool { return currentVersion(c) == 2 })
	if usable, _ := metric(t, reg, "residency_rules_usable", ""); usable != 1 {
		t.Fatalf("residency_rules_usable = %v after recovery, want 1", usable)
	}
	if !strings.Contains(logs.String(), "rules: switched ruleset version\" version=2 digest=") || !strings.Contains(logs.String(), "previous=1") {
		t.Fatalf("no switch logged:\n%s", logs.String())
	}
}

func TestCacheKeepsOldVersionOverCorrupt(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	s := newStore(t)
	if _, err := s.Apply(ctx, []byte(small), rules.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	c := rules.NewCache(s, rules.CacheOptions{PollInterval: 50 * time.Millisecond, Registerer: reg})
	runInBackground(t, "Cache.Run", c.Run)
	// A second cache with a short bound shows the corrupt version is not
	// trusted for ever either: it fails closed after its bound.
	short := rules.NewCache(s, rules.CacheOptions{PollInterval: 50 * time.Millisecond, StalenessBound: 300 * time.Millisecond})
	runInBackground(t, "Cache.Run", short.Run)
	testenv.Eventually(t, 5*time.Second, "version 1", func() bool { return currentVersion(c) == 1 && currentVersion(short) == 1 })
	if got, _ := metric(t, reg, "residency_rules_version", ""); got != 1 {
		t.Fatalf("residency_rules_version = %v, want 1", got)
	}

	invalid := strings.Replace(small, "[FR, DE]", "[FR, XX]", 1)
	corrupt(t, s, 2, invalid, rules.Hash([]byte(invalid)))
	testenv.Eventually(t, 5*time.Second, "a corrupt load error", func() bool {
		v, _ := metric(t, reg, "residency_rules_load_errors_total", "corrupt")
		return v >= 2
	})
	if v := currentVersion(c); v != 1 {
		t.Fatalf("after a corrupt version 2, Current is version %d, want 1", v)
	}
	testenv.Eventually(t, 5*time.Second, "the short-bound cache to fail closed", func() bool {
		_, err := short.Current()
		return errors.Is(err, rules.ErrStale) && errors.Is(err, rules.ErrCorrupt)
	})

	// A valid version applied on top is loaded by both.
	if _, err := s.Apply(ctx, example(t, "rules.yaml"), rules.ApplyOptions{Base: 2}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "version 3", func() bool { return currentVersion(c) == 3 && currentVersion(short) == 3 })
	got, n := metric(t, reg, "residency_rules_version", "")
	if got != 3 {
		t.Fatalf("residency_rules_version = %v, want 3", got)
	}
	if n != 9 {
		t.Fatalf("gathered %d series, want 9 (version, age, usable, 6 load error reasons)", n)
	}
	if usable, _ := metric(t, reg, "residency_rules_usable", ""); usable != 1 {
		t.Fatalf("residency_rules_usable = %v, want 1", usable)
	}
}

func TestCacheStartsWithRedisDown(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	r := testenv.NewRedis(t)
	direct := NewRules(r.Client(t), r.Prefix)
	if _, err := direct.Apply(ctx, []byte(small), rules.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	proxy := testenv.NewProxy(t, r.Addr)
	proxy.Cut()
	client := goredis.NewClient(&goredis.Options{Addr: proxy.Addr})
	t.Cleanup(func() { _ = client.Close() })
	c := rules.NewCache(NewRules(client, r.Prefix), rules.CacheOptions{PollInterval: 50 * time.Millisecond, CheckTimeout: 200 * time.Millisecond})
	runInBackground(t, "Cache.Run", c.Run)
	// Nothing loaded: Current refuses, and says why.
	testenv.Eventually(t, 5*time.Second, "a failed first check", func() bool {
		_, err := c.Current()
		return errors.Is(err, rules.ErrNoRuleset) && errors.Is(err, rules.ErrUnavailable)
	})
	select {
	case <-c.Loaded():
		t.Fatal("Loaded closed with Redis down")
	default:
	}
	proxy.Restore()
	select {
	case <-c.Loaded():
	case <-time.After(10 * time.Second):
		t.Fatal("not loaded 10s after Redis came back")
	}
	if v := currentVersion(c); v != 1 {
		t.Fatalf("Current = version %d, want 1", v)
	}
}

// TestCacheRedisLostItsData: Redis loses its data (the test's keys are
// deleted) and the rules are applied again with other content. The cache
// never hands out its old content under a version number Redis now gives
// to other content: it fails closed at once (history lost, then content
// changed, well before the staleness bound), and takes the new content
// only as a version above the one it used.
func TestCacheRedisLostItsData(t *testing.T) {
	ctx := testenv.Context(t, 60*time.Second)
	r := testenv.NewRedis(t)
	s := NewRules(r.Client(t), r.Prefix)
	if _, err := s.Apply(ctx, []byte(small), rules.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	v2, err := s.Apply(ctx, example(t, "rules.yaml"), rules.ApplyOptions{Base: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := rules.NewCache(s, rules.CacheOptions{}) // production defaults: a 30s bound
	runInBackground(t, "Cache.Run", c.Run)
	testenv.Eventually(t, 10*time.Second, "version 2", func() bool { return currentVersion(c) == 2 })
	if rs, _ := c.Current(); rs.Digest() != v2.SHA256 {
		t.Fatalf("digest in use %s, want version 2's sha256 %s", rs.Digest(), v2.SHA256)
	}

	failsWith := func(what string, sentinel error) {
		t.Helper()
		start := time.Now()
		var err error
		testenv.Eventually(t, 5*time.Second, what, func() bool {
			_, err = c.Current()
			return errors.Is(err, sentinel)
		})
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("%s after %s, want within a couple of polls", what, d)
		}
		t.Logf("%s: %v", what, err)
	}
	r.DeleteKeys(t)
	failsWith("history lost after Redis lost its data", rules.ErrHistoryLost)

	// Applied again from scratch, without FR: version 1, then 2, with
	// other content than the versions the cache saw.
	noFR := strings.Replace(small, "[FR, DE]", "[DE]", 1)
	if _, err := s.Apply(ctx, []byte(noFR), rules.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * rules.DefaultPollInterval)
	if _, err := c.Current(); !errors.Is(err, rules.ErrHistoryLost) {
		t.Fatalf("with Redis at version 1 again, Current = %v, want ErrHistoryLost", err)
	}
	noFR2 := strings.Replace(noFR, "[US, PR]", "[US]", 1)
	if _, err := s.Apply(ctx, []byte(noFR2), rules.ApplyOptions{Base: 1}); err != nil {
		t.Fatal(err)
	}
	failsWith("content changed under version 2", rules.ErrContentChanged)

	// A version above the one in use is taken.
	v3, err := s.Apply(ctx, []byte(noFR), rules.ApplyOptions{Base: 2})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "version 3", func() bool { return currentVersion(c) == 3 })
	rs, _ := c.Current()
	if rs.Digest() != v3.SHA256 {
		t.Fatal("version 3 in use is not version 3's content")
	}
	if j, ok := rs.JurisdictionOf([]byte("FR")); ok {
		t.Fatalf("version 3 places FR in %s; the content in force has no FR", j.Name)
	}
}
