package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

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
  check NEW.avsc [--previous OLD.avsc | --registry URL --subject S]
                      will events written with NEW still be routed, and can
                      readers using NEW read events written with the previous
                      schema (backward compatibility)?
  show                print the canonical user event schema (embedded)
  fingerprint FILE    print the CRC-64-AVRO fingerprint of a schema: as a
                      number (raw_schemas NAME@FINGERPRINT, the
                      residency-schema header) and in wire order (the 8
                      bytes after C3 01 in single-object encoding)

Registry credentials come from $` + envRegistryUser + ` and
$` + envRegistryPassword + ` (basic auth) or $` + envRegistryToken + ` (bearer).

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
	fs := newFlags(e, cmd, "schemas check NEW.avsc [--previous OLD.avsc | --registry URL --subject S] [flags]")
	previous := fs.String("previous", "", "the previous schema version, an .avsc file")
	registryURL := fs.String("registry", os.Getenv(envRegistryURL), "Confluent-compatible schema registry URL (default $"+envRegistryURL+")")
	subject := fs.String("subject", "", "registry subject holding the previous versions, e.g. user-events-value")
	country := fs.String("country-field", "country", "dotted path of the country field")
	user := fs.String("user-id-field", "user_id", "dotted path of the user id field")
	timeout := fs.Duration("timeout", 15*time.Second, "how long to wait for the registry")
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
	if *subject != "" && *registryURL == "" {
		return fail(e, cmd, fmt.Errorf("%w: --subject needs --registry (or $%s)", errUsage, envRegistryURL))
	}
	newText, err := os.ReadFile(pos[0])
	if err != nil {
		return fail(e, cmd, fmt.Errorf("%w: %v", errUsage, err))
	}

	var prev *previousSchema
	switch {
	case *previous != "":
		b, err := os.ReadFile(*previous)
		if err != nil {
			return fail(e, cmd, fmt.Errorf("%w: %v", errUsage, err))
		}
		prev = &previousSchema{text: string(b), label: *previous}
	case *subject != "":
		reg, err := schemas.NewRegistry(schemas.RegistryConfig{
			URL:         *registryURL,
			Timeout:     *timeout,
			Username:    os.Getenv(envRegistryUser),
			Password:    os.Getenv(envRegistryPassword),
			BearerToken: os.Getenv(envRegistryToken),
		}, nil)
		if err != nil {
			return fail(e, cmd, fmt.Errorf("%w: %v", errUsage, err))
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		latest, err := reg.Latest(ctx, *subject)
		cancel()
		switch {
		case errors.Is(err, schemas.ErrSubjectNotFound):
			fmt.Fprintf(e.stdout, "Subject %s has no versions yet: this will be its first, so there is nothing to be compatible with.\n\n", *subject)
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
	return reportCheck(e.stdout, pos[0], string(newText), prev, *country, *user)
}

// reportCheck writes the findings of `schemas check` and returns its exit
// code.
func reportCheck(w io.Writer, name, newText string, prev *previousSchema, country, user string) int {
	routing, err := schemas.CheckRoutable(newText, country, user)
	if errors.Is(err, schemas.ErrBadSchema) {
		fmt.Fprintf(w, "%s is not a valid Avro schema: %v\n\nVerdict: NO. Fix the schema first.\n", name, err)
		return exitFailure
	}
	if err != nil {
		fmt.Fprintf(w, "residency schemas check: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(w, "Routing: can the router still find each event's jurisdiction in %s?\n", name)
	for _, f := range []struct {
		c    schemas.FieldCheck
		role string
	}{
		{routing.Country, "events are placed by it; a null or unknown country goes to quarantine"},
		{routing.UserID, "pins (per-user overrides) look it up"},
	} {
		if f.c.OK {
			fmt.Fprintf(w, "  ok    %s (%s): %s\n", f.c.Path, f.c.Type, f.role)
		} else {
			fmt.Fprintf(w, "  FAIL  %s: %s\n", f.c.Path, f.c.Problem)
		}
	}

	compatible := true
	fmt.Fprintln(w)
	if prev == nil {
		fmt.Fprintln(w, "Backward compatibility: not checked (no --previous or --subject given).")
	} else {
		fmt.Fprintf(w, "Backward compatibility: can readers using %s read events written with %s?\n", name, prev.label)
		findings, err := schemas.CheckBackward(newText, prev.text)
		switch {
		case err != nil:
			compatible = false
			fmt.Fprintf(w, "  FAIL  %v\n", err)
		case len(findings) == 0:
			fmt.Fprintln(w, "  ok    yes: every field resolves under the Avro rules")
		default:
			compatible = false
			for _, f := range findings {
				fmt.Fprintf(w, "  FAIL  %s\n", f)
			}
		}
	}

	fmt.Fprintln(w)
	switch {
	case routing.Routable() && compatible:
		fmt.Fprintln(w, "Verdict: yes. Events written with this schema will be routed, and it is backward compatible.")
		return exitOK
	case routing.Routable():
		fmt.Fprintln(w, "Verdict: NO. Events would be routed, but the schema is not backward compatible with the previous version.")
	case compatible:
		fmt.Fprintln(w, "Verdict: NO. The router could not place events written with this schema.")
	default:
		fmt.Fprintln(w, "Verdict: NO. The router could not place events written with this schema, and it is not backward compatible.")
	}
	return exitFailure
}
