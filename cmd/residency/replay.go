package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

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
	dryRun, onlyMoved                         bool
	output, id, resume, checkpointDir         string
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
	fs.StringVar(&f.output, "output", "text", "report format: text or json")
	fs.StringVar(&f.id, "id", "", "replay `id` (default: generated)")
	fs.StringVar(&f.resume, "resume", "", "resume the interrupted replay `ID` (its checkpoint fixes source, range, rules and filters)")
	fs.StringVar(&f.checkpointDir, "checkpoint-dir", "", "keep checkpoints as files in `DIR` instead of Redis")
	fs.StringVar(&f.progress, "progress", "auto", "progress display: auto (a bar on a terminal, else lines), bar, lines or off")
	fs.IntVar(&f.maxReplays, "max-replays", 3, "loop guard: refuse events already replayed this many times")
	fs.IntVar(&f.batch, "batch", 200, "events decided and published together")
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
	if err := cfg.Finish(config.Scope{Route: true}); err != nil {
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
	needRedis := cfg.Rules.File == "" || f.checkpointDir == "" || f.baselineVersion() > 0
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
			if errors.Is(err, errUsage) || errors.Is(err, config.ErrInvalid) || errors.Is(err, kafka.ErrConfig) {
				return exitUsage, err
			}
			return exitNotReady, err
		}
	}

	// The ruleset (and, for an ingest source, the baseline). A real run
	// follows the ruleset in force and must start under it.
	var inForce replay.RulesInForce
	if !f.dryRun {
		if code, err := f.realRulesOnly(cfg, &plan); err != nil {
			return code, err
		}
		cache, err := w.followRules(ctx, cfg, store)
		if err != nil {
			return exitNotReady, err
		}
		inForce = cache
	}
	rs, baseline, code, err := f.rulesets(ctx, cfg, store, &plan)
	if err != nil {
		return code, err
	}
	if inForce != nil {
		if code, err := inForceIs(inForce, rs, &plan, f); err != nil {
			return code, err
		}
	}
	var pins router.PinLookup
	if cfg.PinsEnabled() && store != nil {
		pins = rules.NewPins(store, rules.PinsOptions{})
	}
	pubs := map[string]stream.Publisher{}
	for name, cl := range cfg.Kafka.Clusters {
		kw, err := kafka.NewWriter(kafka.WriterConfig{Cluster: cl, BatchSize: f.batch,
			Compression: cfg.Kafka.Compression, Logger: log})
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
	prog := newProgressView(e.stderr, f.progress, plan.ID)
	rc := replay.Config{
		Plan: plan, Rules: rs, InForce: inForce, Baseline: baseline, Reader: reader, Publishers: pubs, IngestCluster: cfg.Kafka.IngestCluster,
		QuarantineTopic: cfg.Router.QuarantineTopic, DeadLetterTopic: cfg.Router.DeadLetterTopic,
		Fields: fx, Decoder: fx, Pins: pins, Checkpoints: cps, DryRun: f.dryRun, BatchSize: f.batch, Rate: f.rate,
		MaxValueBytes: cfg.Router.MaxValueBytes, Instance: cmpOr(cfg.Instance, "replay"), Progress: prog.update, Logger: log,
	}
	if f.dryRun {
		rc.Checkpoints = nil
	}
	rp, err := replay.New(rc)
	if err != nil {
		return usage("%v", err)
	}
	runErr := rp.Run(ctx)
	prog.finish()
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
		if f.output == "json" {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(rep)
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
		for _, n := range []string{"source", "topic", "from", "to", "offsets", "jurisdiction", "reason", "event-type", "max-replays", "id", "only-moved"} {
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
	if f.id == "" {
		f.id = newReplayID()
	} else if !replay.ValidID(f.id) {
		return fmt.Errorf("--id %q: use letters, digits, '.', '_' and '-'", f.id)
	}
	if f.maxReplays < 1 {
		return errors.New("--max-replays must be at least 1")
	}
	return f.checkCommon()
}

func (f *replayFlags) checkCommon() error {
	if f.output != "text" && f.output != "json" {
		return fmt.Errorf("--output %q is not text or json", f.output)
	}
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

// baselineVersion is --baseline as a version number, or 0.
func (f *replayFlags) baselineVersion() int64 {
	v, err := strconv.ParseInt(f.baseline, 10, 64)
	if err != nil || v < 1 {
		return 0
	}
	return v
}

func newReplayID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "replay-" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// parseWhen reads RFC 3339 or a duration ago ("" is the zero time).
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration such as 2h", s)
}

// parseOffsets reads P:START-END,... against the partitions' bounds.
func parseOffsets(s string, bounds []kafka.PartitionRange) ([]replay.Range, error) {
	byP := map[int]kafka.PartitionRange{}
	for _, b := range bounds {
		byP[b.Partition] = b
	}
	var out []replay.Range
	seen := map[int]bool{}
	for _, part := range config.SplitList(s) {
		p, rng, ok := strings.Cut(part, ":")
		lo, hi, ok2 := strings.Cut(rng, "-")
		pi, err := strconv.Atoi(p)
		if !ok || !ok2 || err != nil {
			return nil, fmt.Errorf("%q is not PARTITION:START-END", part)
		}
		b, exists := byP[pi]
		if !exists {
			return nil, fmt.Errorf("%q: the topic has no partition %d", part, pi)
		}
		if seen[pi] {
			return nil, fmt.Errorf("partition %d is given twice", pi)
		}
		seen[pi] = true
		r := replay.Range{Partition: pi, Start: b.Start, End: b.End}
		if lo != "" {
			if r.Start, err = strconv.ParseInt(lo, 10, 64); err != nil || r.Start < 0 {
				return nil, fmt.Errorf("%q: bad start offset", part)
			}
		}
		if hi != "" {
			if r.End, err = strconv.ParseInt(hi, 10, 64); err != nil || r.End < r.Start {
				return nil, fmt.Errorf("%q: bad end offset (it is exclusive and must not be before the start)", part)
			}
		}
		// Only what exists now: retention may have deleted the start, and
		// the end is fixed so a replay never chases its own writes.
		r.Start = min(max(r.Start, b.Start), b.End)
		r.End = max(min(r.End, b.End), r.Start)
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("no partition given")
	}
	return out, nil
}

// plan builds the replay plan from the flags and the topic's offsets.
func (f *replayFlags) plan(ctx context.Context, cfg *config.Config) (replay.Plan, error) {
	p := replay.Plan{ID: f.id, Source: replay.SourceKind(f.source), MaxReplays: f.maxReplays, OnlyMoved: f.onlyMoved,
		Filter: replay.Filter{Jurisdictions: f.jurisdictions, Reasons: f.reasons, EventTypes: f.eventTypes}}
	switch p.Source {
	case replay.SourceQuarantine:
		p.Topic = cfg.Router.QuarantineTopic
	case replay.SourceDeadLetter:
		p.Topic = cfg.Router.DeadLetterTopic
	case replay.SourceSinkQuarantine:
		t, err := cfg.SinkQuarantineTopic(f.topic)
		if err != nil {
			return p, fmt.Errorf("%w: %w", errUsage, err)
		}
		p.Topic = t
	default:
		p.Topic = f.topic
		if p.Topic == "" {
			if len(cfg.Router.IngestTopics) != 1 {
				return p, fmt.Errorf("%w: --topic: the config has %d ingest topics; name one", errUsage, len(cfg.Router.IngestTopics))
			}
			p.Topic = cfg.Router.IngestTopics[0]
		} else if !slices.Contains(cfg.Router.IngestTopics, p.Topic) {
			return p, fmt.Errorf("%w: --topic %q is not one of router.ingest_topics %v", errUsage, p.Topic, cfg.Router.IngestTopics)
		}
	}
	now := time.Now()
	from, err := parseWhen(f.from, now)
	if err != nil {
		return p, fmt.Errorf("%w: --from: %w", errUsage, err)
	}
	to, err := parseWhen(f.to, now)
	if err != nil {
		return p, fmt.Errorf("%w: --to: %w", errUsage, err)
	}
	admin, err := kafka.NewAdmin(cfg.Kafka.Clusters[cfg.Kafka.IngestCluster])
	if err != nil {
		return p, config.ClusterError(cfg.Kafka.IngestCluster, err)
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var ranges []kafka.PartitionRange
	if f.offsets != "" {
		bounds, err := admin.Bounds(actx, p.Topic)
		if err != nil {
			return p, err
		}
		if p.Ranges, err = parseOffsets(f.offsets, bounds); err != nil {
			return p, fmt.Errorf("%w: --offsets: %w", errUsage, err)
		}
		return p, nil
	}
	if ranges, err = admin.TimeRanges(actx, p.Topic, from, to); err != nil {
		return p, err
	}
	for _, r := range ranges {
		p.Ranges = append(p.Ranges, replay.Range{Partition: r.Partition, Start: r.Start, End: r.End})
	}
	return p, nil
}

// realRulesOnly refuses, for a real (not dry) run, a ruleset that cannot
// be the one in force: a file (--rules or rules.file), or a plan decided
// with one.
func (f *replayFlags) realRulesOnly(cfg *config.Config, plan *replay.Plan) (int, error) {
	if cfg.Rules.File != "" {
		what := "--rules " + cfg.Rules.File
		if f.rulesFile == "" {
			what = "rules.file " + cfg.Rules.File
		}
		return exitUsage, fmt.Errorf("%s: a real replay publishes only under the ruleset version in force in Redis, and a file is not in force. "+
			"See what it would do with --dry-run, or apply it first (residency rules apply) and replay without --rules", what)
	}
	if plan.RulesetHash != "" {
		return exitUsage, fmt.Errorf("replay %s was planned with a ruleset file (%s), which is not in force: it can only be resumed with --dry-run; "+
			"plan a new replay under the version in force", plan.ID, plan.RulesetVersion)
	}
	return exitOK, nil
}

// followRules starts a rules cache over the Redis store (stopped by
// close) and waits for its first ruleset.
func (w *replayWiring) followRules(ctx context.Context, cfg *config.Config, store *redis.Rules) (*rules.Cache, error) {
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

// inForceIs refuses a real run whose ruleset is not the version in force.
func inForceIs(inForce replay.RulesInForce, rs *rules.Ruleset, plan *replay.Plan, f *replayFlags) (int, error) {
	cur, err := inForce.Current()
	if err != nil {
		return exitNotReady, fmt.Errorf("ruleset in force: %w", err)
	}
	if cur.Version() == rs.Version() {
		return exitOK, nil
	}
	if f.resume != "" {
		return exitUsage, fmt.Errorf("replay %s was planned under ruleset version %s but version %d is in force now: "+
			"it can be resumed only while version %s is in force. Plan a new replay under version %d (run it with --dry-run first)",
			plan.ID, plan.RulesetVersion, cur.Version(), plan.RulesetVersion, cur.Version())
	}
	return exitUsage, fmt.Errorf("--rules-version %d: version %d is in force, and a real replay publishes only under the version in force. "+
		"See what version %d would do with --dry-run, or apply it first (residency rules rollback/apply)", rs.Version(), cur.Version(), rs.Version())
}

// rulesets loads the ruleset the replay decides with (and the baseline of
// an ingest replay) and pins it in the plan.
func (f *replayFlags) rulesets(ctx context.Context, cfg *config.Config, store *redis.Rules, plan *replay.Plan) (rs, baseline *rules.Ruleset, code int, err error) {
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	notReady := func(err error) (*rules.Ruleset, *rules.Ruleset, int, error) {
		if errors.Is(err, rules.ErrUnavailable) {
			return nil, nil, exitNotReady, fmt.Errorf("ruleset: %w", err)
		}
		return nil, nil, exitFailure, fmt.Errorf("ruleset: %w", err)
	}
	var prev int64
	switch {
	case cfg.Rules.File != "":
		content, r, err := readRuleset(cfg.Rules.File)
		if err != nil {
			return nil, nil, exitUsage, fmt.Errorf("rules file: %w", err)
		}
		rs = r
		if plan.RulesetHash != "" && plan.RulesetHash != rules.Hash(content) {
			return nil, nil, exitUsage, fmt.Errorf("%w: replay %s was started with another ruleset file content", replay.ErrPlanMismatch, plan.ID)
		}
		plan.RulesetHash = rules.Hash(content)
	default:
		v := f.rulesVersion
		if f.resume != "" && v == 0 {
			if v, err = strconv.ParseInt(plan.RulesetVersion, 10, 64); err != nil {
				return nil, nil, exitUsage, fmt.Errorf("replay %s was decided with ruleset %q, not a Redis version; pass --rules FILE", plan.ID, plan.RulesetVersion)
			}
		}
		info, _, err := store.Show(rctx, v)
		if err != nil {
			return notReady(err)
		}
		if rs, err = store.Load(rctx, info.Number); err != nil {
			return notReady(err)
		}
		prev = info.Previous
	}
	if plan.RulesetVersion == "" {
		plan.RulesetVersion = rs.VersionString()
	}
	if plan.Source != replay.SourceIngest {
		return rs, nil, exitOK, nil
	}
	name := ""
	switch {
	case f.baseline == "" && prev > 0:
		baseline, err = store.Load(rctx, prev)
		name = fmt.Sprintf("version %d", prev)
	case f.baseline == "":
	case f.baselineVersion() > 0:
		baseline, err = store.Load(rctx, f.baselineVersion())
		name = fmt.Sprintf("version %d", f.baselineVersion())
	default:
		var content []byte
		content, baseline, err = readRuleset(f.baseline)
		if err != nil {
			return nil, nil, exitUsage, fmt.Errorf("--baseline: %w", err)
		}
		name = "sha256:" + rules.Hash(content)
	}
	if err != nil {
		return notReady(fmt.Errorf("baseline: %w", err))
	}
	if f.resume != "" && plan.Baseline != name {
		return nil, nil, exitUsage, fmt.Errorf("%w: replay %s was started with baseline %q, not %q; pass the same --baseline",
			replay.ErrPlanMismatch, plan.ID, plan.Baseline, name)
	}
	plan.Baseline = name
	return rs, baseline, exitOK, nil
}

// replayWiring holds what replayMain opened.
type replayWiring struct {
	redis     *goredis.Client
	writers   []*kafka.Writer
	stopRules func() // stops the rules cache, if started
}

func (w *replayWiring) close() {
	if w.stopRules != nil {
		w.stopRules()
	}
	for _, kw := range w.writers {
		_ = kw.Close()
	}
	if w.redis != nil {
		_ = w.redis.Close()
	}
}

// progressView shows a replay's progress on stderr: a bar redrawn in place
// on a terminal, a plain line every few seconds otherwise.
type progressView struct {
	mu    sync.Mutex
	w     io.Writer
	mode  string // bar, lines or off
	id    string
	last  time.Time
	every time.Duration
	drawn bool
	p     replay.Progress
}

func newProgressView(w io.Writer, mode, id string) *progressView {
	if mode == "auto" {
		mode = "lines"
		if isTerminal(w) {
			mode = "bar"
		}
	}
	return &progressView{w: w, mode: mode, id: id, every: 5 * time.Second}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (v *progressView) update(p replay.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.p = p
	switch v.mode {
	case "bar":
		if time.Since(v.last) < 100*time.Millisecond && p.Done < p.Total {
			return
		}
		v.last = time.Now()
		fmt.Fprintf(v.w, "\r%s", progressBar(p, 30))
		v.drawn = true
	case "lines":
		if time.Since(v.last) < v.every && !v.last.IsZero() {
			return
		}
		v.last = time.Now()
		fmt.Fprintf(v.w, "replay %s: %s\n", v.id, progressLine(p))
	}
}

func (v *progressView) finish() {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case v.mode == "bar" && v.drawn:
		fmt.Fprintf(v.w, "\r%s\n", progressBar(v.p, 30))
	case v.mode == "lines" && !v.last.IsZero():
		fmt.Fprintf(v.w, "replay %s: %s\n", v.id, progressLine(v.p))
	}
}

func progressBar(p replay.Progress, width int) string {
	frac := 1.0
	if p.Total > 0 {
		frac = float64(p.Done) / float64(p.Total)
	}
	n := int(frac * float64(width))
	bar := strings.Repeat("=", n) + strings.Repeat(" ", width-n)
	if n > 0 && n < width {
		bar = bar[:n-1] + ">" + bar[n:]
	}
	return fmt.Sprintf("[%s] %s", bar, progressLine(p))
}

func progressLine(p replay.Progress) string {
	pct := 100.0
	if p.Total > 0 {
		pct = 100 * float64(p.Done) / float64(p.Total)
	}
	eta := "-"
	if p.ETA > 0 {
		eta = p.ETA.Round(time.Second).String()
	}
	return fmt.Sprintf("%d/%d (%.0f%%) written %d refused %d  %.0f ev/s  ETA %s ", p.Done, p.Total, pct, p.Written, p.Refused, p.Rate, eta)
}
