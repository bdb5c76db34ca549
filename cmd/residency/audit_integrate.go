package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/internal/config"
)

// auditFail prints err for the user on one line and returns its exit code
// (exitCode: its own, 2 for usage and config, else 1).
func auditFail(e env, cmd string, err error) int {
	fmt.Fprintf(e.stderr, "residency %s: %s\n", cmd, config.OneLine(err.Error()))
	return exitCode(err)
}

// runAuditIntegrate is `residency audit integrate`: the integrator of the
// audit topic into the log in audit.bucket, signed with audit.log_key_file.
// As a service it runs until SIGTERM with /metrics, /healthz and /readyz on
// http.listen; with --once it integrates what the topic holds (until no new
// record arrives for --idle, default 3s) and exits. One replica only.
func runAuditIntegrate(ctx context.Context, e env) int {
	fs := newFlags(e, "audit integrate", "audit integrate --config FILE [--once [--idle D]] [--listen ADDR]")
	cfgPath := fs.String("config", os.Getenv("RESIDENCY_CONFIG"), "config `file` (default $RESIDENCY_CONFIG)")
	once := fs.Bool("once", false, "integrate what the audit topic holds, then exit (for tests and cron)")
	idle := fs.Duration("idle", 3*time.Second, "with --once: stop after no new audit record for `D`")
	listen := fs.String("listen", "", "override http.listen (host:port, or \"off\")")
	level := fs.String("log-level", "", "override log_level (debug, info, warn, error)")
	o := addOutput(fs)
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	if *idle <= 0 {
		return auditFail(e, "audit integrate", usagef("--idle %s: must be positive", *idle))
	}
	err := auditIntegrate(ctx, e, *cfgPath, *once, *idle, *listen, *level, o.JSON())
	if err != nil {
		return auditFail(e, "audit integrate", err)
	}
	return exitOK
}

func auditIntegrate(ctx context.Context, e env, cfgPath string, once bool, idle time.Duration, listen, level string, asJSON bool) error {
	cfg, err := auditConfig(cfgPath)
	if err != nil {
		return err
	}
	override(map[*string]string{&cfg.LogLevel: level, &cfg.HTTP.Listen: listen})
	if cfg.Audit.LogKeyFile == "" {
		return usagef("audit.log_key_file: required by audit integrate: the log's signing key")
	}
	skey, _, err := audit.LoadLogKey(cfg.Audit.LogKeyFile)
	if err != nil {
		return usagef("audit.log_key_file: %v", err)
	}
	store, closeStore, err := openAuditBucket(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	feed, err := auditFeed(cfg)
	if err != nil {
		return err
	}
	defer feed.Close()
	log, reg := newService(e.stderr, cfg.LogLevel)
	var f audit.Feed = feed
	if once {
		f = onceFeed{Feed: feed, idle: idle}
	}
	it, err := audit.NewIntegrator(audit.IntegratorConfig{Store: store, Feed: f, SignerKey: skey, Logger: log})
	if err != nil {
		return usagef("audit.log_key_file: %v", err)
	}
	if once {
		n := 0
		for {
			k, err := it.Step(ctx)
			n += k
			if errors.Is(err, errIdle) {
				break
			}
			if err != nil {
				return auditStepError(err)
			}
		}
		if asJSON {
			return writeJSON(e.stdout, map[string]any{"integrated": n, "tree_size": it.Size(), "skipped": it.Skipped()})
		}
		fmt.Fprintf(e.stdout, "integrated %d leaves; the log holds %d (skipped %d invalid audit records)\n", n, it.Size(), it.Skipped())
		return nil
	}
	size := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "residency_audit_log_size", Help: "Leaves in the audit log (its last signed checkpoint)."},
		func() float64 { return float64(it.Size()) })
	skipped := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "residency_audit_skipped_records", Help: "Invalid audit records skipped since start."},
		func() float64 { return float64(it.Skipped()) })
	reg.MustRegister(size, skipped)
	var problem atomic.Pointer[error]
	ready := func() error {
		if p := problem.Load(); p != nil {
			return *p
		}
		return nil
	}
	shutdown, err := serveOps(cfg.HTTP.Listen, reg, ready, log)
	if err != nil {
		return usagef("http.listen: %v", err)
	}
	defer shutdown()
	log.Info("audit integrator started", "topic", feed.Topic(), "bucket", cfg.Audit.Bucket)
	wait := 100 * time.Millisecond
	var last string
	for ctx.Err() == nil {
		_, err := it.Step(ctx)
		if ctx.Err() != nil {
			break
		}
		if err == nil {
			problem.Store(nil)
			wait, last = 100*time.Millisecond, ""
			continue
		}
		if errors.Is(err, audit.ErrAlteredLog) || errors.Is(err, audit.ErrAuditTopicChanged) {
			// The log in the bucket is not the one this key signed, or the
			// topic lost what an interrupted batch needs: a human decides.
			return auditStepError(err)
		}
		e := fmt.Errorf("audit integrator: %w", err)
		problem.Store(&e)
		if msg := err.Error(); msg != last {
			log.Error("audit integration failed; retrying", "err", msg)
			last = msg
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
	log.Info("audit integrator stopped", "tree_size", it.Size())
	return nil
}

// auditStepError gives an integration error its exit code: a log altered
// or moved by another integrator is a failure (1), anything else could not
// be read or written (3).
func auditStepError(err error) error {
	if errors.Is(err, audit.ErrStateAhead) || errors.Is(err, audit.ErrAlteredLog) || errors.Is(err, audit.ErrAuditTopicChanged) {
		return err
	}
	return unreadable("or write the audit topic or the bucket", err)
}

// errIdle is what onceFeed returns when the audit topic held nothing new
// for its idle time.
var errIdle = errors.New("audit: no new audit record")

// onceFeed is the feed of `integrate --once`: a Fetch that finds nothing
// new for idle returns errIdle, telling the end of the topic from a
// failure to read it (the bucket and Kafka errors come through).
type onceFeed struct {
	audit.Feed
	idle time.Duration
}

// onceAttempts is how many idle windows in a row a request to Kafka may
// outlive (a slow broker) before --once gives up on reading the topic.
const onceAttempts = 3

// Fetch implements audit.Feed.
func (f onceFeed) Fetch(ctx context.Context, from audit.Cursor, max int) ([]audit.AuditRecord, error) {
	for attempt := 1; ; attempt++ {
		ictx, cancel := context.WithTimeout(ctx, f.idle)
		recs, err := f.Feed.Fetch(ictx, from, max)
		cancel()
		switch {
		case err == context.DeadlineExceeded && ctx.Err() == nil:
			// The feed's own idle end (its error unwrapped), not a failure.
			return nil, errIdle
		case err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && attempt < onceAttempts:
			// A request outlived the idle window: the topic was not read,
			// so it is not known to be idle. Try again.
			continue
		}
		return recs, err
	}
}
