package rules

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

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
