package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"

	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/schemas"
)

const eraseSynopsis = `erase --config FILE --user ID [--store NAME]... [--dry-run] [--no-topics] [--output text|json]

Remove one user's data from every store of the config (sinks[]): record the
erasure marker first (from then on no sink stores the user's events that
occurred before it), remove the user's rows, wait erasure.settle, remove
again, check nothing is left, and list where the user's events still sit in
Kafka topics and when retention removes them. Prints the erasure receipt
(no payloads; the user only as its keyed hash). --dry-run counts and lists,
changes nothing. The user id is never logged.
Exit codes: 0 erased (or dry run done), 1 incomplete (run it again) or
another erasure is running, 2 bad flags or config (empty user id, unknown
store, no audit.subject_key_file), 3 Redis or a store unreachable at start.`

// runErase is `residency erase`.
func runErase(ctx context.Context, e env) int {
	fs := newFlags(e, "erase", eraseSynopsis)
	cfgPath := fs.String("config", os.Getenv("RESIDENCY_CONFIG"), "config `file` (default $RESIDENCY_CONFIG)")
	user := fs.String("user", "", "the user `id` to erase (required)")
	var stores listFlag
	fs.Var(&stores, "store", "erase only this store, a sinks[].store of the config (repeatable; default every store)")
	dryRun := fs.Bool("dry-run", false, "count and list, change nothing")
	noTopics := fs.Bool("no-topics", false, "do not list the user's events in Kafka topics (default: erasure.list_topics)")
	out := addOutput(fs)
	level := fs.String("log-level", "", "override log_level (debug, info, warn, error)")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	err := eraseMain(ctx, e, eraseArgs{cfgPath: *cfgPath, user: *user, userGiven: flagGiven(fs, "user"), stores: stores,
		dryRun: *dryRun, noTopics: *noTopics, output: out.String(), level: *level})
	if err != nil {
		fmt.Fprintf(e.stderr, "residency erase: %s\n", config.OneLine(err.Error()))
	}
	return exitCode(err)
}

type eraseArgs struct {
	cfgPath, user, output, level string
	userGiven, dryRun, noTopics  bool
	stores                       []string
}

func eraseMain(ctx context.Context, e env, a eraseArgs) error {
	switch {
	case !a.userGiven:
		return usagef("--user is required: the id of the user to erase")
	case a.user == "":
		return fmt.Errorf("--user: %w: nothing to erase", erasure.ErrEmptyUser)
	case a.output != "text" && a.output != "json":
		return usagef("--output %q is not text or json", a.output)
	}
	cfg, err := config.Load(a.cfgPath, os.LookupEnv)
	if err != nil {
		return err
	}
	override(map[*string]string{&cfg.LogLevel: a.level})
	if err := cfg.Finish(config.Scope{Route: true, Erase: true}); err != nil {
		return err
	}
	var names []string
	for _, sc := range cfg.Sinks {
		names = append(names, sc.Store)
	}
	for _, s := range a.stores {
		if !slices.Contains(names, s) {
			return fmt.Errorf("--store: %w: %q (the config's sinks have %s)", erasure.ErrUnknownStore, s, knownNames(names))
		}
	}
	subjects, err := cfg.Audit.Pseudonymizer()
	if err != nil {
		return err
	}
	log := erasureLogger(e.stderr, cfg.LogLevel)
	cfg.WarnDeprecated(log)
	w := &erasureWiring{log: log}
	defer w.close()
	client, err := w.connectRedis(ctx, cfg)
	if err != nil {
		return err
	}
	// Only the stores asked for are opened.
	if len(a.stores) > 0 {
		cfg.Sinks = slices.DeleteFunc(cfg.Sinks, func(sc config.SinkConfig) bool { return !slices.Contains(a.stores, sc.Store) })
	}
	stores, err := w.openStores(ctx, cfg)
	if err != nil {
		return err
	}
	ec := erasure.EraseConfig{Stores: stores, Subjects: subjects, Markers: redis.NewMarkers(client, cfg.Redis.Prefix),
		Locker: redis.NewLocker(client, cfg.Redis.Prefix), Actor: cmp.Or(cfg.Instance, "erase"), Settle: cfg.Erasure.Settle, Logger: log}
	if ec.Ledger, err = w.ledger(cfg); err != nil {
		return err
	}
	if cfg.Erasure.TopicsListed() && !a.noTopics {
		if ec.Locator, err = w.locator(ctx, e, cfg); err != nil {
			return err
		}
	}
	eraser, err := erasure.NewEraser(ec)
	if err != nil {
		return err
	}
	r, err := eraser.Erase(ctx, a.user, erasure.EraseOptions{DryRun: a.dryRun})
	if r != nil {
		if a.output == "json" {
			if werr := r.WriteJSON(e.stdout); werr != nil && err == nil {
				err = werr
			}
		} else {
			r.WriteText(e.stdout)
		}
	}
	return err
}

// locator lists a user's events in every topic the config knows, the
// pinned topics of the ruleset in force included.
func (w *erasureWiring) locator(ctx context.Context, e env, cfg *config.Config) (*erasure.Locator, error) {
	cache, _, err := w.loadRules(ctx, cfg)
	if err != nil {
		return nil, err
	}
	rs, _ := cache.Current()
	clusters, err := erasureClusters(cfg, w.log)
	if err != nil {
		return nil, err
	}
	if err := reachable(ctx, cfg, clusters); err != nil {
		return nil, err
	}
	fx, err := schemas.NewExtractor(cfg.Schemas)
	if err != nil {
		return nil, config.FieldError("schemas", err)
	}
	topics := append(configTopics(cfg), pinnedTopics(cfg, rs)...)
	prog := &scanProgress{w: e.stderr}
	return erasure.NewLocator(erasure.LocateConfig{Clusters: clusters, Topics: topics, Events: erasure.NewEventReader(fx), Progress: prog.update})
}
