package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// SchemaRegistry is the dev stack's Confluent-compatible schema registry
// (Apicurio Registry's ccompat API), with subject names unique to one test.
type SchemaRegistry struct {
	// URL is the base URL of the Confluent API (GET URL/schemas/ids/1, POST
	// URL/subjects/S/versions, ...).
	URL string
	// Prefix is a subject prefix unique to this test; Subject adds it.
	Prefix string
}

// NewSchemaRegistry returns the dev stack's schema registry. It has no
// embedded stand-in: without RESIDENCY_TEST_REGISTRY_URL the test fails, or
// is skipped under -short.
func NewSchemaRegistry(t testing.TB) *SchemaRegistry {
	t.Helper()
	r := &SchemaRegistry{
		URL:    strings.TrimRight(required(t, EnvRegistryURL, "a schema registry"), "/"),
		Prefix: strings.ReplaceAll(Name(t, "t"), "_", "-") + "-",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.call(ctx, http.MethodGet, "/subjects", nil); err != nil {
		t.Fatalf("testenv: schema registry (%s=%s) does not answer: %v; %s", EnvRegistryURL, r.URL, err, startHint)
	}
	return r
}

// Subject returns the subject name for name, unique to this test.
func (r *SchemaRegistry) Subject(name string) string { return r.Prefix + name }

// Register registers an Avro schema under subject through the Confluent API
// (POST /subjects/{subject}/versions) and returns its id. The subject is
// deleted when the test ends.
func (r *SchemaRegistry) Register(t testing.TB, subject, schema string) uint32 {
	t.Helper()
	body, err := json.Marshal(map[string]string{"schema": schema})
	if err != nil {
		t.Fatalf("testenv: register %s: %v", subject, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := r.call(ctx, http.MethodPost, "/subjects/"+url.PathEscape(subject)+"/versions", body)
	if err != nil {
		t.Fatalf("testenv: register %s: %v", subject, err)
	}
	var resp struct {
		ID uint32 `json:"id"`
	}
	if err := json.Unmarshal(out, &resp); err != nil || resp.ID == 0 {
		t.Fatalf("testenv: register %s: answer %q: %v", subject, out, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		path := "/subjects/" + url.PathEscape(subject)
		_, _ = r.call(ctx, http.MethodDelete, path, nil)
		_, _ = r.call(ctx, http.MethodDelete, path+"?permanent=true", nil)
	})
	return resp.ID
}

// call makes one request of the Confluent API and returns the body of a 2xx
// answer.
func (r *SchemaRegistry) call(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, r.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/vnd.schemaregistry.v1+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(out))
	}
	return out, nil
}
