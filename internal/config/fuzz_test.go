package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseFinish feeds arbitrary YAML to Parse (and, with ${VAR}
// expansion, to parse) and every parsed config to Finish for each command
// scope: nothing panics, and every error is an *Error with at least one
// problem, each message one line.
func FuzzParseFinish(f *testing.F) {
	for _, s := range []string{
		"",
		"kafka: {clusters: {a: {brokers: [\"127.0.0.1:1\"]}}}\nrouter: {ingest_topics: [events.in]}\nredis: {addr: \"127.0.0.1:1\"}\n",
		"kafka:\n  clusters:\n    ingest: {brokers: [\"127.0.0.1:1\"], tls: {ca_file: /x}}\n  ingest_cluster: ingest\nrouter: {ingest_topics: [x], batch_size: 100, max_inflight_events: 50, max_value_bytes: 2000, max_inflight_bytes: 1000}\n",
		"router: {ingest_topics: [x], max_inflight_events: -1, max_inflight_bytes: -5, max_uncommitted_events: -1, max_uncommitted_bytes: -1, memory_limit: -1}\n",
		"sinks:\n  - {store: us-postgres, region: us, cluster: a, topic: t, postgres: {dsn: \"postgres://x@127.0.0.1:1/db\"}, objectstore: {url: \"file:///tmp\"}}\n",
		"audit: {enabled: true, topic: a, bucket: \"file:///tmp\", attestation: {verify_keys: [{id: k1, file: /x}]}}\n",
		"router: {batch_size: ${N}, ingest_topics: [\"${T}\"]}\nredis: {addr: \"${A:-127.0.0.1:1}\"}\n",
		"kafka: [1, 2]\n", "router: {batch_size: 1e400}\n", "&a [*a]\n", "router: !!binary AAAA\n",
		"kafka:\n  clusters:\n    a: &x {brokers: [b]}\n    b: *x\n", "log_level: verbose\nhttp: {listen: \"::::\"}\n",
	} {
		f.Add([]byte(s))
	}
	lookup := func(name string) (string, bool) {
		switch name {
		case "N":
			return "-3", true
		case "T":
			return "a\nb", true
		case "EMPTY":
			return "", true
		}
		return "", false
	}
	scopes := []Scope{{}, {Route: true}, {Route: true, Attest: true}, {Sink: "us-postgres"}, {Sink: "nope"}, {Erase: true}}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, lk := range []func(string) (string, bool){nil, lookup} {
			c, err := parse(data, lk)
			if err != nil {
				checkError(t, err)
				continue
			}
			for _, s := range scopes {
				c, err := parse(data, lk) // Finish fills in defaults once: a fresh config per scope
				if err != nil {
					t.Fatalf("parse succeeded once and then failed: %v", err)
				}
				if err := c.Finish(s); err != nil {
					checkError(t, err)
				}
			}
			_ = c
		}
	})
}

func checkError(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %q is not a *config.Error", err, err)
	}
	if len(e.Problems) == 0 {
		t.Fatalf("*Error without problems: %q", err)
	}
	for _, p := range e.Problems {
		if strings.Contains(p.Message, "\n") {
			t.Fatalf("problem message on several lines: %q", p.Message)
		}
	}
}
