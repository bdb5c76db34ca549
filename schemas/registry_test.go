package schemas

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRegistrySchemaByIDCachesAndAuth(t *testing.T) {
	reg := newFakeRegistry(t)
	reg.auth = basicAuth("key", "secret")
	id := reg.register("user-events-value", UserEventSchema)
	ctx := context.Background()

	r, err := NewRegistry(RegistryConfig{URL: reg.URL, Username: "key", Password: "secret"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		s, err := r.SchemaByID(ctx, id)
		if err != nil || s != UserEventSchema {
			t.Fatalf("SchemaByID = %.40q, %v", s, err)
		}
	}
	if n := reg.requests.Load(); n != 1 {
		t.Fatalf("%d requests for one id, want 1 (cached)", n)
	}

	wrong, _ := NewRegistry(RegistryConfig{URL: reg.URL, Username: "key", Password: "nope"}, nil)
	_, err = wrong.SchemaByID(ctx, id)
	if !errors.Is(err, ErrRegistryUnavailable) || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("wrong password: %v, want ErrRegistryUnavailable naming the credentials", err)
	}
	if n := reg.requests.Load(); n != 2 {
		t.Fatalf("401 was retried: %d requests", n)
	}
}

func TestRegistryBearer(t *testing.T) {
	reg := newFakeRegistry(t)
	reg.auth = "Bearer t0k3n"
	id := reg.register("s", UserEventSchema)
	r, _ := NewRegistry(RegistryConfig{URL: reg.URL + "/", BearerToken: "t0k3n"}, nil)
	if _, err := r.SchemaByID(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

func TestRegistryRetriesThenGivesUp(t *testing.T) {
	reg := newFakeRegistry(t)
	id := reg.register("s", UserEventSchema)
	ctx := context.Background()

	reg.failNext.Store(2)
	r, _ := NewRegistry(RegistryConfig{URL: reg.URL, Retries: 2, Backoff: time.Millisecond}, nil)
	if _, err := r.SchemaByID(ctx, id); err != nil {
		t.Fatalf("2 failures with 2 retries: %v", err)
	}
	if n := reg.requests.Load(); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}

	reg.failNext.Store(5)
	r2, _ := NewRegistry(RegistryConfig{URL: reg.URL, Retries: 2, Backoff: time.Millisecond}, nil)
	_, err := r2.SchemaByID(ctx, id)
	if !errors.Is(err, ErrRegistryUnavailable) || errors.Is(err, ErrUnknownSchema) {
		t.Fatalf("err = %v, want only ErrRegistryUnavailable", err)
	}
	if n := reg.requests.Load(); n != 6 {
		t.Fatalf("%d requests, want 3 more", n)
	}
}

func TestRegistryUnknownIDIsRememberedBriefly(t *testing.T) {
	reg := newFakeRegistry(t)
	r, _ := NewRegistry(RegistryConfig{URL: reg.URL, UnknownTTL: time.Minute}, nil)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	ctx := context.Background()
	for range 5 {
		if _, err := r.SchemaByID(ctx, 4242); !errors.Is(err, ErrUnknownSchema) {
			t.Fatalf("err = %v, want ErrUnknownSchema", err)
		}
	}
	if n := reg.requests.Load(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
	// Registered later: found once the TTL has passed.
	reg.mu.Lock()
	reg.ids[4242] = UserEventSchema
	reg.mu.Unlock()
	now = now.Add(2 * time.Minute)
	if _, err := r.SchemaByID(ctx, 4242); err != nil {
		t.Fatalf("after TTL: %v", err)
	}
}

func TestRegistryWrongURLIsNotUnknownSchema(t *testing.T) {
	// A plain 404 (no registry error code) means the URL is wrong: do not
	// dead-letter events as "unknown schema".
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	r, _ := NewRegistry(RegistryConfig{URL: srv.URL}, nil)
	_, err := r.SchemaByID(context.Background(), 1)
	if !errors.Is(err, ErrRegistryUnavailable) || errors.Is(err, ErrUnknownSchema) {
		t.Fatalf("err = %v", err)
	}
}

func TestRegistryNonAvroSchema(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"schema":"syntax = \"proto3\";","schemaType":"PROTOBUF"}`))
	}))
	defer srv.Close()
	r, _ := NewRegistry(RegistryConfig{URL: srv.URL}, nil)
	_, err := r.SchemaByID(context.Background(), 1)
	if !errors.Is(err, ErrUnknownSchema) || !strings.Contains(err.Error(), "PROTOBUF") {
		t.Fatalf("err = %v", err)
	}
}

func TestRegistryTimeoutAndCancel(t *testing.T) {
	reg := newFakeRegistry(t)
	reg.delay = 200 * time.Millisecond
	id := reg.register("s", UserEventSchema)
	r, _ := NewRegistry(RegistryConfig{URL: reg.URL, Timeout: 20 * time.Millisecond, Retries: -1}, nil)
	if _, err := r.SchemaByID(context.Background(), id); !errors.Is(err, ErrRegistryUnavailable) {
		t.Fatalf("timeout: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r2, _ := NewRegistry(RegistryConfig{URL: reg.URL}, nil)
	_, err := r2.SchemaByID(ctx, id)
	if !errors.Is(err, ErrRegistryUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestRegistrySubjects(t *testing.T) {
	reg := newFakeRegistry(t)
	reg.register("user-events-value", `{"type":"record","name":"A","fields":[]}`)
	id2 := reg.register("user-events-value", UserEventSchema)
	r, _ := NewRegistry(RegistryConfig{URL: reg.URL}, nil)
	ctx := context.Background()
	vs, err := r.Versions(ctx, "user-events-value")
	if err != nil || len(vs) != 2 || vs[1] != 2 {
		t.Fatalf("Versions = %v, %v", vs, err)
	}
	latest, err := r.Latest(ctx, "user-events-value")
	if err != nil || latest.Version != 2 || latest.ID != id2 || latest.Schema != UserEventSchema {
		t.Fatalf("Latest = %+v, %v", latest, err)
	}
	if _, err := r.Latest(ctx, "nope-value"); !errors.Is(err, ErrSubjectNotFound) {
		t.Fatalf("missing subject: %v", err)
	}
	if _, err := r.Versions(ctx, "nope-value"); !errors.Is(err, ErrSubjectNotFound) {
		t.Fatalf("missing subject: %v", err)
	}
}
