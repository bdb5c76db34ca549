package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/router/replay"
	"github.com/residency-router/residency/router/rules"
)

const purgeSynopsis = `purge --config FILE [--dry-run] [--after-sinks] [--min-age D] [--pinned] [--every D] [--topic NAME]... [--output text|json]

Delete ingest-topic records that are safely placed: per partition up to the
router group's committed offset (never past it; a partition the group never
committed is left alone), held back by --min-age and, with --after-sinks,
until every sink of the config has stored them. Quarantine, dead-letter and
sink quarantine ranges go once a finished replay moved every event of them
elsewhere (its checkpoint says so). --pinned also trims each sink's pinned
topic up to what every sink draining it committed. --dry-run prints the plan and deletes
nothing. --every runs it as a service (metrics, /healthz, /readyz on
http.listen or --listen) until SIGINT/SIGTERM.
Exit codes: 0 done (partitions held back are normal and printed), 1 some
partitions could not be purged or the run failed, 2 bad flags or config,
3 Kafka or Redis unreachable at start.`

// purgeFlags are the flags of `residency purge`.
type purgeFlags struct {
	cfgPath, output, listen, checkpointDir, level string
	dryRun, afterSinks, pinned                    bool
	minAge, every                                 time.Duration
	topics                                        listFlag
	set                                           map[string]bool
}

// runPurge is `residency purge`.
func runPurge(ctx context.Context, e env) int {
	fs := newFlags(e, "purge", purgeSynopsis)
	var f purgeFlags
	fs.StringVar(&f.cfgPath, "config", os.Getenv("RESIDENCY_CONFIG"), "config `file` (default $RESIDENCY_CONFIG)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print what would be deleted, delete nothing")
	fs.BoolVar(&f.afterSinks, "after-sinks", false, "hold ingest records back until every sink of the config stored them (default purge.after_sinks)")
	fs.BoolVar(&f.pinned, "pinned", false, "also trim the sinks' pinned topics up to what every sink draining them committed (default purge.pinned)")
	fs.DurationVar(&f.minAge, "min-age", 0, "hold back records younger than `D`, e.g. 24h (default purge.min_age)")
	fs.DurationVar(&f.every, "every", 0, "run as a service, once every `D`, e.g. 5m (default purge.every; 0: once)")
	fs.Var(&f.topics, "topic", "purge only this `topic` (an ingest, quarantine, dead-letter or sink quarantine topic of the config; repeatable)")
	out := addOutput(fs)
	fs.StringVar(&f.listen, "listen", "", "with --every: override http.listen (host:port, or \"off\")")
	fs.StringVar(&f.checkpointDir, "checkpoint-dir", "", "read replay checkpoints from `DIR` (as replay --checkpoint-dir) instead of Redis")
	fs.StringVar(&f.level, "log-level", "", "override log_level (debug, info, warn, error)")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if f.cfgPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	f.output = out.String()
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	err := purgeMain(ctx, e, &f)
	if err != nil {
		fmt.Fprintf(e.stderr, "residency purge: %s\n", config.OneLine(err.Error()))
	}
	return exitCode(err)
}

// purgeMain wires and runs the purge (once, or as a service).
func purgeMain(ctx context.Context, e env, f *purgeFlags) error {
	switch {
	case f.output != "text" && f.output != "json":
		return usagef("--output %q is not text or json", f.output)
	case f.minAge < 0:
		return usagef("--min-age %s: must not be negative", f.minAge)
	case f.every < 0:
		return usagef("--every %s: must not be negative", f.every)
	}
	cfg, err := config.Load(f.cfgPath, os.LookupEnv)
	if err != nil {
		return err
	}
	override(map[*string]string{&cfg.LogLevel: f.level, &cfg.HTTP.Listen: f.listen})
	if err := cfg.Finish(config.Scope{Route: true}); err != nil {
		return err
	}
	opts := erasure.PurgeOptions{AfterSinks: cfg.Purge.AfterSinks, MinAge: cfg.Purge.MinAge, Pinned: cfg.Purge.Pinned, DryRun: f.dryRun}
	every := cfg.Purge.Every
	if f.set["after-sinks"] {
		opts.AfterSinks = f.afterSinks
	}
	if f.set["pinned"] {
		opts.Pinned = f.pinned
	}
	if f.set["min-age"] {
		opts.MinAge = f.minAge
	}
	if f.set["every"] {
		every = f.every
	}
	loop := every > 0
	if loop && f.dryRun {
		return usagef("--dry-run and --every exclude each other: a dry run prints one plan")
	}

	log, reg := newService(e.stderr, cfg.LogLevel)
	if !loop {
		log, reg = erasureLogger(e.stderr, cfg.LogLevel), nil
	}
	cfg.WarnDeprecated(log)
	w := &erasureWiring{log: log}
	defer w.close()
	clusters, err := erasureClusters(cfg, log)
	if err != nil {
		return err
	}
	pc := erasure.PurgeConfig{Clusters: clusters, IngestCluster: cfg.Kafka.IngestCluster, IngestTopics: cfg.Router.IngestTopics,
		RouterGroup: cfg.Router.ConsumerGroup, Actor: cmp.Or(cfg.Instance, "purge"), MaxScan: cfg.Purge.MaxScan, Logger: log}
	for _, t := range configTopics(cfg) {
		if t.Role != erasure.RoleIngest && t.Cluster == cfg.Kafka.IngestCluster {
			pc.Replayed = append(pc.Replayed, t)
		}
	}
	if err := purgeOnly(cfg, &pc, f.topics); err != nil {
		return err
	}
	if err := reachable(ctx, cfg, clusters); err != nil {
		return err
	}
	// The replays, from their checkpoints.
	var cps replay.Checkpoints
	if f.checkpointDir != "" {
		fc, err := replay.NewFileCheckpoints(f.checkpointDir)
		if err != nil {
			return usagef("--checkpoint-dir: %v", err)
		}
		cps = fc
	} else {
		client, err := w.connectRedis(ctx, cfg)
		if err != nil {
			return err
		}
		cps = redis.NewCheckpoints(client, cfg.Redis.Prefix, 0)
	}
	pc.Replays = replaySource{cps}
	// The sinks whose progress --after-sinks waits for, and whose commits
	// bound --pinned.
	if opts.AfterSinks || opts.Pinned {
		if err := w.downstream(ctx, cfg, &pc); err != nil {
			return err
		}
	}
	if pc.Ledger, err = w.ledger(cfg); err != nil {
		return err
	}
	p, err := erasure.NewPurger(pc)
	if err != nil {
		return err
	}
	if loop {
		return purgeService(ctx, e, f, cfg, p, every, opts, log, reg)
	}
	plan, err := p.Run(ctx, opts)
	if plan != nil {
		if werr := writePlan(e, f.output, plan); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

// purgeOnly limits the purge to the topics named with --topic.
func purgeOnly(cfg *config.Config, pc *erasure.PurgeConfig, only []string) error {
	if len(only) == 0 {
		return nil
	}
	known := slices.Clone(pc.IngestTopics)
	for _, t := range pc.Replayed {
		known = append(known, t.Name)
	}
	for _, t := range only {
		if !slices.Contains(known, t) {
			return usagef("--topic %q is not a topic purge knows on cluster %s (%s)", t, cfg.Kafka.IngestCluster, knownNames(known))
		}
	}
	pc.IngestTopics = slices.DeleteFunc(slices.Clone(pc.IngestTopics), func(t string) bool { return !slices.Contains(only, t) })
	pc.Replayed = slices.DeleteFunc(slices.Clone(pc.Replayed), func(t erasure.Topic) bool { return !slices.Contains(only, t.Name) })
	return nil
}

// downstream adds every sink of the config as a consumer --after-sinks
// waits for and --pinned trims up to; a sink whose pinned topic the config does not name takes its
// region's from the ruleset in force.
func (w *erasureWiring) downstream(ctx context.Context, cfg *config.Config, pc *erasure.PurgeConfig) error {
	var rs *rules.Ruleset
	for i := range cfg.Sinks {
		sc := &cfg.Sinks[i]
		t, ok := sinkTopic(sc, rs)
		if !ok && rs == nil {
			cache, _, err := w.loadRules(ctx, cfg)
			if err != nil {
				return fmt.Errorf("the pinned topic of %s: %w", cfg.SinkField(sc), err)
			}
			rs, _ = cache.Current()
			t, ok = sinkTopic(sc, rs)
		}
		if !ok {
			return config.FieldError(cfg.SinkField(sc)+".region", fmt.Errorf("region %q has no pinned topic in ruleset version %s: set %s.topic and .cluster",
				sc.Region, rs.VersionString(), cfg.SinkField(sc)))
		}
		if _, known := pc.Clusters[t.Cluster]; !known {
			return config.FieldError(cfg.SinkField(sc)+".cluster", fmt.Errorf("%q is not in kafka.clusters", t.Cluster))
		}
		pc.Downstream = append(pc.Downstream, erasure.Downstream{Topic: t, Group: sc.ConsumerGroup, Name: sc.Store})
	}
	return nil
}

// writePlan prints the plan as --output says.
func writePlan(e env, output string, plan *erasure.PurgePlan) error {
	if output == "json" {
		return plan.WriteJSON(e.stdout)
	}
	plan.WriteText(e.stdout)
	return nil
}

// purgeService runs the purge every interval as a service: metrics and
// health on http.listen, /readyz the last run's outcome, exit 0 on
// SIGINT/SIGTERM after the run in hand.
func purgeService(ctx context.Context, e env, f *purgeFlags, cfg *config.Config, p *erasure.Purger, every time.Duration,
	opts erasure.PurgeOptions, log *slog.Logger, reg *prometheus.Registry) error {
	loop, err := erasure.NewPurgeLoop(p, erasure.PurgeLoopConfig{Every: every, Options: opts, Metrics: erasure.NewPurgeMetrics(reg),
		Report: func(plan *erasure.PurgePlan, _ error) {
			if plan != nil {
				_ = writePlan(e, f.output, plan)
			}
		}})
	if err != nil {
		return err
	}
	shutdown, err := serveOps(cfg.HTTP.Listen, reg, loop.Ready, log)
	if err != nil {
		return usagef("listen: %v", err)
	}
	defer shutdown()
	log.Info("purging", "every", every.String(), "after_sinks", opts.AfterSinks, "min_age", opts.MinAge.String(), "pinned", opts.Pinned)
	if err := loop.Run(ctx); err != nil {
		log.Error("purge stopped", "error", err)
		return err
	}
	log.Info("purge stopped cleanly")
	return nil
}
