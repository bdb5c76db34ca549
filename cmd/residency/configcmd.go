package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/router/rules"
)

// configUsage lists the config subcommands.
const configUsage = `Usage: residency config SUBCOMMAND [FILE] [flags]

Subcommands:
  lint [FILE] [--for COMMAND] [--rules FILE]
              check a config: every problem at once, each named by its field
              path (router.batch_size, kafka.clusters.eu.tls.ca_file,
              sinks[0].store); with --rules, also what the config lacks for
              that ruleset (a cluster, a sink's region or store)
  print [FILE] [--for COMMAND]
              print the effective config: after defaults, ${VAR} expansion,
              RESIDENCY_* variables and *_file secrets, every secret redacted

FILE defaults to --config, else $RESIDENCY_CONFIG. --for says which
command the config is for, adding what that command requires: route
(default), replay, sink:STORE, explain, rules or topics. --output text|json.

Exit codes: 0 clean, 1 problems found (lint), 2 usage, or a config print
cannot show (it has problems: run lint).
`

// runConfig is `residency config`.
func runConfig(_ context.Context, e env) int {
	return subcommands(e, "config", configUsage, map[string]func(env) int{
		"lint":  func(e env) int { return configLintOrPrint(e, "lint") },
		"print": func(e env) int { return configLintOrPrint(e, "print") },
	})
}

// lintReport is what `config lint --output json` prints.
type lintReport struct {
	// File is the config file linted.
	File string `json:"file"`
	// OK is true when there is no problem.
	OK bool `json:"ok"`
	// Problems lists every problem, each with its field path.
	Problems []config.Problem `json:"problems"`
	// Warnings lists settings that are accepted but have no effect.
	Warnings []config.Problem `json:"warnings"`
}

// scopeFor is the scope of the command --for names.
func scopeFor(command string) (config.Scope, error) {
	switch {
	case command == "route" || command == "replay":
		return config.Scope{Route: true, Attest: true}, nil
	case command == "explain" || command == "rules" || command == "topics" || command == "any":
		return config.Scope{}, nil
	case strings.HasPrefix(command, "sink:") && len(command) > len("sink:"):
		return config.Scope{Sink: strings.TrimPrefix(command, "sink:")}, nil
	}
	return config.Scope{}, usagef("--for %q is not route, replay, sink:STORE, explain, rules or topics", command)
}

func configLintOrPrint(e env, sub string) int {
	cmd := "config " + sub
	fs := newFlags(e, cmd, "config "+sub+" [FILE] [--for COMMAND] [flags]")
	cfgPath := configFlag(fs)
	forCmd := fs.String("for", "route", "the `command` the config is for: route, replay, sink:STORE, explain, rules or topics")
	var rulesFile *string
	if sub == "lint" {
		rulesFile = fs.String("rules", "", "also check the config against this ruleset `file`: the clusters, topics and sinks it needs")
	}
	out := addOutput(fs)
	args, code, ok := parseInterleaved(fs, e.args)
	if !ok {
		return code
	}
	path := *cfgPath
	switch {
	case len(args) > 1:
		return fail(e, cmd, usagef("one config file, not %d", len(args)))
	case len(args) == 1:
		path = args[0]
	case path == "":
		return fail(e, cmd, usagef("no config file: give FILE, --config or $%s", envConfig))
	}
	scope, err := scopeFor(*forCmd)
	if err != nil {
		return fail(e, cmd, err)
	}
	if st, err := os.Stat(path); err != nil || st.IsDir() {
		if err == nil {
			err = errors.New("is a directory")
		}
		return fail(e, cmd, usagef("%s: %v", path, err))
	}

	cfg, err := config.Load(path, os.LookupEnv)
	var problems []config.Problem
	var ce *config.Error
	switch {
	case errors.As(err, &ce):
		problems = ce.Problems
	case err != nil:
		return fail(e, cmd, err)
	default:
		problems = cfg.Validate(scope)
		if len(problems) == 0 && scope.Sink != "" {
			var ce *config.Error
			if errors.As(readCommittedUnsupported(cfg), &ce) { // what sink refuses today (route's batch consumer and replay's range reader honour it)
				problems = ce.Problems
			}
		}
	}
	if sub == "print" {
		if len(problems) > 0 {
			return fail(e, cmd, &config.Error{File: path, Problems: problems})
		}
		b, err := cfg.Print(out.JSON())
		if err != nil {
			return fail(e, cmd, err)
		}
		_, _ = e.stdout.Write(b)
		return exitOK
	}

	if *rulesFile != "" && cfg != nil && len(problems) == 0 {
		_, rs, err := readRuleset(*rulesFile)
		if err != nil {
			return fail(e, cmd, fmt.Errorf("--rules: %w", err))
		}
		problems = append(problems, rulesetProblems(cfg, rs)...)
	}
	r := lintReport{File: path, OK: len(problems) == 0, Problems: problems, Warnings: []config.Problem{}}
	if r.Problems == nil {
		r.Problems = []config.Problem{}
	}
	if cfg != nil {
		r.Warnings = append(r.Warnings, cfg.Deprecated()...)
	}
	if out.JSON() {
		_ = writeJSON(e.stdout, r)
	} else {
		printLint(e.stdout, r)
	}
	if !r.OK {
		return exitFailure
	}
	return exitOK
}

// rulesetProblems is what config lint --rules adds: what the config lacks
// for the ruleset, and what keeps its topics from being placed, once each.
func rulesetProblems(cfg *config.Config, rs *rules.Ruleset) []config.Problem {
	seen := map[config.Problem]bool{}
	var out []config.Problem
	_, tps := cfg.NeededTopics(rs)
	for _, p := range append(cfg.RulesetWarnings(rs), tps...) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// printLint prints a lint report for people: one problem a line, FILE:
// FIELD: MESSAGE, then a count.
func printLint(w io.Writer, r lintReport) {
	for _, p := range r.Problems {
		fmt.Fprintf(w, "%s: %s\n", r.File, p)
	}
	for _, p := range r.Warnings {
		fmt.Fprintf(w, "%s: warning: %s\n", r.File, p)
	}
	switch n := len(r.Problems); n {
	case 0:
		fmt.Fprintf(w, "%s: ok\n", r.File)
	case 1:
		fmt.Fprintf(w, "%s: 1 problem\n", r.File)
	default:
		fmt.Fprintf(w, "%s: %d problems\n", r.File, n)
	}
}
