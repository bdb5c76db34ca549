package schemas

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
)

// sampleEvent returns a canonical user event in goavro's native form.
func sampleEvent(i int, country any) map[string]any {
	ev := map[string]any{
		"event_id":    fmt.Sprintf("6f1c2a4e-0000-4000-8000-%012d", i),
		"user_id":     fmt.Sprintf("u-%d", 1000+i),
		"occurred_at": time.UnixMilli(1_763_800_000_000 + int64(i)).UTC(),
		"event_type":  "VIDEO_VIEW",
		"session_id":  goavro.Union("string", "s-"+strconv.Itoa(i)),
		"device": map[string]any{
			"device_id":     "d-8c1f",
			"os":            "ANDROID",
			"os_version":    goavro.Union("string", "14"),
			"model":         goavro.Union("string", "Pixel 8"),
			"app_version":   "34.1.2",
			"screen_width":  goavro.Union("int", int32(1080)),
			"screen_height": goavro.Union("int", int32(2400)),
		},
		"network":           "WIFI",
		"locale":            goavro.Union("string", "en-US"),
		"timezone":          goavro.Union("string", "America/Chicago"),
		"video_id":          goavro.Union("string", "v-7301"),
		"creator_id":        goavro.Union("string", "c-42"),
		"watch_time_ms":     goavro.Union("long", int64(15_300)),
		"video_duration_ms": goavro.Union("long", int64(31_000)),
		"position_ms":       nil,
		"muted":             false,
		"geo_lat":           goavro.Union("double", 41.88),
		"geo_lon":           goavro.Union("double", -87.63),
		"country":           nil,
		"tags":              []any{"fyp", "cooking"},
		"properties":        map[string]any{"source": "for_you", "ab_bucket": "b7"},
		"client_ip_hash":    goavro.Union("io.residency.events.Sha256", make([]byte, 32)),
		"schema_version":    int32(3),
	}
	if country != nil {
		ev["country"] = goavro.Union("string", country)
	}
	return ev
}

// encode encodes native with schema (raw Avro binary).
func encode(t testing.TB, schema string, native any) []byte {
	t.Helper()
	c, err := goavro.NewCodec(schema)
	if err != nil {
		t.Fatalf("codec: %v", err)
	}
	b, err := c.BinaryFromNative(nil, native)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

// fakeRegistry is an httptest server following the published Confluent
// Schema Registry API (GET /schemas/ids/{id}, GET /subjects/{s}/versions,
// GET /subjects/{s}/versions/latest, GET /subjects/{s}/versions/{v}), with
// its error bodies ({"error_code": 40403, "message": ...}) and content type.
type fakeRegistry struct {
	*httptest.Server
	mu       sync.Mutex
	ids      map[uint32]string
	subjects map[string][]uint32 // subject → ids of versions 1..n
	auth     string              // required Authorization header, if set
	failNext atomic.Int32        // answer 503 to this many requests
	requests atomic.Int32
	delay    time.Duration
}

func newFakeRegistry(t testing.TB) *fakeRegistry {
	f := &fakeRegistry{ids: map[uint32]string{}, subjects: map[string][]uint32{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

// register adds schema as the next version of subject and returns its id.
func (f *fakeRegistry) register(subject, schema string) uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, s := range f.ids {
		if s == schema {
			f.subjects[subject] = append(f.subjects[subject], id)
			return id
		}
	}
	id := uint32(len(f.ids) + 100)
	f.ids[id] = schema
	f.subjects[subject] = append(f.subjects[subject], id)
	return id
}

func (f *fakeRegistry) serve(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	fail := func(status, code int, msg string) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error_code": code, "message": msg})
	}
	if f.failNext.Load() > 0 {
		f.failNext.Add(-1)
		fail(http.StatusServiceUnavailable, 50003, "Error while forwarding the request to the leader")
		return
	}
	if f.auth != "" && r.Header.Get("Authorization") != f.auth {
		fail(http.StatusUnauthorized, 40101, "Unauthorized")
		return
	}
	if r.Method != http.MethodGet {
		fail(http.StatusMethodNotAllowed, 405, "Method not allowed")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	parts := strings.Split(strings.Trim(r.URL.EscapedPath(), "/"), "/")
	switch {
	case len(parts) == 3 && parts[0] == "schemas" && parts[1] == "ids":
		id, err := strconv.ParseUint(parts[2], 10, 32)
		s, ok := f.ids[uint32(id)]
		if err != nil || !ok {
			fail(http.StatusNotFound, 40403, "Schema "+parts[2]+" not found")
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"schema": s})
	case len(parts) >= 3 && parts[0] == "subjects" && parts[2] == "versions":
		subject, _ := url.PathUnescape(parts[1])
		ids, ok := f.subjects[subject]
		if !ok {
			fail(http.StatusNotFound, 40401, "Subject '"+subject+"' not found.")
			return
		}
		if len(parts) == 3 {
			vs := make([]int, len(ids))
			for i := range ids {
				vs[i] = i + 1
			}
			_ = json.NewEncoder(w).Encode(vs)
			return
		}
		v := len(ids)
		if parts[3] != "latest" {
			n, err := strconv.Atoi(parts[3])
			if err != nil || n < 1 || n > len(ids) {
				fail(http.StatusNotFound, 40402, "Version "+parts[3]+" not found.")
				return
			}
			v = n
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"subject": subject, "version": v, "id": ids[v-1], "schema": f.ids[ids[v-1]],
		})
	default:
		http.NotFound(w, r)
	}
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}
