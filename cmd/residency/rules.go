package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

// envRedisAddr names the environment variable with the default --redis.
const envRedisAddr = "RESIDENCY_REDIS_ADDR"

// rulesUsage lists the rules subcommands.
const rulesUsage = `Usage: residency rules SUBCOMMAND [flags]

Subcommands:
  validate FILE... [--config F]    check ruleset files; print every problem (and,
                                   with --config, what the config lacks for them)
  apply FILE [--expect-version N] [--author NAME]
                                   apply a ruleset as a new version
  show [VERSION]                   print a version (default: the current one)
  history                          list every version, newest first
  diff A B                         what changes from A to B (versions, "current" or files)
  rollback VERSION [--expect-version N] [--author NAME]
                                   make an earlier version's content current again
  restore [--replace]              copy every version of the ruleset history topic
                                   back into Redis (after Redis lost its data)
  pin USER JURISDICTION            pin a user to a jurisdiction
  unpin USER                       remove a user's pin
  pins                             list the pins

Flags of the subcommands that use Redis:
  --config FILE   reach Redis as the router does: the redis section of FILE
                  (address, prefix, ACL user, password, TLS); default
                  $RESIDENCY_CONFIG. With kafka.clusters, apply, rollback,
                  restore, pin and unpin also keep the ruleset history topic
                  (rules.history_topic on kafka.ingest_cluster); apply also
                  warns about what the config lacks for the ruleset (a
                  cluster, a topic).
  --redis ADDR    Redis host:port (overrides redis.addr; without --config:
                  default $RESIDENCY_REDIS_ADDR, else 127.0.0.1:6379)
  --prefix P      key prefix (overrides redis.prefix; default "residency:")
  --output FMT    show, history, diff, pins: text (default) or json

apply and rollback write each new version to the history topic too, pin
and unpin each pin; without --config (no Kafka) they warn that it is not
kept outside Redis.

Exit codes: 0 ok, 1 refused or invalid, 2 usage or config, 3 Redis or Kafka unavailable.
`

// runRules is `residency rules`.
func runRules(ctx context.Context, e env) int {
	subs := map[string]func(env) int{"validate": rulesValidate}
	for _, sub := range []string{"apply", "show", "history", "diff", "rollback", "restore", "pin", "unpin", "pins"} {
		subs[sub] = func(e env) int { return rulesRedis(ctx, sub, e) }
	}
	return subcommands(e, "rules", rulesUsage, subs)
}

// rulesValidate is `residency rules validate FILE... [--config F]`.
func rulesValidate(e env) int {
	fs := newFlags(e, "rules validate", "rules validate FILE... [--config FILE]")
	cfgPath := fs.String("config", "", "also check each ruleset against this config `file`: warn about a cluster or topic it does not know")
	files, code, ok := parseInterleaved(fs, e.args)
	if !ok {
		return code
	}
	if len(files) == 0 {
		fs.Usage()
		return exitUsage
	}
	var cfg *config.Config
	if *cfgPath != "" {
		var err error
		if cfg, err = loadConfig(*cfgPath, config.Scope{}, nil); err != nil {
			return fail(e, "rules validate", err)
		}
	}
	worst := exitOK
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(e.stderr, "residency rules validate: %v\n", err)
			worst = max(worst, exitUsage)
			continue
		}
		r, err := rules.Parse(data)
		if err != nil {
			printInvalid(e.stderr, f, err)
			worst = max(worst, exitFailure)
			continue
		}
		countries := 0
		for _, j := range r.Jurisdictions {
			countries += len(j.Countries)
		}
		fmt.Fprintf(e.stdout, "%s: valid: %d jurisdictions (%d countries), %d regions, %d stores\n",
			f, len(r.Jurisdictions), countries, len(r.Regions), len(r.Stores))
		if cfg != nil {
			warnRuleset(e.stderr, f, cfg, r)
		}
	}
	return worst
}

// warnRuleset prints, one a line on w, what the config lacks for ruleset
// r, or contradicts in it (config.RulesetWarnings): warnings, not errors.
func warnRuleset(w io.Writer, file string, cfg *config.Config, r *rules.Ruleset) {
	for _, p := range cfg.RulesetWarnings(r) {
		fmt.Fprintf(w, "warning: %s: %s (config %s)\n", file, p, cfg.File())
	}
}

// printInvalid prints a validation error as FILE:LINE: problem, one a line.
func printInvalid(w io.Writer, file string, err error) {
	var ve *rules.ValidationError
	if !errors.As(err, &ve) {
		fmt.Fprintf(w, "%s: %v\n", file, err)
		return
	}
	fmt.Fprintf(w, "%s: invalid ruleset (%d problems):\n", file, len(ve.Problems))
	for _, p := range ve.Problems {
		loc := file
		if p.Line > 0 {
			loc += ":" + strconv.Itoa(p.Line)
		}
		p.Line = 0
		fmt.Fprintf(w, "%s: %s\n", loc, p.String())
	}
}

// rulesFlags are the flags of the subcommands that use Redis.
type rulesFlags struct {
	config, redis, prefix, author string
	expect                        int64
	out                           *output
	cfg                           *config.Config // loaded from --config; nil without
	replace                       bool
}

// rulesRedis runs the subcommands that use the store in Redis.
func rulesRedis(ctx context.Context, sub string, e env) int {
	synopsis := map[string]string{
		"apply":    "rules apply FILE [--expect-version N] [--author NAME]",
		"show":     "rules show [VERSION]",
		"history":  "rules history",
		"diff":     "rules diff A B   (each a version number, \"current\" or a file)",
		"rollback": "rules rollback VERSION [--expect-version N] [--author NAME]",
		"restore":  "rules restore --config FILE [--replace]",
		"pin":      "rules pin USER JURISDICTION",
		"unpin":    "rules unpin USER",
		"pins":     "rules pins",
	}[sub]
	nargs := map[string][2]int{"apply": {1, 1}, "show": {0, 1}, "history": {0, 0}, "diff": {2, 2},
		"rollback": {1, 1}, "restore": {0, 0}, "pin": {2, 2}, "unpin": {1, 1}, "pins": {0, 0}}[sub]

	fs := newFlags(e, "rules "+sub, synopsis)
	var f rulesFlags
	cfgPath := configFlag(fs)
	fs.StringVar(&f.redis, "redis", "", "Redis `host:port` (overrides redis.addr; without --config: default $"+envRedisAddr+", else 127.0.0.1:6379)")
	fs.StringVar(&f.prefix, "prefix", "", "prefix of every key in Redis (overrides redis.prefix; default \""+rules.DefaultPrefix+"\")")
	switch sub {
	case "restore":
		fs.BoolVar(&f.replace, "replace", false, "overwrite versions Redis holds with other content than the history topic")
	case "apply", "rollback":
		f.expect = -1
		fs.Var((*optionalVersion)(&f.expect), "expect-version", "refuse unless version `N` is current (default: the version current when the command starts)")
		fs.StringVar(&f.author, "author", defaultAuthor(), "who applies the change, recorded with the version")
	case "show", "history", "diff", "pins":
		f.out = addOutput(fs)
	}
	args, code, ok := parseInterleaved(fs, e.args)
	if !ok {
		return code
	}
	if len(args) < nargs[0] || len(args) > nargs[1] {
		fmt.Fprintf(e.stderr, "residency rules %s: wrong number of arguments\n", sub)
		fs.Usage()
		return exitUsage
	}
	f.config = *cfgPath

	rc, err := f.redisConfig()
	if err != nil {
		return fail(e, "rules "+sub, err)
	}
	history, err := f.historyTopic()
	if err != nil {
		return fail(e, "rules "+sub, err)
	}
	client, err := newRedis(rc, 3*time.Second, 1)
	if err != nil {
		return fail(e, "rules "+sub, err)
	}
	defer client.Close()
	if history != nil {
		defer history.Close()
	}
	s := redis.NewRules(client, rc.Prefix)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	switch sub {
	case "apply", "rollback":
		if history == nil {
			fmt.Fprintln(e.stderr, "residency rules "+sub+": warning: no --config, so the new version is not written to the ruleset history topic: "+
				"if Redis loses its data, its number could later be given to other content (see docs/rules.md)")
		}
	case "pin", "unpin":
		if history == nil {
			what := "`rules restore` cannot bring it back"
			if sub == "unpin" {
				what = "`rules restore` would bring the pin back"
			}
			fmt.Fprintln(e.stderr, "residency rules "+sub+": warning: no --config, so the change is not written to the ruleset history topic: "+
				"if Redis loses its data, "+what+" (see docs/rules.md)")
		} else if err := history.Check(ctx); err != nil {
			return rulesFail(e, sub, historyErr(err))
		}
	case "restore":
		if history == nil {
			return rulesFail(e, sub, usagef("restore reads the ruleset history topic: pass --config with kafka.clusters"))
		}
	}
	switch sub {
	case "apply":
		err = rulesApply(ctx, e, s, history, f, args[0])
	case "show":
		err = rulesShow(ctx, e, s, f, args)
	case "history":
		err = rulesHistory(ctx, e, s, f)
	case "diff":
		err = rulesDiff(ctx, e, s, f, args[0], args[1])
	case "rollback":
		err = rulesRollback(ctx, e, s, history, f, args[0])
	case "restore":
		err = rulesRestore(ctx, e, s, history, f)
	case "pin":
		if err = s.Pin(ctx, args[0], args[1]); err == nil {
			fmt.Fprintf(e.stdout, "pinned the user to jurisdiction %s\n", args[1])
			err = archivePin(ctx, archiveOf(history), rules.Pin{UserID: args[0], Jurisdiction: args[1]})
		}
	case "unpin":
		if err = s.Unpin(ctx, args[0]); err == nil {
			fmt.Fprintln(e.stdout, "unpinned the user")
			err = archivePin(ctx, archiveOf(history), rules.Pin{UserID: args[0]})
		}
	case "pins":
		err = rulesPins(ctx, e, s, f)
	}
	return rulesFail(e, sub, err)
}

// redisConfig is the Redis the rules commands use: the config's redis
// section (--config: address, prefix, ACL user, password, TLS, as the
// router reaches it) with --redis and --prefix over it; without a config,
// --redis (default $RESIDENCY_REDIS_ADDR, else 127.0.0.1:6379) with no
// credentials.
func (f *rulesFlags) redisConfig() (redis.Config, error) {
	if f.config == "" {
		addr := cmp.Or(f.redis, os.Getenv(envRedisAddr), config.DefaultRedisAddr)
		return redis.Config{Addr: addr, Prefix: cmp.Or(f.prefix, rules.DefaultPrefix)}, nil
	}
	cfg, err := loadConfig(f.config, config.Scope{}, func(c *config.Config) {
		override(map[*string]string{&c.Redis.Addr: f.redis, &c.Redis.Prefix: f.prefix})
	})
	if err != nil {
		return redis.Config{}, err
	}
	f.cfg = cfg
	return cfg.Redis, nil
}

// historyTopic is the ruleset history topic on the config's ingest
// cluster, or nil without a config or without Kafka clusters in it.
func (f *rulesFlags) historyTopic() (*kafka.HistoryTopic, error) {
	if f.cfg == nil || len(f.cfg.Kafka.Clusters) == 0 {
		return nil, nil
	}
	cfg := f.cfg
	h, err := kafka.NewHistoryTopic(cfg.Kafka.Clusters[cfg.Kafka.IngestCluster], cfg.Rules.HistoryTopic)
	if err != nil {
		return nil, config.ClusterError(cfg.Kafka.IngestCluster, err)
	}
	return h, nil
}

// archiveError is a failure to reach the ruleset history topic (exit 3).
type archiveError struct{ err error }

func (e archiveError) Error() string { return "ruleset history topic: " + e.err.Error() }
func (e archiveError) Unwrap() error { return e.err }

// checkHistory reads the history topic and Redis's versions, refuses a
// change when the topic is missing or not compacted, when Redis is behind
// the topic
// or a version number names other content in each (see
// rules.HistoryCheck.Err), and writes to the topic the versions Redis has
// and the topic does not (applied without it). It returns Redis's current
// version.
func checkHistory(ctx context.Context, s *redis.Rules, h *kafka.HistoryTopic) (int64, error) {
	archived, err := h.ReadVersions(ctx)
	if err != nil {
		return 0, historyErr(err)
	}
	cur, err := s.LatestVersion(ctx)
	if err != nil {
		return 0, err
	}
	infos, err := s.Versions(ctx)
	if err != nil {
		return 0, err
	}
	c := rules.CompareHistory(cur, infos, archived)
	if err := c.Err(); err != nil {
		return 0, err
	}
	return cur, archiveMissing(ctx, s, h, c.Unarchived)
}

// historyErr classifies an error reading the history topic: missing, not
// compacted or corrupt is a refusal (exit 1), anything else Kafka out of
// reach (exit 3).
func historyErr(err error) error {
	if errors.Is(err, kafka.ErrNoHistoryTopic) || errors.Is(err, kafka.ErrHistoryTopicNotCompacted) || errors.Is(err, rules.ErrCorrupt) {
		return err
	}
	return archiveError{err}
}

// archiveMissing writes versions of Redis to the history topic.
func archiveMissing(ctx context.Context, s *redis.Rules, h *kafka.HistoryTopic, versions []int64) error {
	var as []rules.Archived
	for _, v := range versions {
		info, content, err := s.Show(ctx, v)
		if err != nil {
			return err
		}
		as = append(as, rules.Archived{Info: info, Content: content})
	}
	if err := h.WriteVersions(ctx, as...); err != nil {
		return archiveError{err}
	}
	return nil
}

// archiveOf turns a missing history topic into a nil interface.
func archiveOf(t *kafka.HistoryTopic) rules.Archive {
	if t == nil {
		return nil
	}
	return t
}

// archivePin writes a pin just set (or removed) to the history topic, if
// there is one.
func archivePin(ctx context.Context, a rules.Archive, p rules.Pin) error {
	if a == nil {
		return nil
	}
	if err := a.WritePins(ctx, p); err != nil {
		return fmt.Errorf("the pin is in force but not in the ruleset history topic: %w; run the command again", archiveError{err})
	}
	return nil
}

// archiveNew writes a version just applied to the history topic.
func archiveNew(ctx context.Context, s *redis.Rules, h *kafka.HistoryTopic, info rules.VersionInfo) error {
	if err := archiveMissing(ctx, s, h, []int64{info.Number}); err != nil {
		return fmt.Errorf("version %d is applied (in force) but not yet in the ruleset history topic %s: %w; "+
			"the next `residency rules apply` (or `rules restore`) writes it there", info.Number, h.Topic(), err)
	}
	return nil
}

// optionalVersion is a version flag whose default (-1) means "not given".
type optionalVersion int64

func (v *optionalVersion) String() string {
	if v == nil || *v <= 0 { // "" also for the zero value, so flag prints no default
		return ""
	}
	return strconv.FormatInt(int64(*v), 10)
}

func (v *optionalVersion) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a version number", s)
	}
	*v = optionalVersion(n)
	return nil
}

// quietLogger discards go-redis's own log lines.
// rulesFail prints err and maps it to an exit code; nil is exitOK.
func rulesFail(e env, sub string, err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, rules.ErrUnavailable), errors.As(err, new(archiveError)):
		fmt.Fprintf(e.stderr, "residency rules %s: %v\n", sub, err)
		return exitNotReady
	}
	var ve *rules.ValidationError
	if errors.As(err, &ve) && !errors.Is(err, rules.ErrCorrupt) {
		var pe *rules.FileError
		file := "ruleset"
		if errors.As(err, &pe) {
			file = pe.File
		}
		printInvalid(e.stderr, file, ve)
		return exitFailure
	}
	return fail(e, "rules "+sub, err)
}

// fileError marks an error about a named file.
// readRuleset reads and parses a ruleset file (rules.ReadFile). A file that
// cannot be read is a usage error.
func readRuleset(file string) ([]byte, *rules.Ruleset, error) {
	data, r, err := rules.ReadFile(file)
	var fe *rules.FileError
	if err != nil && !errors.As(err, &fe) {
		return nil, nil, usageError{err}
	}
	return data, r, err
}

func defaultAuthor() string {
	if u := os.Getenv("USER"); u != "" {
		if h, err := os.Hostname(); err == nil {
			return u + "@" + h
		}
		return u
	}
	return "unknown"
}

// base returns the version a change is based on: --expect-version, or the
// current one.
func base(ctx context.Context, s *redis.Rules, f rulesFlags) (int64, error) {
	if f.expect >= 0 {
		return f.expect, nil
	}
	return s.LatestVersion(ctx)
}

func printDiff(w io.Writer, d *rules.Diff) {
	if d.Empty() {
		fmt.Fprintln(w, "no change in where data goes")
		return
	}
	for _, l := range d.Lines() {
		fmt.Fprintln(w, "  "+l)
	}
}

func rulesApply(ctx context.Context, e env, s *redis.Rules, h *kafka.HistoryTopic, f rulesFlags, file string) error {
	data, next, err := readRuleset(file)
	if err != nil {
		return err
	}
	if h != nil {
		if _, err := checkHistory(ctx, s, h); err != nil {
			return err
		}
	}
	b, err := base(ctx, s, f)
	if err != nil {
		return err
	}
	if f.cfg != nil {
		warnRuleset(e.stderr, file, f.cfg, next)
	}
	info, err := s.Apply(ctx, data, rules.ApplyOptions{Base: b, Author: f.author})
	if errors.Is(err, rules.ErrUnchanged) {
		fmt.Fprintf(e.stdout, "unchanged: version %d already has this content\n", b)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "applied %s as version %d (sha256 %s, based on version %d, by %s)\n",
		file, info.Number, info.SHA256[:12], info.Previous, info.Author)
	if h != nil {
		if err := archiveNew(ctx, s, h, info); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "written to the ruleset history topic %s (cluster %s)\n", h.Topic(), h.Cluster())
	}
	if b > 0 {
		if prev, err := s.Load(ctx, b); err == nil {
			next.SetVersion(info.Number)
			fmt.Fprintf(e.stdout, "changes from version %d:\n", b)
			printDiff(e.stdout, rules.Compare(prev, next))
		}
	}
	return nil
}

// parseVersion reads a version argument: a number, or "current" (0).
func parseVersion(s string) (int64, error) {
	if s == "current" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 {
		return 0, fmt.Errorf("%w: %q is not a version (a number from 1, or \"current\")", errUsage, s)
	}
	return v, nil
}

func rulesShow(ctx context.Context, e env, s *redis.Rules, f rulesFlags, args []string) error {
	var v int64
	if len(args) == 1 {
		var err error
		if v, err = parseVersion(args[0]); err != nil {
			return err
		}
	}
	info, content, err := s.Show(ctx, v)
	if err != nil {
		return err
	}
	if f.out.JSON() {
		return writeJSON(e.stdout, struct {
			rules.VersionInfo
			Content string `json:"content"`
		}{info, string(content)})
	}
	fmt.Fprintf(e.stdout, "# version %d, applied %s by %s, previous %d\n# sha256 %s\n",
		info.Number, info.AppliedAt.Format(time.RFC3339), info.Author, info.Previous, info.SHA256)
	if info.Note != "" {
		fmt.Fprintf(e.stdout, "# %s\n", info.Note)
	}
	_, err = e.stdout.Write(content)
	return err
}

func rulesHistory(ctx context.Context, e env, s *redis.Rules, f rulesFlags) error {
	h, err := s.Versions(ctx)
	if err != nil {
		return err
	}
	if f.out.JSON() {
		return writeJSON(e.stdout, h)
	}
	if len(h) == 0 {
		fmt.Fprintln(e.stdout, "no version has been applied")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tPREVIOUS\tAPPLIED\tAUTHOR\tSHA256\tNOTE")
	for i, v := range h {
		cur := ""
		if i == 0 {
			cur = " (current)"
		}
		fmt.Fprintf(tw, "%d%s\t%d\t%s\t%s\t%s\t%s\n", v.Number, cur, v.Previous, v.AppliedAt.Format(time.RFC3339), v.Author, v.SHA256[:12], v.Note)
	}
	return tw.Flush()
}

// loadArg loads a diff argument: an existing file, a version, or "current".
func loadArg(ctx context.Context, s *redis.Rules, arg string) (*rules.Ruleset, error) {
	if st, err := os.Stat(arg); err == nil && !st.IsDir() {
		_, r, err := readRuleset(arg)
		return r, err
	}
	v, err := parseVersion(arg)
	if err != nil {
		return nil, fmt.Errorf("%w (and no file %s exists)", err, arg)
	}
	return s.Load(ctx, v)
}

func rulesDiff(ctx context.Context, e env, s *redis.Rules, f rulesFlags, a, b string) error {
	ra, err := loadArg(ctx, s, a)
	if err != nil {
		return err
	}
	rb, err := loadArg(ctx, s, b)
	if err != nil {
		return err
	}
	d := rules.Compare(ra, rb)
	if f.out.JSON() {
		return writeJSON(e.stdout, d)
	}
	fmt.Fprintf(e.stdout, "from %s to %s:\n", describe(a, ra), describe(b, rb))
	printDiff(e.stdout, d)
	return nil
}

// describe names a diff argument for the reader.
func describe(arg string, r *rules.Ruleset) string {
	if r.Version() > 0 {
		return "version " + r.VersionString()
	}
	return arg
}

func rulesRollback(ctx context.Context, e env, s *redis.Rules, h *kafka.HistoryTopic, f rulesFlags, arg string) error {
	v, err := parseVersion(arg)
	if err != nil {
		return err
	}
	if h != nil {
		if _, err := checkHistory(ctx, s, h); err != nil {
			return err
		}
	}
	b, err := base(ctx, s, f)
	if err != nil {
		return err
	}
	info, err := s.Rollback(ctx, v, rules.ApplyOptions{Base: b, Author: f.author})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "rolled back: version %d has the content of version %d (based on version %d, by %s)\n",
		info.Number, v, info.Previous, info.Author)
	if h != nil {
		if err := archiveNew(ctx, s, h, info); err != nil {
			return err
		}
	}
	if d, err := rules.DiffVersions(ctx, s, b, info.Number); err == nil {
		fmt.Fprintf(e.stdout, "changes from version %d:\n", b)
		printDiff(e.stdout, d)
	}
	return nil
}

// rulesRestore is `residency rules restore`: every version of the history
// topic that Redis lacks is written back (its record and content as
// applied; for a number the topic holds with two contents, the one applied
// first, from before Redis lost its data), then every pin Redis lacks
// (announced, so that routers take it), and last the highest version
// becomes current if Redis's is below it: routers held back by a lost
// history resume only once the pins are back. First, whatever Redis holds
// and the topic does not (versions and pins set without --config, and the
// content Redis holds under a number the topic has with other content) is
// written to the topic: it loses nothing Redis had.
func rulesRestore(ctx context.Context, e env, s *redis.Rules, h *kafka.HistoryTopic, f rulesFlags) error {
	archived, err := h.ReadVersions(ctx)
	if err != nil {
		return historyErr(err)
	}
	pins, err := h.ReadPins(ctx)
	if err != nil {
		return historyErr(err)
	}
	cur, err := s.LatestVersion(ctx)
	if err != nil {
		return err
	}
	infos, err := s.Versions(ctx)
	if err != nil {
		return err
	}
	c := rules.CompareHistory(cur, infos, archived)
	var inRedisOnly []int64
	for _, v := range infos {
		if slices.Contains(c.Unarchived, v.Number) || slices.Contains(c.Conflicts, v.Number) {
			inRedisOnly = append(inRedisOnly, v.Number)
		}
	}
	slices.Sort(inRedisOnly)
	if err := archiveMissing(ctx, s, h, inRedisOnly); err != nil {
		return err
	}
	if len(inRedisOnly) > 0 {
		fmt.Fprintf(e.stdout, "written to the history topic first: version %s as Redis holds it\n", numbers(inRedisOnly))
	}
	redisPins, err := s.ListPins(ctx)
	if err != nil {
		return err
	}
	archivedPin := map[string]string{}
	for _, p := range pins {
		archivedPin[p.UserID] = p.Jurisdiction
	}
	var newer []rules.Pin
	for _, p := range redisPins {
		if archivedPin[p.UserID] != p.Jurisdiction {
			newer = append(newer, p)
		}
	}
	if len(newer) > 0 {
		if err := h.WritePins(ctx, newer...); err != nil {
			return archiveError{err}
		}
		fmt.Fprintf(e.stdout, "written to the history topic first: %d pins as Redis holds them\n", len(newer))
	}

	// One content per number: the first applied (archived is sorted by
	// number, then time of apply).
	var versions []rules.Archived
	for _, a := range archived {
		if len(versions) == 0 || versions[len(versions)-1].Info.Number != a.Info.Number {
			versions = append(versions, a)
		}
	}
	written, top, rerr := s.RestoreVersions(ctx, versions, f.replace)
	if rerr != nil && !errors.Is(rerr, rules.ErrContentChanged) {
		return rerr
	}
	if len(written) > 0 {
		fmt.Fprintf(e.stdout, "restored %d versions (%s) from the ruleset history topic %s (cluster %s)\n",
			len(written), numbers(written), h.Topic(), h.Cluster())
	}
	restoredPins, err := s.RestorePins(ctx, pins)
	if err != nil {
		return err
	}
	if restoredPins > 0 {
		fmt.Fprintf(e.stdout, "restored %d pins\n", restoredPins)
		// Routers apply the announcements within milliseconds; give them
		// a moment before the version that lets them route again.
		stream.Sleep(ctx, pinSettle)
	}
	if len(written) == 0 && restoredPins == 0 && rerr == nil {
		fmt.Fprintf(e.stdout, "nothing to restore: Redis holds the %d versions and %d pins of the ruleset history topic\n", len(versions), len(pins))
	}
	if top > 0 {
		if _, err := s.RaiseCurrent(ctx, top); err != nil {
			return err
		}
	}
	if head, err := s.Latest(ctx); err == nil && head.Version > 0 {
		fmt.Fprintf(e.stdout, "current version: %d (digest %s)\n", head.Version, rules.ShortDigest(head.Digest))
	}
	return rerr
}

// pinSettle is how long restore waits between announcing the pins it
// restored and making the highest version current again.
const pinSettle = 2 * time.Second

// numbers lists version numbers: "1, 2, 3".
func numbers(ns []int64) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.FormatInt(n, 10)
	}
	return strings.Join(s, ", ")
}

func rulesPins(ctx context.Context, e env, s *redis.Rules, f rulesFlags) error {
	pins, err := s.ListPins(ctx)
	if err != nil {
		return err
	}
	if f.out.JSON() {
		if pins == nil {
			pins = []rules.Pin{}
		}
		return writeJSON(e.stdout, pins)
	}
	if len(pins) == 0 {
		fmt.Fprintln(e.stdout, "no user is pinned")
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tJURISDICTION")
	for _, p := range pins {
		fmt.Fprintf(tw, "%s\t%s\n", strings.ReplaceAll(p.UserID, "\t", " "), p.Jurisdiction)
	}
	return tw.Flush()
}
