// Package testenv hands tests the services they need: Kafka clusters, Redis
// (plain, requiring a password, requiring TLS or mutual TLS), PostgreSQL, an
// S3-compatible object store and a Confluent-compatible schema registry.
//
// Under `make test`, deploy/dev/up starts real Apache Kafka (two independent
// KRaft clusters), Redis, PostgreSQL, moto's S3 server and Apicurio Registry
// on loopback and exports their addresses (see the Env* constants); testenv
// then returns those. Without them it falls back to the embedded stand-ins
// (kfake, miniredis) for Kafka and plain Redis, so a quick `go test` works
// with nothing installed. The other services have no stand-in: tests that
// need them fail with instructions, or are left out under -short.
//
// Under CI=true a missing real service is a failure, never a fallback or a
// skip. A service whose variable is set but which does not answer is always a
// failure.
//
// Every helper gives each test unique names (topics, groups, key prefixes,
// database schemas) so tests can run in parallel and be run again.
//
// It also holds the small helpers tests of several packages share:
// SyncBuffer, Eventually and Start.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/embedded"
)

// Environment variables set by deploy/dev/up (and read here).
const (
	// EnvKafkaA is the bootstrap address of the first ("ingest") Kafka cluster.
	EnvKafkaA = "RESIDENCY_TEST_KAFKA_A"
	// EnvKafkaB is the bootstrap address of the second, independent cluster.
	EnvKafkaB = "RESIDENCY_TEST_KAFKA_B"
	// EnvKafkaVersion is the Apache Kafka version of both clusters.
	EnvKafkaVersion = "RESIDENCY_TEST_KAFKA_VERSION"
	// EnvRedis is the host:port of Redis.
	EnvRedis = "RESIDENCY_TEST_REDIS"
	// EnvRedisAuth is the URL (redis://USER:PASSWORD@HOST:PORT) of a Redis
	// that requires a password: USER is an ACL user with every right.
	EnvRedisAuth = "RESIDENCY_TEST_REDIS_AUTH"
	// EnvRedisAuthRequirePass is the default user's password (requirepass)
	// on the EnvRedisAuth server; it differs from the ACL user's.
	EnvRedisAuthRequirePass = "RESIDENCY_TEST_REDIS_AUTH_REQUIREPASS"
	// EnvRedisTLS is the host:port of a Redis that accepts only TLS; its
	// certificate is signed by the CA in EnvRedisTLSCA.
	EnvRedisTLS = "RESIDENCY_TEST_REDIS_TLS"
	// EnvRedisMTLS is the host:port of a Redis that accepts only TLS with a
	// client certificate signed by the CA in EnvRedisTLSCA.
	EnvRedisMTLS = "RESIDENCY_TEST_REDIS_MTLS"
	// EnvRedisTLSCA is the PEM file of the CA behind EnvRedisTLS and
	// EnvRedisMTLS.
	EnvRedisTLSCA = "RESIDENCY_TEST_REDIS_TLS_CA"
	// EnvRedisTLSClientCert is the PEM client certificate for EnvRedisMTLS.
	EnvRedisTLSClientCert = "RESIDENCY_TEST_REDIS_TLS_CLIENT_CERT"
	// EnvRedisTLSClientKey is the PEM key of EnvRedisTLSClientCert.
	EnvRedisTLSClientKey = "RESIDENCY_TEST_REDIS_TLS_CLIENT_KEY"
	// EnvPostgres is a PostgreSQL connection URL for a database tests may
	// create schemas in.
	EnvPostgres = "RESIDENCY_TEST_POSTGRES"
	// EnvS3Endpoint is the URL of an S3-compatible object store (moto's
	// server), addressed path-style.
	EnvS3Endpoint = "RESIDENCY_TEST_S3_ENDPOINT"
	// EnvS3Region is the region to sign requests to EnvS3Endpoint for.
	EnvS3Region = "RESIDENCY_TEST_S3_REGION"
	// EnvS3AccessKeyID is the access key id to sign requests with.
	EnvS3AccessKeyID = "RESIDENCY_TEST_S3_ACCESS_KEY_ID"
	// EnvS3SecretAccessKey is the secret key that goes with EnvS3AccessKeyID.
	EnvS3SecretAccessKey = "RESIDENCY_TEST_S3_SECRET_ACCESS_KEY"
	// EnvRegistryURL is the base URL of a Confluent-compatible schema
	// registry (Apicurio Registry's ccompat API).
	EnvRegistryURL = "RESIDENCY_TEST_REGISTRY_URL"
)

// startHint tells a developer how to get the real services.
const startHint = "start them with `eval \"$(deploy/dev/up)\"` (or run `make test`)"

// CI reports whether the tests run under CI (CI=true), where every service
// must be real.
func CI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

var (
	stackOnce sync.Once
	stack     *embedded.Stack
	stackErr  error
)

// embeddedStack starts the process-wide embedded stack on first use. It lives
// until the test binary exits.
func embeddedStack(t testing.TB) *embedded.Stack {
	t.Helper()
	stackOnce.Do(func() { stack, stackErr = embedded.Start(embedded.Options{}) })
	if stackErr != nil {
		t.Fatalf("testenv: embedded stack: %v", stackErr)
	}
	return stack
}

// missing handles a real service that is not configured: a failure under CI,
// otherwise a note in the log and a fallback.
func missing(t testing.TB, env, what string) {
	t.Helper()
	if CI() {
		t.Fatalf("testenv: %s is required under CI=true but %s is not set; %s", what, env, startHint)
	}
	t.Logf("testenv: %s not set; using the embedded stand-in for %s", env, what)
}

// required reads the variable of a service that has no embedded stand-in.
// When it is not set the test fails saying how to start the service, or,
// under -short outside CI, is skipped.
func required(t testing.TB, env, what string) string {
	t.Helper()
	v, ok := lookup(env)
	if !ok {
		if testing.Short() && !CI() {
			t.Skipf("testenv: %s not available under -short (%s unset); %s", what, env, startHint)
			return ""
		}
		t.Fatalf("testenv: this test needs %s and %s is not set; %s", what, env, startHint)
	}
	return v
}

var nameSanitizer = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// Name returns a name unique to this test and this run, safe for Kafka
// topics, consumer groups, Redis key prefixes and SQL identifiers
// (lower-case letters, digits and underscores, at most 60 characters).
func Name(t testing.TB, prefix string) string {
	t.Helper()
	base := strings.ToLower(nameSanitizer.ReplaceAllString(prefix+"_"+t.Name(), "_"))
	if len(base) > 45 {
		base = base[:45]
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testenv: random name: %v", err)
	}
	return strings.Trim(base, "_") + "_" + hex.EncodeToString(b[:])
}

// Context returns a context cancelled when the test ends or after timeout,
// whichever comes first.
func Context(t testing.TB, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// require reads a service variable and reports whether it is set.
func lookup(env string) (string, bool) {
	v := strings.TrimSpace(os.Getenv(env))
	return v, v != ""
}

func errorf(format string, args ...any) error { return fmt.Errorf("testenv: "+format, args...) }
