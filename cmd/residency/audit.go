package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"gocloud.dev/blob"
	"golang.org/x/mod/sumdb/note"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/internal/config"
)

// auditUsage is the help of `residency audit`.
const auditUsage = `Usage: residency audit <subcommand> [flags]

The tamper-evident audit log (docs/audit.md).

Subcommands:
  keygen        make the log's key pair (--origin), a witness pair (--witness) or an attestation secret (--attest)
  integrate     append the audit topic's leaves to the log in the bucket and sign checkpoints (a service; --once: what is there, then exit)
  verify        check the log, the topics and the stores against each other and print the report (exit 1 on findings)
  prove         print the inclusion proof of one decision (--source topic/partition/offset or --event-id)
  check-proof   check an inclusion proof offline with the log's public key (exit 1 if it does not verify)
  cosign        a witness: cosign the log's latest checkpoint if it extends the last one cosigned (exit 1 if not)
`

// runAudit is `residency audit`.
func runAudit(ctx context.Context, e env) int {
	return subcommands(e, "audit", auditUsage, map[string]func(env) int{
		"keygen":      runAuditKeygen,
		"integrate":   func(e env) int { return runAuditIntegrate(ctx, e) },
		"verify":      func(e env) int { return runAuditVerify(ctx, e) },
		"prove":       func(e env) int { return runAuditProve(ctx, e) },
		"check-proof": runAuditCheckProof,
		"cosign":      func(e env) int { return runAuditCosign(ctx, e) },
	})
}

// errUnreadable marks what a command could not read (Kafka, a store, the
// bucket): exit code exitNotReady.
var errUnreadable = errors.New("could not read")

// unreadable wraps err as a could-not-read error (exit code 3) saying what.
func unreadable(what string, err error) error {
	return exitError{code: exitNotReady, err: fmt.Errorf("%w %s: %w", errUnreadable, what, err)}
}

// auditConfig loads and checks the config for an audit subcommand.
func auditConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, usagef("--config is required (or $RESIDENCY_CONFIG)")
	}
	cfg, err := config.Load(path, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	if err := cfg.Finish(config.Scope{}); err != nil {
		return nil, err
	}
	return cfg, nil
}

// openAuditBucket opens audit.bucket as the log's store. The bucket is
// closed when ctx's caller calls the returned function.
func openAuditBucket(ctx context.Context, cfg *config.Config) (audit.Store, func(), error) {
	if cfg.Audit.Bucket == "" {
		return nil, nil, exitError{code: exitUsage, err: errors.New("audit.bucket: required: the object store the log lives in")}
	}
	b, err := blob.OpenBucket(ctx, cfg.Audit.Bucket)
	if err != nil {
		return nil, nil, exitError{code: exitUsage, err: fmt.Errorf("audit.bucket: %w", err)}
	}
	return objectstore.AuditLogStore{Bucket: b}, func() { _ = b.Close() }, nil
}

// logPublicKey returns the log's verifier key: from keyFile (--log-key) or
// else audit.log_public_key_file.
func logPublicKey(cfg *config.Config, keyFile string) (string, error) {
	field := "--log-key"
	if keyFile == "" && cfg != nil {
		keyFile, field = cfg.Audit.LogPublicKeyFile, "audit.log_public_key_file"
	}
	if keyFile == "" {
		return "", usagef("--log-key or audit.log_public_key_file is required: the log's public key")
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return "", usagef("%s: %v", field, err)
	}
	k := string(trimSpace(b))
	if _, err := note.NewVerifier(k); err != nil {
		return "", usagef("%s: %s holds no log public key: %v", field, keyFile, err)
	}
	return k, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n') {
		b = b[1:]
	}
	return b
}

// auditFeed returns the feed of the audit topic on the ingest cluster.
func auditFeed(cfg *config.Config) (*kafka.AuditFeed, error) {
	cl, ok := cfg.Kafka.Clusters[cfg.Kafka.IngestCluster]
	if !ok {
		return nil, exitError{code: exitUsage, err: fmt.Errorf("kafka.ingest_cluster: %q is not in kafka.clusters", cfg.Kafka.IngestCluster)}
	}
	cl.Name = cfg.Kafka.IngestCluster
	return kafka.NewAuditFeed(cl, cfg.AuditTopic())
}

// writeSecret writes data to path with mode 0600, refusing to replace a
// file.
func writeSecret(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// writePublic writes data to path with mode 0644, refusing to replace a
// file.
func writePublic(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
