package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
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
	// Username and Password authenticate as an ACL user (NewRedisAuth);
	// empty for a server that needs no password.
	Username, Password string
	// RequirePass is the default user's password on the server of
	// NewRedisAuth (different from Password); empty elsewhere.
	RequirePass string
	// TLS is the client's TLS configuration for a server that requires TLS
	// (NewRedisTLS, NewRedisMTLS): it trusts the dev stack's CA and, for
	// mutual TLS, presents the client certificate. Nil for plain TCP.
	TLS *tls.Config
	// CAFile is the PEM file of the CA that signed the server's certificate
	// (TLS only), for code under test that is configured with file paths.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and key (mutual
	// TLS only).
	CertFile, KeyFile string
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

// NewRedisAuth returns the dev stack's Redis that requires a password, with
// the credentials of an ACL user (Username, Password) and the default user's
// password (RequirePass). It has no embedded stand-in: without
// RESIDENCY_TEST_REDIS_AUTH the test fails, or is skipped under -short.
func NewRedisAuth(t testing.TB) *Redis {
	t.Helper()
	raw := required(t, EnvRedisAuth, "a Redis that requires a password")
	opt, err := redis.ParseURL(raw)
	if err != nil || opt.Username == "" || opt.Password == "" {
		t.Fatalf("testenv: %s is not redis://USER:PASSWORD@HOST:PORT (%v)", EnvRedisAuth, err)
		return nil
	}
	r := &Redis{
		Addr: opt.Addr, Prefix: Name(t, "t") + ":", Real: true,
		Username: opt.Username, Password: opt.Password,
		RequirePass: os.Getenv(EnvRedisAuthRequirePass),
	}
	r.answers(t, EnvRedisAuth)
	return r
}

// NewRedisTLS returns the dev stack's Redis that accepts only TLS, with a
// TLS configuration that trusts its CA. It has no embedded stand-in: without
// RESIDENCY_TEST_REDIS_TLS the test fails, or is skipped under -short.
func NewRedisTLS(t testing.TB) *Redis {
	t.Helper()
	addr := required(t, EnvRedisTLS, "a Redis that requires TLS")
	r := &Redis{Addr: addr, Prefix: Name(t, "t") + ":", Real: true}
	r.CAFile = required(t, EnvRedisTLSCA, "the dev stack's CA")
	r.TLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: CertPool(t, r.CAFile)}
	r.answers(t, EnvRedisTLS)
	return r
}

// NewRedisMTLS returns the dev stack's Redis that accepts only TLS with a
// client certificate, with a TLS configuration that trusts its CA and
// presents the client certificate. It has no embedded stand-in: without
// RESIDENCY_TEST_REDIS_MTLS the test fails, or is skipped under -short.
func NewRedisMTLS(t testing.TB) *Redis {
	t.Helper()
	addr := required(t, EnvRedisMTLS, "a Redis that requires mutual TLS")
	r := &Redis{Addr: addr, Prefix: Name(t, "t") + ":", Real: true}
	r.CAFile = required(t, EnvRedisTLSCA, "the dev stack's CA")
	r.CertFile = required(t, EnvRedisTLSClientCert, "the dev stack's client certificate")
	r.KeyFile = required(t, EnvRedisTLSClientKey, "the dev stack's client key")
	cert, err := tls.LoadX509KeyPair(r.CertFile, r.KeyFile)
	if err != nil {
		t.Fatalf("testenv: client certificate (%s, %s): %v", EnvRedisTLSClientCert, EnvRedisTLSClientKey, err)
	}
	r.TLS = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      CertPool(t, r.CAFile),
		Certificates: []tls.Certificate{cert},
	}
	r.answers(t, EnvRedisMTLS)
	return r
}

// CertPool returns a pool holding the PEM certificates of file.
func CertPool(t testing.TB, file string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("testenv: CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("testenv: CA: no PEM certificate in %s", file)
	}
	return pool
}

// answers fails the test unless the server answers PING with the client's
// options, and registers the cleanup of the test's keys.
func (r *Redis) answers(t testing.TB, env string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(r.Options())
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("testenv: Redis (%s=%s) does not answer: %v; %s", env, r.Addr, err, startHint)
	}
	t.Cleanup(func() { r.cleanup() })
}

// Options returns go-redis options that reach the server: its address and,
// where the server needs them, the credentials and TLS configuration.
func (r *Redis) Options() *redis.Options {
	o := &redis.Options{Addr: r.Addr, Username: r.Username, Password: r.Password}
	if r.TLS != nil {
		o.TLSConfig = r.TLS.Clone()
	}
	return o
}

// Client returns a go-redis client for the server, closed when the test ends.
func (r *Redis) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(r.Options())
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// DeleteKeys deletes every key under the test's prefix: for a test, what
// Redis losing its data looks like to the code using that prefix (never
// FLUSHALL a shared server).
func (r *Redis) DeleteKeys(t testing.TB) {
	t.Helper()
	r.cleanup()
}

func (r *Redis) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(r.Options())
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
