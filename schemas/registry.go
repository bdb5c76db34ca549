package schemas

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/residency-router/residency/stream"
)

// ErrSubjectNotFound: the registry has no such subject (or no such version of
// it).
var ErrSubjectNotFound = errors.New("subject not found")

// RegistryConfig configures the client of a Confluent-compatible schema
// registry (Confluent Schema Registry, Karapace, Apicurio's ccompat API,
// Redpanda).
type RegistryConfig struct {
	// URL is the registry's base URL, e.g. http://registry:8081. Default:
	// empty, no registry (topics in the confluent framing then cannot be
	// read, and NewExtractor refuses them).
	URL string `yaml:"url" secret:"url"`
	// Timeout bounds one HTTP request. Default: 5s.
	Timeout time.Duration `yaml:"timeout"`
	// Retries is how many times a failed request (network error, 5xx, 429)
	// is retried before ErrRegistryUnavailable is returned. Default: 3; a
	// negative value means no retries.
	Retries int `yaml:"retries"`
	// Backoff is the wait before the first retry; it doubles on each retry
	// up to MaxBackoff. Default: 100ms.
	Backoff time.Duration `yaml:"backoff"`
	// MaxBackoff caps the wait between retries. Default: 2s.
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// Username and Password enable HTTP basic auth (Confluent Cloud API key
	// and secret). Default: empty, no basic auth.
	Username string `yaml:"username"`
	// Password goes with Username. Default: empty.
	Password string `yaml:"password" secret:"true"`
	// PasswordFile is a file holding Password (a trailing newline is
	// dropped), read once at start by the config loader
	// (internal/config); NewRegistry does not read it. Default: empty.
	PasswordFile string `yaml:"password_file"`
	// BearerToken enables bearer-token auth; it may not be combined with
	// Username. Default: empty, no bearer auth.
	BearerToken string `yaml:"bearer_token" secret:"true"`
	// BearerTokenFile is a file holding BearerToken, read like
	// PasswordFile. Default: empty.
	BearerTokenFile string `yaml:"bearer_token_file"`
	// UnknownTTL is how long an id the registry answered "not found" for is
	// remembered, so a stream of events with an unknown id does not hammer
	// the registry. Default: 30s; a negative value disables it.
	UnknownTTL time.Duration `yaml:"unknown_ttl"`
}

// Defaults of RegistryConfig.
const (
	// DefaultRegistryTimeout is the default of RegistryConfig.Timeout.
	DefaultRegistryTimeout = 5 * time.Second
	// DefaultRegistryRetries is the default of RegistryConfig.Retries.
	DefaultRegistryRetries = 3
	// DefaultRegistryBackoff is the default of RegistryConfig.Backoff.
	DefaultRegistryBackoff = 100 * time.Millisecond
	// DefaultRegistryMaxBackoff is the default of RegistryConfig.MaxBackoff.
	DefaultRegistryMaxBackoff = 2 * time.Second
	// DefaultRegistryUnknownTTL is the default of RegistryConfig.UnknownTTL.
	DefaultRegistryUnknownTTL = 30 * time.Second
)

func (c RegistryConfig) withDefaults() RegistryConfig {
	c.Timeout = cmp.Or(c.Timeout, DefaultRegistryTimeout)
	c.Retries = max(cmp.Or(c.Retries, DefaultRegistryRetries), 0) // negative: no retries
	c.Backoff = cmp.Or(c.Backoff, DefaultRegistryBackoff)
	c.MaxBackoff = cmp.Or(c.MaxBackoff, DefaultRegistryMaxBackoff)
	c.UnknownTTL = cmp.Or(c.UnknownTTL, DefaultRegistryUnknownTTL)
	return c
}

func (c RegistryConfig) validate(prefix string) error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%surl: %q is not an http(s) URL", prefix, c.URL)
	}
	if u.User != nil {
		return fmt.Errorf("%surl: put credentials in username/password, not in the URL", prefix)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("%stimeout: must not be negative", prefix)
	}
	if c.Backoff < 0 || c.MaxBackoff < 0 {
		return fmt.Errorf("%sbackoff: must not be negative", prefix)
	}
	if c.BearerToken != "" && c.Username != "" {
		return fmt.Errorf("%sbearer_token: set either bearer_token or username/password, not both", prefix)
	}
	if c.Password != "" && c.Username == "" {
		return fmt.Errorf("%susername: password is set but username is empty", prefix)
	}
	return nil
}

// Registry is a client of a Confluent-compatible schema registry. Schemas by
// id are cached forever (ids are immutable); it is safe for concurrent use.
type Registry struct {
	cfg  RegistryConfig
	base string
	hc   *http.Client

	mu       sync.Mutex
	byID     map[uint32]string
	unknown  map[uint32]time.Time // id → until when it is known to be unknown
	inflight map[uint32]*fetch    // one request per id at a time
	now      func() time.Time
}

// fetch is a request for one id that concurrent callers share.
type fetch struct {
	done   chan struct{}
	schema string
	err    error
}

// NewRegistry returns a client for the registry cfg describes. hc may be nil
// (a default client is used; the per-request timeout comes from cfg).
func NewRegistry(cfg RegistryConfig, hc *http.Client) (*Registry, error) {
	if err := cfg.validate("registry."); err != nil {
		return nil, err
	}
	if hc == nil {
		hc = &http.Client{}
	}
	cfg = cfg.withDefaults()
	return &Registry{
		cfg:      cfg,
		base:     strings.TrimRight(cfg.URL, "/"),
		hc:       hc,
		byID:     map[uint32]string{},
		unknown:  map[uint32]time.Time{},
		inflight: map[uint32]*fetch{},
		now:      time.Now,
	}, nil
}

// SubjectVersion is one registered version of a subject.
type SubjectVersion struct {
	// Subject is the subject name, e.g. "user-events-value".
	Subject string `json:"subject"`
	// Version is the subject's version number (1, 2, ...).
	Version int `json:"version"`
	// ID is the globally unique schema id.
	ID uint32 `json:"id"`
	// Schema is the schema text.
	Schema string `json:"schema"`
	// SchemaType is "AVRO" (or empty, which means Avro), "PROTOBUF" or "JSON".
	SchemaType string `json:"schemaType"`
}

// registryError is the error body of the Confluent API.
type registryError struct {
	Code    int    `json:"error_code"`
	Message string `json:"message"`
}

// SchemaByID returns the schema registered under id (GET /schemas/ids/{id}).
// Errors wrap ErrUnknownSchema (the registry does not know the id, or it is
// not an Avro schema) or ErrRegistryUnavailable (anything else: the caller
// should retry later).
func (r *Registry) SchemaByID(ctx context.Context, id uint32) (string, error) {
	r.mu.Lock()
	if s, ok := r.byID[id]; ok {
		r.mu.Unlock()
		return s, nil
	}
	if until, ok := r.unknown[id]; ok && r.now().Before(until) {
		r.mu.Unlock()
		return "", fmt.Errorf("%w: schema id %d is not in the registry", ErrUnknownSchema, id)
	}
	if f, ok := r.inflight[id]; ok {
		r.mu.Unlock()
		select {
		case <-f.done:
			return f.schema, f.err
		case <-ctx.Done():
			return "", fmt.Errorf("%w: %w", ErrRegistryUnavailable, ctx.Err())
		}
	}
	f := &fetch{done: make(chan struct{})}
	r.inflight[id] = f
	r.mu.Unlock()
	f.schema, f.err = r.fetchID(ctx, id)
	r.mu.Lock()
	delete(r.inflight, id)
	r.mu.Unlock()
	close(f.done)
	return f.schema, f.err
}

// fetchID asks the registry for one id and caches the answer.
func (r *Registry) fetchID(ctx context.Context, id uint32) (string, error) {
	var resp SubjectVersion
	err := r.get(ctx, "/schemas/ids/"+strconv.FormatUint(uint64(id), 10), &resp)
	if errors.Is(err, errNotFound) {
		if r.cfg.UnknownTTL > 0 {
			r.mu.Lock()
			if len(r.unknown) >= maxUnknown {
				clear(r.unknown) // bounded memory under a flood of random ids
			}
			r.unknown[id] = r.now().Add(r.cfg.UnknownTTL)
			r.mu.Unlock()
		}
		return "", fmt.Errorf("%w: schema id %d is not in the registry", ErrUnknownSchema, id)
	}
	if err != nil {
		return "", err
	}
	if resp.SchemaType != "" && resp.SchemaType != "AVRO" {
		return "", fmt.Errorf("%w: schema id %d is a %s schema, not Avro", ErrUnknownSchema, id, resp.SchemaType)
	}
	r.mu.Lock()
	r.byID[id] = resp.Schema
	delete(r.unknown, id)
	r.mu.Unlock()
	return resp.Schema, nil
}

// Latest returns the latest version of subject
// (GET /subjects/{subject}/versions/latest). Errors wrap ErrSubjectNotFound
// or ErrRegistryUnavailable.
func (r *Registry) Latest(ctx context.Context, subject string) (SubjectVersion, error) {
	var v SubjectVersion
	err := r.get(ctx, "/subjects/"+url.PathEscape(subject)+"/versions/latest", &v)
	if errors.Is(err, errNotFound) {
		return v, fmt.Errorf("%w: %s", ErrSubjectNotFound, subject)
	}
	return v, err
}

// Versions lists the version numbers of subject
// (GET /subjects/{subject}/versions). Errors wrap ErrSubjectNotFound or
// ErrRegistryUnavailable.
func (r *Registry) Versions(ctx context.Context, subject string) ([]int, error) {
	var vs []int
	err := r.get(ctx, "/subjects/"+url.PathEscape(subject)+"/versions", &vs)
	if errors.Is(err, errNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrSubjectNotFound, subject)
	}
	return vs, err
}

var errNotFound = errors.New("not found")

// maxUnknown bounds the negative cache.
const maxUnknown = 10000

// maxResponse bounds a registry answer.
const maxResponse = 8 << 20

// get fetches path into out, retrying transient failures (the one retry
// policy, stream.Retry: Backoff doubling to MaxBackoff, Retries times). A
// registry that keeps failing, or a ctx that ends, is
// ErrRegistryUnavailable.
func (r *Registry) get(ctx context.Context, path string, out any) error {
	policy := stream.Retry{Min: r.cfg.Backoff, Max: r.cfg.MaxBackoff, Attempts: r.cfg.Retries + 1,
		GaveUp: ErrRegistryUnavailable, Component: "schema registry"}
	err := policy.Do(ctx, "GET "+path, func(ctx context.Context) error {
		retry, err := r.once(ctx, path, out)
		if !retry {
			return stream.Permanent(err)
		}
		return err
	})
	if err != nil && ctx.Err() != nil && !errors.Is(err, ErrRegistryUnavailable) {
		return fmt.Errorf("%w: %w", ErrRegistryUnavailable, err)
	}
	return err
}

// once makes one request. retry says whether a failure is worth retrying.
func (r *Registry) once(ctx context.Context, path string, out any) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base+path, nil)
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrRegistryUnavailable, err)
	}
	req.Header.Set("Accept", "application/vnd.schemaregistry.v1+json, application/json")
	switch {
	case r.cfg.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+r.cfg.BearerToken)
	case r.cfg.Username != "":
		req.SetBasicAuth(r.cfg.Username, r.cfg.Password)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return false, fmt.Errorf("%w: %w", ErrRegistryUnavailable, err)
		}
		return true, fmt.Errorf("%w: GET %s: %v", ErrRegistryUnavailable, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return true, fmt.Errorf("%w: GET %s: reading the answer: %v", ErrRegistryUnavailable, path, err)
	}
	if len(body) > maxResponse {
		return false, fmt.Errorf("%w: GET %s: answer larger than %d bytes", ErrRegistryUnavailable, path, maxResponse)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		if err := json.Unmarshal(body, out); err != nil {
			return false, fmt.Errorf("%w: GET %s: answer is not the expected JSON: %v", ErrRegistryUnavailable, path, err)
		}
		return false, nil
	case resp.StatusCode == http.StatusNotFound:
		var re registryError
		_ = json.Unmarshal(body, &re)
		// 40401 subject, 40402 version, 40403 schema not found. A 404
		// without a registry error code is a wrong URL, not a missing id.
		if re.Code >= 40400 && re.Code < 40500 {
			return false, fmt.Errorf("%w: %s", errNotFound, re.Message)
		}
		return false, fmt.Errorf("%w: GET %s: 404 without a registry error code (is the URL right?)", ErrRegistryUnavailable, path)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return false, fmt.Errorf("%w: GET %s: %s (check the registry credentials)", ErrRegistryUnavailable, path, resp.Status)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("%w: GET %s: %s", ErrRegistryUnavailable, path, resp.Status)
	default:
		return false, fmt.Errorf("%w: GET %s: unexpected %s", ErrRegistryUnavailable, path, resp.Status)
	}
}
