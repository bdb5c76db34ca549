package config

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/erasure"
)

const erasureBase = "kafka: {clusters: {main: {brokers: ['h:9092']}}}\nrouter: {ingest_topics: [in]}\n"

// TestErasureDefaults: purge, erasure and residue have their packages'
// defaults; erasure.settle outlasts every sink's write_timeout.
func TestErasureDefaults(t *testing.T) {
	c, err := Parse([]byte(erasureBase + "sinks: [{store: s, region: us, write_timeout: 45s, postgres: {dsn: 'postgres://h/db'}}]\nrules: {staleness_bound: 60s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true}); err != nil {
		t.Fatal(err)
	}
	if c.Purge.AfterSinks || c.Purge.MinAge != 0 || c.Purge.Every != 0 || c.Purge.MaxScan != erasure.DefaultMaxScan ||
		!c.Erasure.TopicsListed() || c.Residue.MaxListed != erasure.DefaultMaxListed {
		t.Fatalf("purge %+v, erasure %+v, residue %+v", c.Purge, c.Erasure, c.Residue)
	}
	if c.Erasure.Settle != 55*time.Second {
		t.Fatalf("erasure.settle = %s, want the longest write_timeout (45s) + 10s", c.Erasure.Settle)
	}
	c, _ = Parse([]byte(erasureBase))
	if err := c.Finish(Scope{Route: true}); err != nil || c.Erasure.Settle != erasure.DefaultSettle {
		t.Fatalf("erasure.settle = %s (%v), want %s", c.Erasure.Settle, err, erasure.DefaultSettle)
	}
}

// TestErasureConfigErrorsNameTheField: bad values of the purge, erasure,
// residue and audit key settings name their field.
func TestErasureConfigErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.key")
	writeFile(t, short, "too short")
	good := filepath.Join(dir, "subject.key")
	writeFile(t, good, strings.Repeat("k", 40)+"\n")
	for _, tt := range []struct {
		yaml  string
		scope Scope
		want  []string
	}{
		{"purge: {min_age: -1s, every: -5m, max_scan: -1}\n", Scope{Route: true},
			[]string{"purge.every: must not be negative", "purge.max_scan: must not be negative", "purge.min_age: must not be negative"}},
		{"erasure: {settle: 5s}\nsinks: [{store: s, region: us, write_timeout: 10s, postgres: {dsn: 'postgres://h/db'}}]\n", Scope{Route: true},
			[]string{"erasure.settle: 5s must be more than sinks[0].write_timeout (10s)"}},
		{"residue: {max_listed: -3}\n", Scope{Route: true}, []string{"residue.max_listed: must not be negative"}},
		{"audit: {subject_key_file: " + short + "}\n", Scope{Route: true}, []string{"audit.subject_key_file: " + short + " holds 9 bytes, at least 32 needed"}},
		{"audit: {subject_key_file: " + filepath.Join(dir, "none") + "}\n", Scope{Route: true}, []string{"audit.subject_key_file: open"}},
		{"", Scope{Route: true, Erase: true}, []string{"audit.subject_key_file: required by erase", "sinks: required by erase"}},
	} {
		c, err := Parse([]byte(erasureBase + tt.yaml))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Finish(tt.scope)
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("finish(%q) = %v, want ErrInvalid", tt.yaml, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	}
	c, _ := Parse([]byte(erasureBase + "audit: {subject_key_file: " + good + "}\nsinks: [{store: s, region: us, postgres: {dsn: 'postgres://h/db'}}]\n"))
	if err := c.Finish(Scope{Route: true, Erase: true}); err != nil {
		t.Fatal(err)
	}
	p, err := c.Audit.Pseudonymizer()
	if err != nil || p == nil {
		t.Fatalf("pseudonymizer: %v", err)
	}
	if d := p.Subject([]byte("u")); bytes.Equal(d[:], make([]byte, len(d))) {
		t.Fatal("zero digest")
	}
}
