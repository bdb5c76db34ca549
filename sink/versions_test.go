package sink_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/redis"

	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
)

// countingLoader loads sinktest rulesets of any positive version, counting
// loads; it fails the first fail loads, and answers version answer instead
// when set.
type countingLoader struct {
	mu     sync.Mutex
	loads  map[int64]int
	fail   int
	answer int64
}

func (c *countingLoader) Load(_ context.Context, v int64) (*rules.Ruleset, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loads[v]++
	if c.fail > 0 {
		c.fail--
		return nil, fmt.Errorf("rules: read version %d: %w", v, rules.ErrUnavailable)
	}
	if v <= 0 {
		return nil, rules.ErrNotFound
	}
	if c.answer != 0 {
		v = c.answer
	}
	return sinktest.Ruleset(v, usTopic, euTopic, storeName, "us"), nil
}

func TestVersionsKeepsTheLastUsed(t *testing.T) {
	ctx := context.Background()
	src := &countingLoader{loads: map[int64]int{}}
	vs := sink.NewVersions(src, 2)
	for _, v := range []int64{1, 1, 2, 1, 3, 1, 2} {
		rs, err := vs.Ruleset(ctx, v, "")
		if err != nil || rs.Version() != v {
			t.Fatalf("Ruleset(%d) = %v, %v", v, rs, err)
		}
	}
	// 1 stays (used last before 3 came), 2 is evicted by 3 and loaded again.
	if src.loads[1] != 1 || src.loads[2] != 2 || src.loads[3] != 1 || vs.Len() != 2 {
		t.Errorf("loads %v, kept %d; want 1 once, 2 twice, 3 once, 2 kept", src.loads, vs.Len())
	}
}

func TestVersionsDoesNotKeepFailures(t *testing.T) {
	ctx := context.Background()
	src := &countingLoader{loads: map[int64]int{}, fail: 1}
	vs := sink.NewVersions(src, 0)
	if _, err := vs.Ruleset(ctx, 4, ""); !errors.Is(err, rules.ErrUnavailable) {
		t.Fatalf("first Ruleset(4) = %v, want ErrUnavailable", err)
	}
	if rs, err := vs.Ruleset(ctx, 4, ""); err != nil || rs.Version() != 4 {
		t.Fatalf("second Ruleset(4) = %v, %v", rs, err)
	}
	if _, err := vs.Ruleset(ctx, 0, ""); !errors.Is(err, rules.ErrNotFound) {
		t.Errorf("Ruleset(0) = %v, want ErrNotFound", err)
	}
}

// A loader answering another version than asked (the Redis store's Load(0)
// answers the current one) is not believed.
func TestVersionsRefusesAnotherVersion(t *testing.T) {
	vs := sink.NewVersions(&countingLoader{loads: map[int64]int{}, answer: 9}, 0)
	if rs, err := vs.Ruleset(context.Background(), 3, ""); !errors.Is(err, rules.ErrNotFound) {
		t.Fatalf("Ruleset(3) = %v, %v; want ErrNotFound", rs, err)
	}
}

// Over `--rules FILE`: the file's one version, 0, and nothing else.
func TestVersionsOverAStaticSource(t *testing.T) {
	rs := sinktest.Ruleset(0, usTopic, euTopic, storeName, "us")
	vs := sink.NewVersions(rules.NewStaticSource(rs), 0)
	if got, err := vs.Ruleset(context.Background(), 0, ""); err != nil || got != rs {
		t.Errorf("Ruleset(0) = %v, %v", got, err)
	}
	if _, err := vs.Ruleset(context.Background(), 1, ""); !errors.Is(err, rules.ErrNotFound) {
		t.Errorf("Ruleset(1) = %v, want ErrNotFound", err)
	}
}

// Over the Redis rules store (real Redis): every applied version; not 0,
// which the store reads as "the current one"; and unreachable Redis is
// ErrUnavailable, which the sink retries.
func TestVersionsOverRedis(t *testing.T) {
	r := testenv.NewRedis(t)
	store := redis.NewRules(r.Client(t), r.Prefix)
	ctx := testenv.Context(t, 30*time.Second)
	for base, content := range []string{rulesV("residency.us", "us"), rulesV("residency.us", "ca")} {
		if _, err := store.Apply(ctx, []byte(content), rules.ApplyOptions{Base: int64(base)}); err != nil {
			t.Fatal(err)
		}
	}
	vs := sink.NewVersions(store, 0)
	for _, c := range []struct {
		v      int64
		region string
	}{{1, "us"}, {2, "ca"}} {
		rs, err := vs.Ruleset(ctx, c.v, "")
		if err != nil || rs.Version() != c.v {
			t.Fatalf("Ruleset(%d) = %v, %v", c.v, rs, err)
		}
		if j, _ := rs.Jurisdiction("CA"); j.RegionRef().Name != c.region {
			t.Errorf("version %d maps CA to %s, want %s", c.v, j.RegionRef().Name, c.region)
		}
	}
	for _, v := range []int64{0, 3} {
		if _, err := vs.Ruleset(ctx, v, ""); !errors.Is(err, rules.ErrNotFound) {
			t.Errorf("Ruleset(%d) = %v, want ErrNotFound", v, err)
		}
	}
	down := redis.NewRules(goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}), r.Prefix)
	if _, err := sink.NewVersions(down, 0).Ruleset(ctx, 1, ""); !errors.Is(err, rules.ErrUnavailable) {
		t.Errorf("Ruleset with Redis down = %v, want ErrUnavailable", err)
	}
}

// TestVersionsByDigestOverRedis: Redis loses its data and version 1 is
// applied again with other content. Events name the content that placed
// them: the kept content answers for its own digest, the new content is
// loaded for its digest, and a digest neither the store nor memory has is
// rules.ErrContentChanged (the sink quarantines such events).
func TestVersionsByDigestOverRedis(t *testing.T) {
	r := testenv.NewRedis(t)
	store := redis.NewRules(r.Client(t), r.Prefix)
	ctx := testenv.Context(t, 30*time.Second)
	a, b := rulesV("residency.us", "us"), rulesV("residency.us", "ca")
	infoA, err := store.Apply(ctx, []byte(a), rules.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vs := sink.NewVersions(store, 0)
	shortA := rules.ShortDigest(infoA.SHA256)
	if rs, err := vs.Ruleset(ctx, 1, shortA); err != nil || !rs.HasDigest(shortA) {
		t.Fatalf("Ruleset(1, A) = %v, %v", rs, err)
	}
	r.DeleteKeys(t)
	infoB, err := store.Apply(ctx, []byte(b), rules.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	shortB := rules.ShortDigest(infoB.SHA256)
	if rs, err := vs.Ruleset(ctx, 1, shortA); err != nil || !rs.HasDigest(shortA) {
		t.Fatalf("Ruleset(1, A) from memory = %v, %v", rs, err)
	}
	rs, err := vs.Ruleset(ctx, 1, shortB)
	if err != nil || !rs.HasDigest(infoB.SHA256) {
		t.Fatalf("Ruleset(1, B) = %v, %v", rs, err)
	}
	if j, _ := rs.Jurisdiction("CA"); j.RegionRef().Name != "ca" {
		t.Errorf("version 1 with digest B maps CA to %s, want ca", j.RegionRef().Name)
	}
	if vs.Len() != 2 {
		t.Errorf("%d versions kept, want both contents of version 1", vs.Len())
	}
	_, err = sink.NewVersions(store, 0).Ruleset(ctx, 1, shortA)
	if !errors.Is(err, rules.ErrContentChanged) || !strings.Contains(err.Error(), shortA) || !strings.Contains(err.Error(), shortB) {
		t.Fatalf("Ruleset(1, A) of a fresh Versions = %v, want ErrContentChanged naming both digests", err)
	}
}
