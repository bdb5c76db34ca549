package replay_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/replay"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

type nopReader struct{}

func (nopReader) ReadRange(context.Context, string, int, int64, int64, int, func([]stream.Message) error) error {
	return nil
}

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, ...stream.Message) error {
	return errors.New("must not publish")
}
func (nopPublisher) Close() error { return nil }

func validConfig(t *testing.T) replay.Config {
	rs, err := rules.Parse([]byte("jurisdictions:\n  - {name: US, region: us, countries: [US]}\nregions:\n  - {name: us, cluster: a, topic: t.us}\n"))
	if err != nil {
		t.Fatal(err)
	}
	rs.SetVersion(4)
	return replay.Config{Plan: replay.Plan{ID: "r-1", Source: replay.SourceQuarantine, Topic: "q", Ranges: []replay.Range{{Partition: 0, Start: 0, End: 5}}},
		Rules: rs, InForce: fixed(rs), Reader: nopReader{}, Publishers: map[string]stream.Publisher{"a": nopPublisher{}}, IngestCluster: "a", IngestTopics: []string{"in"},
		QuarantineTopic: "q", DeadLetterTopic: "dl", Fields: fields(t, schemas.ExtractorConfig{})}
}

func TestConfigErrors(t *testing.T) {
	if _, err := replay.New(validConfig(t)); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mod := range map[string]func(*replay.Config){
		"missing":     func(c *replay.Config) { c.Fields, c.Reader = nil, nil },
		"Plan.ID":     func(c *replay.Config) { c.Plan.ID = "a b" },
		"Plan.Source": func(c *replay.Config) { c.Plan.Source = "pinned" },
		"IngestClust": func(c *replay.Config) { c.IngestCluster = "zz" },
		"RulesetVer":  func(c *replay.Config) { c.Plan.RulesetVersion = "3" },
		"EventTypes":  func(c *replay.Config) { c.Plan.Filter.EventTypes = []string{"LOGIN"} },
		"Reasons":     func(c *replay.Config) { c.Plan.Source = replay.SourceIngest; c.Plan.Filter.Reasons = []string{"x"} },
		"twice": func(c *replay.Config) {
			c.Plan.Ranges = append(c.Plan.Ranges, replay.Range{Partition: 0, Start: 5, End: 6})
		},
		"not a range":  func(c *replay.Config) { c.Plan.Ranges[0].End = -1 },
		"negative":     func(c *replay.Config) { c.Rate = -1 },
		"noRangesHere": func(c *replay.Config) { c.Plan.Ranges = nil },
		"InForce":      func(c *replay.Config) { c.InForce = nil },
	} {
		c := validConfig(t)
		mod(&c)
		if _, err := replay.New(c); !errors.Is(err, replay.ErrConfig) {
			t.Errorf("%s: New = %v, want ErrConfig", name, err)
		}
	}
}

// inForce is a replay.RulesInForce whose ruleset (or error) a test
// switches.
type inForce struct {
	mu  sync.Mutex
	rs  *rules.Ruleset
	err error
}

func fixed(rs *rules.Ruleset) *inForce { return &inForce{rs: rs} }

func (f *inForce) Current() (*rules.Ruleset, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rs, f.err
}

func (f *inForce) set(rs *rules.Ruleset, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rs, f.err = rs, err
}

func TestConfigDryRunNeedsNoInForce(t *testing.T) {
	c := validConfig(t)
	c.InForce, c.DryRun = nil, true
	if _, err := replay.New(c); err != nil {
		t.Fatalf("dry run without InForce: %v", err)
	}
}

func TestFileCheckpoints(t *testing.T) {
	dir := t.TempDir()
	cps, err := replay.NewFileCheckpoints(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cps.Load(ctx, "r-1"); !errors.Is(err, replay.ErrNoCheckpoint) {
		t.Fatalf("Load of nothing = %v", err)
	}
	// A dry run saves no checkpoint; a real run saves one marked complete.
	c := validConfig(t)
	c.Checkpoints, c.DryRun = cps, true
	r, _ := replay.New(c)
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cps.Load(ctx, "r-1"); !errors.Is(err, replay.ErrNoCheckpoint) {
		t.Fatalf("a dry run saved a checkpoint: %v", err)
	}
	c.DryRun = false
	r, _ = replay.New(c)
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	cp, err := cps.Load(ctx, "r-1")
	if err != nil || !cp.Report.Complete || cp.Next[0] != 5 || cp.Plan.RulesetVersion != "4" {
		t.Fatalf("checkpoint = %+v, %v", cp, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "r-2.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cps.Load(ctx, "r-2"); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt checkpoint: %v", err)
	}
	// List returns the readable checkpoints.
	if list, err := cps.List(ctx); err != nil || len(list) != 1 || list[0].Plan.ID != "r-1" {
		t.Fatalf("List = %v, %v; want r-1's only", list, err)
	}
	// A resume under another ruleset version is refused.
	c.Plan.RulesetVersion = ""
	c.Rules.SetVersion(5)
	r, _ = replay.New(c)
	if err := r.Run(ctx); !errors.Is(err, replay.ErrPlanMismatch) || !strings.Contains(err.Error(), "ruleset version") {
		t.Fatalf("resume under another ruleset: %v", err)
	}
}

// sliceReader serves ranges from a broker's records.
type sliceReader struct{ b *streamtest.Broker }

func (s sliceReader) ReadRange(_ context.Context, topic string, partition int, start, end int64, batch int, fn func([]stream.Message) error) error {
	var buf []stream.Message
	for _, m := range s.b.Records(topic) {
		if m.Partition == partition && m.Offset >= start && m.Offset < end {
			buf = append(buf, m)
		}
	}
	for len(buf) > 0 {
		n := min(batch, len(buf))
		if err := fn(buf[:n]); err != nil {
			return err
		}
		buf = buf[n:]
	}
	return nil
}

// TestReplayNeverWritesToAClusterItCannotReach: a region on a cluster the
// replay has no publisher for is quarantined (no_rule), as in the router;
// nothing is written anywhere but the decided pinned topic or quarantine.
func TestReplayNeverWritesToAClusterItCannotReach(t *testing.T) {
	rs, err := rules.Parse([]byte(`
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE]}
regions:
  - {name: us, cluster: a, topic: t.us}
  - {name: eu, cluster: b, topic: t.eu}
`))
	if err != nil {
		t.Fatal(err)
	}
	rs.SetVersion(9)
	b := streamtest.NewBroker()
	for _, tp := range []string{"in", "q", "dl", "t.us", "t.eu"} {
		b.CreateTopic(tp, 1)
	}
	enc, err := sample.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	var msgs []stream.Message
	for i, c := range []string{"US", "DE", "US", "DE", "ZZ"} {
		v, _ := enc.Encode(sample.Event{ID: eventID("0001", i), UserID: "u", Country: c})
		msgs = append(msgs, stream.Message{Topic: "in", Key: []byte("u"), Value: v})
	}
	if err := b.Publisher().Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	r, err := replay.New(replay.Config{Plan: replay.Plan{ID: "x", Source: replay.SourceIngest, Topic: "in", Ranges: []replay.Range{{Partition: 0, End: 5}}},
		Rules: rs, InForce: fixed(rs), Reader: sliceReader{b}, Publishers: map[string]stream.Publisher{"a": b.Publisher()}, IngestCluster: "a", IngestTopics: []string{"in"},
		QuarantineTopic: "q", DeadLetterTopic: "dl", Fields: fields(t, schemas.ExtractorConfig{}), BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(b.Records("t.eu")); n != 0 {
		t.Fatalf("%d events written to a cluster without a publisher", n)
	}
	if n := len(b.Records("t.us")); n != 2 {
		t.Fatalf("us: %d events, want 2", n)
	}
	q := b.Records("q")
	if len(q) != 3 {
		t.Fatalf("quarantine: %d events, want 3", len(q))
	}
	reasons := map[string]int{}
	for _, m := range q {
		v, _ := router.HeaderValue(m.Headers, router.HeaderReason)
		reasons[string(v)]++
		if v, _ := router.HeaderValue(m.Headers, router.HeaderReplayCount); string(v) != "1" {
			t.Errorf("replay count %q", v)
		}
	}
	if reasons[router.ReasonNoRule] != 2 || reasons[router.ReasonUnknownCountry] != 1 {
		t.Fatalf("quarantine reasons %v", reasons)
	}
	if rep := r.Report(); rep.Quarantined[router.ReasonNoRule] != 2 || rep.Routed["us"] != 2 || rep.Read != 5 {
		t.Fatalf("report %+v", rep)
	}
}
