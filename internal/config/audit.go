package config

import (
	"bytes"
	"fmt"
	"os"

	"github.com/residency-router/residency/audit"
)

// AuditConfig is the audit section of the config (docs/audit.md). Of it,
// erase, residue clean and the sinks' erasure check use the
// pseudonymisation key: the erasure markers and the erasure leaves carry
// the keyed hash of a user id, never the id.
type AuditConfig struct {
	// Topic is the audit topic on the ingest cluster (one partition),
	// which `topics apply` creates. Default "residency.audit".
	Topic string `yaml:"topic"`
	// SubjectKeyFile is the file holding the pseudonymisation key (at least
	// 32 bytes, surrounding white space trimmed) of the keyed hashes of
	// event and user ids on leaves and erasure markers. Required by
	// `residency erase`; with it, sinks honour the erasure markers.
	// Default "": no keyed hashes.
	SubjectKeyFile string `yaml:"subject_key_file"`
	// Enabled turns the audit on for route, replay and sink: routers and
	// replay attest every record they write and make its decision leaf
	// durable on Topic before they commit; sinks refuse records without a
	// valid attestation (sink_bad_attestation) and log a leaf per record
	// written or refused. It needs attestation.sign_key (route, replay),
	// attestation.verify_keys (sink) and subject_key_file. Default false.
	Enabled bool `yaml:"enabled"`
	// Bucket is the object store URL the log lives in (file:///dir locally,
	// s3://bucket?region=… in production): tiles, entry bundles, the signed
	// checkpoint. Written by `audit integrate`, read by `audit verify` and
	// `audit prove`. Default "".
	Bucket string `yaml:"bucket"`
	// LogKeyFile is the file holding the log's Ed25519 signing key (a
	// signed-note private key, `residency audit keygen`), read by
	// `audit integrate` only. Default "".
	LogKeyFile string `yaml:"log_key_file"`
	// LogPublicKeyFile is the file holding the log's verifier key (the
	// signed-note public key), read by verify, prove and check-proof when
	// --log-key is not given. Default "".
	LogPublicKeyFile string `yaml:"log_public_key_file"`
	// Attestation holds the keys of the records' attestation tags.
	Attestation AttestationConfig `yaml:"attestation"`
}

// AttestationConfig holds the attestation keys (docs/audit.md "Keys and
// rotation").
type AttestationConfig struct {
	// SignKey is the key routers and replay tag records with. Required by
	// route and replay when audit.enabled. Default: none.
	SignKey AttestKeyConfig `yaml:"sign_key"`
	// VerifyKeys are the keys sinks and `audit verify` accept (during a
	// rotation, the old and the new). Required by sink when audit.enabled.
	// Default: none.
	VerifyKeys []AttestKeyConfig `yaml:"verify_keys"`
}

// AttestKeyConfig names one attestation key.
type AttestKeyConfig struct {
	// ID is the key's name, carried in every tag (1 to 64 of A-Z a-z 0-9
	// _ -). Default "".
	ID string `yaml:"id"`
	// File holds the secret (at least 32 bytes, surrounding white space
	// trimmed). Default "".
	File string `yaml:"file"`
}

// validateAudit checks the audit section: key files are read (and their
// keys checked) here, so a command never starts with a key it cannot use.
func (c *Config) validateAudit(ps *problems, s Scope) {
	a := &c.Audit
	if a.SubjectKeyFile != "" {
		if _, err := readSecret(a.SubjectKeyFile); err != nil {
			ps.add("audit.subject_key_file", "%v", err)
		}
	} else if s.Erase {
		ps.add("audit.subject_key_file", "required by erase: the erasure marker and the receipt name the user by its keyed hash")
	} else if a.Enabled && (s.Route || s.Sink != "") {
		ps.add("audit.subject_key_file", "required when audit.enabled: leaves name events and users by their keyed hash")
	}
	checkKey := func(field string, k AttestKeyConfig) {
		if k.ID == "" {
			ps.add(field+".id", "required: the key's name, carried in every tag")
		}
		if k.File == "" {
			ps.add(field+".file", "required: the file holding the secret")
			return
		}
		if k.ID == "" {
			return
		}
		if _, err := audit.LoadAttestKey(k.ID, k.File); err != nil {
			ps.add(field, "%v", err)
		}
	}
	if k := a.Attestation.SignKey; k != (AttestKeyConfig{}) {
		checkKey("audit.attestation.sign_key", k)
	} else if a.Enabled && s.Attest {
		ps.add("audit.attestation.sign_key", "required when audit.enabled: routers and replay attest every record they write")
	}
	seen := map[string]bool{}
	for i, k := range a.Attestation.VerifyKeys {
		field := fmt.Sprintf("audit.attestation.verify_keys[%d]", i)
		checkKey(field, k)
		if k.ID != "" && seen[k.ID] {
			ps.add(field+".id", "%q is listed twice", k.ID)
		}
		seen[k.ID] = true
	}
	if a.Enabled && s.Sink != "" && len(a.Attestation.VerifyKeys) == 0 {
		ps.add("audit.attestation.verify_keys", "required when audit.enabled: sinks refuse records without a valid attestation")
	}
	for field, f := range map[string]string{"audit.log_key_file": a.LogKeyFile, "audit.log_public_key_file": a.LogPublicKeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			ps.add(field, "%v", err)
		}
	}
}

// SignKey loads audit.attestation.sign_key (ok false when it is not set).
func (a *AuditConfig) SignKey() (k audit.AttestKey, ok bool, err error) {
	c := a.Attestation.SignKey
	if c == (AttestKeyConfig{}) {
		return audit.AttestKey{}, false, nil
	}
	k, err = audit.LoadAttestKey(c.ID, c.File)
	if err != nil {
		return k, false, FieldError("audit.attestation.sign_key", err)
	}
	return k, true, nil
}

// Verifier loads audit.attestation.verify_keys into a verifier (nil when
// none is set).
func (a *AuditConfig) Verifier() (*audit.AttestVerifier, error) {
	if len(a.Attestation.VerifyKeys) == 0 {
		return nil, nil
	}
	keys := make([]audit.AttestKey, 0, len(a.Attestation.VerifyKeys))
	for i, c := range a.Attestation.VerifyKeys {
		k, err := audit.LoadAttestKey(c.ID, c.File)
		if err != nil {
			return nil, FieldError(fmt.Sprintf("audit.attestation.verify_keys[%d]", i), err)
		}
		keys = append(keys, k)
	}
	v, err := audit.NewAttestVerifier(keys...)
	if err != nil {
		return nil, FieldError("audit.attestation.verify_keys", err)
	}
	return v, nil
}

// readSecret reads a key file: its content with surrounding white space
// removed, at least audit.MinKeyBytes bytes.
func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	if len(b) < audit.MinKeyBytes {
		return nil, fmt.Errorf("%s holds %d bytes, at least %d needed", path, len(b), audit.MinKeyBytes)
	}
	return b, nil
}

// Pseudonymizer returns the keyed hash of subject_key_file, or nil when it
// is not set.
func (a *AuditConfig) Pseudonymizer() (*audit.Pseudonymizer, error) {
	if a.SubjectKeyFile == "" {
		return nil, nil
	}
	b, err := readSecret(a.SubjectKeyFile)
	if err != nil {
		return nil, FieldError("audit.subject_key_file", err)
	}
	return audit.NewPseudonymizer(b)
}
