package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/internal/testenv"
)

// securedRedis is one of the dev stack's Redis servers that refuse a
// client without credentials or TLS, with the redis section of a config
// that reaches it and one that does not.
type securedRedis struct {
	name    string
	r       *testenv.Redis
	section string // the redis section reaching it, as YAML
	without string // the same without what the server requires
	refusal string // what the server's refusal says, without it
	env     map[string]string
}

func securedRedises(t *testing.T) []securedRedis {
	dir := t.TempDir()
	secret := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	auth, tls, mtls := testenv.NewRedisAuth(t), testenv.NewRedisTLS(t), testenv.NewRedisMTLS(t)
	return []securedRedis{
		{
			// An ACL user, its password from a file.
			name: "password (ACL user, password_file)", r: auth,
			section: fmt.Sprintf("redis: {addr: %q, prefix: %q, username: %q, password_file: %q}\n", auth.Addr, auth.Prefix, auth.Username, secret("redis-pw", auth.Password)),
			without: fmt.Sprintf("redis: {addr: %q, prefix: %q}\n", auth.Addr, auth.Prefix),
			refusal: "NOAUTH",
		},
		{
			// The default user's password, from ${VAR}.
			name: "password (requirepass, ${VAR})", r: auth,
			section: fmt.Sprintf("redis: {addr: %q, prefix: %q, password: \"${T17_REDIS_PASSWORD}\"}\n", auth.Addr, auth.Prefix),
			without: fmt.Sprintf("redis: {addr: %q, prefix: %q}\n", auth.Addr, auth.Prefix),
			refusal: "NOAUTH",
			env:     map[string]string{"T17_REDIS_PASSWORD": auth.RequirePass},
		},
		{
			name: "TLS (CA, server name)", r: tls,
			section: fmt.Sprintf("redis: {addr: %q, prefix: %q, tls: {enabled: true, ca_file: %q, server_name: localhost}}\n", tls.Addr, tls.Prefix, tls.CAFile),
			without: fmt.Sprintf("redis: {addr: %q, prefix: %q, tls: {enabled: true, ca_file: %q, server_name: not-this-host}}\n", tls.Addr, tls.Prefix, tls.CAFile),
			refusal: "certificate is valid for",
		},
		{
			name: "mutual TLS (client certificate)", r: mtls,
			section: fmt.Sprintf("redis: {addr: %q, prefix: %q, tls: {enabled: true, ca_file: %q, cert_file: %q, key_file: %q}}\n", mtls.Addr, mtls.Prefix, mtls.CAFile, mtls.CertFile, mtls.KeyFile),
			without: fmt.Sprintf("redis: {addr: %q, prefix: %q, tls: {enabled: true, ca_file: %q}}\n", mtls.Addr, mtls.Prefix, mtls.CAFile),
			refusal: "", // the server hangs up: the error varies
		},
	}
}

// TestRulesAndExplainReachSecuredRedis is issue 17's acceptance: `rules
// apply|show|pin|pins|history` and `explain` work with --config against the
// dev stack's Redis that requires a password (an ACL user, and the
// default user's requirepass) and those that require TLS and mutual TLS,
// reaching it exactly as the router does (the config's redis section:
// password_file and ${VAR} included). The same config without what the
// server requires is refused by the server: the credentials and TLS are
// what made the difference, and no secret reaches the output.
func TestRulesAndExplainReachSecuredRedis(t *testing.T) {
	event := writeFile(t, "e.json", `{"country": "US", "user_id": "u-pinned"}`)
	for _, sr := range securedRedises(t) {
		t.Run(sr.name, func(t *testing.T) {
			for k, v := range sr.env {
				t.Setenv(k, v)
			}
			// Each case gets its own keys (two cases share one server).
			prefix := testenv.Name(t, "k") + ":"
			section := strings.ReplaceAll(sr.section, sr.r.Prefix, prefix)
			cfg := writeFile(t, "residency.yaml", section)
			without := writeFile(t, "without.yaml", strings.ReplaceAll(sr.without, sr.r.Prefix, prefix))
			cleanupPrefix(t, sr.r, prefix)

			code, out, errs := cli(t, "rules", "apply", example, "--config", cfg, "--author", "t17")
			mustCode(t, exitOK, code, out, errs)
			if !strings.Contains(out, "as version 1") {
				t.Fatalf("apply: %s", out)
			}
			code, out, errs = cli(t, "rules", "show", "--config", cfg, "--output", "json")
			mustCode(t, exitOK, code, out, errs)
			var shown struct {
				Number  int64  `json:"number"`
				Author  string `json:"author"`
				Content string `json:"content"`
			}
			if err := json.Unmarshal([]byte(out), &shown); err != nil || shown.Number != 1 || shown.Author != "t17" || !strings.Contains(shown.Content, "jurisdictions:") {
				t.Fatalf("show --output json: %v %+v\n%s", err, shown, out)
			}
			code, out, errs = cli(t, "rules", "pin", "u-pinned", "EU", "--config", cfg)
			mustCode(t, exitOK, code, out, errs)
			code, out, errs = cli(t, "rules", "pins", "--config", cfg, "--output", "json")
			mustCode(t, exitOK, code, out, errs)
			if !strings.Contains(out, `"jurisdiction":"EU"`) {
				t.Fatalf("pins: %s", out)
			}
			code, out, errs = cli(t, "rules", "history", "--config", cfg)
			mustCode(t, exitOK, code, out, errs)
			if !strings.Contains(out, "1 (current)") {
				t.Fatalf("history: %s", out)
			}
			// explain decides with the ruleset and the pin in that Redis.
			code, x, errOut := explain(t, event, "--config", cfg)
			if code != exitOK || x["decision"] != "routed" || x["jurisdiction"] != "EU" || x["decided_by"] != "pin" || x["ruleset_version"] != float64(1) {
				t.Fatalf("explain: exit %d, %v, %s", code, x, errOut)
			}

			// Without the credentials or the right TLS settings: refused.
			for _, args := range [][]string{{"rules", "show", "--config", without}, {"explain", event, "--config", without}} {
				code, out, errs := cli(t, args...)
				if code == exitOK || !strings.Contains(errs, sr.refusal) {
					t.Errorf("%v without what the server requires: exit %d, stdout %q, stderr %q; want a refusal with %q", args, code, out, errs, sr.refusal)
				}
				for _, secret := range []string{sr.r.Password, sr.r.RequirePass} {
					if secret != "" && strings.Contains(out+errs, secret) {
						t.Errorf("a password is in the output of %v", args)
					}
				}
			}
		})
	}
}

// cleanupPrefix deletes the keys under prefix on r's server when the test
// ends.
func cleanupPrefix(t *testing.T, r *testenv.Redis, prefix string) {
	c := r.Client(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		keys, _ := c.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
	})
}

// TestWriterConfigFollowsThePartitioner: every command writes with the
// config's kafka.partitioner (murmur2 by default, fnv1a when set) and its
// compression, over the cluster's TLS and SASL settings.
func TestWriterConfigFollowsThePartitioner(t *testing.T) {
	for partitioner, want := range map[string]string{"": "*kafka.Murmur2Balancer", "murmur2": "*kafka.Murmur2Balancer", "fnv1a": "*kafka.HashBalancer"} {
		p := writeFile(t, "c.yaml", fmt.Sprintf("kafka: {clusters: {a: {brokers: [\"h:1\"], sasl: {mechanism: plain, username: u, password: p}}}, compression: zstd, partitioner: %q}\nrouter: {ingest_topics: [in]}\n", partitioner))
		cfg, err := loadConfig(p, config.Scope{Route: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		wc := writerConfig(cfg, "a")
		if got := fmt.Sprintf("%T", wc.Balancer); got != want || wc.Compression != "zstd" || wc.Cluster.SASL.Username != "u" {
			t.Errorf("partitioner %q: %s, %+v; want %s", partitioner, got, wc, want)
		}
	}
}

// TestConsumerAndProducerConfigFollowTheConfig: the batch Consumer gets
// kafka.isolation_level (read_committed included: it filters aborted
// transactions) and the group timeouts; the idempotent Producer the
// partitioner and compression, as the Writer.
func TestConsumerAndProducerConfigFollowTheConfig(t *testing.T) {
	p := writeFile(t, "c.yaml", "kafka: {clusters: {a: {brokers: [\"h:1\"]}}, isolation_level: read_committed, session_timeout: 7s, partitioner: fnv1a, compression: lz4}\nrouter: {ingest_topics: [in]}\n")
	cfg, err := loadConfig(p, config.Scope{Route: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cc := consumerConfig(cfg, "a", "g", []string{"in"}, "earliest")
	if cc.IsolationLevel != "read_committed" || cc.SessionTimeout != 7*time.Second || cc.Cluster.Brokers[0] != "h:1" || cc.GroupID != "g" {
		t.Errorf("consumer config %+v", cc)
	}
	c, err := kafka.NewConsumer(cc)
	if err != nil {
		t.Fatalf("NewConsumer refuses it: %v", err)
	}
	_ = c.Close(context.Background())
	pc := producerConfig(cfg, "a")
	if fmt.Sprintf("%T", pc.Balancer) != "*kafka.HashBalancer" || pc.Compression != "lz4" {
		t.Errorf("producer config %+v", pc)
	}
	// kafka-go's reader refuses read_committed, naming the field.
	if _, err := newReader(cfg, "a", "g", []string{"in"}, "earliest", nil); err == nil || !strings.Contains(err.Error(), "kafka.isolation_level") {
		t.Errorf("newReader with read_committed: %v", err)
	}
}
