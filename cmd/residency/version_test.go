package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestVersion: `residency version` and `residency --version` print the
// stamped version and commit (-ldflags -X main.version, -X main.commit),
// in text or JSON; arguments are a usage error.
func TestVersion(t *testing.T) {
	oldV, oldC := version, commit
	t.Cleanup(func() { version, commit = oldV, oldC })
	version, commit = "v1.2.3", "0123456789ab"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, errs := cli(t, args...)
		if code != exitOK || out != "residency v1.2.3 (commit 0123456789ab)\n" {
			t.Errorf("%v: exit %d, %q %q", args, code, out, errs)
		}
	}
	code, out, _ := cli(t, "version", "--output", "json")
	var v map[string]string
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != exitOK || v["version"] != "v1.2.3" || v["commit"] != "0123456789ab" || !strings.HasPrefix(v["go"], "go") {
		t.Errorf("json: exit %d, %v, %q", code, err, out)
	}
	if code, _, _ := cli(t, "version", "extra"); code != exitUsage {
		t.Errorf("version extra: exit %d", code)
	}
	// Unstamped: the build info's, never empty.
	version, commit = "", ""
	if v, c := buildVersion(); v == "" || c == "" {
		t.Errorf("unstamped: %q %q", v, c)
	}
}
