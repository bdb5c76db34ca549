package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Redis server a test may use under its own key prefix.
type Redis struct {
	// Addr is the server's host:port.
	Addr string
	// Prefix is a key prefix unique to this test; keys under it are deleted
	// when the test ends. Code under test should take it as its namespace.
	Prefix string
	// Real is true for the dev stack's redis-server, false for miniredis.
	Real bool
}

// NewRedis returns the Redis server for this test and a unique key prefix.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{Prefix: Name(t, "t") + ":"}
	if addr, ok := lookup(EnvRedis); ok {
		if err := dialAny([]string{addr}); err != nil {
			t.Fatalf("testenv: Redis (%s=%s) does not answer: %v; %s", EnvRedis, addr, err, startHint)
		}
		r.Addr, r.Real = addr, true
	} else {
		missing(t, EnvRedis, "Redis")
		r.Addr = embeddedStack(t).RedisAddr()
	}
	t.Cleanup(func() { r.cleanup() })
	return r
}

// Client returns a go-redis client for the server, closed when the test ends.
func (r *Redis) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (r *Redis) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	iter := c.Scan(ctx, 0, r.Prefix+"*", 500).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if len(keys) > 0 {
		_ = c.Del(ctx, keys...).Err()
	}
}
