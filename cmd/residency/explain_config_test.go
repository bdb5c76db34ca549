package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/redis"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// partnerSchema is a writer schema known only to the deployment's
// catalogue (not embedded): another record, with a nullable field before
// country, as the ingest contract allows.
const partnerSchema = `{"type": "record", "name": "PartnerEvent", "namespace": "com.partner.events", "fields": [
  {"name": "event_id", "type": "string"},
  {"name": "user_id", "type": "string"},
  {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "region_hint", "type": ["null", "string"], "default": null},
  {"name": "country", "type": ["null", "string"], "default": null},
  {"name": "payload", "type": "string", "default": ""}
]}`

// explainDeployment is a deployment on the dev stack: a catalogue, a
// single-object and a raw ingest topic, a ruleset in Redis with a pin.
type explainDeployment struct {
	cfgFile, singleTopic, rawTopic string
	us, eu, quarantine, deadLetter string
	a, b                           *testenv.Kafka
	redis                          *testenv.Redis
	codec                          *goavro.Codec
	fp                             uint64
}

func newExplainDeployment(t *testing.T) *explainDeployment {
	t.Helper()
	d := &explainDeployment{a: testenv.KafkaA(t), b: testenv.KafkaB(t), redis: testenv.NewRedis(t)}
	d.singleTopic = d.a.Topic(t, "in-so", 1)
	d.rawTopic = d.a.Topic(t, "in-raw", 1)
	d.quarantine = d.a.Topic(t, "quar", 1)
	d.deadLetter = d.a.Topic(t, "dl", 1)
	d.us = d.a.Topic(t, "us", 1)
	d.eu = d.b.Topic(t, "eu", 1)
	catalogue := t.TempDir()
	if err := os.WriteFile(filepath.Join(catalogue, "partner_event.avsc"), []byte(partnerSchema), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if d.codec, err = goavro.NewCodec(partnerSchema); err != nil {
		t.Fatal(err)
	}
	if d.fp, err = schemas.Fingerprint(partnerSchema); err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t, 30*time.Second)
	client := d.redis.Client(t)
	store := redis.NewRules(client, d.redis.Prefix)
	rs := twoRegionRules(d.us, "b", d.eu, "DE, FR")
	if _, err := store.Apply(ctx, []byte(rs), rules.ApplyOptions{Author: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := store.Pin(ctx, "u-pinned", "EU"); err != nil {
		t.Fatal(err)
	}
	d.cfgFile = routeYAML{Listen: "off", A: d.a.Brokers, B: d.b.Brokers, Ingest: d.singleTopic + ", " + d.rawTopic,
		Group: testenv.Name(t, "g"), Quarantine: d.quarantine, DeadLetter: d.deadLetter, Rest: fmt.Sprintf(`redis: {addr: %q, prefix: %q}
rules: {poll_interval: 50ms}
schemas:
  catalogue_dir: %s
  framings: {%s: raw}
  raw_schemas: {%s: com.partner.events.PartnerEvent}
`, d.redis.Addr, d.redis.Prefix, catalogue, d.rawTopic, d.rawTopic)}.write(t)
	return d
}

// body encodes one partner event.
func (d *explainDeployment) body(t *testing.T, id, user string, country any) []byte {
	t.Helper()
	rec := map[string]any{"event_id": id, "user_id": user, "occurred_at": time.UnixMilli(1790000000000).UTC(),
		"region_hint": goavro.Union("string", "somewhere"), "country": nil, "payload": "p-" + id}
	if country != nil {
		rec["country"] = goavro.Union("string", country)
	}
	b, err := d.codec.BinaryFromNative(nil, rec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// placement is where the router put one event.
type placement struct{ topic, reason string }

// TestExplainWithConfigAgreesWithRouter: events written with a schema only
// the deployment's catalogue knows, in the single-object and the raw
// framing, are routed by `residency route`; `explain --config` with the same
// file (and its Redis, with the pins) explains each of them exactly as the
// router placed it, where explain without the config cannot read them.
// Real Kafka (both clusters) and Redis of the dev stack.
func TestExplainWithConfigAgreesWithRouter(t *testing.T) {
	d := newExplainDeployment(t)
	ctx := testenv.Context(t, 120*time.Second)

	type ev struct{ key, topic, user, country string }
	var evs []ev
	for _, topic := range []string{d.singleTopic, d.rawTopic} {
		for i, c := range []struct{ user, country string }{{"u-1", "US"}, {"u-2", "DE"}, {"u-pinned", "US"}, {"u-4", "ZZ"}, {"u-5", ""}} {
			evs = append(evs, ev{key: fmt.Sprintf("%s-%d", topic, i), topic: topic, user: c.user, country: c.country})
		}
	}
	values := map[string][]byte{}
	var msgs []stream.Message
	for _, e := range evs {
		var country any
		if e.country != "" {
			country = e.country
		}
		v := d.body(t, e.key, e.user, country)
		if e.topic == d.singleTopic {
			v = schemas.AppendSingleObject(nil, d.fp, v)
		}
		values[e.key] = v
		msgs = append(msgs, stream.Message{Topic: e.topic, Key: []byte(e.key), Value: v})
	}
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "a", Brokers: d.a.Brokers}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	// The router places them.
	rt := start(t, "route", "--config", d.cfgFile)
	adminA, _ := kafka.NewAdmin(kafka.Cluster{Name: "a", Brokers: d.a.Brokers})
	adminB, _ := kafka.NewAdmin(kafka.Cluster{Name: "b", Brokers: d.b.Brokers})
	placed := map[string]placement{}
	waitFor(t, 60*time.Second, "the router placed every event", func() bool {
		for _, dest := range []struct {
			admin *kafka.Admin
			topic string
		}{{adminA, d.us}, {adminB, d.eu}, {adminA, d.quarantine}, {adminA, d.deadLetter}} {
			got, err := dest.admin.ReadAll(ctx, dest.topic)
			if err != nil {
				return false
			}
			for _, m := range got {
				p := placement{topic: dest.topic}
				for _, h := range m.Headers {
					if h.Key == router.HeaderReason {
						p.reason = string(h.Value)
					}
				}
				placed[string(m.Key)] = p
			}
		}
		return len(placed) == len(evs)
	}, rt)
	rt.stopOK(t)
	// What the router must have done, so the comparison below is not empty.
	for _, e := range evs {
		want := map[string]placement{"US": {topic: d.us}, "DE": {topic: d.eu}, "ZZ": {topic: d.quarantine, reason: "unknown_country"},
			"": {topic: d.quarantine, reason: "no_country"}}[e.country]
		if e.user == "u-pinned" {
			want = placement{topic: d.eu}
		}
		if placed[e.key] != want {
			t.Fatalf("router placed %s (%s, %q) in %+v, want %+v", e.key, e.user, e.country, placed[e.key], want)
		}
	}

	// explain --config says the same for every event, read from its topic.
	for _, e := range evs {
		f := writeEventFile(t, e.key+".bin", values[e.key])
		code, x, errOut := explain(t, f, "--config", d.cfgFile, "--topic", e.topic)
		p := placed[e.key]
		switch {
		case p.topic == d.us || p.topic == d.eu:
			if code != exitOK || x["decision"] != "routed" || x["topic"] != p.topic {
				t.Errorf("explain %s: exit %d, %v; the router routed it to %s (stderr %s)", e.key, code, x, p.topic, errOut)
			}
		default:
			if code != exitFailure || x["decision"] != "quarantined" || x["reason"] != p.reason {
				t.Errorf("explain %s: exit %d, %v; the router quarantined it as %s (stderr %s)", e.key, code, x, p.reason, errOut)
			}
		}
		if x["ingest_topic"] != e.topic || x["pins_checked"] != true {
			t.Errorf("explain %s: %v, want ingest_topic %s and pins checked", e.key, x, e.topic)
		}
		if e.user == "u-pinned" && (x["decided_by"] != "pin" || x["pin"] != "EU") {
			t.Errorf("explain %s: %v, want decided by the user's pin to EU", e.key, x)
		}
	}

	// Without the config, explain does not know the catalogue schema: this
	// is what observation 7 of issue 12 was about.
	f := writeEventFile(t, "so.bin", values[evs[0].key])
	if code, x, _ := explain(t, f, "--redis", d.redis.Addr, "--prefix", d.redis.Prefix); code != exitFailure || x["reason"] != "unknown_schema" {
		t.Errorf("explain without --config: exit %d, %v; want unknown_schema (the catalogue is not known)", code, x)
	}
}

// TestExplainWithConfigRoutingFieldsOnly: a JSON object with only the
// routing fields gets a quick answer from them, the pin in Redis and the
// ruleset in force, and says the rest was not checked. Real Redis.
func TestExplainWithConfigRoutingFieldsOnly(t *testing.T) {
	d := newExplainDeployment(t)
	tests := []struct {
		name, json       string
		code             int
		decision, region string
		decidedBy, pin   string
		reason           string
	}{
		{"country and user", `{"country": "DE", "user_id": "u-1"}`, exitOK, "routed", "eu", "country", "", ""},
		{"pinned user", `{"country": "US", "user_id": "u-pinned"}`, exitOK, "routed", "eu", "pin", "EU", ""},
		{"pinned user, no country", `{"user_id": "u-pinned"}`, exitOK, "routed", "eu", "pin", "EU", ""},
		{"country only", `{"country": "US"}`, exitOK, "routed", "us", "country", "", ""},
		{"avro json union", `{"country": {"string": "FR"}}`, exitOK, "routed", "eu", "country", "", ""},
		{"user only", `{"user_id": "u-1"}`, exitFailure, "quarantined", "", "", "", "no_country"},
		{"null country", `{"country": null, "user_id": "u-1"}`, exitFailure, "quarantined", "", "", "", "no_country"},
		{"unknown country", `{"country": "ZZ"}`, exitFailure, "quarantined", "", "", "", "unknown_country"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeEventFile(t, "e.json", []byte(tt.json))
			code, x, errOut := explain(t, f, "--config", d.cfgFile)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; %v; stderr %s", code, tt.code, x, errOut)
			}
			if x["decision"] != tt.decision || x["partial"] != true || !strings.Contains(fmt.Sprint(x["note"]), "not checked") {
				t.Fatalf("explanation %v, want %s, partial, with the note", x, tt.decision)
			}
			if tt.region != "" && (x["region"] != tt.region || x["decided_by"] != tt.decidedBy) {
				t.Fatalf("explanation %v, want region %s decided by %s", x, tt.region, tt.decidedBy)
			}
			if fmt.Sprint(x["pin"]) != tt.pin && !(tt.pin == "" && x["pin"] == nil) {
				t.Fatalf("explanation %v, want pin %q", x, tt.pin)
			}
			if tt.reason != "" && x["reason"] != tt.reason {
				t.Fatalf("explanation %v, want reason %s", x, tt.reason)
			}
			if x["ruleset_version"] != float64(1) || !strings.HasPrefix(fmt.Sprint(x["ruleset_source"]), "redis ") {
				t.Fatalf("explanation %v, want ruleset version 1 from Redis", x)
			}
		})
	}

	// A whole event as JSON is encoded with the catalogue schema and read
	// as the topic is: single-object (--schema by name), raw (the topic's
	// raw schema).
	full := `{"event_id": "e-1", "user_id": "u-1", "occurred_at": 1790000000000, "region_hint": null, "country": "DE", "payload": "x"}`
	f := writeEventFile(t, "full.json", []byte(full))
	if code, x, errOut := explain(t, f, "--config", d.cfgFile, "--schema", "com.partner.events.PartnerEvent"); code != exitOK || x["region"] != "eu" || x["partial"] == true {
		t.Errorf("whole JSON event, single-object: exit %d, %v (%s)", code, x, errOut)
	}
	if code, x, errOut := explain(t, f, "--config", d.cfgFile, "--topic", d.rawTopic); code != exitOK || x["region"] != "eu" ||
		!strings.Contains(fmt.Sprint(x["encoding"]), "raw") {
		t.Errorf("whole JSON event, raw topic: exit %d, %v (%s)", code, x, errOut)
	}
	// JSON of the canonical schema (embedded, so known to every deployment)
	// is encoded with it by default.
	canon := strings.Replace(explainEvent, "COUNTRY", `"US"`, 1)
	if code, x, errOut := explain(t, writeEventFile(t, "canon.json", []byte(canon)), "--config", d.cfgFile); code != exitOK || x["region"] != "us" {
		t.Errorf("canonical JSON event: exit %d, %v (%s)", code, x, errOut)
	}

	// --rules overrides the config's Redis: no pins then.
	rulesFile := writeEventFile(t, "r.yaml", []byte(fmt.Sprintf(`
jurisdictions:
  - {name: US, region: us, countries: [US]}
regions:
  - {name: us, cluster: a, topic: %s}
stores: []
`, d.us)))
	pinned := writeEventFile(t, "p.json", []byte(`{"country": "US", "user_id": "u-pinned"}`))
	if code, x, _ := explain(t, pinned, "--config", d.cfgFile, "--rules", rulesFile); code != exitOK || x["region"] != "us" || x["pins_checked"] != false {
		t.Errorf("--rules over --config: exit %d, %v; want us by country, pins not looked up", code, x)
	}
}

// TestExplainUsesTheConfigsRedisCredentials: explain reaches Redis with the
// config's credentials, as the router does: an ACL user the dev stack's
// Redis does not have is refused (WRONGPASS), so explain fails instead of
// quietly connecting without them. (A Redis that requires a password or TLS
// in the dev stack is issue 17's.)
func TestExplainUsesTheConfigsRedisCredentials(t *testing.T) {
	d := newExplainDeployment(t)
	cfg, err := os.ReadFile(d.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	withPassword := writeEventFile(t, "pw.yaml", []byte(strings.Replace(string(cfg), `prefix: "`, `username: "no-such-user", password: "not-the-password", prefix: "`, 1)))
	f := writeEventFile(t, "e.json", []byte(`{"country": "US"}`))
	code, _, errOut := explain(t, f, "--config", withPassword)
	if code == exitOK || !strings.Contains(errOut, "WRONGPASS") {
		t.Fatalf("explain with an unknown Redis user: exit %d, stderr %q; want Redis's WRONGPASS refusal", code, errOut)
	}
	if strings.Contains(errOut, "not-the-password") {
		t.Fatalf("the password is in the error: %s", errOut)
	}
	// And the same config without them works: the credentials are all that
	// changed.
	if code, x, errOut := explain(t, f, "--config", d.cfgFile); code != exitOK {
		t.Fatalf("explain: exit %d, %v, %s", code, x, errOut)
	}
}

// TestExplainWithConfigSpeaksForTheDeployment: with --config, explain reads
// the routing fields at the config's paths (nested ones too), decides with
// its rules.file (no pins), and refuses to call an event routed to a
// cluster the config cannot write, as the router would quarantine it.
func TestExplainWithConfigSpeaksForTheDeployment(t *testing.T) {
	rulesFile := writeEventFile(t, "rules.yaml", []byte(`
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE]}
regions:
  - {name: us, cluster: a, topic: residency.us}
  - {name: eu, cluster: b, topic: residency.eu}
stores: []
`))
	cfg := writeEventFile(t, "residency.yaml", []byte(fmt.Sprintf(`
kafka: {clusters: {a: {brokers: ["127.0.0.1:1"]}}}
router: {ingest_topics: [events.in]}
rules: {file: %s}
schemas: {country_field: geo.country, user_id_field: who}
`, rulesFile)))
	tests := []struct {
		json, decision, field, want, note string
	}{
		{`{"geo": {"country": "US"}}`, "routed", "topic", "residency.us", partialNote},
		{`{"geo": {"country": "US"}, "who": "u-1"}`, "routed", "region", "us", ""},
		{`{"geo": {"country": "DE"}, "who": "u-1"}`, "quarantined", "reason", "no_rule", "cluster b is not in kafka.clusters"},
		{`{"who": "u-1"}`, "quarantined", "reason", "no_country", ""},
	}
	for _, tt := range tests {
		code, x, errOut := explain(t, writeEventFile(t, "e.json", []byte(tt.json)), "--config", cfg)
		if x["decision"] != tt.decision || x[tt.field] != tt.want || x["pins_checked"] != false || x["ingest_topic"] != "events.in" {
			t.Errorf("%s: exit %d, %v (%s); want %s with %s=%s, pins not looked up", tt.json, code, x, errOut, tt.decision, tt.field, tt.want)
		}
		if !strings.Contains(fmt.Sprint(x["note"]), tt.note) || !strings.Contains(fmt.Sprint(x["ruleset_source"]), "rules.file") {
			t.Errorf("%s: %v; want a note with %q and the rules.file source", tt.json, x, tt.note)
		}
	}
	// The routing fields at the default paths are not the deployment's:
	// the object is read as a whole event, which it is not; the error says
	// how to ask with the routing fields alone.
	code, _, errOut := explain(t, writeEventFile(t, "e.json", []byte(`{"country": "US"}`)), "--config", cfg)
	if code != exitUsage || !strings.Contains(errOut, "give only geo.country and/or who") {
		t.Errorf("fields at the wrong paths: exit %d, %s", code, errOut)
	}
	// --topic must be an ingest topic of the config.
	if code, _, errOut := explain(t, writeEventFile(t, "e.json", []byte(`{"geo": {"country": "US"}}`)), "--config", cfg, "--topic", "other"); code != exitUsage ||
		!strings.Contains(errOut, "router.ingest_topics") {
		t.Errorf("--topic other: exit %d, %s", code, errOut)
	}
}
