package rules

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/internal/testenv"
)

// runInBackground runs run (a Cache's Run, named name) until the test ends,
// then waits for it to return and reports its error.
func runInBackground(t *testing.T, name string, run func(context.Context) error) {
	t.Helper()
	stop := testenv.Start(t, 30*time.Second, run)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("%s = %v", name, err)
		}
	})
}

func currentVersion(c *Cache) int64 {
	r, err := c.Current()
	if err != nil {
		return -1
	}
	return r.Version()
}

func example(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("../../deploy/examples/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The cache over Redis (announcements, outages, corrupt versions) is tested
// with the Redis adapter, in connectors/redis.

func TestStaticSource(t *testing.T) {
	r1, err := Parse([]byte(small))
	if err != nil {
		t.Fatal(err)
	}
	src := NewStaticSource(r1)
	c := NewCache(src, CacheOptions{PollInterval: time.Hour})
	runInBackground(t, "Cache.Run", c.Run)
	testenv.Eventually(t, 5*time.Second, "version 0", func() bool { return currentVersion(c) == 0 })

	r2, err := Parse(example(t, "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r2.SetVersion(7)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); src.Set(r2) }()
	wg.Wait()
	// PollInterval is an hour: only the Set announcement can switch it.
	testenv.Eventually(t, 5*time.Second, "version 7", func() bool { return currentVersion(c) == 7 })
}

// versioned parses content as version v.
func versioned(t *testing.T, content string, v int64) *Ruleset {
	t.Helper()
	r, err := Parse([]byte(content))
	if err != nil {
		t.Fatal(err)
	}
	r.SetVersion(v)
	return r
}

func TestDigest(t *testing.T) {
	a := versioned(t, small, 1)
	b := versioned(t, strings.Replace(small, "[FR, DE]", "[DE, FR]", 1), 1)
	if a.Digest() != Hash([]byte(small)) || len(a.Digest()) != 64 {
		t.Fatalf("Digest = %q, want the SHA-256 of the content", a.Digest())
	}
	if a.ShortDigest() != a.Digest()[:ShortDigestLen] || len(a.ShortDigest()) != 16 {
		t.Fatalf("ShortDigest = %q", a.ShortDigest())
	}
	if a.Digest() == b.Digest() {
		t.Fatal("two contents with one digest")
	}
}

// TestCacheContentChanged: the same version number with another content
// (Redis lost its data and the rules were applied again) makes Current fail
// at once, not at the staleness bound, with ErrContentChanged naming both
// digests; the content in use confirmed again lifts it; new content is
// taken only as a version above the one in use.
func TestCacheContentChanged(t *testing.T) {
	old := versioned(t, small, 3)
	other := versioned(t, strings.Replace(small, "[FR, DE]", "[DE]", 1), 3)
	src := NewStaticSource(old)
	var logs testenv.SyncBuffer
	reg := prometheus.NewRegistry()
	c := NewCache(src, CacheOptions{PollInterval: 10 * time.Millisecond, StalenessBound: time.Hour,
		Registerer: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	runInBackground(t, "Cache.Run", c.Run)
	testenv.Eventually(t, 5*time.Second, "version 3", func() bool { return currentVersion(c) == 3 })

	src.Set(other)
	var err error
	testenv.Eventually(t, 5*time.Second, "ErrContentChanged", func() bool {
		_, err = c.Current()
		return err != nil
	})
	if !errors.Is(err, ErrContentChanged) || errors.Is(err, ErrStale) ||
		!strings.Contains(err.Error(), other.ShortDigest()) || !strings.Contains(err.Error(), old.ShortDigest()) ||
		!strings.Contains(err.Error(), "until a version above 3 is applied") {
		t.Fatalf("Current = %v, want ErrContentChanged naming both digests", err)
	}
	time.Sleep(100 * time.Millisecond) // several checks
	if _, err := c.Current(); !errors.Is(err, ErrContentChanged) {
		t.Fatalf("Current later = %v, want ErrContentChanged still", err)
	}
	if n := strings.Count(logs.String(), "no longer holds the ruleset in use"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, logs.String())
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "residency_rules_load_errors_total" {
			continue
		}
		if n := len(mf.GetMetric()); n != 6 {
			t.Fatalf("%d load error series, want 6", n)
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "content_changed" && m.GetCounter().GetValue() < 2 {
				t.Fatalf("load_errors_total{reason=content_changed} = %v, want several", m.GetCounter().GetValue())
			}
		}
	}

	// The same content back under version 3 (say `rules restore` from the
	// history topic): confirmed, in force again.
	src.Set(old)
	testenv.Eventually(t, 5*time.Second, "version 3 confirmed again", func() bool { return currentVersion(c) == 3 })

	// Changed again, then a new version above: taken.
	src.Set(other)
	testenv.Eventually(t, 5*time.Second, "ErrContentChanged again", func() bool {
		_, err := c.Current()
		return errors.Is(err, ErrContentChanged)
	})
	next := versioned(t, strings.Replace(small, "[FR, DE]", "[DE]", 1), 4)
	src.Set(next)
	testenv.Eventually(t, 5*time.Second, "version 4", func() bool { return currentVersion(c) == 4 })
	if rs, _ := c.Current(); rs.Digest() != next.Digest() {
		t.Fatal("version 4 in use is not version 4's content")
	}
}

// TestCacheRefusesOlderVersion: versions only grow (a rollback is a new
// version). A source whose current version goes backwards (Redis lost its
// data, or was restored from an old snapshot) makes Current fail at once
// with ErrHistoryLost; the version in use back with its content lifts it.
func TestCacheRefusesOlderVersion(t *testing.T) {
	r5 := versioned(t, small, 5)
	src := NewStaticSource(r5)
	c := NewCache(src, CacheOptions{PollInterval: 20 * time.Millisecond, StalenessBound: time.Hour})
	runInBackground(t, "Cache.Run", c.Run)
	testenv.Eventually(t, 5*time.Second, "version 5", func() bool { return currentVersion(c) == 5 })

	src.Set(versioned(t, string(example(t, "rules.yaml")), 3))
	var err error
	testenv.Eventually(t, 5*time.Second, "the cache to fail closed on a version going backwards", func() bool {
		_, err = c.Current()
		return err != nil
	})
	if !errors.Is(err, ErrHistoryLost) || !strings.Contains(err.Error(), "current version is 3, below version 5 in use") {
		t.Fatalf("Current = %v, want ErrHistoryLost", err)
	}
	src.Set(versioned(t, small, 5))
	testenv.Eventually(t, 5*time.Second, "version 5 confirmed again", func() bool { return currentVersion(c) == 5 })
}
