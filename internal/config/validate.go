package config

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

// Error is an invalid configuration, with every problem found. Its Error
// is one line. It is ErrInvalid (exit code 2).
type Error struct {
	// File is the config file, when the config came from one.
	File string
	// Problems lists every problem, each naming its field.
	Problems []Problem
}

func (e *Error) Error() string {
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

// Is makes an Error ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// problems collects the problems of a config.
type problems []Problem

func (ps *problems) add(field, format string, args ...any) {
	*ps = append(*ps, Problem{Field: field, Message: OneLine(fmt.Sprintf(format, args...))})
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
	msg = OneLine(err.Error())
	for _, p := range packagePrefixes {
		msg = strings.TrimPrefix(msg, p)
	}
	if m := leadingField.FindStringSubmatch(msg); m != nil {
		return joinPath(prefix, m[1]), m[2]
	}
	return prefix, msg
}

// FieldError is one error naming its field, for the errors of wiring
// (after the config was checked): e.g. "schemas.catalogue_dir: ...". The
// result is an *Error; nil for nil.
func FieldError(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var ps problems
	ps.addErr(prefix, err)
	return &Error{Problems: ps}
}

// ClusterError is an error of the Kafka client set-up of cluster name (its
// TLS files, SASL), naming the field: kafka.clusters.NAME.tls.ca_file: ...
func ClusterError(name string, err error) error {
	var ps problems
	for _, e := range unjoin(err) {
		msg := strings.TrimPrefix(OneLine(e.Error()), kafka.ErrConfig.Error()+": ")
		msg = strings.TrimPrefix(msg, "kafka: ")
		msg = strings.TrimPrefix(msg, "cluster "+name+": ")
		msg = strings.TrimPrefix(msg, "cluster.") // Cluster.Validate("cluster"), as NewReader calls it
		ps.addErr("kafka.clusters."+name, errors.New(msg))
	}
	return &Error{Problems: ps}
}

// OneLine joins the lines of a multi-line message with "; ".
func OneLine(s string) string {
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

// Scope says what a command needs from the config beyond what is set:
// every field that is set is always checked, whatever the command.
type Scope struct {
	// Route: route and replay need kafka.clusters and router.ingest_topics.
	Route bool
	// Sink: `sink --store NAME` needs kafka.clusters and the sinks entry of
	// this store.
	Sink string
	// Erase: erase needs audit.subject_key_file and at least one sinks[]
	// entry (its stores).
	Erase bool
	// Attest: route and replay write records; with audit.enabled they
	// attest them and need audit.attestation.sign_key.
	Attest bool
}

// Finish fills in the defaults (once: the defaults table, defaults.go) and
// validates the config for a command of scope s; the error is an *Error
// listing every problem.
func (c *Config) Finish(s Scope) error {
	if ps := c.Validate(s); len(ps) > 0 {
		return &Error{File: c.file, Problems: ps}
	}
	return nil
}

// Sink returns the sinks[] entry of store, nil if there is none. Call it
// after Finish(Scope{Sink: store}).
func (c *Config) Sink(store string) *SinkConfig {
	i := slices.IndexFunc(c.Sinks, func(s SinkConfig) bool { return s.Store == store })
	if i < 0 {
		return nil
	}
	return &c.Sinks[i]
}

// SinkField returns the path of the sinks[] entry sc ("sinks[1]"), or
// "sinks".
func (c *Config) SinkField(sc *SinkConfig) string {
	for i := range c.Sinks {
		if &c.Sinks[i] == sc {
			return fmt.Sprintf("sinks[%d]", i)
		}
	}
	return "sinks"
}

// Validate fills in the defaults (once) and returns every problem of the
// config, each naming its field: values out of range, fields that conflict
// (naming both), files that cannot be read, and what scope s requires. It
// is what every command runs before wiring anything (through Finish), so
// wiring never meets a bad config, and what `config lint` prints.
func (c *Config) Validate(s Scope) []Problem {
	c.applyDefaults()
	ps := problems(slices.Clone(c.secretProblems))
	if _, err := ParseLevel(c.LogLevel); err != nil {
		ps.add("log_level", "%v", err)
	}
	checkListen(&ps, "http.listen", c.HTTP.Listen)
	c.validateKafka(&ps, s)
	c.validateRouter(&ps, s)
	c.validateRedis(&ps)
	c.validateRules(&ps)
	c.validateSchemas(&ps)
	c.validateSinks(&ps, s)
	c.validateAudit(&ps, s)
	c.validateErasure(&ps, s)
	c.validateTopics(&ps)
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

func (c *Config) validateKafka(ps *problems, s Scope) {
	if len(c.Kafka.Clusters) == 0 {
		if s.Route || s.Sink != "" {
			ps.add("kafka.clusters", "required: at least the ingest cluster")
		}
		if c.Kafka.IngestCluster != "" {
			ps.add("kafka.ingest_cluster", "%q is not in kafka.clusters (there are none)", c.Kafka.IngestCluster)
		}
	}
	names := c.ClusterNames()
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
	if _, err := kafka.NewBalancer(c.Kafka.Partitioner); err != nil {
		ps.add("kafka.partitioner", "%q is not murmur2 or fnv1a", c.Kafka.Partitioner)
	}
	switch strings.ToLower(c.Kafka.IsolationLevel) {
	case "", "read_uncommitted", "read_committed":
	default:
		ps.add("kafka.isolation_level", "%q is not read_uncommitted or read_committed", c.Kafka.IsolationLevel)
	}
	switch strings.ToLower(c.Kafka.Compression) {
	case "", "none", "gzip", "snappy", "lz4", "zstd":
	default:
		ps.add("kafka.compression", "%q is not none, gzip, snappy, lz4 or zstd", c.Kafka.Compression)
	}
	notNegative(ps, map[string]time.Duration{"kafka.session_timeout": c.Kafka.SessionTimeout,
		"kafka.rebalance_timeout": c.Kafka.RebalanceTimeout, "kafka.batch_timeout": c.Kafka.BatchTimeout})
}

// ClusterNames returns the names of kafka.clusters, sorted.
func (c *Config) ClusterNames() []string {
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

// show names the value of field in a message: "3s", or "the default 2s"
// when the defaults table set it.
func (c *Config) show(field string, v any) string {
	if c.defaulted[field] {
		return fmt.Sprintf("the default %v", v)
	}
	return fmt.Sprintf("%v", v)
}

func (c *Config) validateRouter(ps *problems, s Scope) {
	r := &c.Router
	if len(r.IngestTopics) == 0 && s.Route {
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
	for _, f := range []struct{ field, topic string }{{"router.quarantine_topic", r.QuarantineTopic}, {"router.dead_letter_topic", r.DeadLetterTopic},
		{"rules.history_topic", c.Rules.HistoryTopic}, {"audit.topic", c.Audit.Topic}} {
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
	notNegative(ps, map[string]int{"router.batch_size": r.BatchSize, "router.max_batch_bytes": r.MaxBatchBytes, "router.max_value_bytes": r.MaxValueBytes,
		"router.max_inflight_events": r.MaxInflightEvents, "router.max_inflight_bytes": r.MaxInflightBytes,
		"router.max_uncommitted_events": r.MaxUncommittedEvents, "router.max_uncommitted_bytes": r.MaxUncommittedBytes})
	if r.MemoryLimit < 0 {
		ps.add("router.memory_limit", "must not be negative")
	}
	notNegative(ps, map[string]time.Duration{"router.linger": r.Linger, "router.retry_min": r.RetryMin, "router.retry_max": r.RetryMax,
		"router.give_up": r.GiveUp, "router.shutdown_timeout": r.ShutdownTimeout})

	// Fields that conflict, compared with their defaults when unset.
	if r.RetryMin >= 0 && r.RetryMax >= 0 && r.GiveUp >= 0 {
		if r.RetryMin > r.RetryMax {
			ps.add("router.retry_min", "%s is more than router.retry_max (%s): the first backoff would exceed the longest",
				c.show("router.retry_min", r.RetryMin), c.show("router.retry_max", r.RetryMax))
		}
		if r.GiveUp < r.RetryMin {
			ps.add("router.give_up", "%s is less than router.retry_min (%s): a transient failure would never be retried",
				c.show("router.give_up", r.GiveUp), c.show("router.retry_min", r.RetryMin))
		}
	}
	if r.MaxInflightEvents > 0 && r.BatchSize > 0 && r.MaxInflightEvents < r.BatchSize {
		ps.add("router.max_inflight_events", "%s is less than router.batch_size (%s): a batch could never be fetched whole",
			c.show("router.max_inflight_events", r.MaxInflightEvents), c.show("router.batch_size", r.BatchSize))
	}
	if r.MaxInflightBytes > 0 && r.MaxValueBytes > 0 && r.MaxInflightBytes < r.MaxValueBytes {
		ps.add("router.max_inflight_bytes", "%s is less than router.max_value_bytes (%s): the largest event routed would not fit in flight",
			c.show("router.max_inflight_bytes", r.MaxInflightBytes), c.show("router.max_value_bytes", r.MaxValueBytes))
	}
	if r.MaxValueBytes >= 0 && r.MaxBatchBytes >= 0 && r.MaxValueBytes > r.MaxBatchBytes {
		ps.add("router.max_value_bytes", "%s is more than router.max_batch_bytes (%s): an event the router accepts would not fit in a batch",
			c.show("router.max_value_bytes", r.MaxValueBytes), c.show("router.max_batch_bytes", r.MaxBatchBytes))
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
	notNegative(ps, map[string]time.Duration{"rules.staleness_bound": c.Rules.StalenessBound, "rules.poll_interval": c.Rules.PollInterval,
		"rules.pins_resync": c.Rules.PinsResync})
	if c.Rules.StalenessBound >= 0 && c.Rules.PollInterval >= 0 && c.Rules.PollInterval >= c.Rules.StalenessBound {
		ps.add("rules.poll_interval", "%s is not less than rules.staleness_bound (%s): without change announcements the ruleset would go stale between two checks and routing would stop",
			c.show("rules.poll_interval", c.Rules.PollInterval), c.show("rules.staleness_bound", c.Rules.StalenessBound))
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
	if reg.Backoff >= 0 && reg.MaxBackoff >= 0 && reg.Backoff > reg.MaxBackoff {
		ps.add("schemas.registry.backoff", "%s is more than schemas.registry.max_backoff (%s)",
			c.show("schemas.registry.backoff", reg.Backoff), c.show("schemas.registry.max_backoff", reg.MaxBackoff))
	}
}
