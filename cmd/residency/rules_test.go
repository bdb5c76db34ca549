package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/testenv"
)

// cli runs the residency binary's code with args and returns its exit code,
// stdout and stderr.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(testenv.Context(t, 30*time.Second), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// rulesCLI runs `residency rules SUB args... --redis ADDR --prefix P`.
func rulesCLI(t *testing.T, r *testenv.Redis, sub string, args ...string) (int, string, string) {
	t.Helper()
	return cli(t, append(append([]string{"rules", sub}, args...), "--redis", r.Addr, "--prefix", r.Prefix)...)
}

func mustCode(t *testing.T, want int, code int, out, errs string) {
	t.Helper()
	if code != want {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, want, out, errs)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	example     = "../../deploy/examples/rules.yaml"
	exampleNext = "../../deploy/examples/rules-next.yaml"
)

func TestRulesValidate(t *testing.T) {
	code, out, errs := cli(t, "rules", "validate", example, exampleNext)
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "rules.yaml: valid: 8 jurisdictions (57 countries), 8 regions, 8 stores") {
		t.Fatalf("stdout: %s", out)
	}

	data, _ := os.ReadFile(example)
	bad := writeFile(t, "bad.yaml", strings.Replace(strings.Replace(string(data), "[IN]", "[IN, XX]", 1), "regions: [us]", "regions: [us, mars]", 1))
	code, out, errs = cli(t, "rules", "validate", bad)
	mustCode(t, exitFailure, code, out, errs)
	for _, want := range []string{
		"bad.yaml: invalid ruleset (2 problems):",
		`bad.yaml:39: jurisdictions[3] (IN): country "XX" is not an assigned ISO 3166-1 alpha-2 code`,
		`bad.yaml:72: stores[0] (us-postgres): approved for region "mars", which is not defined in regions`,
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}

	code, out, errs = cli(t, "rules", "validate", filepath.Join(t.TempDir(), "missing.yaml"))
	mustCode(t, exitUsage, code, out, errs)
	code, out, errs = cli(t, "rules", "validate")
	mustCode(t, exitUsage, code, out, errs)
	code, out, errs = cli(t, "rules", "frobnicate")
	mustCode(t, exitUsage, code, out, errs)
}

func TestRulesApplyShowHistoryDiffRollback(t *testing.T) {
	r := testenv.NewRedis(t)

	code, out, errs := rulesCLI(t, r, "history")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "no version has been applied") {
		t.Fatalf("history on an empty store: %s", out)
	}

	code, out, errs = rulesCLI(t, r, "apply", example, "--author", "alice")
	mustCode(t, exitOK, code, out, errs)
	if !regexp.MustCompile(`applied .*rules.yaml as version 1 \(sha256 [0-9a-f]{12}, based on version 0, by alice\)`).MatchString(out) {
		t.Fatalf("apply output: %s", out)
	}
	code, out, errs = rulesCLI(t, r, "apply", example)
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "unchanged: version 1 already has this content") {
		t.Fatalf("re-apply output: %s", out)
	}

	// Review before applying: a file against the current version.
	code, out, errs = rulesCLI(t, r, "diff", "current", exampleNext)
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "from version 1 to ../../deploy/examples/rules-next.yaml:\n  country CH: unassigned (quarantined) → jurisdiction EU, region eu\n") {
		t.Fatalf("diff output: %s", out)
	}

	code, out, errs = rulesCLI(t, r, "apply", "--expect-version", "1", "--author", "bob", exampleNext)
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "as version 2") || !strings.Contains(out, "country CH: unassigned (quarantined) → jurisdiction EU, region eu") {
		t.Fatalf("apply output: %s", out)
	}

	// Someone reviewed against version 1, but version 2 is current.
	data, _ := os.ReadFile(example)
	other := writeFile(t, "other.yaml", strings.Replace(string(data), "[JP]", "[JP, KR]", 1))
	code, out, errs = rulesCLI(t, r, "apply", other, "--expect-version", "1", "--author", "carol")
	mustCode(t, exitFailure, code, out, errs)
	if !strings.Contains(errs, "refused: version 2 was applied by bob at ") || !strings.Contains(errs, "based on version 1") {
		t.Fatalf("conflict message: %s", errs)
	}

	code, out, errs = rulesCLI(t, r, "show", "1")
	mustCode(t, exitOK, code, out, errs)
	if !strings.HasPrefix(out, "# version 1, applied ") || !strings.Contains(out, "by alice, previous 0\n# sha256 ") || !strings.HasSuffix(out, string(data)) {
		t.Fatalf("show 1: %s", out)
	}

	code, out, errs = rulesCLI(t, r, "rollback", "1", "--author", "dave")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "rolled back: version 3 has the content of version 1 (based on version 2, by dave)") ||
		!strings.Contains(out, "country CH: jurisdiction EU, region eu → unassigned (its events will be quarantined)") {
		t.Fatalf("rollback output: %s", out)
	}

	code, out, errs = rulesCLI(t, r, "history")
	mustCode(t, exitOK, code, out, errs)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[1], "3 (current)") || !strings.Contains(lines[1], "dave") ||
		!strings.Contains(lines[1], "rollback to 1") || !strings.Contains(lines[2], "bob") || !strings.Contains(lines[3], "alice") {
		t.Fatalf("history:\n%s", out)
	}

	code, out, errs = rulesCLI(t, r, "diff", "2", "3", "--json")
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, `"countries":[{"country":"CH","from_jurisdiction":"EU","from_region":"eu","to_jurisdiction":"","to_region":""}]`) {
		t.Fatalf("diff --json: %s", out)
	}

	code, out, errs = rulesCLI(t, r, "show", "9")
	mustCode(t, exitFailure, code, out, errs)
	code, out, errs = rulesCLI(t, r, "show", "x")
	mustCode(t, exitUsage, code, out, errs)
	code, out, errs = rulesCLI(t, r, "diff", "1")
	mustCode(t, exitUsage, code, out, errs)
}

func TestRulesConcurrentApplyCLI(t *testing.T) {
	r := testenv.NewRedis(t)
	code, out, errs := rulesCLI(t, r, "apply", example)
	mustCode(t, exitOK, code, out, errs)
	data, _ := os.ReadFile(example)
	a := writeFile(t, "a.yaml", strings.Replace(string(data), "[JP]", "[JP, KR]", 1))
	b := writeFile(t, "b.yaml", strings.Replace(string(data), "[JP]", "[JP, TW]", 1))
	var wg sync.WaitGroup
	codes := make([]int, 2)
	outs := make([]string, 2)
	for i, f := range []string{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o, e string
			codes[i], o, e = rulesCLI(t, r, "apply", f, "--expect-version", "1")
			outs[i] = o + e
		}()
	}
	wg.Wait()
	if codes[0]+codes[1] != exitFailure {
		t.Fatalf("exit codes %v, want one 0 and one 1:\n%s\n%s", codes, outs[0], outs[1])
	}
	loser := outs[0]
	if codes[1] == exitFailure {
		loser = outs[1]
	}
	if !strings.Contains(loser, "refused: version 2 was applied by ") {
		t.Fatalf("loser's message: %s", loser)
	}
}

func TestRulesPins(t *testing.T) {
	r := testenv.NewRedis(t)
	code, out, errs := rulesCLI(t, r, "pin", "user-7", "EU")
	mustCode(t, exitFailure, code, out, errs)
	code, out, errs = rulesCLI(t, r, "apply", example)
	mustCode(t, exitOK, code, out, errs)
	code, out, errs = rulesCLI(t, r, "pin", "user-7", "EU")
	mustCode(t, exitOK, code, out, errs)
	code, out, errs = rulesCLI(t, r, "pin", "user-8", "ATLANTIS")
	mustCode(t, exitFailure, code, out, errs)
	if !strings.Contains(errs, `jurisdiction "ATLANTIS" is not in version 1`) {
		t.Fatalf("pin to an unknown jurisdiction: %s", errs)
	}
	code, out, errs = rulesCLI(t, r, "pins")
	mustCode(t, exitOK, code, out, errs)
	if !regexp.MustCompile(`USER\s+JURISDICTION\nuser-7\s+EU\n`).MatchString(out) {
		t.Fatalf("pins: %q", out)
	}
	code, out, errs = rulesCLI(t, r, "unpin", "user-7")
	mustCode(t, exitOK, code, out, errs)
	code, out, errs = rulesCLI(t, r, "unpin", "user-7")
	mustCode(t, exitFailure, code, out, errs)
	code, out, errs = rulesCLI(t, r, "pins", "--json")
	mustCode(t, exitOK, code, out, errs)
	if strings.TrimSpace(out) != "[]" {
		t.Fatalf("pins --json after unpin: %s", out)
	}
}

func TestRulesRedisUnavailable(t *testing.T) {
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	for _, args := range [][]string{{"apply", example}, {"history"}, {"pins"}, {"diff", "1", "2"}} {
		code, out, errs := cli(t, append(append([]string{"rules"}, args...), "--redis", addr)...)
		mustCode(t, exitNotReady, code, out, errs)
		if !strings.Contains(errs, "redis unavailable") {
			t.Fatalf("%v: stderr %s", args, errs)
		}
	}
	// An invalid file is refused before Redis is asked.
	bad := writeFile(t, "bad.yaml", "jurisdictions: []\n")
	code, out, errs := cli(t, "rules", "apply", bad, "--redis", addr)
	mustCode(t, exitFailure, code, out, errs)
}

// TestRulesWarnAboutWhatTheConfigLacks: with --config, `rules validate` and
// `rules apply` warn when the ruleset names a cluster the config does not
// have (saying what to add) or sinks it does not match; the ruleset is
// still valid and applied. The example config knows every cluster of the
// example ruleset.
func TestRulesWarnAboutWhatTheConfigLacks(t *testing.T) {
	r := testenv.NewRedis(t)
	k := testenv.KafkaA(t)
	_, history := historyConfig(t, r, k)
	oneCluster := writeFile(t, "one.yaml", "kafka: {clusters: {ingest: {brokers: [\""+k.Brokers[0]+"\"]}}}\nrouter: {ingest_topics: [events.ingest]}\n"+
		"redis: {addr: \""+r.Addr+"\", prefix: \""+r.Prefix+"\"}\nrules: {history_topic: \""+history+"\"}\n"+
		"sinks: [{store: eu-objectstore, region: eu, objectstore: {url: \"file:///tmp/x\"}}, {store: nowhere-postgres, region: us, postgres: {dsn: \"postgres://h/db\"}}]\n")
	want := []string{
		`warning: ` + example + `: kafka.clusters: the ruleset puts region(s) eu, uk on cluster "eu", which ` + oneCluster + ` does not have: add it (kafka: {clusters: {eu: {brokers: [HOST:PORT]}}})`,
		`sinks[1].store: the ruleset does not approve store "nowhere-postgres" for region us`,
	}
	code, out, errs := cli(t, "rules", "validate", example, "--config", oneCluster)
	mustCode(t, exitOK, code, out, errs)
	for _, w := range want {
		if !strings.Contains(errs, w) {
			t.Errorf("validate --config: stderr lacks %q:\n%s", w, errs)
		}
	}
	code, out, errs = cli(t, "rules", "apply", example, "--config", oneCluster)
	mustCode(t, exitOK, code, out, errs)
	if !strings.Contains(out, "as version 1") || !strings.Contains(errs, want[0]) {
		t.Errorf("apply --config: stdout %q stderr %q", out, errs)
	}
	// The examples are consistent: no warning.
	code, out, errs = cli(t, "rules", "validate", example, exampleNext, "--config", "../../deploy/examples/residency.yaml")
	mustCode(t, exitOK, code, out, errs)
	if errs != "" {
		t.Errorf("the example config and rulesets: %s", errs)
	}
	// A broken config is a usage error naming the field.
	bad := writeFile(t, "bad.yaml", "redis: {addr: nohost}\n")
	code, out, errs = cli(t, "rules", "validate", example, "--config", bad)
	if code != exitUsage || !strings.Contains(errs, "redis.addr") {
		t.Errorf("bad config: exit %d, %s %s", code, out, errs)
	}
}
