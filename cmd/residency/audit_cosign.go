package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"gocloud.dev/blob"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/objectstore"
)

// runAuditCosign is `residency audit cosign`: a witness's run. It reads the
// log's latest checkpoint from audit.bucket, checks the log's signature and
// that it extends the last checkpoint this witness cosigned (kept in the
// witness's own store, --state), and writes the checkpoint with the
// witness's cosignature to --out (default stdout). Reviewers then verify at
// that checkpoint and require the witness: `audit verify --checkpoint FILE
// --witness-key witness-NAME.pub`. Exit 1 when the log does not extend
// what the witness cosigned (or its signature does not verify), 2 on bad
// usage or an unreadable key, 3 when the bucket or the state cannot be read.
func runAuditCosign(ctx context.Context, e env) int {
	fs := newFlags(e, "audit cosign", "audit cosign --config FILE [--log-key FILE] --witness-key FILE --state URL [--out FILE]")
	cfgPath := fs.String("config", os.Getenv("RESIDENCY_CONFIG"), "config `file` (default $RESIDENCY_CONFIG)")
	logKey := fs.String("log-key", "", "the log's public key `file` (default audit.log_public_key_file)")
	witnessKey := fs.String("witness-key", "", "the witness's signer key `file` (witness-NAME.key from audit keygen --witness; required)")
	state := fs.String("state", "", "the witness's own store, a bucket `URL` (file:///dir, s3://bucket?region=...): the last checkpoint it cosigned; never the log's bucket (required)")
	out := fs.String("out", "", "write the cosigned checkpoint to `file` (default stdout)")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() > 0 || *witnessKey == "" || *state == "" {
		fmt.Fprintln(e.stderr, "residency audit cosign: --witness-key and --state are required")
		fs.Usage()
		return exitUsage
	}
	if err := auditCosign(ctx, e, *cfgPath, *logKey, *witnessKey, *state, *out); err != nil {
		return auditFail(e, "audit cosign", err)
	}
	return exitOK
}

func auditCosign(ctx context.Context, e env, cfgPath, logKey, witnessKey, stateURL, out string) error {
	skey, err := readFlagFile("witness-key", witnessKey)
	if err != nil {
		return err
	}
	cfg, err := auditConfig(cfgPath)
	if err != nil {
		return err
	}
	vkey, err := logPublicKey(cfg, logKey)
	if err != nil {
		return err
	}
	if stateURL == cfg.Audit.Bucket {
		return usagef("--state %s: is audit.bucket; a witness keeps its state apart from the log it watches", stateURL)
	}
	sb, err := blob.OpenBucket(ctx, stateURL)
	if err != nil {
		return usagef("--state: %v", err)
	}
	defer func() { _ = sb.Close() }()
	w, err := audit.NewWitness(string(trimSpace(skey)), vkey, objectstore.AuditLogStore{Bucket: sb})
	if err != nil {
		return usagef("--witness-key: %s: %v", witnessKey, err)
	}
	store, closeStore, err := openAuditBucket(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	cosigned, err := w.Cosign(ctx, store)
	if err != nil {
		if errors.Is(err, audit.ErrNotExtending) {
			return withCode(exitFailure, fmt.Errorf("the log's checkpoint does not extend the last one this witness cosigned: %w", err))
		}
		switch {
		case errors.Is(err, audit.ErrAlteredLog), errors.Is(err, audit.ErrBadCheckpoint):
			return withCode(exitFailure, err)
		}
		return unreadable("the log in audit.bucket or the witness state in --state", err)
	}
	if out == "" {
		_, err = e.stdout.Write(cosigned)
		return err
	}
	if err := os.WriteFile(out, cosigned, 0o644); err != nil {
		return usagef("--out: %v", err)
	}
	return nil
}
