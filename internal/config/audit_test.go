package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuditConfigErrorsNameTheField: every audit setting that is missing,
// unreadable or inconsistent is refused with its field path.
func TestAuditConfigErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.key")
	writeFile(t, short, "too short")
	good := filepath.Join(dir, "good.key")
	writeFile(t, good, strings.Repeat("a", 40)+"\n")
	sub := "audit: {enabled: true, subject_key_file: " + good + ", "
	sinks := "sinks: [{store: s, region: us, postgres: {dsn: 'postgres://h/db'}}]\n"
	for _, tt := range []struct {
		yaml  string
		scope Scope
		want  []string
	}{
		{"audit: {enabled: true}\n", Scope{Route: true, Attest: true},
			[]string{"audit.subject_key_file: required when audit.enabled", "audit.attestation.sign_key: required when audit.enabled"}},
		{sub + "attestation: {sign_key: {id: r1}}}\n", Scope{Route: true}, []string{"audit.attestation.sign_key.file: required"}},
		{sub + "attestation: {sign_key: {file: " + good + "}}}\n", Scope{Route: true}, []string{"audit.attestation.sign_key.id: required"}},
		{sub + "attestation: {sign_key: {id: r1, file: " + short + "}}}\n", Scope{Route: true}, []string{"audit.attestation.sign_key: "}},
		{sub + "attestation: {sign_key: {id: 'bad id!', file: " + good + "}}}\n", Scope{Route: true}, []string{"audit.attestation.sign_key: "}},
		{sub + "attestation: {verify_keys: [{id: a, file: " + good + "}, {id: a, file: " + good + "}]}}\n" + sinks, Scope{Sink: "s"},
			[]string{"audit.attestation.verify_keys[1].id: \"a\" is listed twice"}},
		{sub + "attestation: {}}\n" + sinks, Scope{Sink: "s"}, []string{"audit.attestation.verify_keys: required when audit.enabled"}},
		{"audit: {log_key_file: " + filepath.Join(dir, "none") + ", log_public_key_file: " + filepath.Join(dir, "none.pub") + "}\n", Scope{},
			[]string{"audit.log_key_file: ", "audit.log_public_key_file: "}},
	} {
		c, err := Parse([]byte(erasureBase + tt.yaml))
		if err != nil {
			t.Fatal(err)
		}
		err = c.Finish(tt.scope)
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("finish(%q) = %v, want ErrInvalid", tt.yaml, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("finish(%q): error %q does not mention %q", tt.yaml, err, w)
			}
		}
	}

	c, err := Parse([]byte(erasureBase + sub + "attestation: {sign_key: {id: r2, file: " + good + "}, verify_keys: [{id: r1, file: " + good + "}, {id: r2, file: " + good + "}]}}\n" + sinks))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Route: true, Attest: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(Scope{Sink: "s"}); err != nil {
		t.Fatal(err)
	}
	// purge and residue write no records: they need no signing key.
	c2, err := Parse([]byte(erasureBase + sub + "attestation: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Finish(Scope{Route: true}); err != nil {
		t.Errorf("purge's scope with audit.enabled and no sign_key: %v", err)
	}
	k, ok, err := c.Audit.SignKey()
	if err != nil || !ok || k.ID != "r2" {
		t.Fatalf("SignKey = %+v, %v, %v", k, ok, err)
	}
	v, err := c.Audit.Verifier()
	if err != nil || v == nil {
		t.Fatalf("Verifier = %v, %v", v, err)
	}
}
