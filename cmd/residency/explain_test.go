package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/residency-router/residency/connectors/redis"

	"github.com/linkedin/goavro/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

const explainEvent = `{"event_id": "7d3c1c4e-0000-4000-8000-000000000001", "user_id": "u-42", "occurred_at": 1790000000000,
 "event_type": "VIDEO_VIEW", "device": {"device_id": "d1", "os": "IOS", "app_version": "34.1.0"},
 "country": COUNTRY, "tags": ["a"], "properties": {"k": "v"}}`

func writeEventFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func explain(t *testing.T, args ...string) (int, map[string]any, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"explain", "--json"}, args...), strings.NewReader(""), &out, &errOut)
	var x map[string]any
	if out.Len() > 0 {
		if err := json.Unmarshal(bytes.SplitN(out.Bytes(), []byte("\n"), 2)[0], &x); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, out.String())
		}
	}
	return code, x, errOut.String()
}

func TestExplain(t *testing.T) {
	rulesFile := "../../deploy/examples/rules.yaml"
	enc, err := sample.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	value, _ := enc.Encode(sample.Event{ID: "e", UserID: "u", Country: "IN"})
	body, _ := enc.Body(sample.Event{ID: "e", UserID: "u", Country: "PR"})
	tests := []struct {
		name     string
		file     string
		data     []byte
		extra    []string
		code     int
		decision string
		field    string // a field to check
		want     string
	}{
		{"plain json", "e.json", []byte(strings.Replace(explainEvent, "COUNTRY", `"DE"`, 1)), nil, exitOK, "routed", "region", "eu"},
		{"avro json", "e.json", []byte(strings.Replace(explainEvent, "COUNTRY", `{"string": "GB"}`, 1)), nil, exitOK, "routed", "jurisdiction", "UK"},
		{"null country", "e.json", []byte(strings.Replace(explainEvent, "COUNTRY", `null`, 1)), nil, exitFailure, "quarantined", "reason", "no_country"},
		{"unknown country", "e.json", []byte(strings.Replace(explainEvent, "COUNTRY", `"ZZ"`, 1)), nil, exitFailure, "quarantined", "reason", "unknown_country"},
		{"single-object value", "e.avro", value, nil, exitOK, "routed", "topic", "residency.in"},
		{"raw value", "e.avro", body, []string{"--framing", "raw"}, exitOK, "routed", "jurisdiction", "US"},
		{"truncated value", "e.avro", value[:20], nil, exitFailure, "dead-lettered", "reason", "truncated"},
		{"bad magic", "e.avro", []byte("hello"), nil, exitFailure, "dead-lettered", "reason", "bad_magic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeEventFile(t, tt.file, tt.data)
			code, x, stderr := explain(t, append([]string{f, "--rules", rulesFile}, tt.extra...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d (stderr %s, out %v)", code, tt.code, stderr, x)
			}
			if x["decision"] != tt.decision || x[tt.field] != tt.want {
				t.Fatalf("explanation %v, want decision %s and %s=%s", x, tt.decision, tt.field, tt.want)
			}
		})
	}
}

func TestExplainContainerFile(t *testing.T) {
	var buf bytes.Buffer
	w, err := goavro.NewOCFWriter(goavro.OCFConfig{W: &buf, Schema: schemas.UserEventSchema})
	if err != nil {
		t.Fatal(err)
	}
	codec, _ := goavro.NewCodec(schemas.UserEventSchema)
	var recs []any
	for _, c := range []string{`"FR"`, `"ZZ"`} {
		body, err := schemas.EncodeJSON(schemas.UserEventSchema, []byte(strings.Replace(explainEvent, "COUNTRY", c, 1)))
		if err != nil {
			t.Fatal(err)
		}
		native, _, err := codec.NativeFromBinary(body)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, native)
	}
	if err := w.Append(recs); err != nil {
		t.Fatal(err)
	}
	f := writeEventFile(t, "events.avro", buf.Bytes())
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"explain", f, "--rules", "../../deploy/examples/rules.yaml"}, nil, &out, &errOut)
	if code != exitFailure {
		t.Fatalf("exit %d, want 1 (one record is unplaceable); stderr %s", code, errOut.String())
	}
	s := out.String()
	if !strings.Contains(s, "record 1") || !strings.Contains(s, "residency.eu") || !strings.Contains(s, "unknown_country") {
		t.Fatalf("output:\n%s", s)
	}
}

func TestExplainUsage(t *testing.T) {
	f := writeEventFile(t, "e.json", []byte(strings.Replace(explainEvent, "COUNTRY", `"DE"`, 1)))
	for _, args := range [][]string{{f}, {f, "--rules", "x", "--redis", "y"}, {"--rules", "x"}, {"/nonexistent", "--rules", "../../deploy/examples/rules.yaml"}} {
		if code, _, _ := explain(t, args...); code != exitUsage {
			t.Errorf("explain %v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

func TestExplainFromRedisWithPin(t *testing.T) {
	r := testenv.NewRedis(t)
	ctx := testenv.Context(t, 30e9)
	client := goredis.NewClient(&goredis.Options{Addr: r.Addr})
	defer client.Close()
	store := redis.NewRules(client, r.Prefix)
	data, err := os.ReadFile("../../deploy/examples/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	info, err := store.Apply(ctx, data, rules.ApplyOptions{Author: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Pin(ctx, "u-42", "IN"); err != nil {
		t.Fatal(err)
	}
	f := writeEventFile(t, "e.json", []byte(strings.Replace(explainEvent, "COUNTRY", `"DE"`, 1)))
	code, x, stderr := explain(t, f, "--redis", r.Addr, "--prefix", r.Prefix)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if x["jurisdiction"] != "IN" || x["decided_by"] != "pin" || x["ruleset_version"] != float64(info.Number) {
		t.Fatalf("explanation %v, want IN by pin at version %d", x, info.Number)
	}
	if code, _, _ := explain(t, f, "--redis", "127.0.0.1:1"); code != exitNotReady {
		t.Fatalf("unreachable Redis: exit %d, want %d", code, exitNotReady)
	}
}
