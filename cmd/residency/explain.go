package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/linkedin/goavro/v2"
	"github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

const explainSynopsis = `explain EVENT (--rules FILE | --redis ADDR) [flags]

Say where the router would send an event, and why. EVENT is a file (or -
for stdin) holding either the event as JSON (encoded here with the
canonical user event schema; plain JSON or Avro JSON), one Kafka message
value (framed as --framing says), or an Avro object container file (each
record is explained).
Exit codes: 0 routable, 1 quarantined or dead-lettered, 2 usage,
3 Redis unavailable.`

// explanation is what explain prints for one event.
type explanation struct {
	Event          string `json:"event"`
	Encoding       string `json:"encoding"`
	Decision       string `json:"decision"`
	Jurisdiction   string `json:"jurisdiction,omitempty"`
	DecidedBy      string `json:"decided_by,omitempty"`
	Country        string `json:"country,omitempty"`
	Region         string `json:"region,omitempty"`
	Cluster        string `json:"cluster,omitempty"`
	Topic          string `json:"topic,omitempty"`
	Reason         string `json:"reason,omitempty"`
	Error          string `json:"error,omitempty"`
	RulesetVersion int64  `json:"ruleset_version"`
	RulesetSource  string `json:"ruleset_source"`
}

// runExplain is `residency explain`.
func runExplain(ctx context.Context, e env) int {
	fs := newFlags(e, "explain", explainSynopsis)
	rulesFile := fs.String("rules", "", "ruleset `file` to decide with")
	redisAddr := fs.String("redis", "", "decide with the current ruleset (and pins) in the Redis at `host:port`")
	prefix := fs.String("prefix", rules.DefaultPrefix, "Redis key prefix")
	framing := fs.String("framing", string(schemas.FramingSingleObject), "framing of a message value: single-object, confluent or raw")
	registry := fs.String("registry", "", "schema registry `URL` (confluent framing)")
	schema := fs.String("schema", "", "writer schema of a raw value: a full name or an .avsc `file` (default the canonical user event schema)")
	format := fs.String("format", "auto", "EVENT's format: auto, json, value or container")
	asJSON := fs.Bool("json", false, "print JSON")
	args, code, ok := parseInterleaved(fs, e.args)
	if !ok {
		return code
	}
	if len(args) != 1 || (*rulesFile == "") == (*redisAddr == "") {
		fmt.Fprintln(e.stderr, "residency explain: need one EVENT and exactly one of --rules or --redis")
		fs.Usage()
		return exitUsage
	}
	data, err := readEventFile(e, args[0])
	if err != nil {
		return fail(e, "explain", fmt.Errorf("%w: %w", errUsage, err))
	}
	values, encoding, err := eventValues(data, args[0], *format, schemas.Framing(*framing))
	if err != nil {
		return fail(e, "explain", fmt.Errorf("%w: %w", errUsage, err))
	}
	xcfg := schemas.ExtractorConfig{DefaultFraming: schemas.Framing(*framing), Registry: schemas.RegistryConfig{URL: *registry}}
	if encoding.framing != "" {
		xcfg.DefaultFraming = encoding.framing
	}
	if xcfg.DefaultFraming == schemas.FramingRaw {
		ref := *schema
		if encoding.schemaFile != "" {
			ref = encoding.schemaFile
			defer os.Remove(encoding.schemaFile)
		}
		if ref == "" {
			ref = canonicalName()
		}
		xcfg.RawSchemas = map[string]string{schemas.DefaultTopic: ref}
	}
	fields, err := schemas.NewExtractor(xcfg)
	if err != nil {
		return fail(e, "explain", fmt.Errorf("%w: %w", errUsage, err))
	}

	var rs *rules.Ruleset
	var pins router.PinLookup
	source := *rulesFile
	if *rulesFile != "" {
		if _, rs, err = readRuleset(*rulesFile); err != nil {
			return fail(e, "explain", fmt.Errorf("%w: --rules: %w", errUsage, err))
		}
	} else {
		redis.SetLogger(quietLogger{})
		client := redis.NewClient(&redis.Options{Addr: *redisAddr, DialTimeout: 3 * time.Second, MaxRetries: 1})
		defer client.Close()
		store := rules.NewRedisStore(client, *prefix)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		v, err := store.LatestVersion(rctx)
		if err == nil {
			rs, err = store.Load(rctx, v)
		}
		if err != nil {
			fmt.Fprintf(e.stderr, "residency explain: ruleset from Redis %s: %v\n", *redisAddr, err)
			if errors.Is(err, rules.ErrUnavailable) {
				return exitNotReady
			}
			return exitFailure
		}
		pins = pinsFunc(store.LookupPins)
		source = "redis " + *redisAddr
	}

	worst := exitOK
	for i, v := range values {
		x := explanation{Event: args[0], Encoding: encoding.describe, RulesetVersion: rs.Version(), RulesetSource: source}
		if len(values) > 1 {
			x.Event = fmt.Sprintf("%s record %d", args[0], i+1)
		}
		d, f, derr := explainOne(ctx, fields, pins, rs, v)
		if errors.Is(derr, schemas.ErrRegistryUnavailable) || errors.Is(derr, rules.ErrUnavailable) {
			fmt.Fprintf(e.stderr, "residency explain: %v\n", derr)
			return exitNotReady
		}
		x.Decision, x.Jurisdiction, x.Region, x.Cluster, x.Topic, x.Reason = d.Outcome.String(), d.Jurisdiction, d.Region, d.Cluster, d.Topic, d.Reason
		if f.HasCountry {
			x.Country = string(f.Country)
		}
		if d.Jurisdiction != "" {
			x.DecidedBy = "country"
			if d.Pinned {
				x.DecidedBy = "pin"
			}
		}
		if derr != nil {
			x.Error = derr.Error()
		}
		printExplanation(e.stdout, x, *asJSON)
		if d.Outcome != router.Routed {
			worst = exitFailure
		}
	}
	return worst
}

type pinsFunc func(ctx context.Context, ids [][]byte) ([]string, error)

func (f pinsFunc) Lookup(ctx context.Context, ids [][]byte) ([]string, error) { return f(ctx, ids) }

func explainOne(ctx context.Context, fields router.FieldReader, pins router.PinLookup, rs *rules.Ruleset, v []byte) (router.Decision, schemas.Fields, error) {
	if len(v) == 0 {
		err := fmt.Errorf("explain: %w", schemas.ErrEmptyValue)
		return router.DeadLetter(err), schemas.Fields{}, err
	}
	f, err := fields.Extract(ctx, "explain", v)
	if err != nil {
		if errors.Is(err, schemas.ErrRegistryUnavailable) {
			return router.Decision{}, f, err
		}
		return router.DeadLetter(err), f, err
	}
	pin := ""
	if pins != nil && len(f.UserID) > 0 {
		got, err := pins.Lookup(ctx, [][]byte{f.UserID})
		if err != nil {
			return router.Decision{}, f, err
		}
		pin = got[0]
	}
	return router.Decide(f, pin, rs), f, nil
}

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
	line("ruleset", fmt.Sprintf("version %d (%s)", x.RulesetVersion, x.RulesetSource))
	fmt.Fprintln(w)
}

func readEventFile(e env, path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(e.stdin)
	}
	return os.ReadFile(path)
}

// encodingInfo says how explain turned EVENT into message values.
type encodingInfo struct {
	describe   string
	framing    schemas.Framing // overrides --framing when set
	schemaFile string          // a temporary .avsc for container files
}

func canonicalName() string {
	var s struct{ Name, Namespace string }
	_ = json.Unmarshal([]byte(schemas.UserEventSchema), &s)
	return s.Namespace + "." + s.Name
}

// eventValues turns EVENT into the message values to explain.
func eventValues(data []byte, path, format string, framing schemas.Framing) ([][]byte, encodingInfo, error) {
	if format == "auto" {
		trimmed := bytes.TrimSpace(data)
		switch {
		case strings.EqualFold(filepath.Ext(path), ".json") || (len(trimmed) > 0 && trimmed[0] == '{'):
			format = "json"
		case bytes.HasPrefix(data, []byte("Obj\x01")):
			format = "container"
		default:
			format = "value"
		}
	}
	switch format {
	case "json":
		codec, err := goavro.NewCodec(schemas.UserEventSchema)
		if err != nil {
			return nil, encodingInfo{}, err
		}
		native, err := jsonToNative(codec, data)
		if err != nil {
			return nil, encodingInfo{}, err
		}
		body, err := codec.BinaryFromNative(nil, native)
		if err != nil {
			return nil, encodingInfo{}, fmt.Errorf("the JSON does not fit the user event schema: %w", err)
		}
		fp, err := schemas.Fingerprint(schemas.UserEventSchema)
		if err != nil {
			return nil, encodingInfo{}, err
		}
		return [][]byte{schemas.AppendSingleObject(nil, fp, body)},
			encodingInfo{describe: "JSON, encoded with " + canonicalName() + " (single-object)", framing: schemas.FramingSingleObject}, nil
	case "value":
		return [][]byte{data}, encodingInfo{describe: "message value, " + string(framing) + " framing"}, nil
	case "container":
		ocf, err := goavro.NewOCFReader(bytes.NewReader(data))
		if err != nil {
			return nil, encodingInfo{}, fmt.Errorf("avro container file: %w", err)
		}
		codec := ocf.Codec()
		var values [][]byte
		for ocf.Scan() {
			native, err := ocf.Read()
			if err != nil {
				return nil, encodingInfo{}, fmt.Errorf("avro container file: %w", err)
			}
			body, err := codec.BinaryFromNative(nil, native)
			if err != nil {
				return nil, encodingInfo{}, fmt.Errorf("avro container file: %w", err)
			}
			values = append(values, body)
		}
		if err := ocf.Err(); err != nil {
			return nil, encodingInfo{}, fmt.Errorf("avro container file: %w", err)
		}
		f, err := os.CreateTemp("", "residency-explain-*.avsc")
		if err != nil {
			return nil, encodingInfo{}, err
		}
		_, werr := f.WriteString(codec.Schema())
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, encodingInfo{}, werr
		}
		return values, encodingInfo{describe: "avro container file (its own writer schema)", framing: schemas.FramingRaw, schemaFile: f.Name()}, nil
	default:
		return nil, encodingInfo{}, fmt.Errorf("--format %q is not auto, json, value or container", format)
	}
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
