package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/router/rules"
)

// topicsUsage lists the topics subcommands.
const topicsUsage = `Usage: residency topics SUBCOMMAND --config FILE [--rules FILE] [flags]

Subcommands:
  plan    show every topic the config and the ruleset need, on its cluster,
          and what differs from what exists (missing topics, fewer
          partitions, fewer replicas, configs); changes nothing
  apply   create the missing topics and alter the ones that differ (their
          configs; more partitions); never deletes a topic, never lowers
          partitions, never touches an ingest topic that exists
  check   exit 1 when any topic is missing or differs (for CI and probes)

The topics: the ingest topics (router.ingest_topics: created when missing,
otherwise the producers'), each region's pinned topic on its cluster,
router.quarantine_topic, router.dead_letter_topic, the sinks'
quarantine_topic, each region's hold topic (topics.hold_prefix, default
residency.hold., and the region's name), the ruleset history (residency.rules-history, compacted) and the audit topic
(residency.audit, one partition); with the partitions, replication factor,
min.insync.replicas, retention, cleanup.policy and message.timestamp.type
of the config's topics section. The ruleset is --rules FILE, else
rules.file, else the current version in Redis (reached as the router
does).

Flags:
  --config FILE      the config (default $RESIDENCY_CONFIG)
  --rules FILE       the ruleset (default: rules.file, else Redis)
  --output FMT       text (default) or json
  --timeout D        how long to wait for the clusters (default 30s)

Exit codes: 0 as wanted (apply: everything it could do done), 1 something
missing or different (check), or left for a person (apply: a replication
factor), 2 usage or config, 3 a cluster or Redis unreachable.
`

// runTopics is `residency topics`.
func runTopics(ctx context.Context, e env) int {
	subs := map[string]func(env) int{}
	for _, sub := range []string{"plan", "apply", "check"} {
		subs[sub] = func(e env) int { return topicsMain(ctx, e, sub) }
	}
	return subcommands(e, "topics", topicsUsage, subs)
}

// The actions of a topic in a plan.
const (
	actionOK     = "ok"     // as wanted
	actionCreate = "create" // missing: apply creates it
	actionAlter  = "alter"  // differs: apply alters it
	actionManual = "manual" // differs in what apply cannot change (the replication factor)
)

// topicReport is one topic in the report of `topics`.
type topicReport struct {
	config.NeededTopic
	// Have is the topic as the cluster has it (Exists false: missing).
	Have kafka.TopicState `json:"have"`
	// Changes is what differs (for an ingest topic: only its absence).
	Changes []kafka.TopicChange `json:"changes"`
	// Action is ok, create, alter or manual.
	Action string `json:"action"`
	// Applied is what apply did: "created" or "altered" ("" nothing).
	Applied string `json:"applied,omitempty"`
	// Error is why apply's action failed.
	Error string `json:"error,omitempty"`
}

// clusterReport is one cluster in the report of `topics`.
type clusterReport struct {
	Name    string        `json:"name"`
	Brokers int           `json:"brokers"`
	Error   string        `json:"error,omitempty"` // unreachable
	Topics  []topicReport `json:"topics"`
}

// topicsReport is what `topics --output json` prints.
type topicsReport struct {
	// Command is plan, apply or check.
	Command string `json:"command"`
	// Ruleset says where the ruleset came from.
	Ruleset string `json:"ruleset"`
	// Clusters holds every cluster's topics.
	Clusters []clusterReport `json:"clusters"`
	// Problems are what keeps topics from being placed or created, by
	// field (a cluster the config lacks, a replication factor above the
	// cluster's brokers).
	Problems []config.Problem `json:"problems"`
	// OK is true when every topic is as wanted (after apply: now) and
	// there is no problem.
	OK bool `json:"ok"`
}

func topicsMain(ctx context.Context, e env, sub string) int {
	cmd := "topics " + sub
	fs := newFlags(e, cmd, "topics "+sub+" --config FILE [--rules FILE] [--output text|json]")
	cfgPath := configFlag(fs)
	rulesFile := fs.String("rules", "", "the ruleset `file` (default: rules.file, else the current version in Redis)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the clusters and Redis")
	out := addOutput(fs)
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() > 0 || *cfgPath == "" {
		fs.Usage()
		return exitUsage
	}
	cfg, err := loadConfig(*cfgPath, config.Scope{Route: true}, nil)
	if err != nil {
		return fail(e, cmd, err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	rs, source, code, err := topicsRuleset(ctx, cfg, *rulesFile)
	if err != nil {
		var ve *rules.ValidationError
		var fe *rules.FileError
		if errors.As(err, &ve) && errors.As(err, &fe) {
			printInvalid(e.stderr, fe.File, ve)
		} else {
			fmt.Fprintf(e.stderr, "residency %s: %s\n", cmd, config.OneLine(err.Error()))
		}
		return code
	}

	r := topicsReport{Command: sub, Ruleset: source, Problems: []config.Problem{}}
	needed, problems := cfg.NeededTopics(rs)
	r.Problems = append(r.Problems, problems...)
	byCluster := map[string][]config.NeededTopic{}
	for _, nt := range needed {
		byCluster[nt.Cluster] = append(byCluster[nt.Cluster], nt)
	}
	unreachable := false
	for _, name := range cfg.ClusterNames() {
		if len(byCluster[name]) == 0 {
			continue
		}
		cr := clusterReport{Name: name}
		admin, err := newAdmin(cfg, name)
		if err != nil {
			return fail(e, cmd, err)
		}
		defer admin.Close()
		if has, err := admin.BrokerHasConfig(ctx, "log.message.timestamp.after.max.ms"); err == nil && !has {
			// Brokers before Kafka 3.6 refuse a topic config they do not
			// know: the topics keep their broker's timestamp limits.
			byCluster[name] = withoutConfigs(byCluster[name], config.TimestampLimitConfigs...)
		}
		if err := describeCluster(ctx, admin, &cr, byCluster[name]); err != nil {
			cr.Error = config.OneLine(err.Error())
			unreachable = true
		} else if rf := cfg.Topics.ReplicationFactor; rf > cr.Brokers && slices.ContainsFunc(cr.Topics, func(t topicReport) bool { return t.Action == actionCreate }) {
			r.Problems = append(r.Problems, config.Problem{Field: "topics.replication_factor",
				Message: fmt.Sprintf("%d is more than the %d broker(s) of cluster %s: topics cannot be created there (set 1 only for a single-broker development cluster)", rf, cr.Brokers, name)})
		}
		if sub == "apply" && cr.Error == "" {
			applyCluster(ctx, admin, &cr)
			if err := describeApplied(ctx, admin, &cr, byCluster[name]); err != nil { // what is there now
				cr.Error = config.OneLine(err.Error())
				unreachable = true
			}
		}
		r.Clusters = append(r.Clusters, cr)
	}
	r.OK = len(r.Problems) == 0 && !unreachable
	for _, cr := range r.Clusters {
		for _, t := range cr.Topics {
			r.OK = r.OK && t.Action == actionOK
		}
	}
	if out.JSON() {
		_ = writeJSON(e.stdout, r)
	} else {
		printTopics(e.stdout, r)
	}
	switch {
	case unreachable:
		return exitNotReady
	case sub == "plan", r.OK:
		return exitOK
	}
	return exitFailure
}

// withoutConfigs returns topics with the named configs left out of their
// specs (the specs' maps are copied, not changed).
func withoutConfigs(topics []config.NeededTopic, names ...string) []config.NeededTopic {
	out := make([]config.NeededTopic, len(topics))
	for i, nt := range topics {
		nt.Spec.Configs = maps.Clone(nt.Spec.Configs)
		for _, n := range names {
			delete(nt.Spec.Configs, n)
		}
		out[i] = nt
	}
	return out
}

// topicsRuleset returns the ruleset topics derive from: --rules, else
// rules.file, else the current version in Redis; and where it came from.
// On error it returns the exit code.
func topicsRuleset(ctx context.Context, cfg *config.Config, file string) (*rules.Ruleset, string, int, error) {
	if file = cmp.Or(file, cfg.Rules.File); file != "" {
		_, rs, err := readRuleset(file)
		if err != nil {
			if errors.Is(err, errUsage) {
				return nil, "", exitUsage, err
			}
			return nil, "", exitFailure, err
		}
		return rs, "file " + file, exitOK, nil
	}
	client, err := newRedis(cfg.Redis, 5*time.Second, 1)
	if err != nil {
		return nil, "", exitUsage, err
	}
	defer client.Close()
	store := redis.NewRules(client, cfg.Redis.Prefix)
	v, err := store.LatestVersion(ctx)
	if err == nil && v == 0 {
		return nil, "", exitFailure, fmt.Errorf("no ruleset has been applied in Redis %s (prefix %q): give --rules FILE", cfg.Redis.Addr, cfg.Redis.Prefix)
	}
	var rs *rules.Ruleset
	if err == nil {
		rs, err = store.Load(ctx, v)
	}
	if err != nil {
		if errors.Is(err, rules.ErrUnavailable) {
			return nil, "", exitNotReady, fmt.Errorf("ruleset from Redis %s: %w", cfg.Redis.Addr, err)
		}
		return nil, "", exitFailure, fmt.Errorf("ruleset from Redis %s: %w", cfg.Redis.Addr, err)
	}
	return rs, fmt.Sprintf("version %d in Redis %s", v, cfg.Redis.Addr), exitOK, nil
}

// describeCluster fills cr with the brokers and, for every topic wanted
// there, its state and what differs.
func describeCluster(ctx context.Context, admin *kafka.Admin, cr *clusterReport, wanted []config.NeededTopic) error {
	n, err := admin.Brokers(ctx)
	if err != nil {
		return err
	}
	names := make([]string, len(wanted))
	for i, nt := range wanted {
		names[i] = nt.Spec.Name
	}
	states, err := admin.DescribeTopics(ctx, names...)
	if err != nil {
		return err
	}
	prev := map[string]topicReport{}
	for _, t := range cr.Topics {
		prev[t.Spec.Name] = t
	}
	cr.Brokers, cr.Topics = n, nil
	for _, nt := range wanted {
		t := topicReport{NeededTopic: nt, Have: states[nt.Spec.Name], Changes: []kafka.TopicChange{}}
		for _, c := range kafka.DiffTopic(nt.Spec, t.Have) {
			if nt.Managed || c.Kind == kafka.ChangeCreate {
				t.Changes = append(t.Changes, c)
			}
		}
		t.Action = actionOK
		for _, c := range t.Changes {
			switch {
			case c.Kind == kafka.ChangeCreate:
				t.Action = actionCreate
			case !c.Fixable():
				t.Action = actionManual
			case t.Action == actionOK:
				t.Action = actionAlter
			}
		}
		if p, ok := prev[nt.Spec.Name]; ok { // after apply: what it did
			t.Applied, t.Error = p.Applied, p.Error
		}
		cr.Topics = append(cr.Topics, t)
	}
	return nil
}

// appliedVisible bounds how long apply waits for what it changed to show
// in the cluster's answers: a broker answers DescribeConfigs and Metadata
// from its copy of the cluster's metadata, which follows a successful
// create or alter a moment later.
const appliedVisible = 10 * time.Second

// describeApplied describes cr's topics after applyCluster, again every
// 200 ms while a topic apply changed without an error still shows a
// change apply makes, for at most appliedVisible: a report right after the change
// would otherwise name changes the cluster has already accepted. What is
// still not as wanted after that is reported as it is.
func describeApplied(ctx context.Context, admin *kafka.Admin, cr *clusterReport, wanted []config.NeededTopic) error {
	deadline := time.Now().Add(appliedVisible)
	for {
		if err := describeCluster(ctx, admin, cr, wanted); err != nil {
			return err
		}
		pending := slices.ContainsFunc(cr.Topics, func(t topicReport) bool {
			return t.Applied != "" && t.Error == "" && slices.ContainsFunc(t.Changes, func(c kafka.TopicChange) bool {
				return c.Kind == kafka.ChangeCreate || c.Fixable() // what apply did, not seen yet
			})
		})
		if !pending || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil // report what was seen last
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// applyCluster creates or alters every topic of cr that is not as wanted;
// it records each outcome in the topic's report.
func applyCluster(ctx context.Context, admin *kafka.Admin, cr *clusterReport) {
	for i := range cr.Topics {
		t := &cr.Topics[i]
		var err error
		applied := "altered"
		switch t.Action {
		case actionCreate:
			applied = "created"
			err = admin.CreateTopic(ctx, t.Spec)
		case actionAlter, actionManual:
			configs, partitions := map[string]string{}, 0
			for _, c := range t.Changes {
				switch c.Kind {
				case kafka.ChangeConfig:
					configs[c.Config] = c.Want
				case kafka.ChangePartitions:
					partitions = t.Spec.Partitions
				}
			}
			if len(configs) == 0 && partitions == 0 {
				continue // only what apply cannot change
			}
			err = admin.AlterTopic(ctx, t.Spec.Name, configs, partitions)
		default:
			continue
		}
		if err != nil {
			t.Error = config.OneLine(err.Error())
		} else {
			t.Applied = applied
		}
	}
}

// printTopics prints the report for people: per cluster, one line per
// topic (action, name, what it is for, what differs or what it will be),
// then the problems and a summary.
func printTopics(w io.Writer, r topicsReport) {
	fmt.Fprintf(w, "ruleset: %s\n", r.Ruleset)
	counts := map[string]int{}
	for _, cr := range r.Clusters {
		if cr.Error != "" {
			fmt.Fprintf(w, "\ncluster %s: unreachable: %s\n", cr.Name, cr.Error)
			continue
		}
		fmt.Fprintf(w, "\ncluster %s (%d broker%s)\n", cr.Name, cr.Brokers, plural(cr.Brokers))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, t := range cr.Topics {
			counts[t.Action]++
			verb := t.Action
			switch {
			case r.Command == "apply" && t.Applied != "" && t.Action == actionOK:
				verb = t.Applied
			case r.Command == "apply" && t.Error != "":
				verb = "failed"
			case t.Action == actionCreate && r.Command == "check":
				verb = "missing"
			case t.Action == actionAlter && r.Command == "check":
				verb = "differs"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", verb, t.Spec.Name, strings.Join(t.For, ", "), topicDetail(t))
		}
		_ = tw.Flush()
	}
	if len(r.Problems) > 0 {
		fmt.Fprintln(w, "\nproblems:")
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	total := counts[actionOK] + counts[actionCreate] + counts[actionAlter] + counts[actionManual]
	fmt.Fprintf(w, "\n%d topics: %d as wanted, %d missing, %d to alter, %d to fix by hand", total, counts[actionOK], counts[actionCreate], counts[actionAlter], counts[actionManual])
	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "; %d problem%s", len(r.Problems), plural(len(r.Problems)))
	}
	fmt.Fprintln(w)
	switch {
	case r.Command == "plan" && counts[actionCreate]+counts[actionAlter] > 0:
		fmt.Fprintln(w, "run `residency topics apply` with the same flags to create and alter them")
	case r.Command == "apply" && r.OK:
		fmt.Fprintln(w, "every topic is as wanted")
	}
}

// topicDetail says what a topic is or will be, or what differs.
func topicDetail(t topicReport) string {
	if t.Error != "" {
		return "error: " + t.Error
	}
	switch t.Action {
	case actionCreate:
		if !t.Managed {
			return fmt.Sprintf("create with %s, replication factor %d (then the producers' topic)", partitions(t.Spec.Partitions), t.Spec.ReplicationFactor)
		}
		return fmt.Sprintf("%s, replication factor %d, %s", partitions(t.Spec.Partitions), t.Spec.ReplicationFactor, configsText(t.Spec.Configs))
	case actionOK:
		if !t.Managed {
			return fmt.Sprintf("%s (the producers' topic: its settings are not checked)", partitions(t.Have.Partitions))
		}
		return fmt.Sprintf("%s, replication factor %d", partitions(t.Have.Partitions), t.Have.ReplicationFactor)
	}
	var parts []string
	for _, c := range t.Changes {
		s := c.String()
		switch c.Kind {
		case kafka.ChangeConfig:
			s = fmt.Sprintf("%s=%s, want %s", c.Config, configValue(c.Config, cmp.Or(c.Have, "(unset)")), configValue(c.Config, c.Want))
		case kafka.ChangePartitions:
			if t.Kind == config.TopicPinned || t.Kind == config.TopicHold {
				s += " (adding partitions moves keys: per-key order across the change is not kept)"
			}
		case kafka.ChangeReplication:
			s += " (apply cannot change it: kafka-reassign-partitions.sh)"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// configsText lists configs as k=v in name order, durations readable.
func configsText(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + configValue(k, m[k])
	}
	return strings.Join(parts, " ")
}

// configValue shows a config's value, with retention.ms in days or hours.
func configValue(key, v string) string {
	if key != "retention.ms" {
		return v
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	switch {
	case err != nil:
		return v
	case ms < 0:
		return v + " (for ever)"
	case ms%(24*3600*1000) == 0:
		return fmt.Sprintf("%s (%dd)", v, ms/(24*3600*1000))
	case ms%(3600*1000) == 0:
		return fmt.Sprintf("%s (%dh)", v, ms/(3600*1000))
	}
	return v
}

func partitions(n int) string { return fmt.Sprintf("%d partition%s", n, plural(n)) }

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
