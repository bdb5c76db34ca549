package replay_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/replay"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

// identicalRules place US, DE and GB events; GB's region is pinned to one
// of the router's ingest topics, which neither may write to.
const identicalRules = `
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE]}
  - {name: UK, region: uk, countries: [GB]}
regions:
  - {name: us, cluster: a, topic: t.us}
  - {name: eu, cluster: b, topic: t.eu}
  - {name: uk, cluster: a, topic: in}
`

type pinsOf map[string]string

func (p pinsOf) Lookup(_ context.Context, ids [][]byte) ([]string, error) {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = p[string(id)]
	}
	return out, nil
}

// TestRouterAndReplayWriteIdenticalRecords: the same ingest events, routed
// by the router and replayed from the ingest topic under the same ruleset
// (the same pins, the same instance name), give the same records in the
// same topics: keys, values, producer and residency headers byte for byte,
// replay adding only its provenance headers after them. Both refuse the
// same destination (a region pinned to an ingest topic: no_rule), and an
// oversized event is dead-lettered without its body by both.
func TestRouterAndReplayWriteIdenticalRecords(t *testing.T) {
	rs, err := rules.Parse([]byte(identicalRules))
	if err != nil {
		t.Fatal(err)
	}
	rs.SetVersion(9)
	enc, err := sample.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	var in []stream.Message
	add := func(key string, v []byte, hs ...stream.Header) {
		in = append(in, stream.Message{Topic: "in", Key: []byte(key), Value: v, Headers: hs, Time: time.UnixMilli(1_790_000_000_000 + int64(len(in)))})
	}
	for i, c := range []string{"US", "DE", "GB", "", "ZZ", "US"} {
		v, _ := enc.Encode(sample.Event{ID: fmt.Sprint("e-", i), UserID: fmt.Sprint("u-", i), Country: c})
		add(fmt.Sprint("u-", i), v, stream.Header{Key: "trace", Value: []byte(fmt.Sprint("t-", i))},
			stream.Header{Key: router.HeaderRegion, Value: []byte("forged")})
	}
	bad, _ := enc.Malformed(sample.Event{ID: "bad", UserID: "u-bad", Country: "US"}, sample.Truncated)
	add("u-bad", bad)
	add("u-big", bytes.Repeat([]byte("x"), router.DefaultMaxValueBytes+1))
	pins := pinsOf{"u-5": "EU"} // a US event of a user pinned to EU

	newBroker := func() *streamtest.Broker {
		b := streamtest.NewBroker()
		for _, tp := range []string{"in", "q", "dl", "t.us", "t.eu"} {
			b.CreateTopic(tp, 1)
		}
		return b
	}
	log := slog.New(slog.DiscardHandler)
	x := fields(t, schemas.ExtractorConfig{})

	// The router.
	src, routed := newBroker(), newBroker()
	if err := src.Publisher().Publish(context.Background(), in...); err != nil {
		t.Fatal(err)
	}
	pub := routed.Publisher()
	r, err := router.New(router.Config{Subscriber: src.Subscriber("g", "in"), Publishers: map[string]stream.Publisher{"a": pub, "b": pub},
		IngestCluster: "a", QuarantineTopic: "q", DeadLetterTopic: "dl", IngestTopics: []string{"in"}, Fields: x,
		Rules: fixed(rs), Pins: pins, Instance: "router-0", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); src.Committed("g", "in", 0) < int64(len(in)); {
		if time.Now().After(deadline) {
			t.Fatal("the router did not route every event in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Replay of the same ingest range.
	replayed := newBroker()
	rpub := replayed.Publisher()
	cfg := replay.Config{Plan: replay.Plan{ID: "same-1", Source: replay.SourceIngest, Topic: "in", Ranges: []replay.Range{{Partition: 0, End: int64(len(in))}}},
		Rules: rs, InForce: fixed(rs), Reader: sliceReader{src}, Publishers: map[string]stream.Publisher{"a": rpub, "b": rpub},
		IngestCluster: "a", QuarantineTopic: "q", DeadLetterTopic: "dl", IngestTopics: []string{"in"}, Fields: x, Pins: pins, Instance: "router-0", Logger: log}
	rp, err := replay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := rp.Run(context.Background()); err != nil {
		t.Fatal(err)
	}

	total := 0
	for _, tp := range []string{"q", "dl", "t.us", "t.eu", "in"} {
		want, got := routed.Records(tp), replayed.Records(tp)
		if tp == "in" {
			if len(want) != 0 || len(got) != 0 {
				t.Fatalf("written into the ingest topic: router %d, replay %d records", len(want), len(got))
			}
			continue
		}
		if len(got) != len(want) {
			t.Fatalf("%s: router wrote %d records, replay %d", tp, len(want), len(got))
		}
		for i := range want {
			if err := sameRecord(want[i], got[i]); err != nil {
				t.Errorf("%s record %d: %v", tp, i, err)
			}
		}
		total += len(want)
	}
	if total != len(in) {
		t.Fatalf("%d records compared, want %d", total, len(in))
	}
	if q := routed.Records("q"); len(q) != 3 || hv(q[0], router.HeaderReason) != router.ReasonNoRule {
		t.Fatalf("quarantine %v: want the GB event (its region is pinned to the ingest topic) first, no_rule", q)
	}
	if dl := routed.Records("dl"); len(dl) != 2 || dl[1].Value != nil || hv(dl[1], router.HeaderOmittedBytes) == "" {
		t.Fatalf("dead-letter: want the oversized event without its body, got %v", dl)
	}
}

// sameRecord compares the router's record want with replay's got: the same
// key, value and timestamp, and got's headers are want's followed by the
// replay provenance headers only.
func sameRecord(want, got stream.Message) error {
	if !bytes.Equal(want.Key, got.Key) || !bytes.Equal(want.Value, got.Value) || (want.Value == nil) != (got.Value == nil) || !want.Time.Equal(got.Time) {
		return fmt.Errorf("key/value/time differ: %q/%d bytes/%s vs %q/%d bytes/%s", want.Key, len(want.Value), want.Time, got.Key, len(got.Value), got.Time)
	}
	if len(got.Headers) != len(want.Headers)+5 {
		return fmt.Errorf("headers %v, want %v and the 5 replay headers", got.Headers, want.Headers)
	}
	for i, h := range want.Headers {
		if g := got.Headers[i]; g.Key != h.Key || !bytes.Equal(g.Value, h.Value) {
			return fmt.Errorf("header %d: %s=%q, want %s=%q", i, g.Key, g.Value, h.Key, h.Value)
		}
	}
	for _, h := range got.Headers[len(want.Headers):] {
		if !strings.HasPrefix(h.Key, "residency-replay-") {
			return fmt.Errorf("extra header %s is not a replay header", h.Key)
		}
	}
	return nil
}
