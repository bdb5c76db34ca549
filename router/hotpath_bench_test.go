package router

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// The per-event path benchmarks time the work the router does for each
// event of a batch, between fetching it and handing it to a publisher:
// reading its fields (Router.extract: size checks, the schemas extractor
// behind the retry wrapper), the decision (Decide) and the outgoing headers
// (outHeaders). Issue 8's target: at most 300 ns and 1 allocation per
// event. BenchmarkDecide (decision_test.go) and schemas'
// BenchmarkExtractCountry time two of the parts alone; BenchmarkOutHeaders
// here times the third. See docs/performance.md.

// hotpathRules mirrors the bench ruleset of `residency bench`.
const hotpathRules = `
jurisdictions:
  - {name: US, region: us, countries: [US, PR]}
  - {name: EU, region: eu, countries: [DE, FR, IT, ES, NL, PL, SE]}
  - {name: UK, region: uk, countries: [GB]}
  - {name: IN, region: in, countries: [IN]}
  - {name: BR, region: br, countries: [BR]}
regions:
  - {name: us, cluster: ingest, topic: residency.us}
  - {name: eu, cluster: remote, topic: residency.eu}
  - {name: uk, cluster: remote, topic: residency.uk}
  - {name: in, cluster: ingest, topic: residency.in}
  - {name: br, cluster: ingest, topic: residency.br}
stores:
  - {name: us-store, regions: [us]}
`

// hotpathEvent returns a canonical user event in single-object framing;
// country "" encodes null.
func hotpathEvent(tb testing.TB, codec *goavro.Codec, fp uint64, id int, country string) []byte {
	tb.Helper()
	var c any
	if country != "" {
		c = goavro.Union("string", country)
	}
	body, err := codec.BinaryFromNative(nil, map[string]any{
		"event_id":      fmt.Sprintf("00000000-0000-4000-8000-%012d", id),
		"user_id":       fmt.Sprintf("user-%d", id),
		"occurred_at":   time.UnixMilli(1_790_000_000_000).UTC(),
		"event_type":    "VIDEO_VIEW",
		"session_id":    goavro.Union("string", "s-1"),
		"device":        map[string]any{"device_id": "d-1", "os": "ANDROID", "app_version": "34.1.0"},
		"video_id":      goavro.Union("string", "v-123"),
		"watch_time_ms": goavro.Union("long", int64(4200)),
		"country":       c,
		"tags":          []any{"bench"},
		"properties":    map[string]any{"source": "bench"},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return schemas.AppendSingleObject(nil, fp, body)
}

// hotpathMessages returns 100 ingest records in the mix of `residency
// bench` (per hundred: 96 routable, 3 unplaceable, 1 malformed; the bench
// itself has 0.3% malformed), each with one producer header.
func hotpathMessages(tb testing.TB) []Message {
	tb.Helper()
	codec, err := goavro.NewCodec(schemas.UserEventSchema)
	if err != nil {
		tb.Fatal(err)
	}
	fp, err := schemas.Fingerprint(schemas.UserEventSchema)
	if err != nil {
		tb.Fatal(err)
	}
	countries := []string{"US", "US", "US", "PR", "DE", "FR", "IT", "ES", "GB", "IN", "IN", "BR"}
	var ms []Message
	for i := range 100 {
		var v []byte
		switch {
		case i == 10:
			v = hotpathEvent(tb, codec, fp, i, "")
		case i == 40 || i == 70:
			v = hotpathEvent(tb, codec, fp, i, "ZZ")
		case i == 55:
			v = hotpathEvent(tb, codec, fp, i, "US")
			v = v[:len(v)/2] // truncated: dead-letter
		default:
			v = hotpathEvent(tb, codec, fp, i, countries[i%len(countries)])
		}
		ms = append(ms, Message{Topic: "events.ingest", Partition: i % 6, Offset: int64(1_000_000 + i),
			Key: fmt.Appendf(nil, "user-%d", i), Value: v, Headers: []Header{{Key: "producer", Value: []byte("app-1")}},
			Time: time.Now()})
	}
	return ms
}

// nopSubscriber and nopPublisher complete a router Config; the per-event
// path never calls them.
type nopSubscriber struct{}

func (nopSubscriber) Fetch(ctx context.Context) (Message, error) {
	<-ctx.Done()
	return Message{}, ctx.Err()
}
func (nopSubscriber) Commit(context.Context, ...Message) error { return nil }

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, ...Message) error { return nil }
func (nopPublisher) Close() error                              { return nil }

type fixedRules struct{ rs *rules.Ruleset }

func (f fixedRules) Current() (*rules.Ruleset, error) { return f.rs, nil }

// hotpathRouter returns a router wired like `residency route` (the real
// schemas extractor) over no-op ports, and the ruleset in force.
func hotpathRouter(tb testing.TB) (*Router, *rules.Ruleset) {
	tb.Helper()
	rs, err := rules.Parse([]byte(hotpathRules))
	if err != nil {
		tb.Fatal(err)
	}
	rs.SetVersion(42)
	fields, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	r, err := New(Config{Subscriber: nopSubscriber{}, Publishers: map[string]Publisher{"ingest": nopPublisher{}, "remote": nopPublisher{}},
		IngestCluster: "ingest", QuarantineTopic: "q", DeadLetterTopic: "dl", Fields: fields, Rules: fixedRules{rs},
		Instance: "router-0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return r, rs
}

// perEvent is the router's per-event work in route(): fields, decision,
// headers. It returns the number of headers so the work is not optimised
// away.
func perEvent(ctx context.Context, r *Router, rs *rules.Ruleset, ver string, m *Message) int {
	f, err := r.extract(ctx, m)
	var d Decision
	if err != nil {
		d = DeadLetter(err)
	} else {
		d = Decide(f, "", rs)
	}
	return len(outHeaders(m, &d, ver, r.cfg.Instance, err))
}

// BenchmarkPerEventPath times extract + decide + headers per event: "mix"
// cycles through the bench mix, "routed" repeats one routable event.
func BenchmarkPerEventPath(b *testing.B) {
	r, rs := hotpathRouter(b)
	ver := rs.VersionString()
	ctx := context.Background()
	msgs := hotpathMessages(b)
	b.Run("mix", func(b *testing.B) {
		b.ReportAllocs()
		i, n := 0, 0
		for b.Loop() {
			n += perEvent(ctx, r, rs, ver, &msgs[i])
			if i++; i == len(msgs) {
				i = 0
			}
		}
		if n == 0 {
			b.Fatal("no headers")
		}
	})
	b.Run("routed", func(b *testing.B) {
		m := &msgs[0]
		b.ReportAllocs()
		for b.Loop() {
			if perEvent(ctx, r, rs, ver, m) == 0 {
				b.Fatal("no headers")
			}
		}
	})
}

// BenchmarkOutHeaders times the residency headers of one routed event.
func BenchmarkOutHeaders(b *testing.B) {
	m := &Message{Topic: "events.ingest", Partition: 3, Offset: 1_234_567, Headers: []Header{{Key: "producer", Value: []byte("app-1")}}}
	d := &Decision{Outcome: Routed, Jurisdiction: "EU", Region: "eu", Cluster: "remote", Topic: "residency.eu"}
	b.ReportAllocs()
	for b.Loop() {
		if len(outHeaders(m, d, "42", "router-0", nil)) == 0 {
			b.Fatal("no headers")
		}
	}
}

// TestPerEventPathPlacesTheMix checks that the benchmarked path does the
// real work: the mix's events are routed, quarantined and dead-lettered as
// the ruleset says, with the residency headers.
func TestPerEventPathPlacesTheMix(t *testing.T) {
	r, rs := hotpathRouter(t)
	ctx := context.Background()
	count := map[Outcome]int{}
	for i, m := range hotpathMessages(t) {
		f, err := r.extract(ctx, &m)
		d := DeadLetter(err)
		if err == nil {
			d = Decide(f, "", rs)
		}
		count[d.Outcome]++
		hs := outHeaders(&m, &d, rs.VersionString(), "router-0", err)
		if v, _ := HeaderValue(hs, HeaderSourceOffset); string(v) != fmt.Sprint(1_000_000+i) {
			t.Errorf("event %d: source offset header %q", i, v)
		}
		if d.Outcome == Routed {
			if v, _ := HeaderValue(hs, HeaderRulesetVersion); string(v) != "42" {
				t.Errorf("event %d: ruleset version header %q", i, v)
			}
		}
	}
	if count[Routed] != 96 || count[Quarantined] != 3 || count[DeadLettered] != 1 {
		t.Fatalf("outcomes %v, want 96 routed, 3 quarantined, 1 dead-lettered", count)
	}
}

// prebuiltHeaders is a sketch, measured by BenchmarkOutHeadersPrebuilt and
// not used by the router, of how the headers could fit the 1-allocation
// budget: the values that depend only on the decision and the ruleset
// (jurisdiction, region, ruleset version, decided-by, router instance) are
// built once per ruleset as fixed; the source topic's bytes are cached;
// partition and offset are appended to an arena shared by the batch. The
// only per-event allocation left is the header slice itself (which a
// per-batch slab could remove as well).
func prebuiltHeaders(m *Message, fixed []Header, topic []byte, arena []byte) ([]Header, []byte) {
	hs := make([]Header, 0, len(m.Headers)+len(fixed)+3)
	for _, h := range m.Headers {
		if len(h.Key) < len(HeaderPrefix) || h.Key[:len(HeaderPrefix)] != HeaderPrefix {
			hs = append(hs, h)
		}
	}
	hs = append(hs, fixed...)
	start := len(arena)
	arena = strconv.AppendInt(arena, int64(m.Partition), 10)
	mid := len(arena)
	arena = strconv.AppendInt(arena, m.Offset, 10)
	hs = append(hs,
		Header{HeaderSourceTopic, topic},
		Header{HeaderSourcePartition, arena[start:mid:mid]},
		Header{HeaderSourceOffset, arena[mid:len(arena):len(arena)]},
	)
	return hs, arena
}

// BenchmarkOutHeadersPrebuilt times prebuiltHeaders for the event of
// BenchmarkOutHeaders, with the arena reset every 500 events (a batch).
func BenchmarkOutHeadersPrebuilt(b *testing.B) {
	m := &Message{Topic: "events.ingest", Partition: 3, Offset: 1_234_567, Headers: []Header{{Key: "producer", Value: []byte("app-1")}}}
	fixed := []Header{{HeaderJurisdiction, []byte("EU")}, {HeaderRegion, []byte("eu")}, {HeaderRulesetVersion, []byte("42")},
		{HeaderDecidedBy, []byte("country")}, {HeaderRouter, []byte("router-0")}}
	topic := []byte(m.Topic)
	var arena []byte
	want := outHeaders(m, &Decision{Outcome: Routed, Jurisdiction: "EU", Region: "eu"}, "42", "router-0", nil)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i++; i == 500 {
			i, arena = 0, make([]byte, 0, 500*16)
		}
		var hs []Header
		hs, arena = prebuiltHeaders(m, fixed, topic, arena)
		if len(hs) != len(want) {
			b.Fatalf("%d headers, want %d", len(hs), len(want))
		}
	}
}
