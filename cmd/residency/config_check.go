package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Field is the path of the field at fault in the YAML file, e.g.
	// "router.batch_size", "kafka.clusters.eu.tls.ca_file" or
	// "sinks[0].store"; "" when the file as a whole is at fault
	// (unreadable, not YAML).
	Field string `json:"field,omitempty"`
	// Message says what is wrong, on one line.
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Field == "" {
		return p.Message
	}
	return p.Field + ": " + p.Message
}

// ConfigError is an invalid configuration, with every problem found. Its
// Error is one line. It is errConfig and errUsage (exit code 2).
type ConfigError struct {
	// File is the config file, when the config came from one.
	File string
	// Problems lists every problem, each naming its field.
	Problems []Problem
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	b.WriteString("invalid config: ")
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	if len(e.Problems) > 1 {
		fmt.Fprintf(&b, " (%d problems)", len(e.Problems))
	}
	return b.String()
}

// Is makes a ConfigError errConfig and errUsage.
func (e *ConfigError) Is(target error) bool { return target == errConfig || target == errUsage }

func asConfigError(err error, target **ConfigError) bool { return errors.As(err, target) }

// problems collects the problems of a config.
type problems []Problem

func (ps *problems) add(field, format string, args ...any) {
	*ps = append(*ps, Problem{Field: field, Message: oneLine(fmt.Sprintf(format, args...))})
}

// leadingField matches an error text that starts with a field path
// ("catalogue_dir: ...", `raw_schemas["*"]: ...`, "tls.ca_file: ...").
var leadingField = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[^\]]*\])*): (.+)$`)

// packagePrefixes start the errors of the packages a config feeds; the
// field path follows them.
var packagePrefixes = []string{
	kafka.ErrConfig.Error() + ": ", "postgres: bad config: ", "objectstore: bad config: ", "sink: bad config: ",
	router.ErrConfig.Error() + ": ", "replay: bad config: ",
}

// addErr adds each error joined in err under prefix: a field path its text
// starts with (as NewExtractor's and Cluster.Validate's do) is appended to
// prefix.
func (ps *problems) addErr(prefix string, err error) {
	for _, e := range unjoin(err) {
		field, msg := splitField(prefix, e)
		*ps = append(*ps, Problem{Field: field, Message: msg})
	}
}

// splitField returns the field path of err under prefix and the rest of its
// text, on one line.
func splitField(prefix string, err error) (field, msg string) {
	msg = oneLine(err.Error())
	for _, p := range packagePrefixes {
		msg = strings.TrimPrefix(msg, p)
	}
	if m := leadingField.FindStringSubmatch(msg); m != nil {
		return joinPath(prefix, m[1]), m[2]
	}
	return prefix, msg
}

// fieldError is one error naming its field, for the errors of wiring (after
// the config was checked): e.g. "schemas.catalogue_dir: ...".
func fieldError(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var ps problems
	ps.addErr(prefix, err)
	return &ConfigError{Problems: ps}
}

// oneLine joins the lines of a multi-line message with "; ".
func oneLine(s string) string {
	if !strings.Contains(s, "\n") {
		return s
	}
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		if b.Len() > 0 {
			if strings.HasSuffix(b.String(), ":") {
				b.WriteString(" ")
			} else {
				b.WriteString("; ")
			}
		}
		b.WriteString(line)
	}
	return b.String()
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

// scope says what a command needs from the config beyond what is set: every
// field that is set is always checked, whatever the command.
type scope struct {
	// route: route and replay need kafka.clusters and router.ingest_topics.
	route bool
	// sink: `sink --store NAME` needs kafka.clusters and the sinks entry of
	// this store.
	sink string
}

// Defaults the config's checks compare against, where the packages that
// own them apply them (router, rules cache, schema registry).
const (
	defaultRetryMin           = 50 * time.Millisecond
	defaultRetryMax           = 2 * time.Second
	defaultGiveUp             = 2 * time.Minute
	defaultMaxBatchBytes      = 16 << 20
	defaultPollInterval       = 500 * time.Millisecond
	defaultRegistryBackoff    = 100 * time.Millisecond
	defaultRegistryMaxBackoff = 2 * time.Second
)

// setDefault sets *dst to v if it is empty.
func setDefault(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// defaults fills in the defaults that the commands read from the config
// itself (the packages the config feeds apply the others).
func (c *Config) defaults() {
	setDefault(&c.LogLevel, "info")
	setDefault(&c.HTTP.Listen, ":9090")
	setDefault(&c.Redis.Addr, "127.0.0.1:6379")
	setDefault(&c.Redis.Prefix, rules.DefaultPrefix)
	if c.Kafka.IngestCluster == "" && len(c.Kafka.Clusters) == 1 {
		for name := range c.Kafka.Clusters {
			c.Kafka.IngestCluster = name
		}
	}
	for name, cl := range c.Kafka.Clusters {
		if cl.Name == "" {
			cl.Name = name
			c.Kafka.Clusters[name] = cl
		}
	}
	setDefault(&c.Router.ConsumerGroup, "residency-router")
	setDefault(&c.Router.QuarantineTopic, "residency.quarantine")
	setDefault(&c.Router.DeadLetterTopic, "residency.dead-letter")
	setDefault(&c.Router.StartOffset, "earliest")
	for i := range c.Sinks {
		c.Sinks[i].defaults(c)
	}
}

// check fills in defaults and validates the config for a command of scope
// s; the error is a *ConfigError listing every problem.
func (c *Config) check(s scope) error {
	c.defaults()
	if ps := c.validate(s); len(ps) > 0 {
		return &ConfigError{File: c.file, Problems: ps}
	}
	return nil
}

// finish fills in defaults and validates the config of `route` (and
// replay); errors name the field.
func (c *Config) finish() error { return c.check(scope{route: true}) }

// finishSink validates the config of `sink --store store`, fills in
// defaults and returns the sinks[] entry of store; errors name the field.
func (c *Config) finishSink(store string) (*SinkConfig, error) {
	if err := c.check(scope{sink: store}); err != nil {
		return nil, err
	}
	i := slices.IndexFunc(c.Sinks, func(s SinkConfig) bool { return s.Store == store })
	return &c.Sinks[i], nil
}

// validate returns every problem of the config (after defaults), each
// naming its field: values out of range, fields that conflict (naming
// both), files that cannot be read, and what scope s requires. It is what
// every command runs before wiring anything, so wiring never meets a bad
// config.
func (c *Config) validate(s scope) []Problem {
	var ps problems
	if _, err := parseLevel(c.LogLevel); err != nil {
		ps.add("log_level", "%v", err)
	}
	checkListen(&ps, "http.listen", c.HTTP.Listen)
	c.validateKafka(&ps, s)
	c.validateRouter(&ps, s)
	c.validateRedis(&ps)
	c.validateRules(&ps)
	c.validateSchemas(&ps)
	c.validateSinks(&ps, s)
	slices.SortStableFunc(ps, func(a, b Problem) int { return strings.Compare(a.Field, b.Field) })
	return ps
}

func checkListen(ps *problems, field, listen string) {
	if listen == "off" {
		return
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		ps.add(field, "%q is not host:port (\":9090\" for every interface) or off", listen)
	}
}

func (c *Config) validateKafka(ps *problems, s scope) {
	if len(c.Kafka.Clusters) == 0 {
		if s.route || s.sink != "" {
			ps.add("kafka.clusters", "required: at least the ingest cluster")
		}
		if c.Kafka.IngestCluster != "" {
			ps.add("kafka.ingest_cluster", "%q is not in kafka.clusters (there are none)", c.Kafka.IngestCluster)
		}
	}
	names := c.clusterNames()
	for _, name := range names {
		cl := c.Kafka.Clusters[name]
		if cl.Name != name {
			ps.add("kafka.clusters."+name+".name", "%q differs from the key %q (leave it out)", cl.Name, name)
			cl.Name = name
			c.Kafka.Clusters[name] = cl
		}
		if err := cl.Validate("kafka.clusters." + name); err != nil {
			ps.addErr("", err)
		}
	}
	if len(names) > 0 {
		if c.Kafka.IngestCluster == "" {
			ps.add("kafka.ingest_cluster", "required with more than one cluster (%s)", strings.Join(names, ", "))
		} else if _, ok := c.Kafka.Clusters[c.Kafka.IngestCluster]; !ok {
			ps.add("kafka.ingest_cluster", "%q is not in kafka.clusters (%s)", c.Kafka.IngestCluster, strings.Join(names, ", "))
		}
	}
	switch strings.ToLower(c.Kafka.Compression) {
	case "", "none", "gzip", "snappy", "lz4", "zstd":
	default:
		ps.add("kafka.compression", "%q is not none, gzip, snappy, lz4 or zstd", c.Kafka.Compression)
	}
	notNegative(ps, map[string]time.Duration{"kafka.session_timeout": c.Kafka.SessionTimeout,
		"kafka.rebalance_timeout": c.Kafka.RebalanceTimeout, "kafka.batch_timeout": c.Kafka.BatchTimeout})
}

func (c *Config) clusterNames() []string {
	names := make([]string, 0, len(c.Kafka.Clusters))
	for name := range c.Kafka.Clusters {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func notNegative[T int | int32 | time.Duration](ps *problems, fields map[string]T) {
	for field, v := range fields {
		if v < 0 {
			ps.add(field, "must not be negative")
		}
	}
}

// effective is v, or def when v is 0 (unset), and how to name it in a
// message: "3s" or "the default 2s".
func effective[T int | time.Duration](v, def T) (T, string) {
	if v == 0 {
		return def, fmt.Sprintf("the default %v", def)
	}
	return v, fmt.Sprintf("%v", v)
}

func (c *Config) validateRouter(ps *problems, s scope) {
	r := &c.Router
	if len(r.IngestTopics) == 0 && s.route {
		ps.add("router.ingest_topics", "required")
	}
	topics := map[string]string{}
	for i, tp := range r.IngestTopics {
		field := fmt.Sprintf("router.ingest_topics[%d]", i)
		if tp == "" {
			ps.add(field, "empty topic name")
		}
		if other, dup := topics[tp]; dup {
			ps.add(field, "%q is also %s", tp, other)
		}
		topics[tp] = field
	}
	for _, f := range []struct{ field, topic string }{{"router.quarantine_topic", r.QuarantineTopic}, {"router.dead_letter_topic", r.DeadLetterTopic}} {
		if other, dup := topics[f.topic]; dup {
			ps.add(f.field, "%q is also %s", f.topic, other)
		}
		topics[f.topic] = f.field
	}
	switch strings.ToLower(r.StartOffset) {
	case "earliest":
	case "latest":
		// Every ingested offset must be accounted for: a new group starting
		// at the end would skip what is already in the ingest topics.
		ps.add("router.start_offset", "\"latest\" would skip every event already in the ingest topics when a new consumer group starts; "+
			"only earliest is allowed (to start a group later on purpose, reset its offsets with Kafka's consumer-groups tool)")
	default:
		ps.add("router.start_offset", "%q is not earliest", r.StartOffset)
	}
	notNegative(ps, map[string]int{"router.batch_size": r.BatchSize, "router.max_batch_bytes": r.MaxBatchBytes, "router.max_value_bytes": r.MaxValueBytes})
	notNegative(ps, map[string]time.Duration{"router.linger": r.Linger, "router.retry_min": r.RetryMin, "router.retry_max": r.RetryMax,
		"router.give_up": r.GiveUp, "router.shutdown_timeout": r.ShutdownTimeout})

	// Fields that conflict, compared with their defaults when unset.
	if r.RetryMin >= 0 && r.RetryMax >= 0 && r.GiveUp >= 0 {
		lo, loS := effective(r.RetryMin, defaultRetryMin)
		hi, hiS := effective(r.RetryMax, defaultRetryMax)
		if lo > hi {
			ps.add("router.retry_min", "%s is more than router.retry_max (%s): the first backoff would exceed the longest", loS, hiS)
		}
		if up, upS := effective(r.GiveUp, defaultGiveUp); up < lo {
			ps.add("router.give_up", "%s is less than router.retry_min (%s): a transient failure would never be retried", upS, loS)
		}
	}
	if r.MaxValueBytes >= 0 && r.MaxBatchBytes >= 0 {
		value, valueS := effective(r.MaxValueBytes, router.DefaultMaxValueBytes)
		batch, batchS := effective(r.MaxBatchBytes, defaultMaxBatchBytes)
		if value > batch {
			ps.add("router.max_value_bytes", "%s is more than router.max_batch_bytes (%s): an event the router accepts would not fit in a batch", valueS, batchS)
		}
	}
}

func (c *Config) validateRedis(ps *problems) {
	if c.Rules.File == "" && c.Redis.Addr == "" {
		ps.add("redis.addr", "required unless rules.file is set")
	} else if _, _, err := net.SplitHostPort(c.Redis.Addr); err != nil {
		ps.add("redis.addr", "%q is not host:port", c.Redis.Addr)
	}
	notNegative(ps, map[string]int{"redis.db": c.Redis.DB})
	if _, err := c.Redis.TLS.Build("redis.tls"); err != nil {
		ps.addErr("", err)
	}
}

func (c *Config) validateRules(ps *problems) {
	notNegative(ps, map[string]time.Duration{"rules.staleness_bound": c.Rules.StalenessBound, "rules.poll_interval": c.Rules.PollInterval})
	if c.Rules.StalenessBound >= 0 && c.Rules.PollInterval >= 0 {
		stale, staleS := effective(c.Rules.StalenessBound, defaultStalenessBound)
		poll, pollS := effective(c.Rules.PollInterval, defaultPollInterval)
		if poll >= stale {
			ps.add("rules.poll_interval", "%s is not less than rules.staleness_bound (%s): without change announcements the ruleset would go stale between two checks and routing would stop",
				pollS, staleS)
		}
	}
	if c.Rules.File != "" {
		if data, err := os.ReadFile(c.Rules.File); err != nil {
			ps.add("rules.file", "%v", err)
		} else if _, err := rules.Parse(data); err != nil {
			ps.add("rules.file", "%s: %v", c.Rules.File, err)
		}
	}
}

func (c *Config) validateSchemas(ps *problems) {
	if _, err := schemas.NewExtractor(c.Schemas); err != nil {
		ps.addErr("schemas", err)
	}
	reg := c.Schemas.Registry
	if reg.Backoff >= 0 && reg.MaxBackoff >= 0 {
		lo, loS := effective(reg.Backoff, defaultRegistryBackoff)
		hi, hiS := effective(reg.MaxBackoff, defaultRegistryMaxBackoff)
		if lo > hi {
			ps.add("schemas.registry.backoff", "%s is more than schemas.registry.max_backoff (%s)", loS, hiS)
		}
	}
}
