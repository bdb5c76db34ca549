package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

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
	lvl, _ := parseLevel(level)
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

// newRedis returns a client for the config's Redis (address, ACL user,
// password, database, TLS with its CA, client certificate and server name),
// with readWrite as its read and write timeouts, and silences go-redis's
// own logging. Every command that reaches Redis through the config (route,
// sink, replay, explain) builds its client here, so they all reach it the
// same way. Errors name the field (redis.tls.ca_file).
func newRedis(c RedisConfig, readWrite time.Duration) (*redis.Client, error) {
	tlsCfg, err := c.TLS.config("redis.tls")
	if err != nil {
		return nil, fieldError("", err)
	}
	opts := &redis.Options{Addr: c.Addr, Username: c.Username, Password: c.Password,
		DB: c.DB, DialTimeout: 3 * time.Second, ReadTimeout: readWrite, WriteTimeout: readWrite, TLSConfig: tlsCfg}
	redis.SetLogger(quietLogger{})
	return redis.NewClient(opts), nil
}

// config returns the crypto/tls settings t describes, nil when TLS is off.
// It reads the CA and client certificate files; errors name the field under
// prefix ("redis.tls.ca_file"), and settings given while TLS is off are an
// error too (they would be silently ignored).
func (t TLSConfig) config(prefix string) (*tls.Config, error) {
	if !t.Enabled {
		var set []string
		for _, f := range []struct {
			name string
			set  bool
		}{{"ca_file", t.CAFile != ""}, {"cert_file", t.CertFile != ""}, {"key_file", t.KeyFile != ""},
			{"server_name", t.ServerName != ""}, {"insecure_skip_verify", t.InsecureSkipVerify}} {
			if f.set {
				set = append(set, prefix+"."+f.name)
			}
		}
		if len(set) > 0 {
			verb := "is"
			if len(set) > 1 {
				verb = "are"
			}
			return nil, fmt.Errorf("%s.enabled: false, but %s %s set: set %s.enabled: true, or remove the TLS settings",
				prefix, strings.Join(set, ", "), verb, prefix)
		}
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // opt-in, documented as testing only
	}
	var errs []error
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s.ca_file: %w", prefix, err))
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("%s.ca_file: %s holds no PEM certificate", prefix, t.CAFile))
			}
			cfg.RootCAs = pool
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		errs = append(errs, fmt.Errorf("%s: cert_file and key_file go together", prefix))
	case t.CertFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.cert_file: with %s.key_file: %w", prefix, prefix, err))
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// rulesSource returns where a route or sink reads its rulesets: the file of
// rules.file, or else the Redis store (its client returned for closing).
// Errors name the field (rules.file, redis.tls.ca_file).
func rulesSource(cfg *Config) (src rules.Source, store *rules.RedisStore, client *redis.Client, err error) {
	if cfg.Rules.File != "" {
		_, rs, err := readRuleset(cfg.Rules.File)
		if err != nil {
			return nil, nil, nil, &ConfigError{Problems: []Problem{{Field: "rules.file", Message: oneLine(err.Error())}}}
		}
		return rules.NewStaticSource(rs), nil, nil, nil
	}
	client, err = newRedis(cfg.Redis, 2*time.Second)
	if err != nil {
		return nil, nil, nil, err
	}
	store = rules.NewRedisStore(client, cfg.Redis.Prefix)
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
