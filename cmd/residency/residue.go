package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/schemas"
)

const residueUsage = `Usage: residency residue SUBCOMMAND --config FILE --jurisdiction J [flags]

Show (and clean) a jurisdiction's data outside its approved places.

Subcommands:
  scan    read every topic and store the config knows and report each event
          whose content belongs to J but sits outside J's region's pinned
          topic and approved stores (coordinates and counts, never
          payloads). Exit 0 clean, 1 residue found (or records that could
          not be read), 2 bad flags or config (unknown jurisdiction),
          3 Kafka, Redis or a store unreachable at start.
  clean   remove J's rows from the stores outside its places where a store
          approved for J's region holds the same event; --dry-run changes
          nothing. Exit 0 when nothing of J is left in those stores, 1 when
          rows were kept (no copy in J's region yet: move them first) or a
          store failed, 2 and 3 as scan.

Run ` + "`residency residue SUBCOMMAND -h`" + ` for the flags.
`

// runResidue is `residency residue`.
func runResidue(ctx context.Context, e env) int {
	return subcommands(e, "residue", residueUsage, map[string]func(env) int{
		"scan":  func(e env) int { return runResidueSub(ctx, e, "scan") },
		"clean": func(e env) int { return runResidueSub(ctx, e, "clean") },
	})
}

func runResidueSub(ctx context.Context, e env, sub string) int {
	synopsis := "residue " + sub + " --config FILE --jurisdiction J [--output text|json]"
	if sub == "clean" {
		synopsis = "residue clean --config FILE --jurisdiction J [--dry-run] [--output text|json]"
	}
	fs := newFlags(e, "residue "+sub, synopsis)
	cfgPath := fs.String("config", os.Getenv("RESIDENCY_CONFIG"), "config `file` (default $RESIDENCY_CONFIG)")
	jur := fs.String("jurisdiction", "", "the jurisdiction, e.g. US (required)")
	out := addOutput(fs)
	level := fs.String("log-level", "", "override log_level (debug, info, warn, error)")
	dryRun := new(bool)
	if sub == "clean" {
		fs.BoolVar(dryRun, "dry-run", false, "report what would be removed, remove nothing")
	}
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if *cfgPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	err := residueMain(ctx, e, sub, *cfgPath, strings.TrimSpace(*jur), out.String(), *level, *dryRun)
	if err != nil {
		fmt.Fprintf(e.stderr, "residency residue %s: %s\n", sub, config.OneLine(err.Error()))
	}
	return exitCode(err)
}

// errResidue is the exit 1 of a scan that found residue, or of a clean-up
// that left some: the report says where.
var errResidue = fmt.Errorf("residue")

func residueMain(ctx context.Context, e env, sub, cfgPath, jur, output, level string, dryRun bool) error {
	switch {
	case jur == "":
		return usagef("--jurisdiction is required, e.g. --jurisdiction US")
	case output != "text" && output != "json":
		return usagef("--output %q is not text or json", output)
	}
	cfg, err := config.Load(cfgPath, os.LookupEnv)
	if err != nil {
		return err
	}
	override(map[*string]string{&cfg.LogLevel: level})
	if err := cfg.Finish(config.Scope{Route: true}); err != nil {
		return err
	}
	log := erasureLogger(e.stderr, cfg.LogLevel)
	cfg.WarnDeprecated(log)
	w := &erasureWiring{log: log}
	defer w.close()
	// The ruleset first: an unknown jurisdiction is refused before any
	// store is opened.
	cache, pins, err := w.loadRules(ctx, cfg)
	if err != nil {
		return err
	}
	rs, _ := cache.Current()
	if _, ok := rs.Jurisdiction(jur); !ok {
		var names []string
		for _, j := range rs.Jurisdictions {
			names = append(names, j.Name)
		}
		return fmt.Errorf("--jurisdiction: %w: %q is not in ruleset version %s (it has %s)", erasure.ErrUnknownJurisdiction, jur, rs.VersionString(), knownNames(names))
	}
	clusters, err := erasureClusters(cfg, log)
	if err != nil {
		return err
	}
	if err := reachable(ctx, cfg, clusters); err != nil {
		return err
	}
	stores, err := w.openStores(ctx, cfg)
	if err != nil {
		return err
	}
	fx, err := schemas.NewExtractor(cfg.Schemas)
	if err != nil {
		return config.FieldError("schemas", err)
	}
	topics := configTopics(cfg)
	for _, t := range pinnedTopics(cfg, rs) {
		if _, inRuleset := rs.Region(t.Region); !inRuleset {
			topics = append(topics, t) // a pinned topic the ruleset in force no longer has
		}
	}
	prog := &scanProgress{w: e.stderr}
	s, err := erasure.NewResidueScanner(erasure.ResidueConfig{Rules: cache, Pins: pins, Clusters: clusters, Topics: topics, Stores: stores,
		Events: erasure.NewEventReader(fx), CountryField: cfg.Schemas.CountryField, MaxListed: cfg.Residue.MaxListed, Progress: prog.update})
	if err != nil {
		return err
	}
	if sub == "scan" {
		rep, err := s.Scan(ctx, jur)
		if err != nil {
			return err
		}
		if output == "json" {
			if err := rep.WriteJSON(e.stdout); err != nil {
				return err
			}
		} else {
			rep.WriteText(e.stdout)
		}
		if rep.Verdict != erasure.VerdictClean {
			return fmt.Errorf("%w: %s: %d events of %s outside its approved places, %d records or rows unreadable",
				errResidue, rep.Verdict, rep.Residue, rep.Jurisdiction, rep.Unreadable)
		}
		return nil
	}
	opts := erasure.CleanOptions{DryRun: dryRun, Actor: cmp.Or(cfg.Instance, "residue-clean")}
	if opts.Ledger, err = w.ledger(cfg); err != nil {
		return err
	}
	if opts.Ledger != nil {
		if opts.Hashes, err = cfg.Audit.Pseudonymizer(); err != nil {
			return err
		}
	}
	if !dryRun {
		client, err := w.connectRedis(ctx, cfg)
		if err != nil {
			return err
		}
		opts.Locker = redis.NewLocker(client, cfg.Redis.Prefix)
	}
	rep, err := s.Clean(ctx, jur, opts)
	if rep != nil {
		if output == "json" {
			if werr := rep.WriteJSON(e.stdout); werr != nil && err == nil {
				err = werr
			}
		} else {
			rep.WriteText(e.stdout)
		}
	}
	if err == nil && rep.Kept > 0 {
		err = fmt.Errorf("%w: %d rows of %s kept: no store approved for region %s holds them yet; move them there (replay), then clean again",
			errResidue, rep.Kept, rep.Jurisdiction, rep.Region)
	}
	return err
}
