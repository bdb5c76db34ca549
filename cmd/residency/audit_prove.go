package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/residency-router/residency/audit"
)

// runAuditProve is `residency audit prove`: it finds the first leaf about
// one record (--source topic/partition/offset) or one event (--event-id,
// matched by its keyed hash with audit.subject_key_file) in the log at its
// latest checkpoint and prints its inclusion proof document (JSON). Exit 1
// when no leaf matches.
func runAuditProve(ctx context.Context, e env) int {
	fs := newFlags(e, "audit prove", "audit prove --config FILE [--log-key FILE] (--source TOPIC/PARTITION/OFFSET | --event-id ID)")
	cfgPath := fs.String("config", os.Getenv("RESIDENCY_CONFIG"), "config `file` (default $RESIDENCY_CONFIG)")
	logKey := fs.String("log-key", "", "the log's public key `file` (default audit.log_public_key_file)")
	source := fs.String("source", "", "the record read, as `TOPIC/PARTITION/OFFSET`")
	eventID := fs.String("event-id", "", "the event's id (matched by its keyed hash; needs audit.subject_key_file)")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() > 0 || (*source == "") == (*eventID == "") {
		fmt.Fprintln(e.stderr, "residency audit prove: give exactly one of --source and --event-id")
		fs.Usage()
		return exitUsage
	}
	err := auditProve(ctx, e, *cfgPath, *logKey, *source, *eventID)
	if err != nil {
		return auditFail(e, "audit prove", err)
	}
	return exitOK
}

// parseSource parses TOPIC/PARTITION/OFFSET (the topic may hold slashes).
func parseSource(s string) (topic string, partition int32, offset int64, err error) {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 {
		return "", 0, 0, usagef("--source %q: want TOPIC/PARTITION/OFFSET", s)
	}
	j := strings.LastIndexByte(s[:i], '/')
	if j <= 0 {
		return "", 0, 0, usagef("--source %q: want TOPIC/PARTITION/OFFSET", s)
	}
	p, err1 := strconv.ParseInt(s[j+1:i], 10, 32)
	o, err2 := strconv.ParseInt(s[i+1:], 10, 64)
	if err1 != nil || err2 != nil || p < 0 || o < 0 {
		return "", 0, 0, usagef("--source %q: partition and offset must be non-negative integers", s)
	}
	return s[:j], int32(p), o, nil
}

func auditProve(ctx context.Context, e env, cfgPath, logKey, source, eventID string) error {
	var match func(*audit.Leaf) bool
	if source != "" {
		t, p, o, err := parseSource(source)
		if err != nil {
			return err
		}
		match = audit.BySource(t, p, o)
	}
	cfg, err := auditConfig(cfgPath)
	if err != nil {
		return err
	}
	if eventID != "" {
		ps, err := cfg.Audit.Pseudonymizer()
		if err != nil {
			return exitError{code: exitUsage, err: err}
		}
		if ps == nil {
			return usagef("--event-id needs audit.subject_key_file: leaves carry the event id's keyed hash")
		}
		match = audit.ByEvent(ps.Event([]byte(eventID)))
	}
	vkey, err := logPublicKey(cfg, logKey)
	if err != nil {
		return err
	}
	store, closeStore, err := openAuditBucket(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	lg, err := audit.OpenLog(ctx, store, vkey)
	if err != nil {
		return logOpenError(err)
	}
	idx, err := audit.FindLeaf(ctx, lg, match)
	if err != nil {
		if errors.Is(err, audit.ErrLeafNotFound) {
			return withCode(exitFailure, err)
		}
		return logOpenError(err)
	}
	p, err := audit.Prove(ctx, lg, idx)
	if err != nil {
		return proveError(idx, err)
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

// proveError gives an error of audit.Prove its exit code: a leaf found in
// the bucket whose proof does not lead to the signed checkpoint's root was
// altered there, so the log does not verify (exit 1), with a message that
// says so rather than the Merkle library's roots as decimal bytes.
func proveError(idx int64, err error) error {
	if errors.Is(err, audit.ErrBadProof) {
		return withCode(exitFailure, fmt.Errorf("%w: leaf %d in the bucket does not hash into the signed checkpoint (run audit verify)", audit.ErrAlteredLog, idx))
	}
	return logOpenError(err)
}

// logOpenError gives an error reading the log its exit code: a log that
// does not verify (bad signature, altered) is a finding (1), anything else
// could not be read (3).
func logOpenError(err error) error {
	switch {
	case errors.Is(err, audit.ErrAlteredLog), errors.Is(err, audit.ErrBadCheckpoint):
		return withCode(exitFailure, err)
	}
	return unreadable("the log in audit.bucket", err)
}

// runAuditCheckProof is `residency audit check-proof --log-key FILE
// PROOF.json`: it checks a proof document offline (no config, no network)
// and prints the leaf and the checkpoint it is in. Exit 0 when it verifies,
// 1 when it does not, 2 on bad usage or an unreadable key or proof file.
func runAuditCheckProof(e env) int {
	fs := newFlags(e, "audit check-proof", "audit check-proof --log-key FILE [--output text|json] PROOF.json")
	logKey := fs.String("log-key", "", "the log's public key `file` (required)")
	o := addOutput(fs)
	pos, code, ok := parseInterleaved(fs, e.args)
	if !ok {
		return code
	}
	if len(pos) != 1 || *logKey == "" {
		fs.Usage()
		return exitUsage
	}
	vkey, err := logPublicKey(nil, *logKey)
	if err != nil {
		return auditFail(e, "audit check-proof", err)
	}
	doc, err := os.ReadFile(pos[0])
	if err != nil {
		return auditFail(e, "audit check-proof", usagef("%v", err))
	}
	leaf, cp, err := audit.CheckProof(doc, vkey)
	if err != nil {
		if o.JSON() {
			_ = writeJSON(e.stdout, map[string]any{"verified": false, "error": err.Error()})
		}
		fmt.Fprintf(e.stderr, "residency audit check-proof: the proof does not verify: %s\n", oneLine(err))
		return exitFailure
	}
	enc, _ := leaf.Encode()
	if o.JSON() {
		_ = writeJSON(e.stdout, map[string]any{"verified": true, "origin": cp.Origin, "tree_size": cp.Size,
			"root_hash": fmt.Sprintf("%x", cp.Root[:]), "leaf": json.RawMessage(enc)})
		return exitOK
	}
	fmt.Fprintf(e.stdout, "verified: the leaf is in the log %s of size %d (root %x)\nleaf: %s\n", cp.Origin, cp.Size, cp.Root[:], enc)
	return exitOK
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }
