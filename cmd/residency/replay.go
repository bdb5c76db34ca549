package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/replay"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

const replaySynopsis = `replay --config FILE --source ingest|quarantine|dead-letter|sink-quarantine [flags]
       replay --config FILE --resume ID [--dry-run] [flags]

Re-route a range of events after a rule change or a fix: read it from an
ingest topic (a time range or per-partition offsets), the quarantine,
dead-letter or sink quarantine topic, decide every event again with the
router's decision code and republish it to its region's pinned topic (or
to quarantine / dead-letter) with the router's headers plus replay
provenance. --dry-run writes nothing and reports what would move.
Still-unplaceable events read from quarantine stay there (no new copy).
A real replay decides with the ruleset version in force in Redis and
stops if another version is applied while it runs; --rules FILE and
another --rules-version are for --dry-run only.
Progress is checkpointed (Redis under redis.prefix, or --checkpoint-dir);
Ctrl-C stops after the batch in hand and prints how to resume.
Exit codes: 0 done, 1 failed or interrupted (resumable), 2 bad flags or
config, 3 Kafka or Redis unavailable.`

// listFlag collects a repeatable, comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, config.SplitList(v)...)
	return nil
}

// replayFlags are the flags of `residency replay`.
type replayFlags struct {
	cfgPath, source, topic, from, to, offsets string
	jurisdictions, reasons, eventTypes        listFlag
	rulesFile, baseline                       string
	rulesVersion                              int64
	dryRun, onlyMoved, again                  bool
	id, resume, checkpointDir                 string
	out                                       *output
	progress                                  string
	maxReplays, batch                         int
	rate                                      float64
}

// runReplay is `residency replay`.
func runReplay(ctx context.Context, e env) int {
	fs := newFlags(e, "replay", replaySynopsis)
	var f replayFlags
	fs.StringVar(&f.cfgPath, "config", os.Getenv("RESIDENCY_CONFIG"), "config `file` (default $RESIDENCY_CONFIG)")
	fs.StringVar(&f.source, "source", "", "what to replay: ingest, quarantine, dead-letter or sink-quarantine")
	fs.StringVar(&f.topic, "topic", "", "the ingest or sink quarantine `topic` (default: the only one of router.ingest_topics, or of the sinks' quarantine_topic)")
	fs.StringVar(&f.from, "from", "", "replay records produced at or after `TIME` (RFC 3339, or a duration ago such as 2h)")
	fs.StringVar(&f.to, "to", "", "replay records produced before `TIME` (RFC 3339, or a duration ago)")
	fs.StringVar(&f.offsets, "offsets", "", "per-partition offsets `P:START-END,...` (END exclusive; empty START or END: the log start or end)")
	fs.Var(&f.jurisdictions, "jurisdiction", "only events recorded with or decided into this jurisdiction (repeatable)")
	fs.Var(&f.reasons, "reason", "only quarantine/dead-letter/sink-quarantine events with this reason, e.g. unknown_country (repeatable)")
	fs.Var(&f.eventTypes, "event-type", "only events of this event_type, e.g. LOGIN (repeatable)")
	fs.Int64Var(&f.rulesVersion, "rules-version", 0, "decide with this ruleset `version` from Redis (default: the one in force; another one only with --dry-run)")
	fs.StringVar(&f.rulesFile, "rules", "", "decide with this ruleset `file` (only with --dry-run; default rules.file, else Redis)")
	fs.StringVar(&f.baseline, "baseline", "", "ingest source: the ruleset the events were first routed under, a `version` or file, to report moves (default: the version before --rules-version)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "read and report, write nothing")
	fs.BoolVar(&f.onlyMoved, "only-moved", false, "ingest source: write only events whose decision differs from the baseline's")
	fs.BoolVar(&f.again, "again", false, "replay even the offsets an earlier replay already replayed under the same ruleset version (they are skipped otherwise)")
	f.out = addOutput(fs)
	fs.StringVar(&f.id, "id", "", "replay `id` (default: generated)")
	fs.StringVar(&f.resume, "resume", "", "resume the interrupted replay `ID` (its checkpoint fixes source, range, rules and filters)")
	fs.StringVar(&f.checkpointDir, "checkpoint-dir", "", "keep checkpoints as files in `DIR` instead of Redis")
	fs.StringVar(&f.progress, "progress", "auto", "progress display: auto (a bar on a terminal, else lines), bar, lines or off")
	fs.IntVar(&f.maxReplays, "max-replays", 3, "loop guard: refuse events already replayed this many times")
	fs.IntVar(&f.batch, "batch", router.DefaultBatchSize, "events decided and published together (as router.batch_size)")
	fs.Float64Var(&f.rate, "rate", 0, "most events written per second (0: unlimited)")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if f.cfgPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	code, err := replayMain(ctx, e, &f, fs)
	if err != nil {
		fmt.Fprintf(e.stderr, "residency replay: %s\n", config.OneLine(err.Error()))
	}
	return code
}

// replayMain wires and runs one replay; it returns the exit code.
func replayMain(ctx context.Context, e env, f *replayFlags, fs *flag.FlagSet) (int, error) {
	usage := func(format string, args ...any) (int, error) {
		return exitUsage, fmt.Errorf(format, args...)
	}
	if err := f.check(fs); err != nil {
		return usage("%v", err)
	}
	cfg, err := config.Load(f.cfgPath, os.LookupEnv)
	if err != nil {
		return exitUsage, err
	}
	if f.rulesFile != "" {
		cfg.Rules.File = f.rulesFile
	}
	if err := cfg.Finish(config.Scope{Route: true, Attest: true}); err != nil {
		return exitUsage, err
	}
	lvl, _ := config.ParseLevel(cfg.LogLevel)
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: max(lvl, slog.LevelWarn)}))
	cfg.WarnDeprecated(log)
	fx, err := schemas.NewExtractor(cfg.Schemas)
	if err != nil {
		return exitUsage, config.FieldError("schemas", err)
	}

	w := &replayWiring{}
	defer w.close()
	needRedis := cfg.Rules.File == "" || f.checkpointDir == "" || f.choice(cfg).BaselineVersion() > 0
	var store *redis.Rules
	if needRedis {
		if w.redis, err = newRedis(cfg.Redis, 3*time.Second); err != nil {
			return exitUsage, err
		}
		store = redis.NewRules(w.redis, cfg.Redis.Prefix)
	}
	var cps replay.Checkpoints
	if f.checkpointDir != "" {
		if cps, err = replay.NewFileCheckpoints(f.checkpointDir); err != nil {
			return usage("--checkpoint-dir: %v", err)
		}
	} else {
		cps = redis.NewCheckpoints(w.redis, cfg.Redis.Prefix, 0)
	}

	// The plan: from the checkpoint when resuming, else from the flags.
	var plan replay.Plan
	if f.resume != "" {
		cp, err := cps.Load(ctx, f.resume)
		if errors.Is(err, replay.ErrNoCheckpoint) {
			return usage("--resume %s: no checkpoint of that replay (checkpoints are kept in %s)", f.resume, cpWhere(f, cfg))
		}
		if err != nil {
			return exitNotReady, err
		}
		plan = cp.Plan
	} else {
		if plan, err = f.plan(ctx, cfg); err != nil {
			if errors.Is(err, errUsage) || errors.Is(err, replay.ErrPlan) || errors.Is(err, config.ErrInvalid) || errors.Is(err, kafka.ErrConfig) {
				return exitUsage, err
			}
			return exitNotReady, err
		}
	}

	// The ruleset (and, for an ingest source, the baseline). A real run
	// follows the ruleset in force and must start under it.
	choice := f.choice(cfg)
	var inForce replay.RulesInForce
	if !f.dryRun {
		if err := replay.CheckRealRun(&plan, choice); err != nil {
			return exitUsage, err
		}
		cache, err := w.followRules(ctx, cfg, store)
		if err != nil {
			return exitNotReady, err
		}
		inForce = cache
	}
	var history rules.History
	if store != nil {
		history = store
	}
	rs, baseline, err := replay.Rulesets(ctx, history, &plan, choice)
	switch {
	case errors.Is(err, replay.ErrPlan), errors.Is(err, replay.ErrPlanMismatch):
		return exitUsage, err
	case errors.Is(err, rules.ErrUnavailable):
		return exitNotReady, err
	case err != nil:
		return exitFailure, err
	}
	if inForce != nil {
		if err := replay.CheckInForce(inForce, rs, &plan, choice); err != nil {
			if errors.Is(err, replay.ErrPlan) {
				return exitUsage, err
			}
			return exitNotReady, err
		}
	}
	var pins router.PinLookup
	if cfg.PinsEnabled() && store != nil {
		p, err := w.followPins(ctx, cfg, store)
		if err != nil {
			return exitNotReady, err
		}
		pins = p
	}
	pubs := map[string]stream.Publisher{}
	for name := range cfg.Kafka.Clusters {
		wc := writerConfig(cfg, name)
		wc.BatchSize, wc.Logger = f.batch, log
		kw, err := kafka.NewWriter(wc)
		if err != nil {
			return exitUsage, config.ClusterError(name, err)
		}
		w.writers = append(w.writers, kw)
		pubs[name] = kw
	}
	reader, err := kafka.NewRangeReader(cfg.Kafka.Clusters[cfg.Kafka.IngestCluster])
	if err != nil {
		return exitUsage, config.ClusterError(cfg.Kafka.IngestCluster, err)
	}
	reader.Logger = log // offsets a range could not read are warned about
	// Read as the router reads: read_committed, aborted records are not
	// events (never replayed); transaction markers never are, at any level.
	reader.IsolationLevel = cfg.Kafka.IsolationLevel
	prog := replay.NewProgressView(e.stderr, f.progress, plan.ID)
	rc := replay.Config{
		Plan: plan, Rules: rs, InForce: inForce, Baseline: baseline, Reader: reader, Publishers: pubs, IngestCluster: cfg.Kafka.IngestCluster,
		QuarantineTopic: cfg.Router.QuarantineTopic, DeadLetterTopic: cfg.Router.DeadLetterTopic, IngestTopics: cfg.Router.IngestTopics,
		Fields: fx, Decoder: fx, Pins: pins, Checkpoints: cps, DryRun: f.dryRun, BatchSize: f.batch, Rate: f.rate,
		MaxValueBytes: cfg.Router.MaxValueBytes, Instance: cmpOr(cfg.Instance, "replay"), Progress: prog.Update, Logger: log,
	}
	if !f.dryRun {
		ra, err := wireRouteAudit(cfg, "replay:"+plan.ID, audit.KindReplay, log)
		if err != nil {
			return exitUsage, err
		}
		if ra != nil {
			defer func() { _ = ra.close(5 * time.Second) }()
			rc.Ledger, rc.Attester = ra.ledger, ra.attester
		}
	}
	// A dry run saves no checkpoint but reads the others' (what was
	// already replayed).
	rp, err := replay.New(rc)
	if err != nil {
		return usage("%v", err)
	}
	runErr := rp.Run(ctx)
	prog.Finish()
	rep := rp.Report()
	if rp.AlreadyComplete() {
		fmt.Fprintf(e.stderr, "replay %s was already complete; nothing was replayed again. Its report:\n", plan.ID)
	}
	if errors.Is(runErr, replay.ErrPlanMismatch) {
		return exitUsage, runErr
	}
	if errors.Is(runErr, replay.ErrRulesetChanged) && rep.Read == 0 {
		return exitFailure, runErr
	}
	if runErr == nil || errors.Is(runErr, replay.ErrInterrupted) || rep.Read > 0 {
		if f.out.JSON() {
			_ = writeJSON(e.stdout, rep)
		} else {
			rep.WriteText(e.stdout)
		}
	}
	if runErr != nil {
		if errors.Is(runErr, replay.ErrRulesetChanged) {
			fmt.Fprintf(e.stderr, "\nreplay %s stopped: %v\nEverything published is checkpointed. To see what the new ruleset would move:\n  residency replay --config %s --source %s --dry-run ...\n",
				plan.ID, runErr, f.cfgPath, plan.Source)
			return exitFailure, nil
		}
		if !f.dryRun {
			fmt.Fprintf(e.stderr, "\nreplay %s stopped: %v\nEverything published is checkpointed. Resume with:\n  residency replay --config %s --resume %s%s\n",
				plan.ID, runErr, f.cfgPath, plan.ID, cpFlag(f))
		}
		return exitFailure, nil
	}
	return exitOK, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func cpFlag(f *replayFlags) string {
	if f.checkpointDir != "" {
		return " --checkpoint-dir " + f.checkpointDir
	}
	return ""
}

func cpWhere(f *replayFlags, cfg *config.Config) string {
	if f.checkpointDir != "" {
		return f.checkpointDir
	}
	return "Redis " + cfg.Redis.Addr + " under " + cfg.Redis.Prefix + "replay:"
}

// check validates the flags that need no config.
func (f *replayFlags) check(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if f.resume != "" {
		for _, n := range []string{"source", "topic", "from", "to", "offsets", "jurisdiction", "reason", "event-type", "max-replays", "id", "only-moved", "again"} {
			if set[n] {
				return fmt.Errorf("--%s: not with --resume (the checkpoint fixes it)", n)
			}
		}
		if !replay.ValidID(f.resume) {
			return fmt.Errorf("--resume %q is not a replay id", f.resume)
		}
		return f.checkCommon()
	}
	switch replay.SourceKind(f.source) {
	case replay.SourceIngest, replay.SourceQuarantine, replay.SourceDeadLetter, replay.SourceSinkQuarantine:
	case "":
		return errors.New("--source is required: ingest, quarantine, dead-letter or sink-quarantine")
	default:
		return fmt.Errorf("--source %q is not ingest, quarantine, dead-letter or sink-quarantine", f.source)
	}
	if f.offsets != "" && (f.from != "" || f.to != "") {
		return errors.New("--offsets and --from/--to exclude each other")
	}
	if f.topic != "" && f.source != string(replay.SourceIngest) && f.source != string(replay.SourceSinkQuarantine) {
		return errors.New("--topic: only with --source ingest or sink-quarantine (quarantine and dead-letter topics come from the config)")
	}
	if len(f.reasons) > 0 && f.source == string(replay.SourceIngest) {
		return errors.New("--reason: events of an ingest topic have no reason; use it with quarantine, dead-letter or sink-quarantine")
	}
	if (f.baseline != "" || f.onlyMoved) && f.source != string(replay.SourceIngest) {
		return errors.New("--baseline and --only-moved: only with --source ingest")
	}
	if f.id != "" && !replay.ValidID(f.id) {
		return fmt.Errorf("--id %q: use letters, digits, '.', '_' and '-'", f.id)
	}
	if f.maxReplays < 1 {
		return errors.New("--max-replays must be at least 1")
	}
	return f.checkCommon()
}

func (f *replayFlags) checkCommon() error {
	if f.rulesFile != "" && f.rulesVersion != 0 {
		return errors.New("--rules and --rules-version exclude each other")
	}
	if f.rulesVersion < 0 {
		return errors.New("--rules-version must be positive")
	}
	if f.batch < 1 || f.rate < 0 {
		return errors.New("--batch must be at least 1 and --rate not negative")
	}
	switch f.progress {
	case "auto", "bar", "lines", "off":
	default:
		return fmt.Errorf("--progress %q is not auto, bar, lines or off", f.progress)
	}
	if f.rate > 0 && float64(f.batch) > f.rate {
		f.batch = max(1, int(f.rate)) // keep the rate smooth
	}
	return nil
}

// plan plans a new replay from the flags: the topic from the config, the
// ranges from the topic's offsets (replay.NewPlan).
func (f *replayFlags) plan(ctx context.Context, cfg *config.Config) (replay.Plan, error) {
	o := replay.PlanOptions{ID: f.id, Source: replay.SourceKind(f.source), MaxReplays: f.maxReplays, OnlyMoved: f.onlyMoved, Again: f.again,
		Filter: replay.Filter{Jurisdictions: f.jurisdictions, Reasons: f.reasons, EventTypes: f.eventTypes}, Offsets: f.offsets}
	switch o.Source {
	case replay.SourceQuarantine:
		o.Topic = cfg.Router.QuarantineTopic
	case replay.SourceDeadLetter:
		o.Topic = cfg.Router.DeadLetterTopic
	case replay.SourceSinkQuarantine:
		t, err := cfg.SinkQuarantineTopic(f.topic)
		if err != nil {
			return replay.Plan{}, fmt.Errorf("%w: %w", errUsage, err)
		}
		o.Topic = t
	default:
		o.Topic = f.topic
		if o.Topic == "" {
			if len(cfg.Router.IngestTopics) != 1 {
				return replay.Plan{}, fmt.Errorf("%w: --topic: the config has %d ingest topics; name one", errUsage, len(cfg.Router.IngestTopics))
			}
			o.Topic = cfg.Router.IngestTopics[0]
		} else if !slices.Contains(cfg.Router.IngestTopics, o.Topic) {
			return replay.Plan{}, fmt.Errorf("%w: --topic %q is not one of router.ingest_topics %v", errUsage, o.Topic, cfg.Router.IngestTopics)
		}
	}
	now := time.Now()
	var err error
	if o.From, err = replay.ParseWhen(f.from, now); err != nil {
		return replay.Plan{}, fmt.Errorf("%w: --from: %w", errUsage, err)
	}
	if o.To, err = replay.ParseWhen(f.to, now); err != nil {
		return replay.Plan{}, fmt.Errorf("%w: --to: %w", errUsage, err)
	}
	admin, err := kafka.NewAdmin(cfg.Kafka.Clusters[cfg.Kafka.IngestCluster])
	if err != nil {
		return replay.Plan{}, config.ClusterError(cfg.Kafka.IngestCluster, err)
	}
	return replay.NewPlan(ctx, o, offsets{admin})
}

// offsets adapts kafka.Admin to replay.Offsets.
type offsets struct{ a *kafka.Admin }

func (o offsets) Bounds(ctx context.Context, topic string) ([]replay.Range, error) {
	b, err := o.a.Bounds(ctx, topic)
	return ranges(b), err
}

func (o offsets) TimeRanges(ctx context.Context, topic string, from, to time.Time) ([]replay.Range, error) {
	b, err := o.a.TimeRanges(ctx, topic, from, to)
	return ranges(b), err
}

func ranges(ps []kafka.PartitionRange) []replay.Range {
	out := make([]replay.Range, 0, len(ps))
	for _, p := range ps {
		out = append(out, replay.Range{Partition: p.Partition, Start: p.Start, End: p.End})
	}
	return out
}

// choice is the ruleset the flags (and config) choose.
func (f *replayFlags) choice(cfg *config.Config) replay.RulesetChoice {
	c := replay.RulesetChoice{File: cfg.Rules.File, FileFrom: "rules.file", Version: f.rulesVersion, Baseline: f.baseline, Resume: f.resume != ""}
	if f.rulesFile != "" {
		c.FileFrom = "--rules"
	}
	return c
}

// followRules starts a rules cache over the Redis store (stopped by
// close) and waits for its first ruleset.
func (w *replayWiring) followRules(ctx context.Context, cfg *config.Config, store rules.Source) (*rules.Cache, error) {
	cache := rules.NewCache(store, rules.CacheOptions{PollInterval: cfg.Rules.PollInterval, StalenessBound: cfg.Rules.StalenessBound})
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cache.Run(bg)
	}()
	w.stopRules = func() { stop(); <-done }
	select {
	case <-cache.Loaded():
	case <-time.After(15 * time.Second):
		_, err := cache.Current()
		return nil, fmt.Errorf("no ruleset in force after 15s: %w", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if _, err := cache.Current(); err != nil {
		return nil, err
	}
	return cache, nil
}

// followPins loads the pin set into memory (rules.Pins over the Redis
// store, followed until close) and waits for it.
func (w *replayWiring) followPins(ctx context.Context, cfg *config.Config, store rules.PinStore) (*rules.Pins, error) {
	pins := rules.NewPins(store, rules.PinsOptions{StalenessBound: cfg.Rules.StalenessBound, ResyncInterval: cfg.Rules.PinsResync})
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = pins.Run(bg)
	}()
	w.stopPins = func() { stop(); <-done }
	select {
	case <-pins.Loaded():
	case <-time.After(30 * time.Second):
		_, err := pins.Pins()
		return nil, fmt.Errorf("pins not loaded after 30s: %w", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return pins, nil
}

// replayWiring holds what replayMain opened.
type replayWiring struct {
	redis     *goredis.Client
	writers   []*kafka.Writer
	stopRules func() // stops the rules cache, if started
	stopPins  func() // stops the pin set, if started
}

func (w *replayWiring) close() {
	if w.stopRules != nil {
		w.stopRules()
	}
	if w.stopPins != nil {
		w.stopPins()
	}
	for _, kw := range w.writers {
		_ = kw.Close()
	}
	if w.redis != nil {
		_ = w.redis.Close()
	}
}
