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
	}
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
