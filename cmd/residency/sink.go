package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/stream"
)

const sinkSynopsis = `sink --config FILE --store NAME [flags]

Drain one region's pinned topic into one store (the sinks[] entry whose
store is NAME), and only if the ruleset in force approves that store for
that region. Stops cleanly on SIGINT/SIGTERM: the batch in hand is written
and committed, exit 0.
Exit codes: 0 clean shutdown, 1 not approved or the sink failed, 2 bad
flags or config, 3 no ruleset or store reachable.`

// runSink is `residency sink`.
func runSink(ctx context.Context, e env) int {
	fs := newFlags(e, "sink", sinkSynopsis)
	cfgPath := fs.String("config", os.Getenv("RESIDENCY_CONFIG"), "config `file` (default $RESIDENCY_CONFIG)")
	storeName := fs.String("store", "", "the store to write, a sinks[].store of the config (required)")
	listen := fs.String("listen", "", "override the sink's listen address (host:port, or \"off\")")
	level := fs.String("log-level", "", "override log_level (debug, info, warn, error)")
	rulesFile := fs.String("rules", "", "override rules.file: check approval against this ruleset file instead of Redis")
	redisAddr := fs.String("redis", "", "override redis.addr")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if *cfgPath == "" || *storeName == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	cfg, err := config.Load(*cfgPath, os.LookupEnv)
	if err != nil {
		return fail(e, "sink", err)
	}
	override(map[*string]string{&cfg.LogLevel: *level, &cfg.Rules.File: *rulesFile, &cfg.Redis.Addr: *redisAddr})
	if err := cfg.Finish(config.Scope{Sink: *storeName}); err != nil {
		return fail(e, "sink", err)
	}
	if err := readCommittedUnsupported(cfg); err != nil {
		return fail(e, "sink", err)
	}
	sc := cfg.Sink(*storeName)
	override(map[*string]string{&sc.Listen: *listen})
	log, reg := newService(e.stderr, cfg.LogLevel)
	cfg.WarnDeprecated(log)

	sw := &sinkWiring{log: log}
	defer sw.close()
	code, err := sw.wire(ctx, cfg, sc, reg)
	if err != nil {
		// Stop what wire started (the ruleset and pin loops log to the same
		// stderr) before saying why.
		sw.close()
		fmt.Fprintf(e.stderr, "residency sink: %s\n", config.OneLine(err.Error()))
		return code
	}
	shutdown, err := serveOps(sc.Listen, reg, sw.sink.Ready, log)
	if err != nil {
		return fail(e, "sink", fmt.Errorf("listen: %w", err))
	}
	log.Info("sinking", "region", sc.Region, "topic", sc.Topic, "cluster", sc.Cluster, "group", sc.ConsumerGroup)
	err = sw.sink.Run(ctx)
	shutdown()
	if err != nil {
		log.Error("sink stopped", "error", err)
		fmt.Fprintf(e.stderr, "residency sink: %s\n", config.OneLine(err.Error()))
		if errors.Is(err, sink.ErrNoRuleset) {
			return exitNotReady
		}
		return exitFailure
	}
	log.Info("sink stopped cleanly")
	return exitOK
}

// sinkWiring is a sink with everything it runs on.
type sinkWiring struct {
	closed bool // close ran
	log    *slog.Logger
	redis  *goredis.Client
	cache  *rules.Cache
	pins   *rules.Pins
	stopBg context.CancelFunc
	bg     sync.WaitGroup
	store  sink.Store
	reader *kafka.Reader
	writer *kafka.Writer
	sink   *sink.Sink

	// With audit.enabled (sink_audit.go): the audit topic's writer and the
	// quarantine publisher that says where each record went.
	auditLog *kafka.AuditLog
	placing  *placingProducer
}

// wire loads the ruleset, checks the approval before touching the store,
// then opens the store and Kafka. On error it returns the exit code.
func (w *sinkWiring) wire(ctx context.Context, cfg *config.Config, sc *config.SinkConfig, reg prometheus.Registerer) (int, error) {
	field := cfg.SinkField(sc)
	var code int
	dec, err := schemas.NewExtractor(cfg.Schemas)
	if err != nil {
		return exitUsage, config.FieldError("schemas", err)
	}
	src, store, client, err := rulesSource(cfg)
	if err != nil {
		return exitUsage, err
	}
	w.redis = client
	w.cache = rules.NewCache(src, rules.CacheOptions{PollInterval: cfg.Rules.PollInterval,
		StalenessBound: cfg.Rules.StalenessBound, Registerer: reg, Logger: w.log})
	// The sink re-decides each event under the ruleset version that placed
	// it (from Redis; a rules.file knows its one version) and with its
	// user's pin, as the router decided it.
	if store != nil && cfg.PinsEnabled() {
		w.pins = rules.NewPins(store, rules.PinsOptions{StalenessBound: cfg.Rules.StalenessBound, ResyncInterval: cfg.Rules.PinsResync,
			Registerer: reg, Logger: w.log})
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	w.stopBg = stop
	w.bg.Go(func() { _ = w.cache.Run(bg) })
	if w.pins != nil {
		w.bg.Go(func() { _ = w.pins.Run(bg) })
	}
	select {
	case <-w.cache.Loaded():
	case <-time.After(sc.RulesWait):
		_, err := w.cache.Current()
		return exitNotReady, fmt.Errorf("no ruleset after %s: %w", sc.RulesWait, err)
	case <-ctx.Done():
		return exitNotReady, ctx.Err()
	}
	rs, err := w.cache.Current()
	if err != nil {
		return exitNotReady, err
	}
	// Resolve the defaults from the ruleset, then check approval (1) before
	// the store is even opened.
	if g, ok := rs.Region(sc.Region); ok {
		if sc.Topic == "" {
			sc.Topic = g.Topic
		}
		if sc.Cluster == "" {
			sc.Cluster = g.Cluster
		}
	}
	if sc.Topic == "" {
		sc.Topic = "(unknown)"
	}
	if err := sink.CheckApproval(rs, sc.Store, sc.Region, sc.Topic); err != nil {
		return exitFailure, err
	}
	_, ok := cfg.Kafka.Clusters[sc.Cluster]
	if !ok {
		return exitUsage, config.FieldError(field+".cluster", fmt.Errorf("the pinned topic of region %q is on cluster %q (ruleset version %s), which is not in kafka.clusters",
			sc.Region, sc.Cluster, rs.VersionString()))
	}
	switch {
	case sc.Postgres != nil:
		s, err := postgres.Open(ctx, *sc.Postgres)
		if err != nil {
			if errors.Is(err, postgres.ErrConfig) {
				return exitUsage, config.FieldError(field+".postgres", err)
			}
			return exitNotReady, err
		}
		w.store = s
	default:
		s, err := objectstore.Open(ctx, *sc.ObjectStore)
		if err != nil {
			if errors.Is(err, objectstore.ErrConfig) {
				return exitUsage, config.FieldError(field+".objectstore", err)
			}
			return exitNotReady, err
		}
		w.store = s
	}
	if w.reader, err = newReader(cfg, sc.Cluster, sc.ConsumerGroup, []string{sc.Topic}, sc.StartOffset, w.log); err != nil {
		return exitUsage, err
	}
	wc := writerConfig(cfg, sc.QuarantineCluster)
	wc.Logger = w.log
	if w.writer, err = kafka.NewWriter(wc); err != nil {
		return exitUsage, config.ClusterError(sc.QuarantineCluster, err)
	}
	scfg := sink.Config{Store: sc.Store, Region: sc.Region, Topic: sc.Topic, Cluster: sc.Cluster, QuarantineTopic: sc.QuarantineTopic,
		BatchSize: sc.BatchSize, BatchTimeout: sc.BatchTimeout, DrainTimeout: sc.DrainTimeout, WriteTimeout: sc.WriteTimeout,
		Rulesets: sink.NewVersions(src, 0), Logger: w.log, Registerer: reg}
	if w.pins != nil {
		scfg.Pins = w.pins
	}
	if scfg.Erasures, code, err = w.erasures(ctx, cfg); err != nil {
		return code, err
	}
	if code, err := w.wireAudit(cfg, sc, &scfg); err != nil {
		return code, err
	}
	var quarantine stream.Publisher = w.writer
	if w.placing != nil {
		quarantine = w.placing
	}
	w.sink, err = sink.New(scfg, w.reader, w.store, quarantine, w.cache, dec)
	if err != nil {
		return exitUsage, config.FieldError(field, err)
	}
	return exitOK, nil
}

// close releases everything wire opened: the reader (leaving the group,
// committing nothing), the quarantine writer, the store, the rules cache and
// Redis.
func (w *sinkWiring) close() {
	if w.closed {
		return
	}
	w.closed = true
	if w.reader != nil {
		_ = w.reader.Close()
	}
	if w.writer != nil {
		_ = w.writer.Close()
	}
	if w.placing != nil {
		_ = w.placing.Close()
	}
	if w.auditLog != nil {
		_ = w.auditLog.Close(context.Background())
	}
	if w.store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := w.store.Close(ctx); err != nil {
			w.log.Warn("closing the store", "err", err)
		}
		cancel()
	}
	if w.stopBg != nil {
		w.stopBg()
		w.bg.Wait()
	}
	if w.redis != nil {
		_ = w.redis.Close()
	}
}
