package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/config"

	"github.com/residency-router/residency/router/rules"
)

// This file holds what the long-running subcommands (route, sink, replay)
// and the subcommand groups (rules, schemas) set up the same way.

// override sets each config field to its flag's value when the flag was
// given (is not empty).
func override(flags map[*string]string) {
	for dst, v := range flags {
		if v != "" {
			*dst = v
		}
	}
}

// newService returns the JSON logger at level (a valid log_level) and the
// metrics registry, with the Go and process collectors, of a long-running
// subcommand.
func newService(stderr io.Writer, level string) (*slog.Logger, *prometheus.Registry) {
	lvl, _ := config.ParseLevel(level)
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return log, reg
}

// serveOps serves /metrics, /healthz and /readyz on listen ("off": not at
// all) in the background. shutdown stops the server, giving requests in
// flight 2s.
func serveOps(listen string, reg *prometheus.Registry, ready func() error, log *slog.Logger) (shutdown func(), err error) {
	if listen == "off" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: opsHandler(reg, ready), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("operations endpoint listening", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}, nil
}

// opsHandler serves /metrics, /healthz and /readyz.
func opsHandler(reg *prometheus.Registry, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	return mux
}

// rulesSource returns where a route or sink reads its rulesets: the file of
// rules.file, or else the Redis store (its client returned for closing).
// Errors name the field (rules.file, redis.tls.ca_file).
func rulesSource(cfg *config.Config) (src rules.Source, store *redis.Rules, client *goredis.Client, err error) {
	if cfg.Rules.File != "" {
		_, rs, err := readRuleset(cfg.Rules.File)
		if err != nil {
			return nil, nil, nil, &config.Error{Problems: []config.Problem{{Field: "rules.file", Message: config.OneLine(err.Error())}}}
		}
		return rules.NewStaticSource(rs), nil, nil, nil
	}
	client, err = newRedis(cfg.Redis, 2*time.Second)
	if err != nil {
		return nil, nil, nil, err
	}
	store = redis.NewRules(client, cfg.Redis.Prefix)
	return store, store, client, nil
}

// subcommands runs the subcommand of a command group (name, e.g. "rules")
// that e.args starts with, with the rest of the arguments. No subcommand is
// a usage error (usage on stderr); -h, --help and help print usage on
// stdout.
func subcommands(e env, name, usage string, subs map[string]func(env) int) int {
	if len(e.args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	sub, e2 := e.args[0], e
	e2.args = e.args[1:]
	switch sub {
	case "-h", "--help", "help":
		fmt.Fprint(e.stdout, usage)
		return exitOK
	}
	if run, ok := subs[sub]; ok {
		return run(e2)
	}
	fmt.Fprintf(e.stderr, "residency %s: unknown subcommand %q\n\n%s", name, sub, usage)
	return exitUsage
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) (pos []string, code int, ok bool) {
	for {
		if code, ok := parseFlags(fs, args); !ok {
			return nil, code, false
		}
		if fs.NArg() == 0 {
			return pos, 0, true
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
