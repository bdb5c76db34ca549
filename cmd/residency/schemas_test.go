package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/schemas"
)

// schemasCLI runs `residency schemas args...`.
func schemasCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"schemas"}, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func avscFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// withField returns the canonical schema with one more field appended.
func withField(t *testing.T, fieldJSON string) string {
	t.Helper()
	i := strings.LastIndex(schemas.UserEventSchema, "]")
	return schemas.UserEventSchema[:i] + "," + fieldJSON + schemas.UserEventSchema[i:]
}

// withoutField returns the canonical schema without the named top-level
// field.
func withoutField(t *testing.T, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(schemas.UserEventSchema), &m); err != nil {
		t.Fatal(err)
	}
	var kept []any
	for _, f := range m["fields"].([]any) {
		if f.(map[string]any)["name"] != name {
			kept = append(kept, f)
		}
	}
	m["fields"] = kept
	b, _ := json.Marshal(m)
	return string(b)
}

func expectCode(t *testing.T, want, code int, out, errs string) {
	t.Helper()
	if code != want {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, want, out, errs)
	}
}

func TestSchemasCheckFiles(t *testing.T) {
	old := avscFile(t, "old.avsc", schemas.UserEventSchema)

	ok := avscFile(t, "new.avsc", withField(t, `{"name":"referrer","type":["null","string"],"default":null}`))
	code, out, errs := schemasCLI(t, "check", ok, "--previous", old)
	expectCode(t, 0, code, out, errs)
	if !strings.Contains(out, "Verdict: yes") || !strings.Contains(out, "ok    country (union [null, string])") {
		t.Fatalf("output:\n%s", out)
	}

	// Flags before the file work too.
	noDefault := avscFile(t, "new.avsc", withField(t, `{"name":"referrer","type":"string"}`))
	code, out, errs = schemasCLI(t, "check", "--previous", old, noDefault)
	expectCode(t, 1, code, out, errs)
	if !strings.Contains(out, "FAIL  referrer: this field is new and has no default") || !strings.Contains(out, "not backward compatible") {
		t.Fatalf("output:\n%s", out)
	}

	noCountry := avscFile(t, "new.avsc", withoutField(t, "country"))
	code, out, errs = schemasCLI(t, "check", noCountry, "--previous", old)
	expectCode(t, 1, code, out, errs)
	if !strings.Contains(out, "FAIL  country: the field is missing, so every event would go to quarantine") ||
		!strings.Contains(out, "ok    yes") {
		t.Fatalf("output:\n%s", out)
	}

	// Without a previous version only routing is checked.
	code, out, errs = schemasCLI(t, "check", ok)
	expectCode(t, 0, code, out, errs)
	if !strings.Contains(out, "not checked") {
		t.Fatalf("output:\n%s", out)
	}

	// A nested country path, given by flag.
	code, out, errs = schemasCLI(t, "check", ok, "--country-field", "device.country")
	expectCode(t, 1, code, out, errs)

	broken := avscFile(t, "broken.avsc", `{"type":"record","name":"X","fields":[{"name":"a"}]}`)
	code, out, errs = schemasCLI(t, "check", broken)
	expectCode(t, 1, code, out, errs)
	if !strings.Contains(out, "is not a valid Avro schema") {
		t.Fatalf("output:\n%s", out)
	}
}

func TestSchemasCheckUsage(t *testing.T) {
	f := avscFile(t, "new.avsc", schemas.UserEventSchema)
	for _, args := range [][]string{
		{},
		{"check"},
		{"check", f, f},
		{"check", "/no/such/file.avsc"},
		{"check", f, "--previous", "/no/such/old.avsc"},
		{"check", f, "--previous", f, "--subject", "s", "--registry", "http://r"},
		{"check", f, "--subject", "s", "--registry", ""},
		{"check", f, "--bogus"},
		{"check", f, "--country-field", "a..b"},
		{"frobnicate"},
	} {
		code, out, errs := schemasCLI(t, args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d\n%s%s", args, code, exitUsage, out, errs)
		}
	}
}

// registryStub follows the published Confluent API for
// GET /subjects/{subject}/versions/latest.
func registryStub(t *testing.T, auth string, latest map[string]any) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
		if auth != "" && r.Header.Get("Authorization") != auth {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error_code":40101,"message":"Unauthorized"}`)
			return
		}
		if r.URL.Path != "/subjects/user-events-value/versions/latest" || latest == nil {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error_code":40401,"message":"Subject 'x' not found."}`)
			return
		}
		_ = json.NewEncoder(w).Encode(latest)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestSchemasCheckRegistry(t *testing.T) {
	latest := map[string]any{"subject": "user-events-value", "version": 3, "id": 42, "schema": schemas.UserEventSchema}
	srv := registryStub(t, "Bearer s3cret", latest)
	t.Setenv(envRegistryToken, "s3cret")
	ok := avscFile(t, "new.avsc", withField(t, `{"name":"referrer","type":["null","string"],"default":null}`))
	code, out, errs := schemasCLI(t, "check", ok, "--registry", srv.URL, "--subject", "user-events-value")
	expectCode(t, 0, code, out, errs)
	if !strings.Contains(out, "version 3 of subject user-events-value (schema id 42)") {
		t.Fatalf("output:\n%s", out)
	}

	narrowed := avscFile(t, "new.avsc", strings.Replace(schemas.UserEventSchema,
		`{"name": "country", "type": ["null", "string"]`, `{"name": "country", "type": "string"`, 1))
	code, out, errs = schemasCLI(t, "check", narrowed, "--registry", srv.URL, "--subject", "user-events-value")
	expectCode(t, 1, code, out, errs)
	if !strings.Contains(out, "FAIL  country: the previous schema allowed null here") {
		t.Fatalf("output:\n%s", out)
	}

	// A subject without versions: the first version is compatible.
	code, out, errs = schemasCLI(t, "check", ok, "--registry", srv.URL, "--subject", "other-value")
	expectCode(t, 0, code, out, errs)
	if !strings.Contains(out, "first") {
		t.Fatalf("output:\n%s", out)
	}

	// Wrong credentials or a registry that is down: exit 3, no verdict.
	t.Setenv(envRegistryToken, "wrong")
	code, out, errs = schemasCLI(t, "check", ok, "--registry", srv.URL, "--subject", "user-events-value")
	expectCode(t, exitNotReady, code, out, errs)
	if !strings.Contains(errs, "credentials") || strings.Contains(out, "Verdict") {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", out, errs)
	}
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	code, out, errs = schemasCLI(t, "check", ok, "--registry", down.URL, "--subject", "user-events-value", "--timeout", "2s")
	expectCode(t, exitNotReady, code, out, errs)
}

func TestSchemasShowAndFingerprint(t *testing.T) {
	code, out, errs := schemasCLI(t, "show")
	expectCode(t, 0, code, out, errs)
	if out != schemas.UserEventSchema {
		t.Fatal("show does not print the embedded schema")
	}
	f := avscFile(t, "e.avsc", out)
	code, out, errs = schemasCLI(t, "fingerprint", f)
	expectCode(t, 0, code, out, errs)
	want, _ := schemas.Fingerprint(schemas.UserEventSchema)
	// Both byte orders, labelled: the number, and the wire order as the
	// bytes appear after C3 01 in a single-object value.
	wire := schemas.AppendSingleObject(nil, want, nil)[2:]
	for _, line := range []string{
		"name:         io.residency.events.UserEvent",
		fmt.Sprintf("fingerprint:  %016x  (the number", want),
		fmt.Sprintf("wire order:   % x  (the 8 bytes after C3 01", wire),
		fmt.Sprintf("raw_schemas:  io.residency.events.UserEvent@%016x", want),
	} {
		if !strings.Contains(out, line) {
			t.Fatalf("fingerprint output lacks %q:\n%s", line, out)
		}
	}
	if fmt.Sprintf("%016x", want) == fmt.Sprintf("%x", wire) {
		t.Fatal("a palindromic fingerprint cannot tell the byte orders apart")
	}
	code, out, errs = schemasCLI(t, "fingerprint", avscFile(t, "bad.avsc", "{"))
	expectCode(t, 1, code, out, errs)
}

// TestSchemasCheckWithConfig: with --config, schemas check reaches the
// registry as the router does (schemas.registry: its URL, username and a
// password from password_file), reads the routing fields at the config's
// paths, and --output json prints the findings; against the dev stack's
// schema registry (Apicurio's Confluent-compatible API) and a stub that
// checks the credentials.
func TestSchemasCheckWithConfig(t *testing.T) {
	// The dev stack's registry: the previous version registered there.
	reg := testenv.NewSchemaRegistry(t)
	subject := reg.Subject("user-events-value")
	reg.Register(t, subject, schemas.UserEventSchema)
	cfg := writeFile(t, "residency.yaml", fmt.Sprintf("schemas: {registry: {url: %q}}\n", reg.URL))
	narrowed := avscFile(t, "new.avsc", strings.Replace(schemas.UserEventSchema,
		`{"name": "country", "type": ["null", "string"]`, `{"name": "country", "type": "string"`, 1))
	code, out, errs := schemasCLI(t, "check", narrowed, "--config", cfg, "--subject", subject, "--output", "json")
	expectCode(t, exitFailure, code, out, errs)
	var r schemaCheck
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Verdict != "no" || !r.Routable || r.Compatible == nil || *r.Compatible ||
		!strings.Contains(r.Previous, "of subject "+subject) || len(r.Findings) == 0 || !strings.Contains(r.Findings[0], "country") {
		t.Fatalf("json: %v %+v\n%s", err, r, out)
	}

	// Basic auth, the password from a file; the field paths of the config.
	latest := map[string]any{"subject": "user-events-value", "version": 3, "id": 42, "schema": schemas.UserEventSchema}
	srv := registryStub(t, "Basic "+base64.StdEncoding.EncodeToString([]byte("svc:pw-from-file")), latest)
	pw := writeFile(t, "pw", "pw-from-file\n")
	cfg = writeFile(t, "auth.yaml", fmt.Sprintf("schemas: {country_field: geo, registry: {url: %q, username: svc, password_file: %s}}\n", srv.URL, pw))
	ok := avscFile(t, "new.avsc", withField(t, `{"name":"referrer","type":["null","string"],"default":null}`))
	code, out, errs = schemasCLI(t, "check", ok, "--config", cfg, "--subject", "user-events-value", "--output", "json")
	expectCode(t, exitFailure, code, out, errs) // there is no geo field
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Routable || r.Routing[0].Path != "geo" || r.Compatible == nil || !*r.Compatible {
		t.Fatalf("json: %v %+v\n%s", err, r, out)
	}
	code, out, errs = schemasCLI(t, "check", ok, "--config", cfg, "--subject", "user-events-value", "--country-field", "country")
	expectCode(t, exitOK, code, out, errs)
	// Without the password file's password: refused by the registry.
	nopw := writeFile(t, "nopw.yaml", fmt.Sprintf("schemas: {registry: {url: %q}}\n", srv.URL))
	code, out, errs = schemasCLI(t, "check", ok, "--config", nopw, "--subject", "user-events-value")
	expectCode(t, exitNotReady, code, out, errs)
}
