package schemas

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/linkedin/goavro/v2"
)

// DefaultTopic is the key of ExtractorConfig.RawSchemas that applies to every
// raw-framed topic without its own entry.
const DefaultTopic = "*"

// ExtractorConfig configures an Extractor. The zero value is valid: every
// topic is read as single-object encoding of the embedded schemas.
type ExtractorConfig struct {
	// CountryField is the dotted path of the country field in the event
	// record, e.g. "country" or "geo.country". It must be a string, an enum
	// or a union of null with one of them. Default: "country".
	CountryField string `yaml:"country_field"`
	// UserIDField is the dotted path of the user id field, read for pins.
	// Same type rules as CountryField. Default: "user_id".
	UserIDField string `yaml:"user_id_field"`
	// DefaultFraming is the framing of topics not listed in Framings.
	// Default: FramingSingleObject.
	DefaultFraming Framing `yaml:"default_framing"`
	// Framings gives the framing of individual topics. Default: empty.
	Framings map[string]Framing `yaml:"framings"`
	// RawSchemas gives the writer schema of each topic in the raw framing,
	// exactly one schema per topic: the path of an .avsc file, or a
	// catalogue or embedded schema named by its full name and fingerprint
	// ("io.residency.events.UserEvent@0123456789abcdef", the fingerprint
	// as `residency schemas fingerprint` prints it), or by its full name
	// alone when exactly one catalogue or embedded schema has that name (a
	// name that several versions carry is a config error). The key
	// DefaultTopic ("*") applies to raw topics without their own entry.
	// Default: empty (a raw topic without a schema is a config error).
	RawSchemas map[string]string `yaml:"raw_schemas"`
	// MaxValueSize is the largest value, in bytes, that is read; larger
	// values fail with ErrTooLarge. Default: 1 MiB (1048576).
	MaxValueSize int `yaml:"max_value_size"`
	// Registry is the schema registry of the confluent framing. Default:
	// none (URL empty).
	Registry RegistryConfig `yaml:"registry"`
	// CatalogueDir is a directory of .avsc files: writer schemas of the
	// single-object framing, keyed by fingerprint (files with the same
	// fingerprint are the same schema; several versions of one full name
	// are several entries), and names for RawSchemas. The embedded schemas
	// are always known as well. Default: empty, embedded schemas only.
	CatalogueDir string `yaml:"catalogue_dir"`
}

// Defaults of ExtractorConfig.
const (
	// DefaultCountryField is the default of ExtractorConfig.CountryField.
	DefaultCountryField = "country"
	// DefaultUserIDField is the default of ExtractorConfig.UserIDField.
	DefaultUserIDField = "user_id"
	// DefaultMaxValueSize is the default of ExtractorConfig.MaxValueSize.
	DefaultMaxValueSize = 1 << 20
)

// writer is one known writer schema, parsed and compiled.
type writer struct {
	text    string
	source  string // where it came from, for messages: "embedded user_event.avsc", a file path
	fp      uint64 // the fingerprint of its Parsing Canonical Form
	root    *node
	plan    *prog // validates a whole record and captures the jurisdiction fields
	planErr error // the jurisdiction fields have an unreadable type
	walk    *prog // validates a whole record before goavro decodes it
	codec   *goavro.Codec
	std     *goavro.Codec // renders standard (plain) JSON
}

// schemaSource fetches writer schemas by registry id. *Registry implements it.
type schemaSource interface {
	SchemaByID(ctx context.Context, id uint32) (string, error)
}

// Extractor reads the jurisdiction fields (and, for sinks, the whole record)
// of encoded events. It is safe for concurrent use.
type Extractor struct {
	paths      []fieldPath
	maxSize    int
	defFraming Framing
	framings   map[string]Framing
	raw        map[string]*writer   // by topic; DefaultTopic for the rest
	byFP       map[uint64]*writer   // catalogue, embedded and raw files, by fingerprint (see register)
	byName     map[string][]*writer // catalogue and embedded, by full name: one per fingerprint, in load order
	registry   schemaSource         // nil without a registry
	// fps and fpWriters are byFP as two lists, when it has at most
	// maxListedFPs entries (the embedded schemas alone have two): a scan
	// of a few keys is cheaper than a map lookup, for every event.
	fps       []uint64
	fpWriters []*writer

	mu   sync.RWMutex
	byID map[uint32]*writer // confluent: schemas fetched from the registry
}

// NewExtractor validates cfg (errors name the offending field), loads the
// catalogue and raw schemas and returns an Extractor.
func NewExtractor(cfg ExtractorConfig) (*Extractor, error) {
	cfg.CountryField = cmp.Or(cfg.CountryField, DefaultCountryField)
	cfg.UserIDField = cmp.Or(cfg.UserIDField, DefaultUserIDField)
	cfg.DefaultFraming = cmp.Or(cfg.DefaultFraming, FramingSingleObject)
	cfg.MaxValueSize = cmp.Or(cfg.MaxValueSize, DefaultMaxValueSize)
	country, err := splitPath(cfg.CountryField)
	if err != nil {
		return nil, fmt.Errorf("country_field: %w", err)
	}
	user, err := splitPath(cfg.UserIDField)
	if err != nil {
		return nil, fmt.Errorf("user_id_field: %w", err)
	}
	if cfg.CountryField == cfg.UserIDField {
		return nil, fmt.Errorf("user_id_field: %q is also the country_field", cfg.UserIDField)
	}
	if cfg.MaxValueSize < 0 {
		return nil, fmt.Errorf("max_value_size: %d is negative", cfg.MaxValueSize)
	}
	if !cfg.DefaultFraming.valid() {
		return nil, fmt.Errorf("default_framing: %q is not one of confluent, single-object, raw", cfg.DefaultFraming)
	}
	e := &Extractor{
		paths:      []fieldPath{{segs: country, slot: slotCountry}, {segs: user, slot: slotUserID}},
		maxSize:    cfg.MaxValueSize,
		defFraming: cfg.DefaultFraming,
		framings:   map[string]Framing{},
		raw:        map[string]*writer{},
		byFP:       map[uint64]*writer{},
		byName:     map[string][]*writer{},
		byID:       map[uint32]*writer{},
	}
	usesConfluent := cfg.DefaultFraming == FramingConfluent
	for _, topic := range sortedKeys(cfg.Framings) {
		f := cfg.Framings[topic]
		if !f.valid() {
			return nil, fmt.Errorf("framings[%q]: %q is not one of confluent, single-object, raw", topic, f)
		}
		if f == FramingRaw && cfg.RawSchemas[topic] == "" && cfg.RawSchemas[DefaultTopic] == "" {
			return nil, fmt.Errorf("raw_schemas[%q]: topic %s is raw-framed but has no schema", topic, topic)
		}
		usesConfluent = usesConfluent || f == FramingConfluent
		e.framings[topic] = f
	}
	if cfg.DefaultFraming == FramingRaw && cfg.RawSchemas[DefaultTopic] == "" {
		return nil, fmt.Errorf("raw_schemas[%q]: default_framing is raw, so a default schema is needed", DefaultTopic)
	}
	if cfg.Registry.URL != "" {
		r, err := NewRegistry(cfg.Registry, nil)
		if err != nil {
			return nil, err
		}
		e.registry = r
	} else if usesConfluent {
		return nil, errors.New("registry.url: the confluent framing is configured but no schema registry is")
	}

	embedded := Embedded()
	for _, name := range sortedKeys(embedded) {
		if err := e.addKnown(embedded[name], "embedded "+name); err != nil {
			return nil, fmt.Errorf("embedded schema %s: %w", name, err)
		}
	}
	if cfg.CatalogueDir != "" {
		if err := e.loadCatalogue(cfg.CatalogueDir); err != nil {
			return nil, err
		}
	}
	for _, topic := range sortedKeys(cfg.RawSchemas) {
		ref := cfg.RawSchemas[topic]
		w, err := e.resolveRaw(ref)
		if err != nil {
			return nil, fmt.Errorf("raw_schemas[%q]: %w", topic, err)
		}
		e.raw[topic] = w
	}
	if len(e.byFP) <= maxListedFPs {
		for fp, w := range e.byFP {
			e.fps, e.fpWriters = append(e.fps, fp), append(e.fpWriters, w)
		}
	}
	return e, nil
}

// maxListedFPs bounds the fingerprints an Extractor keeps in lists besides
// its map (see Extractor.fps).
const maxListedFPs = 8

// byFingerprint returns the writer of a single-object fingerprint (see
// register), and whether there is one.
func (e *Extractor) byFingerprint(fp uint64) (*writer, bool) {
	if e.fps == nil {
		w, ok := e.byFP[fp]
		return w, ok
	}
	for i, f := range e.fps {
		if f == fp {
			return e.fpWriters[i], true
		}
	}
	return nil, false
}

// loadCatalogue adds every .avsc file of dir.
func (e *Extractor) loadCatalogue(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.avsc"))
	if err != nil {
		return fmt.Errorf("catalogue_dir: %w", err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("catalogue_dir: %q is not a readable directory", dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("catalogue_dir: %w", err)
		}
		if err := e.addKnown(string(b), f); err != nil {
			return fmt.Errorf("catalogue_dir: %s: %w", f, err)
		}
	}
	return nil
}

// addKnown adds a catalogue or embedded schema: known by its fingerprints
// (see register) for the single-object framing, and by its full name for
// RawSchemas. A file with the fingerprint of a schema already known is the
// same schema and adds nothing.
func (e *Extractor) addKnown(text, source string) error {
	w, err := e.newWriter(text, source)
	if err != nil {
		return err
	}
	if w.planErr != nil {
		return w.planErr
	}
	known, err := e.register(w)
	if err != nil {
		return err
	}
	if known == w && w.root.name != "" {
		e.byName[w.root.name] = append(e.byName[w.root.name], w)
	}
	return nil
}

// register makes w known by its fingerprint and, for goavro's producers, by
// goavro's fingerprint of it (which differs for schemas with logical types,
// see Fingerprint), and returns the writer now known by w's fingerprint: w,
// or the schema registered before with the same fingerprint (the same
// schema: same Parsing Canonical Form). No key ever names two schemas: a
// fingerprint that is already goavro's fingerprint of another schema, or
// the reverse, is an error.
func (e *Extractor) register(w *writer) (*writer, error) {
	if prev, ok := e.byFP[w.fp]; ok {
		if prev.fp != w.fp {
			return nil, fmt.Errorf("%w: fingerprint %016x of %s is goavro's fingerprint of %s (%016x); rename one of them",
				ErrBadSchema, w.fp, w.source, prev.source, prev.fp)
		}
		return prev, nil
	}
	if g := w.codec.Rabin; g != w.fp {
		if prev, ok := e.byFP[g]; ok {
			return nil, fmt.Errorf("%w: goavro's fingerprint %016x of %s is the fingerprint of %s; rename one of them",
				ErrBadSchema, g, w.source, prev.source)
		}
		e.byFP[g] = w
	}
	e.byFP[w.fp] = w
	return w, nil
}

// resolveRaw finds the one schema a raw_schemas entry names: NAME@FINGERPRINT
// (a catalogue or embedded schema), a full name that exactly one catalogue
// or embedded schema has, or the path of an .avsc file.
func (e *Extractor) resolveRaw(ref string) (*writer, error) {
	if name, fpText, ok := strings.Cut(ref, "@"); ok && validFullName(name) {
		if _, err := os.Stat(ref); err != nil { // not a file whose name has an @
			return e.resolveNameFingerprint(name, fpText)
		}
	}
	if ws := e.byName[ref]; len(ws) == 1 {
		return ws[0], nil
	} else if len(ws) > 1 {
		var fps []string
		for _, w := range ws {
			fps = append(fps, fmt.Sprintf("%016x from %s", w.fp, w.source))
		}
		return nil, fmt.Errorf("name %s matches %d schemas (fingerprints %s): name one with NAME@FINGERPRINT or a file path",
			ref, len(ws), strings.Join(fps, ", "))
	}
	b, err := os.ReadFile(ref)
	if err != nil {
		return nil, fmt.Errorf("%q is neither a known schema name nor a readable .avsc file: %w", ref, err)
	}
	w, err := e.newWriter(string(b), ref)
	if err != nil {
		return nil, err
	}
	if w.planErr != nil {
		return nil, w.planErr
	}
	// Sinks read raw events by the fingerprint in their residency-schema
	// header (see WriterRef), so the file is known by it too; a catalogue
	// or embedded schema with that fingerprint is the same schema.
	return e.register(w)
}

// resolveNameFingerprint finds the catalogue or embedded schema named
// name whose fingerprint is fpText (16 hex digits).
func (e *Extractor) resolveNameFingerprint(name, fpText string) (*writer, error) {
	fp, err := strconv.ParseUint(fpText, 16, 64)
	if len(fpText) != 16 || err != nil {
		return nil, fmt.Errorf("%s@%s: the fingerprint after @ must be 16 hex digits, as `residency schemas fingerprint` prints it", name, fpText)
	}
	var fps []string
	for _, w := range e.byName[name] {
		// goavro's fingerprint of the schema names it too (see register).
		if w.fp == fp || w.codec.Rabin == fp {
			return w, nil
		}
		fps = append(fps, fmt.Sprintf("%016x", w.fp))
	}
	for _, ws := range e.byName {
		for _, w := range ws {
			if w.fp == fp || w.codec.Rabin == fp {
				return nil, fmt.Errorf("%s@%s: fingerprint %016x is %s, not %s", name, fpText, fp, w.root.name, name)
			}
		}
	}
	known := "none has that name"
	if len(fps) > 0 {
		known = "those named " + name + " have " + strings.Join(fps, ", ")
	}
	return nil, fmt.Errorf("%s@%s: no embedded or catalogue schema has fingerprint %016x (%s)", name, fpText, fp, known)
}

// validFullName reports whether s is an Avro full name: names joined by dots.
func validFullName(s string) bool {
	if s == "" {
		return false
	}
	for _, seg := range strings.Split(s, ".") {
		if !validName(seg) {
			return false
		}
	}
	return true
}

// newWriter parses and compiles a writer schema. A schema whose jurisdiction
// fields cannot be read is returned with planErr set.
func (e *Extractor) newWriter(text, source string) (*writer, error) {
	root, err := parseSchema(text)
	if err != nil {
		return nil, err
	}
	codec, err := goavro.NewCodec(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSchema, err)
	}
	std, err := goavro.NewCodecForStandardJSONFull(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSchema, err)
	}
	w := &writer{text: text, source: source, fp: rabin(canonicalForm(root)), root: root, codec: codec, std: std, walk: compileWalk(root)}
	w.plan, w.planErr = compilePlan(root, e.paths)
	return w, nil
}

// Framing returns the framing the extractor expects on topic.
func (e *Extractor) Framing(topic string) Framing {
	if len(e.framings) == 0 { // the common case: no lookup
		return e.defFraming
	}
	if f, ok := e.framings[topic]; ok {
		return f
	}
	return e.defFraming
}

// writerFor checks the value, removes its framing and finds its writer
// schema. It sets *ref to how it was read, as far as known (see
// WriterRef), even with an error once the framing was read; *ref must be
// the zero WriterRef on entry. (ref is an argument, not a result, so that
// the results fit in registers: Extract runs for every event.)
func (e *Extractor) writerFor(ctx context.Context, topic string, value []byte, ref *WriterRef) (w *writer, body []byte, err error) {
	if len(value) == 0 {
		return nil, nil, ErrEmptyValue
	}
	if len(value) > e.maxSize {
		return nil, nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(value), e.maxSize)
	}
	f := e.Framing(topic)
	u, err := unframe(f, value)
	if err != nil {
		return nil, nil, err
	}
	ref.Framing = f
	switch f {
	case FramingSingleObject:
		ref.Fingerprint = u.fingerprint
		w, ok := e.byFingerprint(u.fingerprint)
		if !ok {
			return nil, nil, fmt.Errorf("%w: fingerprint %016x is neither embedded nor in the catalogue", ErrUnknownSchema, u.fingerprint)
		}
		ref.Fingerprint = w.fp // the specification's, also for goavro's
		return w, u.body, nil
	case FramingRaw:
		w, ok := e.raw[topic]
		if !ok {
			if w, ok = e.raw[DefaultTopic]; !ok {
				return nil, nil, fmt.Errorf("%w: raw topic %s has no configured schema", ErrUnknownSchema, topic)
			}
		}
		ref.Fingerprint = w.fp
		return w, u.body, nil
	default:
		ref.ID = u.id
		w, err := e.byRegistryID(ctx, u.id)
		return w, u.body, err
	}
}

// byRegistryID returns the writer of a confluent schema id, fetching and
// compiling it on first use.
func (e *Extractor) byRegistryID(ctx context.Context, id uint32) (*writer, error) {
	e.mu.RLock()
	w, ok := e.byID[id]
	e.mu.RUnlock()
	if ok {
		return w, nil
	}
	if e.registry == nil {
		// Reached through a WriterRef (a sink reading by the residency-schema
		// header) when no topic is confluent-framed.
		return nil, fmt.Errorf("%w: registry schema id %d: no schema registry is configured", ErrUnknownSchema, id)
	}
	text, err := e.registry.SchemaByID(ctx, id)
	if err != nil {
		return nil, err
	}
	w, err = e.newWriter(text, fmt.Sprintf("registry schema id %d", id))
	if err != nil {
		return nil, fmt.Errorf("%w: registry schema id %d: %w", ErrUnknownSchema, id, err)
	}
	e.mu.Lock()
	if prev, ok := e.byID[id]; ok {
		w = prev
	} else {
		e.byID[id] = w
	}
	e.mu.Unlock()
	return w, nil
}

// Extract reads the jurisdiction fields of one event value from topic,
// skipping everything else. The returned slices alias value (or, for an enum
// field, the schema's symbol): treat them as read-only. Errors wrap the
// sentinels of this package: ErrRegistryUnavailable is transient (retry),
// the others mean the event cannot be read (dead-letter it).
//
// Fields.Writer says how the value was read. On error it is set as far as
// the value was read, so that a dead-lettered event's headers can say it:
// zero before the framing was read (empty_value, too_large, bad_magic, a
// cut framing header), the framing and the schema key the value carries
// once it was (a fingerprint or registry id even when it is unknown; the
// framing alone for a raw topic without a schema), the whole WriterRef
// once the writer schema was found (truncated, trailing_bytes, corrupt).
func (e *Extractor) Extract(ctx context.Context, topic string, value []byte) (f Fields, err error) {
	w, body, err := e.writerFor(ctx, topic, value, &f.Writer)
	if err != nil {
		return f, err
	}
	err = w.extract(body, &f)
	return f, err
}

// extract reads the jurisdiction fields of body, written with w, into f.
// On error it leaves f as it is.
func (w *writer) extract(body []byte, f *Fields) error {
	if w.planErr != nil {
		return w.planErr
	}
	var c captures
	end, err := w.plan.run(body, 0, &c, 0)
	if err != nil {
		return err
	}
	if end != len(body) {
		return trailingError(len(body) - end)
	}
	f.Country, f.HasCountry, f.UserID = c[slotCountry].v, c[slotCountry].ok, c[slotUserID].v
	return nil
}

// Decode fully decodes one event value from topic with goavro, for sinks.
// native is goavro's native form (map[string]any records, unions as
// map[string]any{"type": value}, timestamp-millis as time.Time);
// writerSchema is the schema it was written with. Trailing bytes after the
// record are an error (ErrTrailingBytes).
func (e *Extractor) Decode(ctx context.Context, topic string, value []byte) (native any, writerSchema string, err error) {
	w, body, err := e.writerFor(ctx, topic, value, new(WriterRef))
	if err != nil {
		return nil, "", err
	}
	return w.decode(body)
}

// decode fully decodes body, written with w.
func (w *writer) decode(body []byte) (native any, writerSchema string, err error) {
	if err := w.check(body); err != nil {
		return nil, "", err
	}
	native, rest, err := w.codec.NativeFromBinary(body)
	if err != nil {
		return nil, "", decodeError(err)
	}
	if len(rest) > 0 {
		return nil, "", trailingError(len(rest))
	}
	return native, w.text, nil
}

// DecodeJSON fully decodes one event value from topic and renders it as
// plain JSON (unions unwrapped, timestamps as numbers, bytes as JSON strings
// of code points 0-255), for sinks that store documents. Errors are those of
// Decode.
func (e *Extractor) DecodeJSON(ctx context.Context, topic string, value []byte) (doc []byte, writerSchema string, err error) {
	w, body, err := e.writerFor(ctx, topic, value, new(WriterRef))
	if err != nil {
		return nil, "", err
	}
	if err := w.check(body); err != nil {
		return nil, "", err
	}
	native, rest, err := w.std.NativeFromBinary(body)
	if err != nil {
		return nil, "", decodeError(err)
	}
	if len(rest) > 0 {
		return nil, "", trailingError(len(rest))
	}
	doc, err = w.std.TextualFromNative(nil, native)
	if err != nil {
		return nil, "", fmt.Errorf("%w: rendering JSON: %v", ErrCorrupt, err)
	}
	return doc, w.text, nil
}

// check walks the whole record before goavro decodes it: goavro allocates
// for an array or map block count before reading its items, so a few bytes
// claiming two billion items would exhaust memory. The walk refuses counts
// the value cannot hold (see MaxEmptyItems) and trailing bytes.
func (w *writer) check(body []byte) error {
	end, err := w.walk.run(body, 0, nil, 0)
	if err != nil {
		return err
	}
	if end != len(body) {
		return trailingError(len(body) - end)
	}
	return nil
}

// trailingError is the error of a value with n bytes after its record.
func trailingError(n int) error {
	return fmt.Errorf("%w: %d bytes after the end of the record", ErrTrailingBytes, n)
}

// decodeError classifies a goavro decode error.
func decodeError(err error) error {
	if strings.Contains(err.Error(), io.ErrShortBuffer.Error()) {
		return fmt.Errorf("%w: %v", ErrTruncated, err)
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}
