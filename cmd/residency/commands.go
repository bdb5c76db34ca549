package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"

	"github.com/residency-router/residency/internal/config"
)

// Exit codes shared by every subcommand.
const (
	exitOK       = 0 // success (for explain: the event is routable)
	exitFailure  = 1 // the command ran and failed, or the answer is "no"
	exitUsage    = 2 // bad flags, arguments or config
	exitNotReady = 3 // a dependency (Kafka, Redis, rules) is not available
)

// env is what a subcommand gets: its arguments and the process's streams.
type env struct {
	args   []string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// command is one subcommand of the residency binary.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env) int
}

// commands lists every subcommand; each lives in its own file.
var commands = []command{
	{name: "version", summary: "print the version and commit (also: residency --version)", run: runVersion},
	{name: "config", summary: "lint a config (every problem, by field) or print the effective config, secrets redacted", run: runConfig},
	{name: "topics", summary: "plan, create and check every topic the config and ruleset need", run: runTopics},
	{name: "bench", summary: "measure routing throughput, latency and memory against a plain Kafka pass-through", run: runBench},
	{name: "demo", summary: "route sample events through an embedded Kafka and Redis and show where they went", run: runDemo},
	{name: "explain", summary: "say where the router would send an event, and why", run: runExplain},
	{name: "route", summary: "route events from the ingest topics to their regions' pinned topics", run: runRoute},
	{name: "rules", summary: "validate, apply, review and roll back residency rules; pin users", run: runRules},
	{name: "schemas", summary: "check a new event schema version; print the event contract", run: runSchemas},
	{name: "replay", summary: "re-route a range of events (ingest, quarantine, dead-letter) after a rule change or a fix; --dry-run shows what would move", run: runReplay},
	{name: "sink", summary: "drain a region's pinned topic into an approved store (PostgreSQL, object store)", run: runSink},
	{name: "purge", summary: "delete ingest, quarantine and dead-letter records that are safely placed; --every runs it as a service", run: runPurge},
	{name: "erase", summary: "remove one user's data from every store, keep it from coming back, and print the erasure receipt", run: runErase},
	{name: "residue", summary: "show (scan) and remove (clean) a jurisdiction's data outside its approved places", run: runResidue},
	{name: "audit", summary: "the tamper-evident audit log: keygen, integrate, verify, prove, check-proof", run: runAudit},
}

// errUsage marks errors caused by how the command was called.
var errUsage = errors.New("usage")

// usageError is an errUsage whose text is its message alone.
type usageError struct{ err error }

func (e usageError) Error() string   { return e.err.Error() }
func (e usageError) Unwrap() []error { return []error{errUsage, e.err} }

// usagef returns a usage error (exit code 2) with the message format says.
func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		return runVersion(ctx, env{args: args[1:], stdin: stdin, stdout: stdout, stderr: stderr})
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, env{args: args[1:], stdin: stdin, stdout: stdout, stderr: stderr})
		}
	}
	fmt.Fprintf(stderr, "residency: unknown command %q (run `residency help`)\n", args[0])
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "residency keeps user data in the jurisdiction it belongs to.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: residency COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	cs := append([]command(nil), commands...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run `residency COMMAND -h` for a command's flags; `residency --version` prints the version.")
}

// newFlags returns a flag set for a subcommand that writes its usage to stderr
// and returns errors instead of exiting.
func newFlags(e env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: residency %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and maps -h to exitOK and bad flags to exitUsage.
// ok is false when the caller should return code.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return 0, true
}

// fail prints err for the user, on one line, and returns the exit code it
// deserves: 2 for usage and config errors, else 1.
func fail(e env, cmd string, err error) int {
	fmt.Fprintf(e.stderr, "residency %s: %s\n", cmd, config.OneLine(err.Error()))
	if errors.Is(err, errUsage) || errors.Is(err, config.ErrInvalid) {
		return exitUsage
	}
	return exitFailure
}
