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

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

const routeSynopsis = `route --config FILE [flags]

Consume the ingest topics and route every event to its region's pinned
topic (or to quarantine / dead-letter). Outages (Redis, a region's
cluster, a missing topic) never stop it: it reports not ready and resumes
by itself. On SIGINT/SIGTERM fetching stops, the events in flight are
acknowledged, recorded and committed within router.shutdown_timeout.
Exit codes: 0 clean shutdown (everything read was committed), 1 routing
failed, 2 bad flags or config, 3 stopped with events left uncommitted
(the log says how many per partition; they are read again).`

// runRoute is `residency route`.
func runRoute(ctx context.Context, e env) int {
	fs := newFlags(e, "route", routeSynopsis)
	cfgPath := fs.String("config", os.Getenv("RESIDENCY_CONFIG"), "config `file` (default $RESIDENCY_CONFIG)")
	listen := fs.String("listen", "", "override http.listen (host:port, or \"off\")")
	level := fs.String("log-level", "", "override log_level (debug, info, warn, error)")
	rulesFile := fs.String("rules", "", "override rules.file: route with this ruleset file instead of Redis")
	redisAddr := fs.String("redis", "", "override redis.addr")
	instance := fs.String("instance", "", "override instance")
	group := fs.String("group", "", "override router.consumer_group")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	cfg, err := config.Load(*cfgPath, os.LookupEnv)
	if err != nil {
		return fail(e, "route", err)
	}
	override(map[*string]string{&cfg.HTTP.Listen: *listen, &cfg.LogLevel: *level, &cfg.Rules.File: *rulesFile,
		&cfg.Redis.Addr: *redisAddr, &cfg.Instance: *instance, &cfg.Router.ConsumerGroup: *group})
	if err := cfg.Finish(config.Scope{Route: true, Attest: true}); err != nil {
		return fail(e, "route", err)
	}
	log, reg := newService(e.stderr, cfg.LogLevel)
	cfg.WarnDeprecated(log)
	limit, limitFrom := applyMemoryLimit(cfg, log)
	w, err := wire(cfg, log, reg)
	if err != nil {
		return fail(e, "route", err)
	}
	w.limit, w.limitFrom = limit, limitFrom
	shutdown, err := serveOps(cfg.HTTP.Listen, reg, w.router.Ready, log)
	if err != nil {
		w.close()
		return fail(e, "route", fmt.Errorf("http.listen: %w", err))
	}
	log.Info("routing", "instance", cfg.Instance, "group", cfg.Router.ConsumerGroup, "ingest_topics", cfg.Router.IngestTopics)
	err = w.run(ctx)
	shutdown()
	if errors.Is(err, router.ErrUncommitted) {
		log.Error("routing stopped with events uncommitted", "error", err)
		fmt.Fprintf(e.stderr, "residency route: %v\n", err)
		return exitNotReady
	}
	if err != nil {
		log.Error("routing stopped", "error", err)
		return fail(e, "route", err)
	}
	log.Info("routing stopped cleanly")
	return exitOK
}

// wired is a router with everything it runs on.
type wired struct {
	router    *router.Router
	consumer  *kafka.Consumer
	producers map[string]*kafka.Producer
	cache     *rules.Cache
	pins      *rules.Pins
	redis     *goredis.Client
	audit     *routeAudit // nil when audit.enabled is false
	log       *slog.Logger
	revoked   func(context.Context, []router.Partition) // the router's Revoked, once built
	shutdown  time.Duration
	limit     int64  // the soft memory limit applyMemoryLimit set (0: none)
	limitFrom string // where it came from
}

// wire builds the router from a finished config. Nothing connects yet. On
// error everything built so far is closed; a config error names its field
// (config.ErrInvalid: exit code 2).
func wire(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) (*wired, error) {
	w := &wired{producers: map[string]*kafka.Producer{}, log: log, shutdown: cfg.Router.ShutdownTimeout}
	if err := w.wire(cfg, reg); err != nil {
		_ = w.close()
		return nil, err
	}
	return w, nil
}

func (w *wired) wire(cfg *config.Config, reg prometheus.Registerer) error {
	fields, err := schemas.NewExtractor(cfg.Schemas)
	if err != nil {
		return config.FieldError("schemas", err)
	}
	src, store, client, err := rulesSource(cfg)
	if err != nil {
		return err
	}
	w.redis = client
	if store != nil && cfg.PinsEnabled() {
		w.pins = rules.NewPins(store, rules.PinsOptions{StalenessBound: cfg.Rules.StalenessBound, ResyncInterval: cfg.Rules.PinsResync,
			Registerer: reg, Logger: w.log})
	}
	w.cache = rules.NewCache(src, rules.CacheOptions{
		PollInterval: cfg.Rules.PollInterval, StalenessBound: cfg.Rules.StalenessBound,
		Registerer: reg, Logger: w.log,
	})
	cc := consumerConfig(cfg, cfg.Kafka.IngestCluster, cfg.Router.ConsumerGroup, cfg.Router.IngestTopics, cfg.Router.StartOffset)
	cc.Logger, cc.OnRevoke = w.log, kafka.RevokeHook(&w.revoked)
	if w.consumer, err = kafka.NewConsumer(cc); err != nil {
		return config.ClusterError(cfg.Kafka.IngestCluster, err)
	}
	prods := map[string]router.AsyncProducer{}
	for _, name := range cfg.ClusterNames() {
		pc := producerConfig(cfg, name)
		pc.BatchSize, pc.BatchBytes, pc.Logger = cfg.Router.BatchSize, int(writerBatchBytes(cfg.Router.MaxValueBytes)), w.log
		kp, err := kafka.NewProducer(pc)
		if err != nil {
			return config.ClusterError(name, err)
		}
		w.producers[name] = kp
		prods[name] = kp.RouterProducer()
	}
	rc := router.Config{
		Consumer: w.consumer.RouterConsumer(), Producers: prods, IngestCluster: cfg.Kafka.IngestCluster,
		QuarantineTopic: cfg.Router.QuarantineTopic, DeadLetterTopic: cfg.Router.DeadLetterTopic,
		Fields: fields, Rules: w.cache, Instance: cfg.Instance,
		BatchSize: cfg.Router.BatchSize, Linger: cfg.Router.Linger, MaxBatchBytes: cfg.Router.MaxBatchBytes,
		IngestTopics:  cfg.Router.IngestTopics,
		MaxValueBytes: cfg.Router.MaxValueBytes, RetryMin: cfg.Router.RetryMin, RetryMax: cfg.Router.RetryMax,
		GiveUp: cfg.Router.GiveUp, ShutdownTimeout: cfg.Router.ShutdownTimeout,
		MaxInflightEvents: cfg.Router.MaxInflightEvents, MaxInflightBytes: cfg.Router.MaxInflightBytes,
		MaxUncommittedEvents: cfg.Router.MaxUncommittedEvents, MaxUncommittedBytes: cfg.Router.MaxUncommittedBytes,
		Logger: w.log, Metrics: router.NewMetrics(reg),
	}
	if w.pins != nil {
		rc.Pins = w.pins
	}
	if w.audit, err = wireRouteAudit(cfg, cfg.Instance, audit.KindRoute, w.log); err != nil {
		return err
	}
	if w.audit != nil {
		rc.Ledger, rc.Attester = w.audit.ledger, w.audit.attester
	}
	if w.router, err = router.New(rc); err != nil {
		return config.FieldError("router", err)
	}
	w.revoked = w.router.Revoked
	return nil
}

// run follows the rules and pins and routes until ctx ends, then closes
// everything. The rules cache outlives the router so the last events are
// routed under a ruleset the cache still vouches for.
func (w *wired) run(ctx context.Context) error {
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.cache.Run(bg) })
	if w.pins != nil {
		wg.Go(func() { _ = w.pins.Run(bg) })
		wg.Go(func() { lowerLimitForPins(bg, w.limit, w.limitFrom, w.pins, w.log, pinsLimitEvery) })
	}
	err := w.router.Run(ctx)
	cancel()
	wg.Wait()
	if cerr := w.close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// close releases the consumer (leaving the group; the router has
// committed what settled), the producers (what is still unacknowledged
// after Run is dropped: Run reported it) and Redis.
func (w *wired) close() error {
	if w == nil {
		return nil
	}
	var errs []error
	wait := max(w.shutdown, time.Second)
	if w.consumer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		errs = append(errs, w.consumer.Close(ctx))
		cancel()
	}
	for name, kp := range w.producers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := kp.CloseContext(ctx); err != nil {
			w.log.Warn("producer closed with records unacknowledged", "cluster", name, "error", err)
		}
		cancel()
	}
	if w.audit != nil {
		if err := w.audit.close(time.Second); err != nil {
			w.log.Warn("audit log closed with records unacknowledged", "error", err)
		}
	}
	if w.redis != nil {
		errs = append(errs, w.redis.Close())
	}
	return errors.Join(errs...)
}

// writerBatchBytes is the request size of the router's writers: room for
// the largest event the router routes (router.max_value_bytes, default
// router.DefaultMaxValueBytes) plus its residency headers, and never less
// than kafka-go's 1 MiB. kafka-go refuses a whole write when one record is
// larger than this, which would stall the partition.
func writerBatchBytes(maxValueBytes int) int64 {
	if maxValueBytes <= 0 {
		maxValueBytes = router.DefaultMaxValueBytes
	}
	return int64(max(1<<20, maxValueBytes+16<<10))
}
