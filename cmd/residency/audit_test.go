package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// auditRun runs `residency audit args...` with a short deadline.
func auditRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := run(ctx, append([]string{"audit"}, args...), nil, &out, &errb)
	return code, out.String(), errb.String()
}

// auditKeys makes a log key pair and an attestation secret in a temporary
// directory and returns it.
func auditKeys(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if code, _, errb := auditRun(t, "keygen", "--origin", "residency.test/audit", "--witness", "w1", "--attest", "k1", "--out", dir); code != exitOK {
		t.Fatalf("keygen = %d: %s", code, errb)
	}
	return dir
}

// auditConfigFile writes a config whose clusters are unreachable (nothing
// listens on port 1) with the given audit section lines.
func auditConfigFile(t *testing.T, auditYAML string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "residency.yaml")
	cfg := fmt.Sprintf(`
log_level: warn
http: {listen: "off"}
kafka:
  clusters:
    a: {brokers: ["127.0.0.1:1"]}
  ingest_cluster: a
router:
  ingest_topics: [events]
audit:
%s
`, auditYAML)
	if err := os.WriteFile(f, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestAuditKeygen(t *testing.T) {
	dir := auditKeys(t)
	for name, mode := range map[string]os.FileMode{"log.key": 0o600, "log.pub": 0o644, "witness-w1.key": 0o600, "witness-w1.pub": 0o644, "attest-k1.key": 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", name, st.Mode().Perm(), mode)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "attest-k1.key"))
	if len(strings.TrimSpace(string(b))) != 64 {
		t.Errorf("attestation secret %q is not 32 bytes in hex", b)
	}
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"NoFlags", nil, exitUsage},
		{"NoOut", []string{"--origin", "x"}, exitUsage},
		{"NothingToMake", []string{"--out", t.TempDir()}, exitUsage},
		{"BadFlag", []string{"--nope"}, exitUsage},
		{"NeverReplaces", []string{"--origin", "x", "--out", dir}, exitUsage},
		{"PathInName", []string{"--attest", "../k", "--out", t.TempDir()}, exitUsage},
		{"Help", []string{"-h"}, exitOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, errb := auditRun(t, append([]string{"keygen"}, tc.args...)...); code != tc.want {
				t.Fatalf("keygen %v = %d, want %d: %s", tc.args, code, tc.want, errb)
			}
		})
	}
	code, out, _ := auditRun(t, "keygen", "--attest", "k2", "--out", dir, "--output", "json")
	if code != exitOK || !strings.Contains(out, `"written":[`) {
		t.Fatalf("keygen --output json = %d %s", code, out)
	}
}

func TestAuditUsage(t *testing.T) {
	if code, _, _ := auditRun(t); code != exitUsage {
		t.Errorf("audit = %d, want 2", code)
	}
	if code, _, errb := auditRun(t, "nope"); code != exitUsage || !strings.Contains(errb, `unknown subcommand "nope"`) {
		t.Errorf("audit nope = %d %s", code, errb)
	}
	if code, out, _ := auditRun(t, "--help"); code != exitOK || !strings.Contains(out, "check-proof") {
		t.Errorf("audit --help = %d %s", code, out)
	}
}

// TestAuditErrorPaths checks the exit code and message of every error path
// of integrate, verify, prove and check-proof that needs no service.
func TestAuditErrorPaths(t *testing.T) {
	keys := auditKeys(t)
	bucket := "file://" + t.TempDir()
	good := auditConfigFile(t, fmt.Sprintf("  bucket: %s\n  log_key_file: %s\n  log_public_key_file: %s", bucket, filepath.Join(keys, "log.key"), filepath.Join(keys, "log.pub")))
	noBucket := auditConfigFile(t, fmt.Sprintf("  log_key_file: %s\n  log_public_key_file: %s", filepath.Join(keys, "log.key"), filepath.Join(keys, "log.pub")))
	noKeys := auditConfigFile(t, "  bucket: "+bucket)
	badKey := filepath.Join(t.TempDir(), "bad.key")
	_ = os.WriteFile(badKey, []byte("not a key\n"), 0o600)
	wrongKeyFile := auditConfigFile(t, fmt.Sprintf("  bucket: %s\n  log_key_file: %s", bucket, badKey))
	// Nothing answers on 127.0.0.1:1: the bucket is out of reach.
	unreachable := auditConfigFile(t, fmt.Sprintf("  bucket: \"s3://b?endpoint=http://127.0.0.1:1&region=us-east-1&use_path_style=true\"\n  log_key_file: %s\n  log_public_key_file: %s",
		filepath.Join(keys, "log.key"), filepath.Join(keys, "log.pub")))
	badBucket := auditConfigFile(t, fmt.Sprintf("  bucket: \"nope://x\"\n  log_key_file: %s\n  log_public_key_file: %s", filepath.Join(keys, "log.key"), filepath.Join(keys, "log.pub")))
	t.Setenv("AWS_ACCESS_KEY_ID", "x")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "x")
	missing := filepath.Join(t.TempDir(), "missing")
	// A bucket nothing was integrated into: it holds no checkpoint.
	emptyBucket := auditConfigFile(t, fmt.Sprintf("  bucket: file://%s\n  log_key_file: %s\n  log_public_key_file: %s", t.TempDir(), filepath.Join(keys, "log.key"), filepath.Join(keys, "log.pub")))
	tests := []struct {
		name string
		args []string
		want int
		msg  string
	}{
		{"IntegrateNoConfig", []string{"integrate"}, exitUsage, "--config is required"},
		{"IntegrateMissingConfig", []string{"integrate", "--config", missing}, exitUsage, "missing"},
		{"IntegrateBadFlag", []string{"integrate", "--nope"}, exitUsage, ""},
		{"IntegrateBadIdle", []string{"integrate", "--config", good, "--once", "--idle", "0s"}, exitUsage, "--idle"},
		{"IntegrateNoLogKey", []string{"integrate", "--config", noKeys, "--once"}, exitUsage, "audit.log_key_file: required"},
		{"IntegrateWrongLogKey", []string{"integrate", "--config", wrongKeyFile, "--once"}, exitUsage, "audit.log_key_file"},
		{"IntegrateNoBucket", []string{"integrate", "--config", noBucket, "--once"}, exitUsage, "audit.bucket: required"},
		{"IntegrateBadBucket", []string{"integrate", "--config", badBucket, "--once"}, exitUsage, "audit.bucket"},
		{"IntegrateKafkaDown", []string{"integrate", "--config", good, "--once", "--idle", "1s"}, exitNotReady, "could not read"},
		{"IntegrateUnreachableBucket", []string{"integrate", "--config", unreachable, "--once", "--idle", "1s"}, exitNotReady, "could not read"},
		{"VerifyNoConfig", []string{"verify"}, exitUsage, "--config is required"},
		{"VerifyBadOutput", []string{"verify", "--config", good, "--output", "pdf"}, exitUsage, "--output"},
		{"VerifyBadSince", []string{"verify", "--config", good, "--since", "yesterday"}, exitUsage, "--since"},
		{"VerifyUntilBeforeSince", []string{"verify", "--config", good, "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"}, exitUsage, "--until"},
		{"VerifyBadOffsets", []string{"verify", "--config", good, "--offsets", "events/x/1-2"}, exitUsage, "--offsets"},
		{"VerifyOffsetsAndTime", []string{"verify", "--config", good, "--offsets", "events/0/1-2", "--since", "2026-01-01T00:00:00Z"}, exitUsage, "exclude"},
		{"VerifyMissingPrevious", []string{"verify", "--config", good, "--previous-checkpoint", missing}, exitUsage, "--previous-checkpoint"},
		{"VerifyMissingLogKey", []string{"verify", "--config", good, "--log-key", missing}, exitUsage, "--log-key"},
		{"VerifyNoLogKey", []string{"verify", "--config", noKeys}, exitUsage, "--log-key or audit.log_public_key_file"},
		{"VerifyBadLogKey", []string{"verify", "--config", good, "--log-key", badKey}, exitUsage, "holds no log public key"},
		{"VerifyEmptyBucket", []string{"verify", "--config", good}, exitNotReady, "could not read"},
		{"VerifyUnreachableBucket", []string{"verify", "--config", unreachable}, exitNotReady, "could not read"},
		{"ProveNeither", []string{"prove", "--config", good}, exitUsage, "exactly one"},
		{"ProveBoth", []string{"prove", "--config", good, "--source", "t/0/1", "--event-id", "e"}, exitUsage, "exactly one"},
		{"ProveBadSource", []string{"prove", "--config", good, "--source", "t/x/1"}, exitUsage, "--source"},
		{"ProveEventWithoutSubjectKey", []string{"prove", "--config", good, "--event-id", "e1"}, exitUsage, "audit.subject_key_file"},
		{"ProveUnreachableBucket", []string{"prove", "--config", unreachable, "--source", "t/0/1"}, exitNotReady, "could not read"},
		{"CheckProofNoArgs", []string{"check-proof"}, exitUsage, ""},
		{"CheckProofNoKey", []string{"check-proof", missing}, exitUsage, ""},
		{"CheckProofMissingKey", []string{"check-proof", "--log-key", missing, missing}, exitUsage, "--log-key"},
		{"CheckProofMissingProof", []string{"check-proof", "--log-key", filepath.Join(keys, "log.pub"), missing}, exitUsage, "missing"},
		{"CosignNoWitnessKey", []string{"cosign", "--config", good, "--state", "file://" + t.TempDir()}, exitUsage, "--witness-key and --state"},
		{"CosignNoState", []string{"cosign", "--config", good, "--witness-key", filepath.Join(keys, "witness-w1.key")}, exitUsage, "--witness-key and --state"},
		{"CosignBadFlag", []string{"cosign", "--nope"}, exitUsage, ""},
		{"CosignMissingWitnessKey", []string{"cosign", "--config", good, "--witness-key", missing, "--state", "file://" + t.TempDir()}, exitUsage, "--witness-key"},
		{"CosignNotAWitnessKey", []string{"cosign", "--config", good, "--witness-key", badKey, "--state", "file://" + t.TempDir()}, exitUsage, "--witness-key"},
		{"CosignNoConfig", []string{"cosign", "--witness-key", filepath.Join(keys, "witness-w1.key"), "--state", "file://" + t.TempDir()}, exitUsage, "--config is required"},
		{"CosignBadState", []string{"cosign", "--config", good, "--witness-key", filepath.Join(keys, "witness-w1.key"), "--state", "nope://x"}, exitUsage, "--state"},
		{"CosignStateIsLogBucket", []string{"cosign", "--config", good, "--witness-key", filepath.Join(keys, "witness-w1.key"), "--state", bucket}, exitUsage, "apart from the log"},
		{"CosignEmptyBucket", []string{"cosign", "--config", emptyBucket, "--witness-key", filepath.Join(keys, "witness-w1.key"), "--state", "file://" + t.TempDir()}, exitNotReady, "could not read"},
		{"CosignUnreachableBucket", []string{"cosign", "--config", unreachable, "--witness-key", filepath.Join(keys, "witness-w1.key"), "--state", "file://" + t.TempDir()}, exitNotReady, "could not read"},
		{"CheckProofGarbage", []string{"check-proof", "--log-key", filepath.Join(keys, "log.pub"), badKey}, exitFailure, "does not verify"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errb := auditRun(t, tc.args...)
			if code != tc.want || !strings.Contains(errb, tc.msg) {
				t.Fatalf("audit %v = %d, %q; want %d and a message with %q", tc.args, code, errb, tc.want, tc.msg)
			}
		})
	}
}

// TestAuditVerifyFileFlags (D9): a --witness-key, --previous-checkpoint or
// --checkpoint file that is not a key or a signed checkpoint at all (the
// config, a ruleset, a signed note of something else) is bad usage, exit
// 2 naming the flag, before anything is read; a well-formed checkpoint
// signed by another key is still the finding bad_signature (exit 1), and
// a real witness key passes the flag checks.
func TestAuditVerifyFileFlags(t *testing.T) {
	keys := auditKeys(t)
	bucket := "file://" + t.TempDir()
	good := auditConfigFile(t, fmt.Sprintf("  bucket: %s\n  log_key_file: %s\n  log_public_key_file: %s", bucket, filepath.Join(keys, "log.key"), filepath.Join(keys, "log.pub")))
	rulesFile := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte("version: 1\njurisdictions: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	skey, _, err := note.GenerateKey(rand.Reader, "other.example/audit")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	sign := func(text string) string {
		b, err := note.Sign(&note.Note{Text: text}, signer)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "note")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	notACheckpoint := sign("hello\n")
	otherCheckpoint := sign(string(fmtlog.Checkpoint{Origin: "other.example/audit", Size: 1, Hash: make([]byte, 32)}.Marshal()))
	empty := filepath.Join(t.TempDir(), "empty")
	_ = os.WriteFile(empty, nil, 0o600)
	for _, tc := range []struct {
		name string
		args []string
		want int
		msg  string
	}{
		{"WitnessKeyIsConfig", []string{"--witness-key", good}, exitUsage, "--witness-key"},
		{"PreviousIsConfig", []string{"--previous-checkpoint", good}, exitUsage, "--previous-checkpoint"},
		{"PreviousIsEmpty", []string{"--previous-checkpoint", empty}, exitUsage, "--previous-checkpoint"},
		{"CheckpointIsRules", []string{"--checkpoint", rulesFile}, exitUsage, "--checkpoint"},
		{"CheckpointIsAnotherNote", []string{"--checkpoint", notACheckpoint}, exitUsage, "not a checkpoint"},
		{"CheckpointOfAnotherLog", []string{"--checkpoint", otherCheckpoint}, exitFailure, ""},
		{"RealWitnessKey", []string{"--witness-key", filepath.Join(keys, "witness-w1.pub")}, exitNotReady, "could not read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"verify", "--config", good, "--output", "json"}, tc.args...)
			code, out, errb := auditRun(t, args...)
			if code != tc.want || !strings.Contains(errb, tc.msg) {
				t.Fatalf("audit %v = %d, %q; want %d and a message with %q", args, code, errb, tc.want, tc.msg)
			}
			if code == exitUsage && out != "" {
				t.Fatalf("a usage error printed a report: %s", out)
			}
			if code == exitFailure && !strings.Contains(out, `"bad_signature"`) {
				t.Fatalf("want the finding bad_signature: %s", out)
			}
		})
	}
}
