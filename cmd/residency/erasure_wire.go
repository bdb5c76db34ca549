package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/auditwire"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/replay"
	"github.com/residency-router/residency/router/rules"
)

// This file wires what purge, erase and residue share: the Kafka clusters
// as erasure sees them, the stores of the sinks, the ruleset, the topics
// the config knows, and the replay checkpoints.

// erasureWiring holds what an erasure command opened; close releases it.
type erasureWiring struct {
	log       *slog.Logger
	redis     *goredis.Client
	rulesDB   *redis.Rules
	cache     *rules.Cache
	stopRules func()
	closers   []func(context.Context) error
}

func (w *erasureWiring) close() {
	if w.stopRules != nil {
		w.stopRules()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range w.closers {
		if err := c(ctx); err != nil && w.log != nil {
			w.log.Warn("closing a store", "error", err)
		}
	}
	if w.redis != nil {
		_ = w.redis.Close()
	}
}

// exitError is an error with the exit code it deserves.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// withCode returns err with exit code code (nil for nil).
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return exitError{code, err}
}

// exitCode is the exit code of err: its own (withCode), 2 for usage and
// config errors, else 1.
func exitCode(err error) int {
	var ee exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, errUsage), errors.Is(err, config.ErrInvalid), errors.Is(err, erasure.ErrConfig),
		errors.Is(err, erasure.ErrEmptyUser), errors.Is(err, erasure.ErrUnknownStore), errors.Is(err, erasure.ErrUnknownJurisdiction):
		return exitUsage
	default:
		return exitFailure
	}
}

// erasureLogger is the text logger of the one-shot erasure commands:
// warnings and errors on stderr (never a user id: the erasure package logs
// none), info too with log_level debug or info and verbose.
func erasureLogger(stderr io.Writer, level string) *slog.Logger {
	lvl, _ := config.ParseLevel(level)
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: max(lvl, slog.LevelWarn)}))
}

// clusters returns every cluster of kafka.clusters as erasure sees it.
func erasureClusters(cfg *config.Config, log *slog.Logger) (map[string]erasure.Cluster, error) {
	out := map[string]erasure.Cluster{}
	for _, name := range cfg.ClusterNames() {
		cl := cfg.Kafka.Clusters[name]
		admin, err := kafka.NewAdmin(cl)
		if err != nil {
			return nil, config.ClusterError(name, err)
		}
		reader, err := kafka.NewRangeReader(cl)
		if err != nil {
			return nil, config.ClusterError(name, err)
		}
		reader.Logger = log
		out[name] = erasure.Cluster{Admin: admin, Reader: reader}
	}
	return out, nil
}

// reachable checks that the ingest cluster answers, with the watermarks
// of its first ingest topic: a cluster out of reach at start is exit 3.
func reachable(ctx context.Context, cfg *config.Config, clusters map[string]erasure.Cluster) error {
	if len(cfg.Router.IngestTopics) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, _, err := clusters[cfg.Kafka.IngestCluster].Admin.Watermarks(ctx, cfg.Router.IngestTopics[0]); err != nil {
		return withCode(exitNotReady, fmt.Errorf("kafka cluster %s (the ingest topic %s): %w", cfg.Kafka.IngestCluster, cfg.Router.IngestTopics[0], err))
	}
	return nil
}

// openStores opens the store of every sinks[] entry (in config order).
// A store whose settings are wrong is exit 2, one out of reach exit 3.
func (w *erasureWiring) openStores(ctx context.Context, cfg *config.Config) ([]erasure.StoreRef, error) {
	var out []erasure.StoreRef
	for i := range cfg.Sinks {
		sc := &cfg.Sinks[i]
		field := cfg.SinkField(sc)
		var st erasure.Store
		switch {
		case sc.Postgres != nil:
			s, err := postgres.Open(ctx, *sc.Postgres)
			if errors.Is(err, postgres.ErrConfig) {
				return nil, config.FieldError(field+".postgres", err)
			}
			if err != nil {
				return nil, withCode(exitNotReady, fmt.Errorf("store %s: %w", sc.Store, err))
			}
			w.closers = append(w.closers, s.Close)
			st = s
		default:
			s, err := objectstore.Open(ctx, *sc.ObjectStore)
			if errors.Is(err, objectstore.ErrConfig) {
				return nil, config.FieldError(field+".objectstore", err)
			}
			if err != nil {
				return nil, withCode(exitNotReady, fmt.Errorf("store %s: %w", sc.Store, err))
			}
			w.closers = append(w.closers, s.Close)
			st = s
		}
		out = append(out, erasure.StoreRef{Name: sc.Store, Region: sc.Region, Store: st})
	}
	return out, nil
}

// connectRedis connects to the config's Redis and checks it answers (exit
// 3 when it does not).
func (w *erasureWiring) connectRedis(ctx context.Context, cfg *config.Config) (*goredis.Client, error) {
	if w.redis != nil {
		return w.redis, nil
	}
	client, err := newRedis(cfg.Redis, 3*time.Second)
	if err != nil {
		return nil, err
	}
	w.redis = client
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		return nil, withCode(exitNotReady, fmt.Errorf("redis %s: %w", cfg.Redis.Addr, err))
	}
	return client, nil
}

// loadRules follows the ruleset in force (rules.file, or Redis) and
// returns it with the pins (nil when pins are off or rules come from a
// file). No ruleset within 15s is exit 3.
func (w *erasureWiring) loadRules(ctx context.Context, cfg *config.Config) (*rules.Cache, router.PinLookup, error) {
	var src rules.Source
	if cfg.Rules.File != "" {
		s, _, _, err := rulesSource(cfg)
		if err != nil {
			return nil, nil, err
		}
		src = s
	} else {
		client, err := w.connectRedis(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		w.rulesDB = redis.NewRules(client, cfg.Redis.Prefix)
		src = w.rulesDB
	}
	cache := rules.NewCache(src, rules.CacheOptions{PollInterval: cfg.Rules.PollInterval, StalenessBound: cfg.Rules.StalenessBound, Logger: w.log})
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = cache.Run(bg) })
	w.stopRules = func() { stop(); wg.Wait() }
	select {
	case <-cache.Loaded():
	case <-time.After(15 * time.Second):
		_, err := cache.Current()
		return nil, nil, withCode(exitNotReady, fmt.Errorf("no ruleset in force after 15s: %w", err))
	case <-ctx.Done():
		return nil, nil, withCode(exitNotReady, ctx.Err())
	}
	if _, err := cache.Current(); err != nil {
		return nil, nil, withCode(exitNotReady, err)
	}
	w.cache = cache
	var pins router.PinLookup
	if w.rulesDB != nil && cfg.PinsEnabled() {
		p := rules.NewPins(w.rulesDB, rules.PinsOptions{Logger: w.log})
		wg.Go(func() { _ = p.Run(bg) })
		select {
		case <-p.Loaded():
		case <-time.After(15 * time.Second):
			_, err := p.Pins()
			return nil, nil, withCode(exitNotReady, fmt.Errorf("no pins loaded after 15s: %w", err))
		case <-ctx.Done():
			return nil, nil, withCode(exitNotReady, ctx.Err())
		}
		pins = p
	}
	return cache, pins, nil
}

// configTopics returns the topics of the ingest cluster the config names
// (ingest topics, quarantine, dead-letter) and every sinks' quarantine
// topic, once each.
func configTopics(cfg *config.Config) []erasure.Topic {
	ing := cfg.Kafka.IngestCluster
	var out []erasure.Topic
	add := func(t erasure.Topic) {
		if !slices.ContainsFunc(out, func(o erasure.Topic) bool { return o.Cluster == t.Cluster && o.Name == t.Name }) {
			out = append(out, t)
		}
	}
	for _, t := range cfg.Router.IngestTopics {
		add(erasure.Topic{Cluster: ing, Name: t, Role: erasure.RoleIngest})
	}
	add(erasure.Topic{Cluster: ing, Name: cfg.Router.QuarantineTopic, Role: erasure.RoleQuarantine})
	add(erasure.Topic{Cluster: ing, Name: cfg.Router.DeadLetterTopic, Role: erasure.RoleDeadLetter})
	for _, sc := range cfg.Sinks {
		add(erasure.Topic{Cluster: cmp.Or(sc.QuarantineCluster, ing), Name: sc.QuarantineTopic, Role: erasure.RoleSinkQuarantine})
	}
	return out
}

// pinnedTopics returns the pinned topic of every region of rs and those
// the sinks name, once each.
func pinnedTopics(cfg *config.Config, rs *rules.Ruleset) []erasure.Topic {
	var out []erasure.Topic
	add := func(t erasure.Topic) {
		if t.Name != "" && !slices.ContainsFunc(out, func(o erasure.Topic) bool { return o.Cluster == t.Cluster && o.Name == t.Name }) {
			out = append(out, t)
		}
	}
	for _, g := range rs.Regions {
		add(erasure.Topic{Cluster: g.Cluster, Name: g.Topic, Role: erasure.RolePinned, Region: g.Name})
	}
	for _, sc := range cfg.Sinks {
		if sc.Topic != "" && sc.Cluster != "" {
			add(erasure.Topic{Cluster: sc.Cluster, Name: sc.Topic, Role: erasure.RolePinned, Region: sc.Region})
		}
	}
	return out
}

// sinkTopic returns the pinned topic sc drains: its own, or its region's
// in rs (nil rs: only its own).
func sinkTopic(sc *config.SinkConfig, rs *rules.Ruleset) (erasure.Topic, bool) {
	t := erasure.Topic{Cluster: sc.Cluster, Name: sc.Topic, Role: erasure.RolePinned, Region: sc.Region}
	if rs != nil {
		if g, ok := rs.Region(sc.Region); ok {
			t.Cluster, t.Name = cmp.Or(t.Cluster, g.Cluster), cmp.Or(t.Name, g.Topic)
		}
	}
	return t, t.Cluster != "" && t.Name != ""
}

// replaySource lists the replays from their checkpoints (Redis, or a
// --checkpoint-dir) for the purge.
type replaySource struct{ cps replay.Checkpoints }

// Replays implements erasure.ReplaySource.
func (s replaySource) Replays(ctx context.Context) ([]erasure.ReplayState, error) {
	cps, err := s.cps.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]erasure.ReplayState, 0, len(cps))
	for _, cp := range cps {
		st := erasure.ReplayState{ID: cp.Plan.ID, Topic: cp.Plan.Topic, Next: cp.Next, Complete: cp.Report.Complete, DryRun: cp.Report.DryRun,
			KeptFrom: cp.KeptFrom,
			Kept:     cp.Report.Stayed + cp.Report.Filtered + cp.Report.LoopGuard.Refused + cp.Report.AlreadyReplayed}
		for _, r := range cp.Plan.Ranges {
			st.Ranges = append(st.Ranges, erasure.OffsetRange{Partition: r.Partition, Start: r.Start, End: r.End})
		}
		out = append(out, st)
	}
	return out, nil
}

// scanProgress prints a long scan's progress on w: a line per place when
// it starts and at most one a second while it is read.
type scanProgress struct {
	w     io.Writer
	mu    sync.Mutex
	place string
	last  time.Time
}

func (p *scanProgress) update(s erasure.ScanProgress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.Place == p.place && time.Since(p.last) < time.Second {
		return
	}
	p.place, p.last = s.Place, time.Now()
	total := ""
	if s.Total > 0 {
		total = fmt.Sprintf(" of %d", s.Total)
	}
	fmt.Fprintf(p.w, "  reading %s: %d%s read, %d found\n", s.Place, s.Done, total, s.Found)
}

// flagGiven reports whether the flag name was given on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// knownNames lists names for a message ("a, b" or "none").
func knownNames(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// ledger returns where purge, erase and residue clean append their audit
// leaves (purge, erasure): with audit.enabled the audit topic on the ingest
// cluster, as route, replay and sink append to it, each call one audit
// record acknowledged by every in-sync replica before the command goes on
// (nothing is deleted or erased while its leaf cannot be written); with
// the audit off nil, no leaves.
func (w *erasureWiring) ledger(cfg *config.Config) (erasure.Ledger, error) {
	if !cfg.Audit.Enabled {
		return nil, nil
	}
	log, err := newAuditLog(cfg, w.log)
	if err != nil {
		return nil, err
	}
	w.closers = append(w.closers, log.Close)
	return auditwire.NewLeafLedger(log)
}
