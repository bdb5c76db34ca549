package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

const explainSynopsis = `explain EVENT [--config FILE [--topic T]] [--rules FILE | --redis ADDR] [flags]

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
	asJSON                                       bool
	set                                          map[string]bool // the flags given
}

// runExplain is `residency explain`.
func runExplain(ctx context.Context, e env) int {
	fs := newFlags(e, "explain", explainSynopsis)
	var f explainFlags
	fs.StringVar(&f.cfgPath, "config", "", "answer for the deployment of this config `file`: its schemas settings, rules and Redis")
	fs.StringVar(&f.topic, "topic", "", "with --config: the ingest `topic` whose framing and raw schema to read the event with (default: the first of router.ingest_topics)")
	fs.StringVar(&f.rulesFile, "rules", "", "ruleset `file` to decide with (overrides rules.file and Redis)")
	fs.StringVar(&f.redisAddr, "redis", "", "decide with the current ruleset (and pins) in the Redis at `host:port` (overrides redis.addr)")
	fs.StringVar(&f.prefix, "prefix", rules.DefaultPrefix, "Redis key prefix (overrides redis.prefix)")
	fs.StringVar(&f.framing, "framing", string(schemas.FramingSingleObject), "framing of a message value: single-object, confluent or raw (overrides the topic's framing)")
	fs.StringVar(&f.registry, "registry", "", "schema registry `URL` for the confluent framing (overrides schemas.registry.url)")
	fs.StringVar(&f.schema, "schema", "", "writer schema: a full name (embedded or catalogue schema) or an .avsc `file`; of a raw value, and of a whole JSON event (default: the topic's raw schema, else the canonical user event schema)")
	fs.StringVar(&f.format, "format", "auto", "EVENT's format: auto, fields (the routing fields as JSON), json, value or container")
	fs.BoolVar(&f.asJSON, "json", false, "print JSON")
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
	canWrite func(cluster, topic string) bool
	maxBytes int      // router.max_value_bytes
	close    []func() // what loadRules opened
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
		fields, err := routingFields(data, s.xcfg)
		if err != nil {
			return usage("%s: %v", event, err)
		}
		code, err := s.loadRules(ctx, f)
		if err != nil {
			return code, err
		}
		x := explanation{Event: event, Encoding: "JSON with the routing fields only (" + strings.Join(fieldPaths(s.xcfg), ", ") + ")",
			Partial: true, Note: partialNote}
		return s.explain(ctx, e, f, x, fields, nil)
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
	worst := exitOK
	for i, v := range values {
		x := explanation{Event: event, Encoding: enc}
		if len(values) > 1 {
			x.Event = fmt.Sprintf("%s record %d", event, i+1)
		}
		fl, derr := router.ReadFields(ctx, fields, &stream.Message{Topic: s.topic, Value: v}, s.maxBytes)
		if errors.Is(derr, schemas.ErrRegistryUnavailable) {
			return exitNotReady, derr
		}
		code, err := s.explain(ctx, e, f, x, fl, derr)
		if err != nil {
			return code, err
		}
		worst = max(worst, code)
	}
	return worst, nil
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
	// Where the router can write: a cluster of the config, and not an
	// ingest, quarantine or dead-letter topic of the ingest cluster.
	if len(cfg.Kafka.Clusters) > 0 {
		reserved := map[string]bool{cfg.Router.QuarantineTopic: true, cfg.Router.DeadLetterTopic: true}
		for _, tp := range cfg.Router.IngestTopics {
			reserved[tp] = true
		}
		s.canWrite = func(cluster, topic string) bool {
			_, ok := cfg.Kafka.Clusters[cluster]
			return ok && !(cluster == cfg.Kafka.IngestCluster && reserved[topic])
		}
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

// explain decides for one event's fields (or its decode error derr),
// prints the explanation and returns the exit code for it.
func (s *explainSetup) explain(ctx context.Context, e env, f *explainFlags, x explanation, fl schemas.Fields, derr error) (int, error) {
	x.RulesetVersion, x.RulesetSource, x.PinsChecked = s.rs.Version(), s.source, s.pins != nil
	if s.cfg != nil {
		x.IngestTopic = s.topic
	}
	var d router.Decision
	switch {
	case derr != nil:
		d = router.DeadLetter(derr)
		x.Error = derr.Error()
	default:
		pin := ""
		if s.pins != nil && len(fl.UserID) > 0 {
			got, err := s.pins.Lookup(ctx, [][]byte{fl.UserID})
			if err != nil {
				if errors.Is(err, rules.ErrUnavailable) {
					return exitNotReady, fmt.Errorf("pins: %w", err)
				}
				return exitFailure, fmt.Errorf("pins: %w", err)
			}
			pin = got[0]
		}
		x.Pin = pin
		d = router.Decide(fl, pin, s.rs)
		if s.canWrite != nil {
			if w := router.DecideWritable(fl, pin, s.rs, s.canWrite); w.Outcome != d.Outcome {
				why := fmt.Sprintf("cluster %s is not in kafka.clusters", d.Cluster)
				if _, ok := s.cfg.Kafka.Clusters[d.Cluster]; ok {
					why = fmt.Sprintf("%s is an ingest, quarantine or dead-letter topic of the ingest cluster", d.Topic)
				}
				x.Note = joinNote(x.Note, fmt.Sprintf("the ruleset places it in region %s (topic %s on cluster %s), where this router does not write: %s",
					d.Region, d.Topic, d.Cluster, why))
				d = w
			}
		}
	}
	x.Decision, x.Jurisdiction, x.Region, x.Cluster, x.Topic, x.Reason = d.Outcome.String(), d.Jurisdiction, d.Region, d.Cluster, d.Topic, d.Reason
	if fl.HasCountry {
		x.Country = string(fl.Country)
	}
	if d.Jurisdiction != "" {
		x.DecidedBy = "country"
		if d.Pinned {
			x.DecidedBy = "pin"
		}
	}
	printExplanation(e.stdout, x, f.asJSON)
	if d.Outcome != router.Routed {
		return exitFailure, nil
	}
	return exitOK, nil
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

type pinsFunc func(ctx context.Context, ids [][]byte) ([]string, error)

func (f pinsFunc) Lookup(ctx context.Context, ids [][]byte) ([]string, error) { return f(ctx, ids) }

func printExplanation(w io.Writer, x explanation, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(x)
		fmt.Fprintln(w, string(b))
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

func canonicalName() string {
	var s struct{ Name, Namespace string }
	_ = json.Unmarshal([]byte(schemas.UserEventSchema), &s)
	return s.Namespace + "." + s.Name
}

// detectFormat guesses EVENT's format: JSON holding only the routing fields
// is "fields", other JSON "json", an Avro container file "container", and
// anything else one message "value".
func detectFormat(data []byte, path string, xcfg schemas.ExtractorConfig) string {
	trimmed := bytes.TrimSpace(data)
	switch {
	case strings.EqualFold(filepath.Ext(path), ".json") || (len(trimmed) > 0 && trimmed[0] == '{'):
		if doc, ok := jsonObject(data); ok && onlyRoutingFields(doc, fieldSegs(xcfg)) {
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
	return []string{cmp.Or(xcfg.CountryField, "country"), cmp.Or(xcfg.UserIDField, "user_id")}
}

func fieldSegs(xcfg schemas.ExtractorConfig) [][]string {
	var out [][]string
	for _, p := range fieldPaths(xcfg) {
		out = append(out, strings.Split(p, "."))
	}
	return out
}

func jsonObject(data []byte) (map[string]any, bool) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil || doc == nil {
		return nil, false
	}
	return doc, true
}

// onlyRoutingFields reports whether doc holds at least one routing field
// and nothing else: every key lies on the path of one.
func onlyRoutingFields(doc map[string]any, paths [][]string) bool {
	if len(doc) == 0 {
		return false
	}
	for k, v := range doc {
		var rest [][]string
		terminal := false
		for _, p := range paths {
			if p[0] != k {
				continue
			}
			if len(p) == 1 {
				terminal = true
			} else {
				rest = append(rest, p[1:])
			}
		}
		switch sub, isObj := v.(map[string]any); {
		case terminal:
		case len(rest) > 0 && isObj && onlyRoutingFields(sub, rest):
		default:
			return false
		}
	}
	return true
}

// routingFields reads the routing fields of a JSON object: each a string
// (or Avro JSON's {"string": "US"}), null or absent.
func routingFields(data []byte, xcfg schemas.ExtractorConfig) (schemas.Fields, error) {
	doc, ok := jsonObject(data)
	if !ok {
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return schemas.Fields{}, fmt.Errorf("not JSON: %w", err)
		}
		return schemas.Fields{}, errors.New("want a JSON object with the routing fields, e.g. {\"country\": \"US\", \"user_id\": \"u-1\"}")
	}
	paths := fieldPaths(xcfg)
	country, hasCountry, err := jsonString(doc, paths[0])
	if err != nil {
		return schemas.Fields{}, err
	}
	user, hasUser, err := jsonString(doc, paths[1])
	if err != nil {
		return schemas.Fields{}, err
	}
	if !hasCountry && !hasUser {
		return schemas.Fields{}, fmt.Errorf("neither %s nor %s is set (the routing fields, from schemas.country_field and user_id_field)", paths[0], paths[1])
	}
	f := schemas.Fields{HasCountry: hasCountry}
	if hasCountry {
		f.Country = []byte(country)
	}
	if hasUser {
		f.UserID = []byte(user)
	}
	return f, nil
}

// jsonString reads the string at a dotted path of doc; ok is false when it
// is absent or null.
func jsonString(doc map[string]any, path string) (s string, ok bool, err error) {
	segs := strings.Split(path, ".")
	var v any = doc
	for i, seg := range segs {
		obj, isObj := v.(map[string]any)
		if !isObj {
			return "", false, fmt.Errorf("%s: %s is not an object", path, strings.Join(segs[:i], "."))
		}
		if v = obj[seg]; v == nil {
			return "", false, nil
		}
	}
	if u, isObj := v.(map[string]any); isObj && len(u) == 1 {
		for _, inner := range u { // Avro JSON: a union tagged with its branch
			v = inner
		}
	}
	switch v := v.(type) {
	case nil:
		return "", false, nil
	case string:
		return v, true, nil
	}
	return "", false, fmt.Errorf("%s: want a string or null, got %s", path, jsonKind(v))
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
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
			if text, name, err = resolveSchema(ref, s.xcfg.CatalogueDir); err != nil {
				return nil, "", cleanup, usagef("--schema: %w", err)
			}
		}
		codec, err := goavro.NewCodec(text)
		if err != nil {
			return bad(err)
		}
		hint := ""
		if f.format == "auto" {
			hint = fmt.Sprintf(" (for a quick answer from the routing fields alone, give only %s)", strings.Join(fieldPaths(s.xcfg), " and/or "))
		}
		native, err := jsonToNative(codec, data)
		if err != nil {
			return bad(fmt.Errorf("%w%s", err, hint))
		}
		body, err := codec.BinaryFromNative(nil, native)
		if err != nil {
			return bad(fmt.Errorf("the JSON does not fit the schema %s: %w%s", name, err, hint))
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
		ocf, err := goavro.NewOCFReader(bytes.NewReader(data))
		if err != nil {
			return bad(fmt.Errorf("avro container file: %w", err))
		}
		codec := ocf.Codec()
		for ocf.Scan() {
			native, err := ocf.Read()
			if err != nil {
				return bad(fmt.Errorf("avro container file: %w", err))
			}
			body, err := codec.BinaryFromNative(nil, native)
			if err != nil {
				return bad(fmt.Errorf("avro container file: %w", err))
			}
			values = append(values, body)
		}
		if err := ocf.Err(); err != nil {
			return bad(fmt.Errorf("avro container file: %w", err))
		}
		tmp, err := os.CreateTemp("", "residency-explain-*.avsc")
		if err != nil {
			return nil, "", cleanup, err
		}
		cleanup = func() { _ = os.Remove(tmp.Name()) }
		_, werr := tmp.WriteString(codec.Schema())
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

// resolveSchema reads a writer schema given as an .avsc file or by full
// name: an embedded schema, or one of the catalogue directory. A name
// several catalogue files share is refused (say which file).
func resolveSchema(ref, catalogueDir string) (text, name string, err error) {
	if st, err := os.Stat(ref); err == nil && !st.IsDir() {
		b, err := os.ReadFile(ref)
		if err != nil {
			return "", "", err
		}
		return string(b), schemaName(string(b)), nil
	}
	var found []string
	var texts []string
	for file, t := range schemas.Embedded() {
		if schemaName(t) == ref {
			found, texts = append(found, "embedded "+file), append(texts, t)
		}
	}
	if catalogueDir != "" {
		files, _ := filepath.Glob(filepath.Join(catalogueDir, "*.avsc"))
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err == nil && schemaName(string(b)) == ref {
				found, texts = append(found, file), append(texts, string(b))
			}
		}
	}
	switch {
	case len(found) == 1:
		return texts[0], ref, nil
	case len(found) > 1 && len(slices.Compact(slices.Sorted(slices.Values(texts)))) == 1:
		return texts[0], ref, nil // the same schema twice
	case len(found) > 1:
		slices.Sort(found)
		return "", "", fmt.Errorf("%q names %d different schemas (%s): give the .avsc file", ref, len(found), strings.Join(found, ", "))
	}
	return "", "", fmt.Errorf("%q is neither a readable .avsc file nor the full name of an embedded or catalogue schema", ref)
}

// schemaName is the full name of a named schema's JSON text, or "".
func schemaName(text string) string {
	var s struct{ Name, Namespace string }
	if json.Unmarshal([]byte(text), &s) != nil || s.Name == "" {
		return ""
	}
	if strings.Contains(s.Name, ".") || s.Namespace == "" {
		return s.Name
	}
	return s.Namespace + "." + s.Name
}

// jsonToNative reads an event in Avro JSON (unions tagged with their branch)
// or, failing that, plain JSON (unions untagged, timestamps as numbers).
func jsonToNative(codec *goavro.Codec, data []byte) (any, error) {
	native, _, avroErr := codec.NativeFromTextual(data)
	if avroErr == nil {
		return native, nil
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	var schema any
	if err := json.Unmarshal([]byte(codec.Schema()), &schema); err != nil {
		return nil, err
	}
	p := &plainJSON{named: map[string]any{}}
	native, err := p.convert(doc, schema, "")
	if err != nil {
		return nil, fmt.Errorf("the JSON fits the user event schema neither as Avro JSON (%v) nor as plain JSON (%w)", avroErr, err)
	}
	return native, nil
}

// plainJSON converts plain JSON to goavro's native form, guided by the
// schema.
type plainJSON struct {
	named map[string]any
}

func (p *plainJSON) convert(v, schema any, path string) (any, error) {
	switch s := schema.(type) {
	case string:
		if def, ok := p.named[s]; ok {
			return p.convert(v, def, path)
		}
		return primitive(v, s, path)
	case []any: // union
		if v == nil {
			return nil, nil
		}
		var errs []error
		for _, branch := range s {
			if branch == "null" {
				continue
			}
			c, err := p.convert(v, branch, path)
			if err == nil {
				return goavro.Union(typeName(branch), c), nil
			}
			errs = append(errs, err)
		}
		return nil, fmt.Errorf("%s: fits no branch of the union: %w", path, errors.Join(errs...))
	case map[string]any:
		t, _ := s["type"].(string)
		if name, ok := s["name"].(string); ok {
			p.named[name] = s
			if ns, ok := s["namespace"].(string); ok {
				p.named[ns+"."+name] = s
			}
		}
		switch t {
		case "record":
			obj, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: want an object", path)
			}
			out := map[string]any{}
			for _, f := range s["fields"].([]any) {
				fd := f.(map[string]any)
				name := fd["name"].(string)
				fv, present := obj[name]
				if !present {
					continue // goavro uses the field default, or reports it missing
				}
				c, err := p.convert(fv, fd["type"], path+"."+name)
				if err != nil {
					return nil, err
				}
				out[name] = c
			}
			return out, nil
		case "enum":
			if str, ok := v.(string); ok {
				return str, nil
			}
			return nil, fmt.Errorf("%s: want an enum symbol", path)
		case "array":
			arr, ok := v.([]any)
			if !ok {
				return nil, fmt.Errorf("%s: want an array", path)
			}
			out := make([]any, len(arr))
			for i, x := range arr {
				c, err := p.convert(x, s["items"], fmt.Sprintf("%s[%d]", path, i))
				if err != nil {
					return nil, err
				}
				out[i] = c
			}
			return out, nil
		case "map":
			obj, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: want an object", path)
			}
			out := map[string]any{}
			for k, x := range obj {
				c, err := p.convert(x, s["values"], path+"."+k)
				if err != nil {
					return nil, err
				}
				out[k] = c
			}
			return out, nil
		case "fixed":
			str, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("%s: want a string of bytes", path)
			}
			return []byte(str), nil
		default:
			if lt, _ := s["logicalType"].(string); lt == "timestamp-millis" || lt == "timestamp-micros" {
				if n, ok := v.(json.Number); ok {
					ms, err := n.Int64()
					if err != nil {
						return nil, fmt.Errorf("%s: %w", path, err)
					}
					if lt == "timestamp-micros" {
						return time.UnixMicro(ms).UTC(), nil
					}
					return time.UnixMilli(ms).UTC(), nil
				}
				if str, ok := v.(string); ok {
					return time.Parse(time.RFC3339Nano, str)
				}
			}
			return p.convert(v, t, path)
		}
	}
	return nil, fmt.Errorf("%s: unsupported schema", path)
}

func typeName(schema any) string {
	switch s := schema.(type) {
	case string:
		return s
	case map[string]any:
		if name, ok := s["name"].(string); ok {
			if ns, ok := s["namespace"].(string); ok {
				return ns + "." + name
			}
			return name
		}
		t, _ := s["type"].(string)
		return t
	}
	return ""
}

func primitive(v any, t, path string) (any, error) {
	bad := func() (any, error) { return nil, fmt.Errorf("%s: want %s, got %T", path, t, v) }
	switch t {
	case "null":
		if v == nil {
			return nil, nil
		}
		return bad()
	case "boolean":
		if b, ok := v.(bool); ok {
			return b, nil
		}
	case "string":
		if s, ok := v.(string); ok {
			return s, nil
		}
	case "bytes":
		if s, ok := v.(string); ok {
			return []byte(s), nil
		}
	case "int", "long":
		if n, ok := v.(json.Number); ok {
			i, err := n.Int64()
			if err != nil {
				return bad()
			}
			if t == "int" {
				return int32(i), nil
			}
			return i, nil
		}
	case "float", "double":
		if n, ok := v.(json.Number); ok {
			f, err := n.Float64()
			if err != nil {
				return bad()
			}
			if t == "float" {
				return float32(f), nil
			}
			return f, nil
		}
	}
	return bad()
}
