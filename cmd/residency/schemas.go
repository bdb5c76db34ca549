package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/schemas"
)

// Environment variables read by `residency schemas check --registry`.
const (
	envRegistryURL      = "RESIDENCY_SCHEMA_REGISTRY_URL"
	envRegistryUser     = "RESIDENCY_SCHEMA_REGISTRY_USERNAME"
	envRegistryPassword = "RESIDENCY_SCHEMA_REGISTRY_PASSWORD"
	envRegistryToken    = "RESIDENCY_SCHEMA_REGISTRY_TOKEN"
)

// schemasUsage lists the schemas subcommands.
const schemasUsage = `Usage: residency schemas SUBCOMMAND [flags]

Subcommands:
  check NEW.avsc [--previous OLD.avsc | [--config F | --registry URL] --subject S]
                      will events written with NEW still be routed, and can
                      readers using NEW read events written with the previous
                      schema (backward compatibility)?
  show                print the canonical user event schema (embedded)
  fingerprint FILE    print the CRC-64-AVRO fingerprint of a schema: as a
                      number (raw_schemas NAME@FINGERPRINT, the
                      residency-schema header) and in wire order (the 8
                      bytes after C3 01 in single-object encoding)

The registry and its credentials come from --config (schemas.registry:
url, username, password or password_file, bearer_token or
bearer_token_file, as the router reaches it), or from --registry and
$` + envRegistryUser + ` and $` + envRegistryPassword + ` (basic auth) or
$` + envRegistryToken + ` (bearer). --output json prints the findings as JSON.

Exit codes: 0 yes, 1 no (the findings say why), 2 usage, 3 registry unavailable.
`

// runSchemas is `residency schemas`.
func runSchemas(ctx context.Context, e env) int {
	return subcommands(e, "schemas", schemasUsage, map[string]func(env) int{
		"check":       func(e env) int { return schemasCheck(ctx, e) },
		"show":        schemasShow,
		"fingerprint": schemasFingerprint,
	})
}

// schemasShow is `residency schemas show`.
func schemasShow(e env) int {
	if len(e.args) != 0 {
		return fail(e, "schemas show", fmt.Errorf("%w: show takes no arguments", errUsage))
	}
	fmt.Fprint(e.stdout, schemas.UserEventSchema)
	return exitOK
}

func schemasFingerprint(e env) int {
	fs := newFlags(e, "schemas fingerprint", "schemas fingerprint FILE")
	pos, code, ok := parseInterleaved(fs, e.args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fs.Usage()
		return exitUsage
	}
	text, err := os.ReadFile(pos[0])
	if err != nil {
		return fail(e, "schemas fingerprint", fmt.Errorf("%w: %v", errUsage, err))
	}
	fp, err := schemas.Fingerprint(string(text))
	if err != nil {
		return fail(e, "schemas fingerprint", fmt.Errorf("%s: %w", pos[0], err))
	}
	name, _ := schemas.FullName(string(text))
	printFingerprint(e.stdout, name, fp)
	return exitOK
}

// printFingerprint prints fp both ways, labelled: the number (16 hex
// digits, most significant first), as raw_schemas NAME@FINGERPRINT and the
// residency-schema header write it, and the wire order, the 8 bytes
// (little-endian) that follow C3 01 in a single-object encoded value.
func printFingerprint(w io.Writer, name string, fp uint64) {
	wire := binary.LittleEndian.AppendUint64(nil, fp)
	if name != "" {
		fmt.Fprintf(w, "name:         %s\n", name)
	}
	fmt.Fprintf(w, "fingerprint:  %016x  (the number, most significant byte first: raw_schemas NAME@FINGERPRINT, residency-schema header)\n", fp)
	fmt.Fprintf(w, "wire order:   % x  (the 8 bytes after C3 01 in single-object encoding, little-endian)\n", wire)
	if name != "" {
		fmt.Fprintf(w, "raw_schemas:  %s@%016x\n", name, fp)
	}
}

// previousSchema is the schema NEW is compared with.
type previousSchema struct {
	text  string
	label string // in words: "old.avsc", "version 3 of subject s (id 12)"
}

func schemasCheck(ctx context.Context, e env) int {
	const cmd = "schemas check"
	fs := newFlags(e, cmd, "schemas check NEW.avsc [--previous OLD.avsc | [--config FILE | --registry URL] --subject S] [flags]")
	previous := fs.String("previous", "", "the previous schema version, an .avsc file")
	cfgPath := fs.String("config", "", "take the registry (schemas.registry: URL, credentials, *_file secrets) and the routing field paths from this config `file`")
	registryURL := fs.String("registry", os.Getenv(envRegistryURL), "Confluent-compatible schema registry URL (default $"+envRegistryURL+"; overrides schemas.registry.url)")
	subject := fs.String("subject", "", "registry subject holding the previous versions, e.g. user-events-value")
	country := fs.String("country-field", "", "dotted path of the country field (default schemas.country_field, else country)")
	user := fs.String("user-id-field", "", "dotted path of the user id field (default schemas.user_id_field, else user_id)")
	timeout := fs.Duration("timeout", 15*time.Second, "how long to wait for the registry")
	out := addOutput(fs)
	pos, code, ok := parseInterleaved(fs, e.args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		fs.Usage()
		return exitUsage
	}
	if *previous != "" && *subject != "" {
		return fail(e, cmd, fmt.Errorf("%w: give either --previous or --subject, not both", errUsage))
	}
	// The registry and field paths: the config's, with the flags and the
	// environment over them.
	reg := schemas.RegistryConfig{URL: *registryURL, Username: os.Getenv(envRegistryUser), Password: os.Getenv(envRegistryPassword),
		BearerToken: os.Getenv(envRegistryToken)}
	paths := [2]string{schemas.DefaultCountryField, schemas.DefaultUserIDField}
	if *cfgPath != "" {
		cfg, err := loadConfig(*cfgPath, config.Scope{}, nil)
		if err != nil {
			return fail(e, cmd, err)
		}
		reg = cfg.Schemas.Registry // its own RESIDENCY_SCHEMAS_REGISTRY_* variables applied
		override(map[*string]string{&reg.URL: flagValue(fs, "registry")})
		paths = [2]string{cfg.Schemas.CountryField, cfg.Schemas.UserIDField}
	}
	override(map[*string]string{&paths[0]: *country, &paths[1]: *user})
	if *subject != "" && reg.URL == "" {
		return fail(e, cmd, fmt.Errorf("%w: --subject needs a registry: --registry, $%s or schemas.registry.url of --config", errUsage, envRegistryURL))
	}
	newText, err := os.ReadFile(pos[0])
	if err != nil {
		return fail(e, cmd, fmt.Errorf("%w: %v", errUsage, err))
	}

	var prev *previousSchema
	note := ""
	switch {
	case *previous != "":
		b, err := os.ReadFile(*previous)
		if err != nil {
			return fail(e, cmd, fmt.Errorf("%w: %v", errUsage, err))
		}
		prev = &previousSchema{text: string(b), label: *previous}
	case *subject != "":
		reg.Timeout = *timeout
		client, err := schemas.NewRegistry(reg, nil)
		if err != nil {
			return fail(e, cmd, fmt.Errorf("%w: %v", errUsage, err))
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		latest, err := client.Latest(ctx, *subject)
		cancel()
		switch {
		case errors.Is(err, schemas.ErrSubjectNotFound):
			note = fmt.Sprintf("Subject %s has no versions yet: this will be its first, so there is nothing to be compatible with.", *subject)
		case err != nil:
			fmt.Fprintf(e.stderr, "residency %s: %v\n", cmd, err)
			return exitNotReady
		case latest.SchemaType != "" && latest.SchemaType != "AVRO":
			return fail(e, cmd, fmt.Errorf("subject %s holds %s schemas, not Avro", *subject, latest.SchemaType))
		default:
			prev = &previousSchema{text: latest.Schema,
				label: fmt.Sprintf("version %d of subject %s (schema id %d)", latest.Version, *subject, latest.ID)}
		}
	}
	r, err := checkSchema(pos[0], string(newText), prev, paths[0], paths[1])
	if err != nil {
		return fail(e, cmd, fmt.Errorf("%w: %v", errUsage, err))
	}
	r.Note = note
	return reportCheck(e.stdout, r, out.JSON())
}

// flagValue is the value of flag name if it was given on the command line,
// else "".
func flagValue(fs *flag.FlagSet, name string) string {
	v := ""
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			v = f.Value.String()
		}
	})
	return v
}

// schemaCheck is what `schemas check` finds (--output json prints it).
type schemaCheck struct {
	// Schema is the new schema's file.
	Schema string `json:"schema"`
	// Valid is false when the new schema is not valid Avro (Error says
	// why; nothing else was checked).
	Valid bool   `json:"valid"`
	Error string `json:"error,omitempty"`
	// Routing holds the checks of the country and user id fields.
	Routing []fieldResult `json:"routing,omitempty"`
	// Routable is true when the router can place events written with it.
	Routable bool `json:"routable"`
	// Previous names the schema it was compared with ("" when none).
	Previous string `json:"previous,omitempty"`
	// Compatible is whether readers using the new schema read events
	// written with the previous one; absent when not checked.
	Compatible *bool `json:"compatible,omitempty"`
	// Findings say why not.
	Findings []string `json:"findings,omitempty"`
	// Note says something about the comparison (a subject's first version).
	Note string `json:"note,omitempty"`
	// Verdict is "yes" or "no".
	Verdict string `json:"verdict"`
}

// fieldResult is one routing field's check.
type fieldResult struct {
	Field   string `json:"field"`
	Path    string `json:"path"`
	Type    string `json:"type,omitempty"`
	OK      bool   `json:"ok"`
	Problem string `json:"problem,omitempty"`
	Role    string `json:"role"`
}

// checkSchema checks newText (routable, and backward compatible with prev
// when given).
func checkSchema(name, newText string, prev *previousSchema, country, user string) (schemaCheck, error) {
	r := schemaCheck{Schema: name, Verdict: "no"}
	routing, err := schemas.CheckRoutable(newText, country, user)
	if errors.Is(err, schemas.ErrBadSchema) {
		r.Error = err.Error()
		return r, nil
	}
	if err != nil {
		return r, err
	}
	r.Valid, r.Routable = true, routing.Routable()
	for _, f := range []struct {
		field string
		c     schemas.FieldCheck
		role  string
	}{
		{"country", routing.Country, "events are placed by it; a null or unknown country goes to quarantine"},
		{"user_id", routing.UserID, "pins (per-user overrides) look it up"},
	} {
		r.Routing = append(r.Routing, fieldResult{Field: f.field, Path: f.c.Path, Type: f.c.Type, OK: f.c.OK, Problem: f.c.Problem, Role: f.role})
	}
	compatible := true
	if prev != nil {
		r.Previous = prev.label
		findings, err := schemas.CheckBackward(newText, prev.text)
		switch {
		case err != nil:
			compatible = false
			r.Findings = []string{err.Error()}
		default:
			compatible = len(findings) == 0
			for _, f := range findings {
				r.Findings = append(r.Findings, f.String())
			}
		}
		r.Compatible = &compatible
	}
	if r.Routable && compatible {
		r.Verdict = "yes"
	}
	return r, nil
}

// reportCheck writes the findings of `schemas check` (text or JSON) and
// returns its exit code.
func reportCheck(w io.Writer, r schemaCheck, asJSON bool) int {
	code := exitFailure
	if r.Verdict == "yes" {
		code = exitOK
	}
	if asJSON {
		_ = writeJSON(w, r)
		return code
	}
	if r.Note != "" {
		fmt.Fprintf(w, "%s\n\n", r.Note)
	}
	if !r.Valid {
		fmt.Fprintf(w, "%s is not a valid Avro schema: %s\n\nVerdict: NO. Fix the schema first.\n", r.Schema, r.Error)
		return code
	}
	fmt.Fprintf(w, "Routing: can the router still find each event's jurisdiction in %s?\n", r.Schema)
	for _, f := range r.Routing {
		if f.OK {
			fmt.Fprintf(w, "  ok    %s (%s): %s\n", f.Path, f.Type, f.Role)
		} else {
			fmt.Fprintf(w, "  FAIL  %s: %s\n", f.Path, f.Problem)
		}
	}
	fmt.Fprintln(w)
	if r.Compatible == nil {
		fmt.Fprintln(w, "Backward compatibility: not checked (no --previous or --subject given).")
	} else {
		fmt.Fprintf(w, "Backward compatibility: can readers using %s read events written with %s?\n", r.Schema, r.Previous)
		if *r.Compatible {
			fmt.Fprintln(w, "  ok    yes: every field resolves under the Avro rules")
		}
		for _, f := range r.Findings {
			fmt.Fprintf(w, "  FAIL  %s\n", f)
		}
	}
	compatible := r.Compatible == nil || *r.Compatible
	fmt.Fprintln(w)
	switch {
	case r.Routable && compatible:
		fmt.Fprintln(w, "Verdict: yes. Events written with this schema will be routed, and it is backward compatible.")
	case r.Routable:
		fmt.Fprintln(w, "Verdict: NO. Events would be routed, but the schema is not backward compatible with the previous version.")
	case compatible:
		fmt.Fprintln(w, "Verdict: NO. The router could not place events written with this schema.")
	default:
		fmt.Fprintln(w, "Verdict: NO. The router could not place events written with this schema, and it is not backward compatible.")
	}
	return code
}
