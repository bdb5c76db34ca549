package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// SinkConfig is one entry of the config's sinks section: a sink draining one
// region's pinned topic into one store. Exactly one of Postgres and
// ObjectStore is set. The rest of the file (kafka, redis, rules, schemas,
// http, log_level) is shared with `residency route`.
type SinkConfig struct {
	// Store is the store's name in the ruleset (stores[].name), and what
	// --store selects. Required.
	Store string `yaml:"store"`
	// Region is the region whose pinned topic is drained. Required.
	Region string `yaml:"region"`
	// Topic is the pinned topic. Default: the region's topic in the ruleset
	// in force at start (and it must stay that topic).
	Topic string `yaml:"topic"`
	// Cluster is the kafka.clusters entry holding the pinned topic.
	// Default: the region's cluster in the ruleset in force at start.
	Cluster string `yaml:"cluster"`
	// ConsumerGroup is the sink's consumer group. Default
	// "residency-sink-" + Store.
	ConsumerGroup string `yaml:"consumer_group"`
	// QuarantineTopic receives the events the store must not hold.
	// Default "residency.sink-quarantine".
	QuarantineTopic string `yaml:"quarantine_topic"`
	// QuarantineCluster is the kafka.clusters entry holding
	// QuarantineTopic. Default: kafka.ingest_cluster (quarantine stays on
	// the ingest cluster).
	QuarantineCluster string `yaml:"quarantine_cluster"`
	// StartOffset is where a new consumer group starts. Only "earliest" is
	// accepted: starting at the end would skip events already pinned.
	// Default "earliest".
	StartOffset string `yaml:"start_offset"`
	// BatchSize is the most events per write. Default 1000.
	BatchSize int `yaml:"batch_size"`
	// BatchTimeout is how long a batch waits to fill. Default 200ms.
	BatchTimeout time.Duration `yaml:"batch_timeout"`
	// DrainTimeout bounds writing and committing the batch in hand after
	// SIGINT/SIGTERM. Default 10s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// WriteTimeout bounds each write to the store; a write that takes
	// longer is cancelled and retried (nothing is committed). It must be
	// less than rules.staleness_bound. Default: 20s, or half of
	// rules.staleness_bound when that is 20s or less.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// RulesWait is how long to wait at start for the first ruleset before
	// exiting with code 3. Default 30s.
	RulesWait time.Duration `yaml:"rules_wait"`
	// Listen is the host:port of /metrics, /healthz and /readyz for this
	// sink, "off" to disable. Default: http.listen.
	Listen string `yaml:"listen"`
	// Postgres is the PostgreSQL store. Default: none.
	Postgres *postgres.Config `yaml:"postgres"`
	// ObjectStore is the object store. Default: none.
	ObjectStore *objectstore.Config `yaml:"objectstore"`
}

// defaultStalenessBound is rules.staleness_bound's default (the rules
// cache's).
const defaultStalenessBound = 30 * time.Second

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
	cfg, err := loadConfig(*cfgPath, os.LookupEnv)
	if err != nil {
		return fail(e, "sink", err)
	}
	override(map[*string]string{&cfg.LogLevel: *level, &cfg.Rules.File: *rulesFile, &cfg.Redis.Addr: *redisAddr})
	sc, err := cfg.finishSink(*storeName)
	if err != nil {
		return fail(e, "sink", err)
	}
	override(map[*string]string{&sc.Listen: *listen})
	log, reg := newService(e.stderr, cfg.LogLevel)
	cfg.warnDeprecated(log)

	sw := &sinkWiring{log: log}
	defer sw.close()
	code, err := sw.wire(ctx, cfg, sc, reg)
	if err != nil {
		fmt.Fprintf(e.stderr, "residency sink: %s\n", oneLine(err.Error()))
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
		fmt.Fprintf(e.stderr, "residency sink: %s\n", oneLine(err.Error()))
		if errors.Is(err, sink.ErrNoRuleset) {
			return exitNotReady
		}
		return exitFailure
	}
	log.Info("sink stopped cleanly")
	return exitOK
}

// defaults fills in the sink's defaults from the rest of the config c.
func (sc *SinkConfig) defaults(c *Config) {
	if sc.ConsumerGroup == "" && sc.Store != "" {
		sc.ConsumerGroup = "residency-sink-" + sc.Store
	}
	setDefault(&sc.QuarantineTopic, defaultSinkQuarantineTopic)
	setDefault(&sc.QuarantineCluster, c.Kafka.IngestCluster)
	setDefault(&sc.StartOffset, "earliest")
	// A write may land up to write_timeout after its approval was checked:
	// keep that below the time an unconfirmed ruleset stays in force.
	if sc.WriteTimeout == 0 {
		staleness, _ := effective(c.Rules.StalenessBound, defaultStalenessBound)
		sc.WriteTimeout = sink.DefaultWriteTimeout
		if sc.WriteTimeout >= staleness {
			sc.WriteTimeout = staleness / 2
		}
	}
	if sc.RulesWait == 0 {
		sc.RulesWait = 30 * time.Second
	}
	setDefault(&sc.Listen, c.HTTP.Listen)
}

// validateSinks checks every sinks[] entry (after defaults), and that the
// one scope s runs exists.
func (c *Config) validateSinks(ps *problems, s scope) {
	stores := map[string]int{}
	groups := map[string]string{c.Router.ConsumerGroup: "router.consumer_group"}
	// Topics of the ingest cluster a sink quarantine topic must not be.
	routerTopics := map[string]string{c.Router.QuarantineTopic: "router.quarantine_topic", c.Router.DeadLetterTopic: "router.dead_letter_topic"}
	for i, tp := range c.Router.IngestTopics {
		routerTopics[tp] = fmt.Sprintf("router.ingest_topics[%d]", i)
	}
	for i := range c.Sinks {
		sc := &c.Sinks[i]
		f := func(name string) string { return fmt.Sprintf("sinks[%d].%s", i, name) }
		dupStore := false
		switch j, dup := stores[sc.Store]; {
		case sc.Store == "":
			ps.add(f("store"), "required: the store's name in the ruleset (stores[].name)")
		case dup:
			ps.add(f("store"), "%q is also sinks[%d].store", sc.Store, j)
			dupStore = true
		default:
			stores[sc.Store] = i
		}
		if sc.Region == "" {
			ps.add(f("region"), "required")
		}
		if other, dup := groups[sc.ConsumerGroup]; dup && sc.ConsumerGroup != "" && !dupStore {
			ps.add(f("consumer_group"), "%q is also %s: each sink needs its own consumer group", sc.ConsumerGroup, other)
		} else if !dup {
			groups[sc.ConsumerGroup] = f("consumer_group")
		}
		// (A quarantine_cluster defaulted to a bad kafka.ingest_cluster is
		// reported once, there.)
		_, ingestKnown := c.Kafka.Clusters[c.Kafka.IngestCluster]
		if _, ok := c.Kafka.Clusters[sc.QuarantineCluster]; !ok && len(c.Kafka.Clusters) > 0 && (ingestKnown || sc.QuarantineCluster != c.Kafka.IngestCluster) {
			ps.add(f("quarantine_cluster"), "%q is not in kafka.clusters (set it or kafka.ingest_cluster)", sc.QuarantineCluster)
		}
		if _, ok := c.Kafka.Clusters[sc.Cluster]; !ok && sc.Cluster != "" && len(c.Kafka.Clusters) > 0 {
			ps.add(f("cluster"), "%q is not in kafka.clusters", sc.Cluster)
		}
		if other, clash := routerTopics[sc.QuarantineTopic]; clash && sc.QuarantineCluster == c.Kafka.IngestCluster {
			ps.add(f("quarantine_topic"), "%q is also %s on the ingest cluster: the sink quarantine needs its own topic", sc.QuarantineTopic, other)
		}
		switch strings.ToLower(sc.StartOffset) {
		case "earliest":
		case "latest":
			// A new sink group starting at the end would never store what the
			// pinned topic already holds.
			ps.add(f("start_offset"), "\"latest\" would skip every event already in the pinned topic when a new consumer group starts; only earliest is allowed")
		default:
			ps.add(f("start_offset"), "%q is not earliest", sc.StartOffset)
		}
		notNegative(ps, map[string]int{f("batch_size"): sc.BatchSize})
		notNegative(ps, map[string]time.Duration{f("batch_timeout"): sc.BatchTimeout, f("drain_timeout"): sc.DrainTimeout,
			f("rules_wait"): sc.RulesWait, f("write_timeout"): sc.WriteTimeout})
		if staleness, stalenessS := effective(c.Rules.StalenessBound, defaultStalenessBound); sc.WriteTimeout >= staleness && staleness > 0 {
			ps.add(f("write_timeout"), "%s must be less than rules.staleness_bound (%s): a write could land after its approval went stale", sc.WriteTimeout, stalenessS)
		}
		checkListen(ps, f("listen"), sc.Listen)
		switch {
		case sc.Postgres == nil && sc.ObjectStore == nil:
			ps.add(f("postgres"), "one of sinks[%d].postgres and sinks[%d].objectstore is required", i, i)
		case sc.Postgres != nil && sc.ObjectStore != nil:
			ps.add(f("objectstore"), "set only one of sinks[%d].postgres and sinks[%d].objectstore", i, i)
		case sc.Postgres != nil:
			if err := sc.Postgres.Validate(); err != nil {
				ps.addErr(f("postgres"), err)
			}
		default:
			if err := sc.ObjectStore.Validate(); err != nil {
				ps.addErr(f("objectstore"), err)
			}
		}
	}
	if s.sink != "" {
		if _, ok := stores[s.sink]; !ok {
			var names []string
			for _, sc := range c.Sinks {
				if sc.Store != "" {
					names = append(names, sc.Store)
				}
			}
			ps.add("sinks", "no entry with store %q (have: %s)", s.sink, cmp.Or(strings.Join(names, ", "), "none"))
		}
	}
}

// sinkWiring is a sink with everything it runs on.
type sinkWiring struct {
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
}

// wire loads the ruleset, checks the approval before touching the store,
// then opens the store and Kafka. On error it returns the exit code.
func (w *sinkWiring) wire(ctx context.Context, cfg *Config, sc *SinkConfig, reg prometheus.Registerer) (int, error) {
	field := "sinks"
	for i := range cfg.Sinks {
		if &cfg.Sinks[i] == sc {
			field = fmt.Sprintf("sinks[%d]", i)
		}
	}
	dec, err := schemas.NewExtractor(cfg.Schemas)
	if err != nil {
		return exitUsage, fieldError("schemas", err)
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
	if store != nil && cfg.pinsEnabled() {
		w.pins = rules.NewPins(store, rules.PinsOptions{Registerer: reg})
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
	cluster, ok := cfg.Kafka.Clusters[sc.Cluster]
	if !ok {
		return exitUsage, fieldError(field+".cluster", fmt.Errorf("the pinned topic of region %q is on cluster %q (ruleset version %s), which is not in kafka.clusters",
			sc.Region, sc.Cluster, rs.VersionString()))
	}
	switch {
	case sc.Postgres != nil:
		s, err := postgres.Open(ctx, *sc.Postgres)
		if err != nil {
			if errors.Is(err, postgres.ErrConfig) {
				return exitUsage, fieldError(field+".postgres", err)
			}
			return exitNotReady, err
		}
		w.store = s
	default:
		s, err := objectstore.Open(ctx, *sc.ObjectStore)
		if err != nil {
			if errors.Is(err, objectstore.ErrConfig) {
				return exitUsage, fieldError(field+".objectstore", err)
			}
			return exitNotReady, err
		}
		w.store = s
	}
	if w.reader, err = kafka.NewReader(kafka.ReaderConfig{Cluster: cluster, GroupID: sc.ConsumerGroup, Topics: []string{sc.Topic},
		StartOffset: sc.StartOffset, SessionTimeout: cfg.Kafka.SessionTimeout, RebalanceTimeout: cfg.Kafka.RebalanceTimeout,
		Logger: w.log}); err != nil {
		return exitUsage, clusterError(sc.Cluster, err)
	}
	if w.writer, err = kafka.NewWriter(kafka.WriterConfig{Cluster: cfg.Kafka.Clusters[sc.QuarantineCluster],
		Compression: cfg.Kafka.Compression, Logger: w.log}); err != nil {
		return exitUsage, clusterError(sc.QuarantineCluster, err)
	}
	scfg := sink.Config{Store: sc.Store, Region: sc.Region, Topic: sc.Topic, Cluster: sc.Cluster, QuarantineTopic: sc.QuarantineTopic,
		BatchSize: sc.BatchSize, BatchTimeout: sc.BatchTimeout, DrainTimeout: sc.DrainTimeout, WriteTimeout: sc.WriteTimeout,
		Rulesets: sink.NewVersions(src, 0), Logger: w.log, Registerer: reg}
	if w.pins != nil {
		scfg.Pins = w.pins
	}
	w.sink, err = sink.New(scfg, w.reader, w.store, w.writer, w.cache, dec)
	if err != nil {
		return exitUsage, fieldError(field, err)
	}
	return exitOK, nil
}

// close releases everything wire opened: the reader (leaving the group,
// committing nothing), the quarantine writer, the store, the rules cache and
// Redis.
func (w *sinkWiring) close() {
	if w.reader != nil {
		_ = w.reader.Close()
	}
	if w.writer != nil {
		_ = w.writer.Close()
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
