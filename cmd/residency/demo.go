package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/internal/embedded"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

//go:embed demo_rules.yaml
var demoRules []byte

const demoSynopsis = `demo [--events N] [--verbose]

With nothing installed: start an embedded Kafka (two clusters) and Redis,
apply a sample ruleset, produce sample events (routable ones across five
jurisdictions, plus events without a country, with an unknown country, and
malformed ones), route them with the real router, and print where they went.`

// demoTopics on the ingest cluster.
const (
	demoIngest     = "events.ingest"
	demoQuarantine = "residency.quarantine"
	demoDeadLetter = "residency.dead-letter"
	demoPinnedUser = "user-pinned-to-eu"
)

// runDemo is `residency demo`.
func runDemo(ctx context.Context, e env) int {
	fs := newFlags(e, "demo", demoSynopsis)
	n := fs.Int("events", 3000, "how many events to produce")
	verbose := fs.Bool("verbose", false, "print the router's logs (JSON) to stderr")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if *n < 100 || fs.NArg() > 0 {
		fmt.Fprintln(e.stderr, "residency demo: --events must be at least 100, and no arguments are taken")
		return exitUsage
	}
	level := slog.LevelError + 4 // silent
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	if err := demo(ctx, e.stdout, log, *n); err != nil {
		return fail(e, "demo", err)
	}
	return exitOK
}

// demoEvent is one produced event and where it must end up.
type demoEvent struct {
	msg  stream.Message
	want string // row label of the table
}

func demo(ctx context.Context, out io.Writer, log *slog.Logger, n int) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 50*time.Second)
	defer cancel()
	fmt.Fprintln(out, "Starting an embedded stack: two Kafka clusters (ingest, remote) and Redis ...")
	st, err := embedded.Start(embedded.Options{Partitions: 3})
	if err != nil {
		return err
	}
	defer st.Close()

	// Apply the ruleset and a pin the way ops would: into Redis.
	rdb, err := redis.NewClient(redis.Config{Addr: st.RedisAddr()}, redis.ClientOptions{})
	if err != nil {
		return err
	}
	defer rdb.Close()
	store := redis.NewRules(rdb, rules.DefaultPrefix)
	info, err := store.Apply(ctx, demoRules, rules.ApplyOptions{Author: "residency demo", Note: "sample ruleset"})
	if err != nil {
		return fmt.Errorf("apply the sample ruleset: %w", err)
	}
	if err := store.Pin(ctx, demoPinnedUser, "EU"); err != nil {
		return fmt.Errorf("pin a user: %w", err)
	}
	rs, err := rules.Parse(demoRules)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Applied the sample ruleset as version %d (%d jurisdictions, %d regions) and pinned one user to EU.\n",
		info.Number, len(rs.Jurisdictions), len(rs.Regions))

	cfg := &config.Config{
		Instance: "demo-router",
		LogLevel: "info",
		HTTP:     config.HTTPConfig{Listen: "off"},
		Kafka: config.KafkaConfig{
			IngestCluster: "ingest",
			Clusters: map[string]kafka.Cluster{
				"ingest": {Brokers: st.IngestBrokers()},
				"remote": {Brokers: st.RemoteBrokers()},
			},
		},
		Router: config.RouterConfig{IngestTopics: []string{demoIngest}, QuarantineTopic: demoQuarantine, DeadLetterTopic: demoDeadLetter,
			GiveUp: 20 * time.Second},
		Redis: redis.Config{Addr: st.RedisAddr()},
	}
	if err := cfg.Finish(config.Scope{Route: true}); err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	admins := map[string]*kafka.Admin{}
	for name, cl := range cfg.Kafka.Clusters {
		if admins[name], err = kafka.NewAdmin(cl); err != nil {
			return err
		}
		defer admins[name].Close()
	}
	topics := map[string][]string{"ingest": {demoIngest, demoQuarantine, demoDeadLetter}}
	for _, g := range rs.Regions {
		topics[g.Cluster] = append(topics[g.Cluster], g.Topic)
	}
	for cluster, names := range topics {
		if err := admins[cluster].CreateTopics(ctx, 3, 1, names...); err != nil {
			return err
		}
	}

	events, err := demoEvents(n, rs)
	if err != nil {
		return err
	}
	if err := demoProduce(ctx, cfg, log, events); err != nil {
		return err
	}
	fmt.Fprintf(out, "Produced %d events to %s.\n", len(events), demoIngest)

	// Route with the real router: kafka-go reader and writers, the schemas
	// extractor, the rules cache and pins over Redis.
	w, err := wire(cfg, log, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	routeStart := time.Now()
	go func() { done <- w.run(rctx) }()
	for {
		lag, err := admins["ingest"].Lag(ctx, cfg.Router.ConsumerGroup, demoIngest)
		if err == nil && lag == 0 {
			break
		}
		select {
		case err := <-done:
			stop()
			return fmt.Errorf("the router stopped early: %w", err)
		case <-ctx.Done():
			stop()
			return fmt.Errorf("routing did not finish in time (lag %d): %w", lag, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	routed := time.Since(routeStart)
	stop()
	if err := <-done; err != nil {
		return fmt.Errorf("router: %w", err)
	}

	rows, err := demoCount(ctx, admins, rs)
	if err != nil {
		return err
	}
	mismatches := demoCheck(events, rows)
	demoTable(out, rs, rows)
	fmt.Fprintf(out, "\nRouted, committed and checked in %s (routing itself: %s).\n",
		time.Since(start).Round(time.Millisecond), routed.Round(time.Millisecond))
	if len(mismatches) > 0 {
		for _, m := range mismatches[:min(len(mismatches), 10)] {
			fmt.Fprintln(out, "MISMATCH:", m)
		}
		return fmt.Errorf("%d events are not where the ruleset sends them", len(mismatches))
	}
	fmt.Fprintln(out, "Every event is exactly where the ruleset sends it; nothing was lost or sent elsewhere.")
	fmt.Fprintln(out, "Try: residency explain EVENT.json --rules deploy/examples/rules.yaml")
	return nil
}

// demoEvents builds the sample events: ~93% routable across the
// jurisdictions (one user pinned to EU), the rest unplaceable or malformed.
func demoEvents(n int, rs *rules.Ruleset) ([]demoEvent, error) {
	enc, err := sample.NewEncoder()
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(42, 7))
	countries := []string{"US", "US", "US", "PR", "DE", "FR", "IT", "ES", "GB", "GB", "IN", "IN", "IN", "BR", "BR"}
	types := []string{"VIDEO_VIEW", "VIDEO_LIKE", "COMMENT", "FOLLOW", "SEARCH", "LOGIN"}
	var out []demoEvent
	add := func(key string, value []byte, want string) {
		out = append(out, demoEvent{msg: stream.Message{Topic: demoIngest, Key: []byte(key), Value: value,
			Headers: []stream.Header{{Key: "event-id", Value: fmt.Appendf(nil, "%d", len(out))}}}, want: want})
	}
	region := func(country string) string {
		j, _ := rs.JurisdictionOf([]byte(country))
		return "region " + j.Region
	}
	for i := 0; len(out) < n; i++ {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		user := fmt.Sprintf("user-%d", rng.IntN(400))
		typ := types[rng.IntN(len(types))]
		switch r := rng.IntN(100); {
		case r < 3: // no country
			v, err := enc.Encode(sample.Event{ID: id, UserID: user, Type: typ})
			if err != nil {
				return nil, err
			}
			add(user, v, "quarantine no_country")
		case r < 5: // a country no jurisdiction holds
			v, err := enc.Encode(sample.Event{ID: id, UserID: user, Country: []string{"ZZ", "XK", "AQ"}[rng.IntN(3)], Type: typ})
			if err != nil {
				return nil, err
			}
			add(user, v, "quarantine unknown_country")
		case r < 6: // malformed
			m := []sample.Malformation{sample.BadMagic, sample.Truncated, sample.EmptyValue, sample.UnknownSchema}[rng.IntN(4)]
			v, err := enc.Malformed(sample.Event{ID: id, UserID: user, Country: "US", Type: typ}, m)
			if err != nil {
				return nil, err
			}
			add(user, v, "dead-letter "+string(m))
		case r < 8: // the pinned user: country says US, the pin says EU
			v, err := enc.Encode(sample.Event{ID: id, UserID: demoPinnedUser, Country: "US", Type: typ})
			if err != nil {
				return nil, err
			}
			add(demoPinnedUser, v, "region eu")
		default:
			c := countries[rng.IntN(len(countries))]
			v, err := enc.Encode(sample.Event{ID: id, UserID: user, Country: c, Type: typ})
			if err != nil {
				return nil, err
			}
			add(user, v, region(c))
		}
	}
	return out, nil
}

func demoProduce(ctx context.Context, cfg *config.Config, log *slog.Logger, events []demoEvent) error {
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: cfg.Kafka.Clusters["ingest"], Logger: log})
	if err != nil {
		return err
	}
	defer w.Close()
	for i := 0; i < len(events); i += 500 {
		var batch []stream.Message
		for _, ev := range events[i:min(i+500, len(events))] {
			batch = append(batch, ev.msg)
		}
		if err := w.Publish(ctx, batch...); err != nil {
			return fmt.Errorf("produce sample events: %w", err)
		}
	}
	return nil
}

// demoRow is one line of the table: a destination and what landed there.
type demoRow struct {
	label, cluster, topic string
	ids                   []string // event-id header values
	pinned                int      // events placed by a pin
}

// demoCount reads every destination topic and groups what it holds.
func demoCount(ctx context.Context, admins map[string]*kafka.Admin, rs *rules.Ruleset) (map[string]*demoRow, error) {
	rows := map[string]*demoRow{}
	add := func(label, cluster, topic string, m stream.Message) {
		r := rows[label]
		if r == nil {
			r = &demoRow{label: label, cluster: cluster, topic: topic}
			rows[label] = r
		}
		id, _ := router.HeaderValue(m.Headers, "event-id")
		r.ids = append(r.ids, string(id))
		if by, _ := router.HeaderValue(m.Headers, router.HeaderDecidedBy); string(by) == "pin" {
			r.pinned++
		}
	}
	for _, g := range rs.Regions {
		// Read the pinned topic on every cluster: it must exist only where
		// the ruleset puts it, and hold only its region's events.
		for cluster, a := range admins {
			ms, err := a.ReadAll(ctx, g.Topic)
			if err != nil && cluster != g.Cluster {
				continue // not created there: good
			}
			if err != nil {
				return nil, err
			}
			for _, m := range ms {
				label := "region " + g.Name
				if cluster != g.Cluster {
					label = "WRONG CLUSTER " + cluster + " " + g.Name
				} else if v, _ := router.HeaderValue(m.Headers, router.HeaderRegion); string(v) != g.Name {
					label = "WRONG REGION HEADER " + string(v)
				}
				add(label, cluster, g.Topic, m)
			}
		}
	}
	for _, t := range []struct{ kind, topic string }{{"quarantine", demoQuarantine}, {"dead-letter", demoDeadLetter}} {
		ms, err := admins["ingest"].ReadAll(ctx, t.topic)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			reason, _ := router.HeaderValue(m.Headers, router.HeaderReason)
			add(t.kind+" "+string(reason), "ingest", t.topic, m)
		}
	}
	return rows, nil
}

// demoCheck compares where each event is with where it should be.
func demoCheck(events []demoEvent, rows map[string]*demoRow) []string {
	where := map[string][]string{}
	for _, r := range rows {
		for _, id := range r.ids {
			where[id] = append(where[id], r.label)
		}
	}
	var bad []string
	for i, ev := range events {
		id := fmt.Sprint(i)
		got := where[id]
		if len(got) != 1 || got[0] != ev.want {
			bad = append(bad, fmt.Sprintf("event %s: want %s, found in %v", id, ev.want, got))
		}
	}
	if extra := len(where) - len(events); extra > 0 {
		bad = append(bad, fmt.Sprintf("%d unexpected events", extra))
	}
	return bad
}

func demoTable(out io.Writer, rs *rules.Ruleset, rows map[string]*demoRow) {
	jur := map[string][]string{}
	for _, j := range rs.Jurisdictions {
		jur[j.Region] = append(jur[j.Region], j.Name)
	}
	labels := make([]string, 0, len(rows))
	for l := range rows {
		labels = append(labels, l)
	}
	order := func(l string) int {
		switch {
		case strings.HasPrefix(l, "region "):
			return 0
		case strings.HasPrefix(l, "quarantine "):
			return 1
		case strings.HasPrefix(l, "dead-letter "):
			return 2
		}
		return 3
	}
	slices.SortFunc(labels, func(a, b string) int {
		if d := order(a) - order(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DESTINATION\tJURISDICTIONS\tCLUSTER\tTOPIC\tEVENTS\tOF WHICH BY PIN")
	total := 0
	for _, l := range labels {
		r := rows[l]
		js := "-"
		if g, ok := strings.CutPrefix(l, "region "); ok {
			js = strings.Join(jur[g], ",")
		}
		pinned := ""
		if r.pinned > 0 {
			pinned = fmt.Sprint(r.pinned)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", l, js, r.cluster, r.topic, len(r.ids), pinned)
		total += len(r.ids)
	}
	fmt.Fprintf(tw, "total\t\t\t\t%d\t\n", total)
	_ = tw.Flush()
}
