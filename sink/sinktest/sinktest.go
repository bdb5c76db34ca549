// Package sinktest builds the events and rulesets the sink and store tests
// share: canonical user events in any framing, as the router republishes
// them to a pinned topic, with the residency headers set; a schema registry
// following the Confluent API; rulesets known by version; and pins.
package sinktest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

var (
	encOnce sync.Once
	enc     *sample.Encoder
	encErr  error
)

// encoder is the one sample-event encoder (internal/sample).
func encoder() *sample.Encoder {
	encOnce.Do(func() { enc, encErr = sample.NewEncoder() })
	if encErr != nil {
		panic(encErr)
	}
	return enc
}

// EventID is the event_id of test event i.
func EventID(i int) string { return fmt.Sprintf("6f1c2a4e-0000-4000-8000-%012d", i) }

// UserID is the user_id of test event i.
func UserID(i int) string { return "u-" + strconv.Itoa(1000+i) }

// OccurredAt is the occurred_at of test event i.
func OccurredAt(i int) time.Time { return time.UnixMilli(1_763_800_000_000 + int64(i)*1000).UTC() }

// Fingerprint returns the fingerprint of the embedded UserEvent schema, the
// writer schema of every test event.
func Fingerprint() uint64 { return encoder().Fingerprint() }

// SingleObject is the WriterRef of test events in the single-object
// framing, as Event encodes them.
func SingleObject() schemas.WriterRef {
	return schemas.WriterRef{Framing: schemas.FramingSingleObject, Fingerprint: Fingerprint()}
}

// Raw is the WriterRef of test events in the raw framing.
func Raw() schemas.WriterRef {
	return schemas.WriterRef{Framing: schemas.FramingRaw, Fingerprint: Fingerprint()}
}

// Confluent is the WriterRef of test events in the confluent framing,
// with the UserEvent schema registered as id.
func Confluent(id uint32) schemas.WriterRef {
	return schemas.WriterRef{Framing: schemas.FramingConfluent, ID: id}
}

// Body returns test event i as a bare Avro body (the raw framing), written
// with the embedded UserEvent schema: every optional field set, country
// null when country is "".
func Body(i int, country string) []byte {
	body, err := encoder().Body(sample.Event{ID: EventID(i), UserID: UserID(i), Country: country, OccurredAt: OccurredAt(i), Full: true})
	if err != nil {
		panic(err)
	}
	return body
}

// Event returns test event i encoded in single-object framing with the
// embedded UserEvent schema.
func Event(i int, country string) []byte {
	return Framed(SingleObject(), i, country)
}

// Framed returns test event i framed as ref says.
func Framed(ref schemas.WriterRef, i int, country string) []byte {
	body := Body(i, country)
	switch ref.Framing {
	case schemas.FramingRaw:
		return body
	case schemas.FramingConfluent:
		return schemas.AppendConfluent(nil, ref.ID, body)
	default:
		return schemas.AppendSingleObject(nil, Fingerprint(), body)
	}
}

// Message returns test event i as the router writes it to topic, in the
// single-object framing: keyed by user id, with the residency headers of
// jurisdiction and region (no region header when region is "", no
// jurisdiction header when jurisdiction is ""), ruleset version 7, decided
// by country, and its residency-schema header.
func Message(topic string, i int, jurisdiction, region, country string) stream.Message {
	return MessageAs(SingleObject(), topic, i, jurisdiction, region, country)
}

// MessageAs is Message with the event framed as ref says.
func MessageAs(ref schemas.WriterRef, topic string, i int, jurisdiction, region, country string) stream.Message {
	hs := []stream.Header{{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}}
	if jurisdiction != "" {
		hs = append(hs, stream.Header{Key: router.HeaderJurisdiction, Value: []byte(jurisdiction)})
	}
	if region != "" {
		hs = append(hs, stream.Header{Key: router.HeaderRegion, Value: []byte(region)})
	}
	hs = append(hs,
		stream.Header{Key: router.HeaderRulesetVersion, Value: []byte("7")},
		stream.Header{Key: router.HeaderDecidedBy, Value: []byte("country")},
		stream.Header{Key: router.HeaderSourceTopic, Value: []byte("events")},
		stream.Header{Key: router.HeaderSourcePartition, Value: []byte(strconv.Itoa(i % 3))},
		stream.Header{Key: router.HeaderSourceOffset, Value: []byte(strconv.Itoa(10_000 + i))},
		stream.Header{Key: router.HeaderRouter, Value: []byte("router-0")},
		stream.Header{Key: router.HeaderSchema, Value: []byte(ref.String())},
	)
	return stream.Message{Topic: topic, Key: []byte(UserID(i)), Value: Framed(ref, i, country), Headers: hs, Time: OccurredAt(i).Add(time.Second)}
}

// WithHeader returns m with the header key set to value: the last header
// of that name replaced, or one appended. m's headers are not changed.
func WithHeader(m stream.Message, key, value string) stream.Message {
	hs := make([]stream.Header, len(m.Headers), len(m.Headers)+1)
	copy(hs, m.Headers)
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].Key == key {
			hs[i].Value = []byte(value)
			m.Headers = hs
			return m
		}
	}
	m.Headers = append(hs, stream.Header{Key: key, Value: []byte(value)})
	return m
}

// WithoutHeader returns m without any header named key. m's headers are
// not changed.
func WithoutHeader(m stream.Message, key string) stream.Message {
	hs := make([]stream.Header, 0, len(m.Headers))
	for _, h := range m.Headers {
		if h.Key != key {
			hs = append(hs, h)
		}
	}
	m.Headers = hs
	return m
}

// Ruleset returns a ruleset of the given version with regions us (pinned
// topic usTopic) and eu (euTopic), where the store named store is approved
// for regions; with no regions the store is not listed at all.
func Ruleset(version int64, usTopic, euTopic, store string, regions ...string) *rules.Ruleset {
	y := fmt.Sprintf(`
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE, FR]}
regions:
  - {name: us, cluster: ingest, topic: %q}
  - {name: eu, cluster: ingest, topic: %q}
stores:
  - {name: other-store, regions: [us, eu]}
`, usTopic, euTopic)
	if len(regions) > 0 {
		y += fmt.Sprintf("  - {name: %q, regions: [", store)
		for i, g := range regions {
			if i > 0 {
				y += ", "
			}
			y += g
		}
		y += "]}\n"
	}
	rs, err := rules.Parse([]byte(y))
	if err != nil {
		panic(err)
	}
	rs.SetVersion(version)
	return rs
}

// Rules is a RulesSource whose ruleset a test swaps, as `rules apply` would
// make a rules cache do, and a sink.RulesetVersions that knows every
// version it held (and those added with Add).
type Rules struct {
	p  atomic.Pointer[rules.Ruleset]
	mu sync.Mutex
	by map[int64]*rules.Ruleset
}

// NewRules returns a source holding rs.
func NewRules(rs *rules.Ruleset) *Rules {
	r := &Rules{by: map[int64]*rules.Ruleset{}}
	r.Set(rs)
	return r
}

// Set makes rs the ruleset in force (nil: none, Current fails).
func (r *Rules) Set(rs *rules.Ruleset) {
	r.Add(rs)
	r.p.Store(rs)
}

// Add makes the versions of rss known to Ruleset without putting them in
// force.
func (r *Rules) Add(rss ...*rules.Ruleset) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range rss {
		if rs != nil {
			r.by[rs.Version()] = rs
		}
	}
}

// Current returns the ruleset in force.
func (r *Rules) Current() (*rules.Ruleset, error) {
	rs := r.p.Load()
	if rs == nil {
		return nil, rules.ErrNoRuleset
	}
	return rs, nil
}

// Ruleset returns version v if r held it and its content has digest
// ("": any); rules.ErrNotFound or rules.ErrContentChanged otherwise.
func (r *Rules) Ruleset(_ context.Context, v int64, digest string) (*rules.Ruleset, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rs, ok := r.by[v]
	switch {
	case !ok:
		return nil, fmt.Errorf("ruleset version %d: %w", v, rules.ErrNotFound)
	case digest != "" && !rs.HasDigest(digest):
		return nil, fmt.Errorf("ruleset version %d: %w: digest %s, not %s", v, rules.ErrContentChanged, rs.ShortDigest(), digest)
	}
	return rs, nil
}

// Pins is an in-memory pin source (router.PinSource) whose pins a test
// sets; it can fail a number of calls first.
type Pins struct {
	mu      sync.Mutex
	pins    map[string]string
	fail    int
	lookups int
}

// NewPins returns a source with no pins.
func NewPins() *Pins { return &Pins{pins: map[string]string{}} }

// Pin pins user to jurisdiction ("" removes the pin).
func (p *Pins) Pin(user, jurisdiction string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if jurisdiction == "" {
		delete(p.pins, user)
		return
	}
	p.pins[user] = jurisdiction
}

// FailNext makes the next n calls of Pins fail with rules.ErrPinsStale.
func (p *Pins) FailNext(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = n
}

// Lookups returns how many views were asked for, failed calls included.
func (p *Pins) Lookups() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lookups
}

// Pins returns a view of the pins as they are now.
func (p *Pins) Pins() (router.PinView, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lookups++
	if p.fail > 0 {
		p.fail--
		return nil, fmt.Errorf("sinktest: %w", rules.ErrPinsStale)
	}
	return pinView(maps.Clone(p.pins)), nil
}

// pinView is an immutable view of pins.
type pinView map[string]string

func (v pinView) Pin(userID []byte) string { return v[string(userID)] }

// Registry is a schema registry following the Confluent API as far as
// schemas.Registry uses it (GET /schemas/ids/{id}, with its error body
// {"error_code": 40403, ...} for an unknown id), on an httptest server.
type Registry struct {
	*httptest.Server
	mu       sync.Mutex
	ids      map[uint32]string
	down     atomic.Bool
	requests atomic.Int32
}

// NewRegistry starts a registry that is closed when t ends.
func NewRegistry(t testing.TB) *Registry {
	r := &Registry{ids: map[uint32]string{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

// Register adds schema under the next free id (from 100) and returns it.
func (r *Registry) Register(schema string) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := uint32(len(r.ids) + 100)
	r.ids[id] = schema
	return id
}

// SetDown makes the registry answer 503 to every request while down.
func (r *Registry) SetDown(down bool) { r.down.Store(down) }

// Requests returns how many requests it received.
func (r *Registry) Requests() int { return int(r.requests.Load()) }

func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	r.requests.Add(1)
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	fail := func(status, code int, msg string) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error_code": code, "message": msg})
	}
	if r.down.Load() {
		fail(http.StatusServiceUnavailable, 50003, "Error while forwarding the request to the leader")
		return
	}
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	if req.Method != http.MethodGet || len(parts) != 3 || parts[0] != "schemas" || parts[1] != "ids" {
		fail(http.StatusNotFound, 404, "HTTP 404 Not Found")
		return
	}
	id, err := strconv.ParseUint(parts[2], 10, 32)
	r.mu.Lock()
	schema, ok := r.ids[uint32(id)]
	r.mu.Unlock()
	if err != nil || !ok {
		fail(http.StatusNotFound, 40403, "Schema "+parts[2]+" not found")
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"schema": schema})
}
