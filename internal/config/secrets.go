package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Redacted stands for a secret in `config print`.
const Redacted = "<redacted>"

// secretFile is a secret with its *_file companion.
type secretFile struct {
	field string  // the secret's field path, e.g. "redis.password"
	value *string // the secret
	file  string  // the *_file field's value: a path, or ""
}

// secretFiles lists the secrets outside kafka.clusters that can be read
// from a file: redis.password_file, schemas.registry.password_file and
// bearer_token_file (readSecretFiles adds
// kafka.clusters.NAME.sasl.password_file).
func (c *Config) secretFiles() []secretFile {
	reg := &c.Schemas.Registry
	out := []secretFile{
		{"redis.password", &c.Redis.Password, c.Redis.PasswordFile},
		{"schemas.registry.password", &reg.Password, reg.PasswordFile},
		{"schemas.registry.bearer_token", &reg.BearerToken, reg.BearerTokenFile},
	}
	return out
}

// readSecretFiles reads every *_file field into its secret, once, and
// returns the problems: a file that cannot be read or is empty, and a
// secret given both ways (in the file or the environment, and by file).
func (c *Config) readSecretFiles() []Problem {
	var ps problems
	secrets := c.secretFiles()
	sasl := map[string]*string{} // the SASL passwords, written back below
	for _, name := range c.ClusterNames() {
		cl := c.Kafka.Clusters[name]
		pw := cl.SASL.Password
		sasl[name] = &pw
		secrets = append(secrets, secretFile{"kafka.clusters." + name + ".sasl.password", &pw, cl.SASL.PasswordFile})
	}
	defer func() {
		for name, pw := range sasl {
			cl := c.Kafka.Clusters[name]
			cl.SASL.Password = *pw
			c.Kafka.Clusters[name] = cl
		}
	}()
	for _, s := range secrets {
		if s.file == "" {
			continue
		}
		fileField := s.field + "_file"
		if *s.value != "" {
			ps.add(fileField, "set only one of %s and %s (the secret was also given in the file or the environment)", s.field, fileField)
			continue
		}
		b, err := os.ReadFile(s.file)
		if err != nil {
			ps.add(fileField, "%v", err)
			continue
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			ps.add(fileField, "%s is empty", s.file)
			continue
		}
		*s.value = v
	}
	return ps
}

// Print returns the effective config, after defaults (call Finish or
// Validate first), the environment and ${VAR} expansion, with the secrets
// files were read into: as YAML, or as JSON when asJSON. Every secret
// (fields tagged secret:"true") is shown as Redacted when set, and the
// password in a URL or DSN (secret:"url") is replaced by it too, so the
// output can be pasted into a ticket.
func (c *Config) Print(asJSON bool) ([]byte, error) {
	var n yaml.Node
	if err := n.Encode(c); err != nil {
		return nil, fmt.Errorf("config print: %w", err)
	}
	redact(&n, reflect.TypeFor[Config]())
	if !asJSON {
		var b bytes.Buffer
		enc := yaml.NewEncoder(&b)
		enc.SetIndent(2)
		if err := enc.Encode(&n); err != nil {
			return nil, fmt.Errorf("config print: %w", err)
		}
		return b.Bytes(), enc.Close()
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, fmt.Errorf("config print: %w", err)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(v)
	return b.Bytes(), err
}

// redact replaces, in the encoded node n of type t, the value of every
// field tagged secret.
func redact(n *yaml.Node, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := map[string]reflect.StructField{}
		for i := range t.NumField() {
			if name := yamlName(t.Field(i)); name != "" {
				fields[name] = t.Field(i)
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			f, ok := fields[n.Content[i].Value]
			if !ok {
				continue
			}
			v := n.Content[i+1]
			switch f.Tag.Get("secret") {
			case "true":
				if v.Kind == yaml.ScalarNode && v.Value != "" {
					v.Value, v.Tag, v.Style = Redacted, "!!str", 0
				}
			case "url":
				if v.Kind == yaml.ScalarNode {
					v.Value = RedactURL(v.Value)
				}
			default:
				redact(v, f.Type)
			}
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			redact(n.Content[i+1], t.Elem())
		}
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for _, v := range n.Content {
			redact(v, t.Elem())
		}
	}
}

var dsnPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// RedactURL replaces the password of a URL (scheme://user:password@host)
// or of a key=value DSN (password=...) with Redacted.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
			return strings.Replace(u.String(), "REDACTED", Redacted, 1)
		}
		return s
	}
	return dsnPassword.ReplaceAllString(s, "${1}"+Redacted)
}
