package config

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func loadText(t *testing.T, text string, env map[string]string) (*Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "residency.yaml")
	writeFile(t, p, text)
	return Load(p, envOf(env))
}

// TestExpandVariables: ${VAR} in a value is the variable's value, read as
// the YAML scalar it spells (a number stays a number, a duration a
// duration); $$ is a literal $; other $ are kept; keys are not expanded.
func TestExpandVariables(t *testing.T) {
	c, err := loadText(t, `
kafka:
  clusters:
    main: {brokers: ["${BROKER}", "b2:${PORT}"], sasl: {mechanism: plain, username: "${USER}", password: "pa$$word$x"}}
router:
  ingest_topics:
    - events.${ENV}
  batch_size: ${BATCH}
  linger: ${LINGER}
redis: {addr: "${REDIS_HOST}:6379", prefix: "a$b:"}
`, map[string]string{"BROKER": "b1:9092", "PORT": "9093", "USER": "svc", "ENV": "prod", "BATCH": "250", "LINGER": "9ms", "REDIS_HOST": "redis.internal"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true}); err != nil {
		t.Fatal(err)
	}
	cl := c.Kafka.Clusters["main"]
	if strings.Join(cl.Brokers, ",") != "b1:9092,b2:9093" || cl.SASL.Username != "svc" || cl.SASL.Password != "pa$word$x" ||
		c.Router.IngestTopics[0] != "events.prod" || c.Router.BatchSize != 250 || c.Router.Linger != 9*time.Millisecond ||
		c.Redis.Addr != "redis.internal:6379" || c.Redis.Prefix != "a$b:" {
		t.Fatalf("not expanded: %+v %+v %+v", cl, c.Router, c.Redis)
	}
}

// TestExpandErrorsNameTheField: an unset variable, a malformed ${ and a
// value of the wrong type after expansion are each a problem at the field
// path, all reported at once; the value of a variable never reaches the
// message.
func TestExpandErrorsNameTheField(t *testing.T) {
	_, err := loadText(t, `
kafka: {clusters: {main: {brokers: ["${MISSING_BROKER}"]}}}
router:
  ingest_topics: [x]
  batch_size: ${BATCH}
  linger: "${LINGER"
redis: {password: "${REDIS_PASS:-default}"}
sinks: [{store: s, region: us, postgres: {dsn: "${}"}}]
`, map[string]string{"BATCH": "many-secret-words"})
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("load = %v, want an *Error", err)
	}
	got := map[string]string{}
	for _, p := range ce.Problems {
		got[p.Field] = p.Message
	}
	want := map[string]string{
		"kafka.clusters.main.brokers[0]": "${MISSING_BROKER}: the environment variable MISSING_BROKER is not set",
		"router.batch_size":              "is not a whole number",
		"router.linger":                  "${ without its closing }",
		"redis.password":                 `"REDIS_PASS:-default" is not a variable name`,
		"sinks[0].postgres.dsn":          "${} names no variable",
	}
	for field, w := range want {
		if !strings.Contains(got[field], w) {
			t.Errorf("%s: %q, want it to say %q (all: %v)", field, got[field], w, ce.Problems)
		}
	}
	if strings.Contains(err.Error(), "many-secret-words") {
		t.Errorf("a variable's value is in the error: %v", err)
	}
}

// TestSecretFiles: *_file fields are read at start into the secret they
// stand for (a trailing newline dropped); a missing or empty file, or both
// the secret and its file set, is a problem naming the field.
func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, content)
		return p
	}
	redisPW, regPW, token, sasl := file("redis", "r-secret\n"), file("reg", "g-secret"), file("token", "t-secret\r\n"), file("sasl", "s-secret\n")
	c, err := loadText(t, `
kafka: {clusters: {main: {brokers: ["h:1"], sasl: {mechanism: scram-sha-512, username: u, password_file: `+sasl+`}}}}
router: {ingest_topics: [x]}
redis: {password_file: `+redisPW+`}
schemas: {registry: {url: "http://r", username: u, password_file: `+regPW+`}}
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true}); err != nil {
		t.Fatal(err)
	}
	if c.Redis.Password != "r-secret" || c.Schemas.Registry.Password != "g-secret" || c.Kafka.Clusters["main"].SASL.Password != "s-secret" {
		t.Fatalf("secrets not read: redis %q registry %q sasl %q", c.Redis.Password, c.Schemas.Registry.Password, c.Kafka.Clusters["main"].SASL.Password)
	}
	c, err = loadText(t, `schemas: {registry: {url: "http://r", bearer_token_file: `+token+`}}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{}); err != nil || c.Schemas.Registry.BearerToken != "t-secret" {
		t.Fatalf("bearer token %q, %v", c.Schemas.Registry.BearerToken, err)
	}

	empty := file("empty", "\n")
	c, err = loadText(t, `
kafka: {clusters: {main: {brokers: ["h:1"], sasl: {mechanism: plain, username: u, password_file: /nonexistent/sasl}}}}
router: {ingest_topics: [x]}
redis: {password: inline, password_file: `+redisPW+`}
schemas: {registry: {url: "http://r", bearer_token_file: `+empty+`}}
`, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, p := range c.Validate(Scope{Route: true}) {
		fields = append(fields, p.String())
	}
	for _, want := range []string{
		"kafka.clusters.main.sasl.password_file: open /nonexistent/sasl",
		"redis.password_file: set only one of redis.password and redis.password_file",
		"schemas.registry.bearer_token_file: " + empty + " is empty",
	} {
		if !slices.ContainsFunc(fields, func(f string) bool { return strings.HasPrefix(f, want) }) {
			t.Errorf("problems %q lack %q", fields, want)
		}
	}
	// The SASL password is required with a mechanism: a file that cannot be
	// read is reported once, at the file.
	for _, f := range fields {
		if strings.HasPrefix(f, "kafka.clusters.main.sasl.password:") {
			t.Errorf("the missing file is reported twice: %q", fields)
		}
	}
}

// TestPrintRedactsSecrets: config print shows the effective config
// (defaults, environment and ${VAR} applied) with every secret, and the
// password of a DSN or URL, replaced, in YAML and JSON.
func TestPrintRedactsSecrets(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	writeFile(t, pwFile, "from-a-file\n")
	c, err := loadText(t, `
kafka: {clusters: {main: {brokers: ["h:1"], sasl: {mechanism: plain, username: u, password: "${SASL_PW}"}}}}
router: {ingest_topics: [x]}
redis: {password_file: `+pwFile+`}
schemas: {registry: {url: "http://registry:8081", username: reg-user, bearer_token: ""}}
sinks:
  - {store: s, region: us, postgres: {dsn: "postgres://pg:pg-pass@h:5432/db"}}
  - {store: t, region: eu, postgres: {dsn: "host=h user=pg password=kv-pass dbname=db"}}
`, map[string]string{"SASL_PW": "from-env", "RESIDENCY_SCHEMAS_REGISTRY_PASSWORD": "env-reg"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true}); err != nil {
		t.Fatal(err)
	}
	text, err := c.Print(false)
	if err != nil {
		t.Fatal(err)
	}
	js, err := c.Print(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{string(text), string(js)} {
		for _, secret := range []string{"from-env", "from-a-file", "pg-pass", "kv-pass", "env-reg"} {
			if strings.Contains(out, secret) {
				t.Errorf("%s is printed:\n%s", secret, out)
			}
		}
		for _, shown := range []string{"residency-router", "batch_size", "500", pwFile, "registry:8081", "pg:" + Redacted + "@h:5432", "password=" + Redacted + " dbname", Redacted} {
			if !strings.Contains(out, shown) {
				t.Errorf("%q is not printed:\n%s", shown, out)
			}
		}
	}
	var v map[string]any
	if err := json.Unmarshal(js, &v); err != nil {
		t.Fatalf("JSON: %v\n%s", err, js)
	}
	router := v["router"].(map[string]any)
	if router["linger"] != "5ms" || router["batch_size"] != float64(500) {
		t.Errorf("router in JSON: %v", router)
	}
	// An empty secret is shown empty: it is not set.
	if strings.Contains(string(text), "bearer_token: "+Redacted) {
		t.Errorf("an unset secret shows as redacted:\n%s", text)
	}
	// Printing does not change the config.
	if c.Kafka.Clusters["main"].SASL.Password != "from-env" {
		t.Errorf("print changed the config")
	}
}
