package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

const explainSynopsis = `explain EVENT [--config FILE [--topic T]] [--rules FILE | --redis ADDR] [--output text|json] [flags]

Say where the router would send an event, and why. EVENT is a file (or -
for stdin) holding one of:
  - only the routing fields, as JSON: {"country": "US", "user_id": "u-1"}
    (or just one of them; the paths of schemas.country_field and
    user_id_field, nested ones as nested objects). A quick answer from those
    fields, the user's pin and the ruleset: the rest of the event, and
    whether it decodes, is not checked;
  - a whole event as JSON (plain or Avro JSON), encoded with --schema
    (default: the topic's raw schema, else the canonical user event schema)
    in the topic's framing;
  - one Kafka message value, read as the router reads the topic;
  - an Avro object container file (each record is explained).
With --config, explain answers for that deployment: it reads events as the
router reads --topic (default: the first of router.ingest_topics), with its
framings, raw schemas, catalogue and registry, and decides with the ruleset
in force (rules.file, or the Redis of the config with its credentials and
TLS) and the user's pin. --rules, --redis, --prefix, --framing, --registry
and --schema override the config. Without --config, one of --rules and
--redis is required.
Exit codes: 0 routable, 1 quarantined or dead-lettered, 2 usage or config,
3 Redis or the schema registry unavailable.`

// explanation is what explain prints for one event.
type explanation struct {
	Event          string `json:"event"`
	Encoding       string `json:"encoding"`
	IngestTopic    string `json:"ingest_topic,omitempty"`
	Partial        bool   `json:"partial,omitempty"`
	Decision       string `json:"decision"`
	Jurisdiction   string `json:"jurisdiction,omitempty"`
	DecidedBy      string `json:"decided_by,omitempty"`
	Country        string `json:"country,omitempty"`
	Region         string `json:"region,omitempty"`
	Cluster        string `json:"cluster,omitempty"`
	Topic          string `json:"topic,omitempty"`
	Reason         string `json:"reason,omitempty"`
	Error          string `json:"error,omitempty"`
	Pin            string `json:"pin,omitempty"`
	PinsChecked    bool   `json:"pins_checked"`
	Note           string `json:"note,omitempty"`
	RulesetVersion int64  `json:"ruleset_version"`
	RulesetSource  string `json:"ruleset_source"`
}

// partialNote is said of every answer from the routing fields alone.
const partialNote = "only the routing fields were given: the rest of the event, and whether it decodes, was not checked"

// explainFlags are the flags of `residency explain`.
type explainFlags struct {
	cfgPath, topic, rulesFile, redisAddr, prefix string
	framing, registry, schema, format            string
	out                                          *output
	set                                          map[string]bool // the flags given
}

// runExplain is `residency explain`.
func runExplain(ctx context.Context, e env) int {
	fs := newFlags(e, "explain", explainSynopsis)
	var f explainFlags
	fs.StringVar(&f.cfgPath, "config", os.Getenv(envConfig), "answer for the deployment of this config `file` (default $"+envConfig+"): its schemas settings, rules and Redis")
	fs.StringVar(&f.topic, "topic", "", "with --config: the ingest `topic` whose framing and raw schema to read the event with (default: the first of router.ingest_topics)")
	fs.StringVar(&f.rulesFile, "rules", "", "ruleset `file` to decide with (overrides rules.file and Redis)")
	fs.StringVar(&f.redisAddr, "redis", "", "decide with the current ruleset (and pins) in the Redis at `host:port` (overrides redis.addr)")
	fs.StringVar(&f.prefix, "prefix", rules.DefaultPrefix, "Redis key prefix (overrides redis.prefix)")
	fs.StringVar(&f.framing, "framing", string(schemas.FramingSingleObject), "framing of a message value: single-object, confluent or raw (overrides the topic's framing)")
	fs.StringVar(&f.registry, "registry", "", "schema registry `URL` for the confluent framing (overrides schemas.registry.url)")
	fs.StringVar(&f.schema, "schema", "", "writer schema: a full name (embedded or catalogue schema) or an .avsc `file`; of a raw value, and of a whole JSON event (default: the topic's raw schema, else the canonical user event schema)")
	fs.StringVar(&f.format, "format", "auto", "EVENT's format: auto, fields (the routing fields as JSON), json, value or container")
	f.out = addOutput(fs)
	args, code, ok := parseInterleaved(fs, e.args)
	if !ok {
		return code
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	if len(args) != 1 {
		fmt.Fprintln(e.stderr, "residency explain: need one EVENT (a file, or - for stdin); see residency explain -h")
		return exitUsage
	}
	code, err := explainMain(ctx, e, &f, args[0])
	if err != nil {
		fmt.Fprintf(e.stderr, "residency explain: %s\n", config.OneLine(err.Error()))
	}
	return code
}

// explainSetup is what explain decides with: how to read the event, the
// ruleset and pins, and where the router could write.
type explainSetup struct {
	cfg      *config.Config // nil without --config
	topic    string         // the ingest topic the event is read as
	xcfg     schemas.ExtractorConfig
	framing  schemas.Framing // the topic's framing
	rs       *rules.Ruleset
	source   string
	pins     router.PinLookup // nil: pins not looked up
	pipe     *router.Pipeline // reads and places events as the router does
	maxBytes int              // router.max_value_bytes
	close    []func()         // what loadRules opened
}

// explainMain runs explain for one EVENT and returns the exit code.
func explainMain(ctx context.Context, e env, f *explainFlags, event string) (int, error) {
	usage := func(format string, args ...any) (int, error) { return exitUsage, usagef(format, args...) }
	if f.rulesFile != "" && f.redisAddr != "" {
		return usage("--rules and --redis exclude each other")
	}
	if f.cfgPath == "" && (f.rulesFile == "") == (f.redisAddr == "") {
		return usage("need --config FILE, or one of --rules FILE and --redis ADDR")
	}
	if f.cfgPath == "" && f.set["topic"] {
		return usage("--topic: only with --config (it picks the framing and raw schema of one of its ingest topics)")
	}
	if f.set["framing"] && !slices.Contains([]schemas.Framing{schemas.FramingSingleObject, schemas.FramingConfluent, schemas.FramingRaw}, schemas.Framing(f.framing)) {
		return usage("--framing %q is not single-object, confluent or raw", f.framing)
	}
	switch f.format {
	case "auto", "fields", "json", "value", "container":
	default:
		return usage("--format %q is not auto, fields, json, value or container", f.format)
	}
	s, err := f.setup()
	if err != nil {
		return exitUsage, err
	}
	defer func() {
		for _, c := range s.close {
			c()
		}
	}()
	data, err := readEventFile(e, event)
	if err != nil {
		return usage("%s: %v", event, err)
	}
	format := f.format
	if format == "auto" {
		format = detectFormat(data, event, s.xcfg)
	}

	// The routing fields alone need no schema: the decision is made from
	// them; nothing else is known about the event.
	if format == "fields" {
		paths := fieldPaths(s.xcfg)
		fields, err := schemas.FieldsFromJSON(data, paths[0], paths[1])
		if err != nil {
			return usage("%s: %v", event, err)
		}
		code, err := s.loadRules(ctx, f)
		if err != nil {
			return code, err
		}
		if err := s.pipeline(noFields{}); err != nil {
			return exitFailure, err
		}
		x := explanation{Event: event, Encoding: "JSON with the routing fields only (" + strings.Join(fieldPaths(s.xcfg), ", ") + ")",
			Partial: true, Note: partialNote}
		ev, err := s.pipe.PlaceFields(ctx, fields, s.rs)
		if err != nil {
			return decideFailed(err)
		}
		return s.explain(e, f, x, &ev), nil
	}

	values, enc, cleanup, err := s.eventValues(data, event, format, f)
	defer cleanup()
	if err != nil {
		return exitUsage, err
	}
	fields, err := schemas.NewExtractor(s.xcfg)
	if err != nil {
		if s.cfg != nil {
			return exitUsage, config.FieldError("schemas", err)
		}
		return exitUsage, err
	}
	code, err := s.loadRules(ctx, f)
	if err != nil {
		return code, err
	}
	if err := s.pipeline(fields); err != nil {
		return exitFailure, err
	}
	worst := exitOK
	for i, v := range values {
		x := explanation{Event: event, Encoding: enc}
		if len(values) > 1 {
			x.Event = fmt.Sprintf("%s record %d", event, i+1)
		}
		ev, err := s.pipe.DecideOne(ctx, stream.Message{Topic: s.topic, Value: v}, s.rs)
		if err != nil {
			return decideFailed(err)
		}
		worst = max(worst, s.explain(e, f, x, &ev))
	}
	return worst, nil
}

// decideFailed is the exit code and error of a decision that could not be
// made: 3 when the schema registry or the pins store could not be reached.
func decideFailed(err error) (int, error) {
	if errors.Is(err, schemas.ErrRegistryUnavailable) || errors.Is(err, rules.ErrUnavailable) {
		return exitNotReady, err
	}
	return exitFailure, err
}

// setup reads the config (when given), applies the flags over it and says
// how events are read. Errors are usage or config errors.
func (f *explainFlags) setup() (*explainSetup, error) {
	s := &explainSetup{topic: "explain", maxBytes: router.DefaultMaxValueBytes}
	if f.cfgPath == "" {
		s.xcfg = schemas.ExtractorConfig{DefaultFraming: schemas.Framing(f.framing), Registry: schemas.RegistryConfig{URL: f.registry}}
		s.framing = s.xcfg.DefaultFraming
		s.source = f.rulesFile
		if f.redisAddr != "" {
			s.source = "redis " + f.redisAddr
		}
		return s, s.rawSchema(f)
	}
	cfg, err := config.Load(f.cfgPath, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	switch {
	case f.rulesFile != "":
		cfg.Rules.File = f.rulesFile
	case f.redisAddr != "":
		cfg.Rules.File, cfg.Redis.Addr = "", f.redisAddr
	}
	if f.set["prefix"] {
		cfg.Redis.Prefix = f.prefix
	}
	if f.set["registry"] {
		cfg.Schemas.Registry.URL = f.registry
	}
	if err := cfg.Finish(config.Scope{}); err != nil {
		return nil, err
	}
	s.cfg = cfg
	s.maxBytes = cmp.Or(cfg.Router.MaxValueBytes, router.DefaultMaxValueBytes)
	switch {
	case f.topic != "":
		if len(cfg.Router.IngestTopics) > 0 && !slices.Contains(cfg.Router.IngestTopics, f.topic) {
			return nil, usagef("--topic %q is not one of router.ingest_topics %v", f.topic, cfg.Router.IngestTopics)
		}
		s.topic = f.topic
	case len(cfg.Router.IngestTopics) > 0:
		s.topic = cfg.Router.IngestTopics[0]
	}
	s.xcfg = cfg.Schemas
	s.xcfg.Framings = maps.Clone(cfg.Schemas.Framings)
	s.xcfg.RawSchemas = maps.Clone(cfg.Schemas.RawSchemas)
	if s.xcfg.Framings == nil {
		s.xcfg.Framings = map[string]schemas.Framing{}
	}
	if s.xcfg.RawSchemas == nil {
		s.xcfg.RawSchemas = map[string]string{}
	}
	if f.set["framing"] {
		s.xcfg.Framings[s.topic] = schemas.Framing(f.framing)
	}
	s.framing = cmp.Or(s.xcfg.Framings[s.topic], cmp.Or(s.xcfg.DefaultFraming, schemas.FramingSingleObject))
	if cfg.Rules.File != "" {
		s.source = "rules.file " + cfg.Rules.File
	} else {
		s.source = "redis " + cfg.Redis.Addr
	}
	return s, s.rawSchema(f)
}

// rawSchema sets the writer schema of a raw topic from --schema, or the
// canonical schema when a raw topic has none (explain without --config).
func (s *explainSetup) rawSchema(f *explainFlags) error {
	if s.framing != schemas.FramingRaw {
		return nil
	}
	if s.xcfg.RawSchemas == nil {
		s.xcfg.RawSchemas = map[string]string{}
	}
	key := s.topic
	if s.cfg == nil {
		key = schemas.DefaultTopic // without a config every topic is read the same way
	}
	switch {
	case f.schema != "":
		s.xcfg.RawSchemas[key] = f.schema
	case s.xcfg.RawSchemas[s.topic] == "" && s.xcfg.RawSchemas[schemas.DefaultTopic] == "":
		s.xcfg.RawSchemas[key] = canonicalName()
	}
	return nil
}

// loadRules loads the ruleset (a file, or the current version in Redis with
// the pins) into s. On error it returns the exit code.
func (s *explainSetup) loadRules(ctx context.Context, f *explainFlags) (int, error) {
	file, rc := f.rulesFile, redis.Config{Addr: f.redisAddr, Prefix: f.prefix}
	pinsOn := true
	if s.cfg != nil {
		file, rc, pinsOn = s.cfg.Rules.File, s.cfg.Redis, s.cfg.PinsEnabled()
	}
	if file != "" {
		_, rs, err := readRuleset(file)
		if err != nil {
			if s.cfg != nil && f.rulesFile == "" {
				return exitUsage, &config.Error{File: s.cfg.File(), Problems: []config.Problem{{Field: "rules.file", Message: config.OneLine(err.Error())}}}
			}
			return exitUsage, usagef("--rules: %w", err)
		}
		s.rs = rs
		return exitOK, nil
	}
	// The same client as route's, sink's and replay's: address, ACL user,
	// password, database and TLS from the config.
	client, err := newRedis(rc, 5*time.Second)
	if err != nil {
		return exitUsage, err
	}
	s.close = append(s.close, func() { _ = client.Close() })
	store := redis.NewRules(client, rc.Prefix)
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := store.LatestVersion(rctx)
	if err == nil {
		s.rs, err = store.Load(rctx, v)
	}
	if err != nil {
		err = fmt.Errorf("ruleset from Redis %s: %w", rc.Addr, err)
		if errors.Is(err, rules.ErrUnavailable) {
			return exitNotReady, err
		}
		return exitFailure, err
	}
	if pinsOn {
		s.pins = pinsFunc(store.LookupPins)
	}
	return exitOK, nil
}

// pipeline builds the router's pipeline explain reads, pins and places
// events with (DecideOne, PlaceFields; it never publishes): with --config, over the config's clusters and
// topics; without, every cluster the ruleset names is writable.
func (s *explainSetup) pipeline(fields router.FieldReader) error {
	pc := router.PipelineConfig{Publishers: map[string]stream.Publisher{}, IngestCluster: "(ingest)",
		QuarantineTopic: config.DefaultQuarantineTopic, DeadLetterTopic: config.DefaultDeadLetterTopic,
		Fields: fields, Pins: s.pins, MaxValueBytes: s.maxBytes, Logger: slog.New(slog.DiscardHandler),
		// One attempt: a schema registry that does not answer is exit 3
		// at once, not after the router's retries.
		Retry: stream.Retry{Min: time.Millisecond, Max: time.Millisecond, Attempts: 1, Component: "explain"}}
	if s.cfg != nil && len(s.cfg.Kafka.Clusters) > 0 {
		for name := range s.cfg.Kafka.Clusters {
			pc.Publishers[name] = noPublisher{}
		}
		pc.IngestCluster, pc.Reserved = s.cfg.Kafka.IngestCluster, s.cfg.Router.IngestTopics
		pc.QuarantineTopic, pc.DeadLetterTopic = s.cfg.Router.QuarantineTopic, s.cfg.Router.DeadLetterTopic
	} else {
		for _, g := range s.rs.Regions {
			pc.Publishers[g.Cluster] = noPublisher{}
		}
	}
	pc.Publishers[pc.IngestCluster] = noPublisher{}
	var err error
	s.pipe, err = router.NewPipeline(pc)
	return err
}

// noPublisher stands for a cluster explain's pipeline may write to; it
// never publishes.
type noPublisher struct{}

func (noPublisher) Publish(context.Context, ...stream.Message) error {
	return errors.New("explain does not publish")
}
func (noPublisher) Close() error { return nil }

// noFields stands for the field reader when explain is given the routing
// fields themselves: nothing is read.
type noFields struct{}

func (noFields) Extract(context.Context, string, []byte) (schemas.Fields, error) {
	return schemas.Fields{}, errors.New("explain was given the routing fields")
}

// explain prints the explanation of one event's decision ev (made by the
// pipeline: DecideOne, or PlaceFields from the routing fields alone) and
// returns the exit code for it.
func (s *explainSetup) explain(e env, f *explainFlags, x explanation, ev *router.Event) int {
	x.RulesetVersion, x.RulesetSource, x.PinsChecked = s.rs.Version(), s.source, s.pins != nil
	if s.cfg != nil {
		x.IngestTopic = s.topic
	}
	d := ev.Decision
	if ev.Err != nil {
		x.Error = ev.Err.Error()
	} else {
		x.Pin = ev.Pin
		// Say so when the ruleset's region is one this router does not
		// write to (the pipeline quarantined it: no_rule).
		if r := router.Decide(ev.Fields, ev.Pin, s.rs); r.Outcome != d.Outcome {
			x.Note = joinNote(x.Note, fmt.Sprintf("the ruleset places it in region %s (topic %s on cluster %s), where this router does not write: %v",
				r.Region, r.Topic, r.Cluster, s.pipe.Allows(r.Cluster, r.Topic)))
		}
	}
	x.Decision, x.Jurisdiction, x.Region, x.Cluster, x.Topic, x.Reason = d.Outcome.String(), d.Jurisdiction, d.Region, d.Cluster, d.Topic, d.Reason
	if ev.Fields.HasCountry {
		x.Country = string(ev.Fields.Country)
	}
	if d.Jurisdiction != "" {
		x.DecidedBy = "country"
		if d.Pinned {
			x.DecidedBy = "pin"
		}
	}
	printExplanation(e.stdout, x, f.out.JSON())
	if d.Outcome != router.Routed {
		return exitFailure
	}
	return exitOK
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// pinsFunc is a router.PinLookup.
type pinsFunc func(ctx context.Context, ids [][]byte) ([]string, error)

func (f pinsFunc) Lookup(ctx context.Context, ids [][]byte) ([]string, error) { return f(ctx, ids) }

func printExplanation(w io.Writer, x explanation, asJSON bool) {
	if asJSON {
		_ = writeJSON(w, x) // one line per event
		return
	}
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%-14s %s\n", k+":", v)
		}
	}
	line("event", x.Event)
	line("encoding", x.Encoding)
	line("ingest topic", x.IngestTopic)
	line("decision", x.Decision)
	if x.Jurisdiction != "" {
		line("jurisdiction", fmt.Sprintf("%s (decided by %s)", x.Jurisdiction, x.DecidedBy))
	}
	line("country", x.Country)
	line("region", x.Region)
	if x.Topic != "" {
		line("pinned topic", fmt.Sprintf("%s on cluster %s", x.Topic, x.Cluster))
	}
	line("reason", x.Reason)
	line("error", x.Error)
	switch {
	case x.Error != "":
	case !x.PinsChecked:
		line("pin", "not looked up (a ruleset file has no pins, or rules.pins is false)")
	case x.Pin != "":
		line("pin", "the user is pinned to "+x.Pin)
	default:
		line("pin", "none")
	}
	line("ruleset", fmt.Sprintf("version %d (%s)", x.RulesetVersion, x.RulesetSource))
	line("note", x.Note)
	fmt.Fprintln(w)
}

func readEventFile(e env, path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(e.stdin)
	}
	return os.ReadFile(path)
}

func canonicalName() string { return schemas.SchemaName(schemas.UserEventSchema) }

// detectFormat guesses EVENT's format: JSON holding only the routing fields
// is "fields", other JSON "json", an Avro container file "container", and
// anything else one message "value".
func detectFormat(data []byte, path string, xcfg schemas.ExtractorConfig) string {
	trimmed := bytes.TrimSpace(data)
	switch {
	case strings.EqualFold(filepath.Ext(path), ".json") || (len(trimmed) > 0 && trimmed[0] == '{'):
		if paths := fieldPaths(xcfg); schemas.OnlyRoutingFields(data, paths[0], paths[1]) {
			return "fields"
		}
		return "json"
	case bytes.HasPrefix(data, []byte("Obj\x01")):
		return "container"
	default:
		return "value"
	}
}

// fieldPaths are the dotted paths of the routing fields (country, user id).
func fieldPaths(xcfg schemas.ExtractorConfig) []string {
	return []string{cmp.Or(xcfg.CountryField, schemas.DefaultCountryField), cmp.Or(xcfg.UserIDField, schemas.DefaultUserIDField)}
}

// eventValues turns EVENT (format json, value or container) into the
// message values to explain, as the ingest topic holds them, and says how.
// cleanup removes temporary files.
func (s *explainSetup) eventValues(data []byte, path, format string, f *explainFlags) (values [][]byte, describe string, cleanup func(), err error) {
	cleanup = func() {}
	bad := func(err error) ([][]byte, string, func(), error) {
		return nil, "", cleanup, usagef("%s: %w", path, err)
	}
	switch format {
	case "json":
		ref := f.schema
		if ref == "" && s.framing == schemas.FramingRaw {
			ref = cmp.Or(s.xcfg.RawSchemas[s.topic], s.xcfg.RawSchemas[schemas.DefaultTopic])
		}
		text, name := schemas.UserEventSchema, canonicalName()
		if ref != "" {
			if text, name, err = schemas.ResolveSchema(ref, s.xcfg.CatalogueDir); err != nil {
				return nil, "", cleanup, usagef("--schema: %w", err)
			}
		}
		hint := ""
		if f.format == "auto" {
			hint = fmt.Sprintf(" (for a quick answer from the routing fields alone, give only %s)", strings.Join(fieldPaths(s.xcfg), " and/or "))
		}
		body, err := schemas.EncodeJSON(text, data)
		if err != nil {
			return bad(fmt.Errorf("%w%s", err, hint))
		}
		switch s.framing {
		case schemas.FramingRaw:
			return [][]byte{body}, "JSON, encoded with " + name + " (raw, as topic " + s.topic + " is framed)", cleanup, nil
		case schemas.FramingConfluent:
			return bad(fmt.Errorf("topic %s uses the confluent framing, whose values carry a registry id: give the message value, or only the routing fields", s.topic))
		}
		fp, err := schemas.Fingerprint(text)
		if err != nil {
			return bad(err)
		}
		return [][]byte{schemas.AppendSingleObject(nil, fp, body)}, "JSON, encoded with " + name + " (single-object)", cleanup, nil
	case "value":
		return [][]byte{data}, "message value, " + string(s.framing) + " framing", cleanup, nil
	case "container":
		values, writer, err := schemas.ContainerBodies(data)
		if err != nil {
			return bad(err)
		}
		tmp, err := os.CreateTemp("", "residency-explain-*.avsc")
		if err != nil {
			return nil, "", cleanup, err
		}
		cleanup = func() { _ = os.Remove(tmp.Name()) }
		_, werr := tmp.WriteString(writer)
		if cerr := tmp.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, "", cleanup, werr
		}
		// Each record is read raw, with the file's own writer schema.
		s.framing = schemas.FramingRaw
		if s.xcfg.Framings == nil {
			s.xcfg.Framings = map[string]schemas.Framing{}
		}
		if s.xcfg.RawSchemas == nil {
			s.xcfg.RawSchemas = map[string]string{}
		}
		s.xcfg.Framings[s.topic], s.xcfg.RawSchemas[s.topic] = schemas.FramingRaw, tmp.Name()
		return values, "avro container file (its own writer schema)", cleanup, nil
	}
	return bad(fmt.Errorf("--format %q", format))
}
