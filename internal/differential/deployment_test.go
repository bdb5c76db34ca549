package differential

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// writerSchema is one writer schema events are written with.
type writerSchema struct {
	label string        // "v1", "v3", "n2", ...
	text  string        // the schema
	codec *goavro.Codec // binary and Avro JSON
	std   *goavro.Codec // standard JSON, as sinks store documents
	fp    uint64        // the specification's fingerprint (schemas.Fingerprint)
	gfp   uint64        // goavro's fingerprint of it (codec.Rabin)
	id    uint32        // its schema registry id (0: not registered)
	file  string        // its .avsc file in the catalogue ("" for the embedded one)
	// gen builds a random event of this schema in goavro's native form.
	gen func(g *gen) map[string]any
}

// topicSpec is an ingest topic and how it is framed.
type topicSpec struct {
	name    string
	framing schemas.Framing
	raw     *writerSchema // the raw schema of a raw topic
	rawRef  string        // as schemas.raw_schemas names it
	writers []*writerSchema
}

// deployment is one router deployment: its ingest topics and their
// framings, the writer schemas known to it, its field paths, ruleset,
// pins and topics. Every leg of the comparison is built from it.
type deployment struct {
	name        string
	xcfg        schemas.ExtractorConfig // the schemas block of its config
	topics      []*topicSpec
	byTopic     map[string]*topicSpec
	byFP        map[uint64]*writerSchema // single-object: embedded and catalogue, by both fingerprints
	byID        map[uint32]*writerSchema // confluent: by registry id (every deployment's, see where.ids)
	countryPath []string
	userPath    []string
	rs          *rules.Ruleset
	pins        map[string]string // user id -> jurisdiction
	ingest      string            // the ingest cluster ("a")
	clusters    []string          // the clusters the router writes to
	quarantine  string
	deadLetter  string
	pinned      map[string]string // region -> pinned topic, for the regions that route (us on a, eu on b)
	// maxValueBytes is router.max_value_bytes, maxValueSize
	// schemas.max_value_size: small, so that too_large is easy to reach.
	maxValueBytes, maxValueSize int
}

// Sizes of the deployments: values over maxValueSize, or events over
// maxValueBytes (key, value and headers), are too_large.
const (
	diffMaxValueSize  = 2048
	diffMaxValueBytes = 3072
)

// Users and the pins of the deployments: pinned to a jurisdiction that
// routes, to one whose region is on a cluster the router has no
// connection to, and to one the ruleset lacks.
var (
	diffPins = map[string]string{"u-pin-eu": "EU", "u-pin-us": "US", "u-pin-in": "IN", "u-pin-gone": "XX"}
	users    = []string{"u-1", "u-2", "u-pin-eu", "u-pin-us", "u-pin-in", "u-pin-gone", "", "u-ä"}
	// countries: placed (US, PR, DE, FR, lower case us), placed on a
	// cluster the router does not write to (IN) or into a reserved topic
	// (GB), unknown (ZZ, USA, D, É), empty and null (nil).
	countries = []any{"US", "PR", "DE", "FR", "us", "IN", "GB", "ZZ", "USA", "D", "É", "", nil}
	// countrySymbols are the symbols of the enum-typed countries.
	countrySymbols = []string{"US", "DE", "FR", "IN", "GB", "ZZ"}
)

// rulesYAML is the deployments' ruleset: us routes (cluster a), eu routes
// (cluster b), in is on cluster c (no connection: no_rule), uk is pinned
// to the quarantine topic of the ingest cluster (reserved: no_rule).
const rulesYAML = `
jurisdictions:
  - {name: US, region: us, countries: [US, PR]}
  - {name: EU, region: eu, countries: [DE, FR]}
  - {name: IN, region: in, countries: [IN]}
  - {name: UK, region: uk, countries: [GB]}
regions:
  - {name: us, cluster: a, topic: %q}
  - {name: eu, cluster: b, topic: %q}
  - {name: in, cluster: c, topic: pinned-in}
  - {name: uk, cluster: a, topic: %q}
stores:
  - {name: diff-store, regions: [us, eu]}
`

// rulesetVersion is the version of the deployments' ruleset.
const rulesetVersion = 7

// where says where a deployment's topics and schemas live: topic names
// (created on the real clusters, or just names in memory) and a schema
// registry.
type where struct {
	// topic returns a topic name for prefix on cluster "a" or "b".
	topic func(prefix, cluster string) string
	// register registers schema under a subject derived from label and
	// returns its id.
	register    func(label, schema string) uint32
	registryURL string
	dir         string // for the catalogue and raw schema files
	// ids are the schemas registered, by id: every deployment's (they
	// share the registry, so a confluent value of one deployment may
	// name a schema of another).
	ids map[uint32]*writerSchema
}

// canonicalDeployment is the deployment with the canonical field paths
// (country, user_id): older (v1), current (v3, embedded), newer (v4, a
// nullable field before country) and enum-country (v5) versions of
// io.residency.events.UserEvent, in four ingest topics: single-object,
// confluent, raw naming v4 by NAME@FINGERPRINT, raw naming v1's file.
func canonicalDeployment(t testing.TB, w where) *deployment {
	t.Helper()
	v1 := newWriter(t, "v1", userEventV1, genV1)
	v3 := newWriter(t, "v3", schemas.UserEventSchema, genV3)
	v4 := newWriter(t, "v4", userEventV4(t), genV4)
	v5 := newWriter(t, "v5", userEventV5, genV5)
	d := newDeployment(t, w, "canonical", "", "", []*writerSchema{v1, v3, v4, v5})
	d.addTopic(w, "so", schemas.FramingSingleObject, nil, "", []*writerSchema{v1, v3, v4, v5})
	d.addTopic(w, "cf", schemas.FramingConfluent, nil, "", []*writerSchema{v1, v3, v4, v5})
	d.addTopic(w, "rawfp", schemas.FramingRaw, v4, fmt.Sprintf("io.residency.events.UserEvent@%016x", v4.fp), nil)
	d.addTopic(w, "rawfile", schemas.FramingRaw, v1, v1.file, nil)
	return d.finish(t)
}

// nestedDeployment reads the routing fields through nested records
// (account.country, account.user_id): n1 has them in a ["null", record]
// union, n2 after a new field, the country an enum. Topics: single-object,
// confluent, raw naming n2's file, raw naming n1 by NAME@FINGERPRINT.
func nestedDeployment(t testing.TB, w where) *deployment {
	t.Helper()
	n1 := newWriter(t, "n1", nestedN1, genN1)
	n2 := newWriter(t, "n2", nestedN2, genN2)
	d := newDeployment(t, w, "nested", "account.country", "account.user_id", []*writerSchema{n1, n2})
	d.addTopic(w, "so", schemas.FramingSingleObject, nil, "", []*writerSchema{n1, n2})
	d.addTopic(w, "cf", schemas.FramingConfluent, nil, "", []*writerSchema{n1, n2})
	d.addTopic(w, "rawfile", schemas.FramingRaw, n2, n2.file, nil)
	d.addTopic(w, "rawfp", schemas.FramingRaw, n1, fmt.Sprintf("io.residency.events.NestedEvent@%016x", n1.fp), nil)
	return d.finish(t)
}

// newWriter compiles a writer schema.
func newWriter(t testing.TB, label, text string, gen func(*gen) map[string]any) *writerSchema {
	t.Helper()
	c, err := goavro.NewCodec(text)
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	std, err := goavro.NewCodecForStandardJSONFull(text)
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	fp, err := schemas.Fingerprint(text)
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	return &writerSchema{label: label, text: text, codec: c, std: std, fp: fp, gfp: c.Rabin, gen: gen}
}

// newDeployment writes the catalogue (every schema but the embedded one),
// registers every schema with the registry and builds the ruleset.
func newDeployment(t testing.TB, w where, name, countryField, userField string, ws []*writerSchema) *deployment {
	t.Helper()
	d := &deployment{name: name, byTopic: map[string]*topicSpec{}, byFP: map[uint64]*writerSchema{}, byID: w.ids,
		pins: diffPins, ingest: "a", clusters: []string{"a", "b"}, pinned: map[string]string{},
		maxValueBytes: diffMaxValueBytes, maxValueSize: diffMaxValueSize,
		countryPath: strings.Split(cmpOr(countryField, "country"), "."), userPath: strings.Split(cmpOr(userField, "user_id"), ".")}
	cat := filepath.Join(w.dir, name+"-catalogue")
	if err := os.MkdirAll(cat, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, text := range schemas.Embedded() {
		e := newWriter(t, "embedded", text, nil)
		d.byFP[e.fp], d.byFP[e.gfp] = e, e
	}
	for _, s := range ws {
		if s.text != schemas.UserEventSchema {
			s.file = filepath.Join(cat, s.label+".avsc")
			if err := os.WriteFile(s.file, []byte(s.text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		d.byFP[s.fp], d.byFP[s.gfp] = s, s
		s.id = w.register(name+"-"+s.label, s.text)
		d.byID[s.id] = s
	}
	d.quarantine = w.topic(name+"-quarantine", "a")
	d.deadLetter = w.topic(name+"-deadletter", "a")
	d.pinned["us"] = w.topic(name+"-pinned-us", "a")
	d.pinned["eu"] = w.topic(name+"-pinned-eu", "b")
	rs, err := rules.Parse(fmt.Appendf(nil, rulesYAML, d.pinned["us"], d.pinned["eu"], d.quarantine))
	if err != nil {
		t.Fatalf("ruleset: %v", err)
	}
	rs.SetVersion(rulesetVersion)
	d.rs = rs
	d.xcfg = schemas.ExtractorConfig{CountryField: countryField, UserIDField: userField,
		Framings: map[string]schemas.Framing{}, RawSchemas: map[string]string{},
		MaxValueSize: diffMaxValueSize, CatalogueDir: cat, Registry: schemas.RegistryConfig{URL: w.registryURL}}
	return d
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// addTopic adds an ingest topic framed as f: raw topics name raw (as
// rawRef); the others carry any of writers.
func (d *deployment) addTopic(w where, label string, f schemas.Framing, raw *writerSchema, rawRef string, writers []*writerSchema) {
	ts := &topicSpec{name: w.topic(d.name+"-ingest-"+label, "a"), framing: f, raw: raw, rawRef: rawRef, writers: writers}
	if raw != nil {
		ts.writers = []*writerSchema{raw}
		d.xcfg.RawSchemas[ts.name] = rawRef
	}
	d.xcfg.Framings[ts.name] = f
	d.topics = append(d.topics, ts)
	d.byTopic[ts.name] = ts
}

// finish checks that the extractor accepts the deployment's schemas block.
func (d *deployment) finish(t testing.TB) *deployment {
	t.Helper()
	if _, err := schemas.NewExtractor(d.xcfg); err != nil {
		t.Fatalf("deployment %s: %v", d.name, err)
	}
	return d
}

// ingestTopics are the deployment's ingest topics, in order.
func (d *deployment) ingestTopics() []string {
	var out []string
	for _, ts := range d.topics {
		out = append(out, ts.name)
	}
	return out
}

// userEventV1 is an older version of io.residency.events.UserEvent: fewer
// fields, fewer event types.
const userEventV1 = `{"type":"record","name":"UserEvent","namespace":"io.residency.events","fields":[
	{"name":"event_id","type":{"type":"string","logicalType":"uuid"}},
	{"name":"user_id","type":"string"},
	{"name":"occurred_at","type":{"type":"long","logicalType":"timestamp-millis"}},
	{"name":"event_type","type":{"type":"enum","name":"EventType","symbols":["VIDEO_VIEW","VIDEO_LIKE","OTHER"],"default":"OTHER"}},
	{"name":"session_id","type":["null","string"],"default":null},
	{"name":"country","type":["null","string"],"default":null},
	{"name":"tags","type":{"type":"array","items":"string"},"default":[]},
	{"name":"properties","type":{"type":"map","values":"string"},"default":{}}]}`

// userEventV5 is a version whose country is an enum (its symbol is the
// code) and whose user_id is nullable.
const userEventV5 = `{"type":"record","name":"UserEvent","namespace":"io.residency.events","fields":[
	{"name":"event_id","type":"string"},
	{"name":"occurred_at","type":{"type":"long","logicalType":"timestamp-millis"}},
	{"name":"session_id","type":["null","string"],"default":null},
	{"name":"user_id","type":["null","string"],"default":null},
	{"name":"score","type":["null","int","double"],"default":null},
	{"name":"country","type":{"type":"enum","name":"Country","symbols":["US","DE","FR","IN","GB","ZZ"]}},
	{"name":"tags","type":{"type":"array","items":"string"},"default":[]},
	{"name":"flag","type":"boolean","default":false}]}`

// userEventV4 is the canonical schema (v3) with a nullable field before
// country, as the ingest contract recommends, and an array of records and
// a wide union after it.
func userEventV4(t testing.TB) string {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal([]byte(schemas.UserEventSchema), &s); err != nil {
		t.Fatal(err)
	}
	var fields []any
	for _, f := range s["fields"].([]any) {
		if f.(map[string]any)["name"] == "country" {
			fields = append(fields, map[string]any{"name": "home_region", "type": []any{"null", "string"}, "default": nil})
		}
		fields = append(fields, f)
		if f.(map[string]any)["name"] == "tags" {
			fields = append(fields, map[string]any{"name": "items", "default": []any{}, "type": map[string]any{"type": "array", "items": map[string]any{
				"type": "record", "name": "Item", "fields": []any{
					map[string]any{"name": "sku", "type": "string"},
					map[string]any{"name": "qty", "type": "int"},
					map[string]any{"name": "price", "type": []any{"null", "double"}, "default": nil}}}}})
		}
	}
	fields = append(fields, map[string]any{"name": "score", "type": []any{"null", "long", "double", "string"}, "default": nil})
	s["fields"] = fields
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// nestedN1 keeps the routing fields in a nullable record.
const nestedN1 = `{"type":"record","name":"NestedEvent","namespace":"io.residency.events","fields":[
	{"name":"event_id","type":"string"},
	{"name":"occurred_at","type":{"type":"long","logicalType":"timestamp-millis"}},
	{"name":"session_id","type":["null","string"],"default":null},
	{"name":"account","type":["null",{"type":"record","name":"Account","fields":[
		{"name":"user_id","type":"string"},
		{"name":"country","type":["null","string"],"default":null}]}],"default":null},
	{"name":"tags","type":{"type":"array","items":"string"},"default":[]}]}`

// nestedN2 is a newer version: a field before the record, which is no
// longer nullable, with an enum country after a new field.
const nestedN2 = `{"type":"record","name":"NestedEvent","namespace":"io.residency.events","fields":[
	{"name":"event_id","type":"string"},
	{"name":"source","type":"string","default":""},
	{"name":"occurred_at","type":{"type":"long","logicalType":"timestamp-millis"}},
	{"name":"session_id","type":["null","string"],"default":null},
	{"name":"account","type":{"type":"record","name":"Account","fields":[
		{"name":"tier","type":"int","default":0},
		{"name":"user_id","type":["null","string"],"default":null},
		{"name":"country","type":{"type":"enum","name":"Country","symbols":["US","DE","FR","IN","GB","ZZ"]}}]}},
	{"name":"tags","type":{"type":"array","items":"string"},"default":[]},
	{"name":"properties","type":{"type":"map","values":"string"},"default":{}}]}`
