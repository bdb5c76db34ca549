package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// module is the module path; packages below are named relative to it.
const module = "github.com/residency-router/residency"

// pkg is what the rules look at of one package.
type pkg struct {
	Path    string   // relative to the module ("router/rules"), or a full path outside it
	Imports []string // its imports (not its tests'), module ones relative
	Deps    []string // everything it links, module ones relative
}

// clientLibraries are the client libraries that stay out of the routing
// decision and the runtimes (router, replay, sink): adapters in
// connectors/ speak to them.
var clientLibraries = []string{
	"github.com/segmentio/kafka-go", "github.com/redis/go-redis", "github.com/linkedin/goavro",
	"github.com/jackc/pgx", "gocloud.dev", "github.com/twmb/franz-go",
}

// rule says which packages of the module a package may import (nil: any),
// and which client libraries it must not.
type rule struct {
	module  []string // allowed module packages; prefixes ending in "/" allow a tree
	clients []string // forbidden client libraries (prefixes)
	why     string
}

// rules are the import rules of docs/package-layout.md, by package (or
// tree, ending in "/"). A package without a rule may import anything that
// the general rules allow (no test code in non-test packages).
var rules = map[string]rule{
	"stream":        {module: []string{}, why: "stream imports no package of this module"},
	"schemas":       {module: []string{"stream"}, why: "schemas imports no package of this module but stream"},
	"router/rules":  {module: []string{"stream"}, clients: clientLibraries, why: "router/rules imports no package of this module but stream, and no client library"},
	"router":        {module: []string{"stream", "schemas", "router/rules"}, clients: clientLibraries, why: "router imports only stream, schemas and router/rules, and no client library"},
	"router/replay": {module: []string{"router", "stream", "schemas", "router/rules"}, clients: clientLibraries, why: "router/replay imports only router, stream, schemas and router/rules, and no client library"},
	"sink":          {module: []string{"stream", "router", "router/rules", "schemas"}, clients: clientLibraries, why: "sink imports only stream, router, router/rules and schemas, and no client library"},
	"erasure":       {module: []string{"stream", "router", "router/rules", "schemas", "audit"}, clients: clientLibraries, why: "erasure imports only stream, router, router/rules, schemas and audit, and no client library"},
	"connectors/":   {module: []string{"stream", "router", "router/rules", "router/replay", "schemas", "sink", "erasure", "audit"}, why: "an adapter in connectors/ imports only the packages whose ports it implements (stream, router, router/rules, router/replay, schemas, sink, erasure, audit): never cmd, internal/ or another adapter"},
	"audit":         {module: []string{}, clients: clientLibraries, why: "audit imports no package of this module, and no client library (its Store adapter is in connectors/objectstore)"},
	"auditwire":     {module: []string{"stream", "router", "router/rules", "router/replay", "schemas", "sink", "erasure", "audit"}, clients: clientLibraries, why: "auditwire imports only the runtimes it connects (stream, router, router/rules, router/replay, schemas, sink, erasure) and audit, and no client library"},
}

// ruleOf returns the rule of package p, if any.
func ruleOf(p string) (rule, bool) {
	if r, ok := rules[p]; ok {
		return r, true
	}
	for k, r := range rules {
		if strings.HasSuffix(k, "/") && strings.HasPrefix(p, k) {
			return r, true
		}
	}
	return rule{}, false
}

// testOnly reports whether p is a package for tests only: a *test package
// (streamtest, sinktest, storetest, routertest, audittest) or
// internal/testenv. Only tests and other test-only packages import them.
func testOnly(p string) bool {
	return strings.HasSuffix(p, "test") || p == "internal/testenv"
}

func inModule(p string) bool {
	return !strings.Contains(strings.SplitN(p, "/", 2)[0], ".") && p != "testing" && !std[p]
}

// std is filled by load with the standard library's packages.
var std = map[string]bool{}

// check returns every violation of the rules among pkgs, one line each,
// naming the package, the import and the rule.
func check(pkgs []pkg) []string {
	var bad []string
	for _, p := range pkgs {
		r, hasRule := ruleOf(p.Path)
		for _, imp := range p.Imports {
			switch {
			case imp == "testing" && !testOnly(p.Path):
				bad = append(bad, p.Path+" imports testing: only tests and test-only packages (*test, internal/testenv) do")
			case inModule(imp) && testOnly(imp) && !testOnly(p.Path):
				bad = append(bad, p.Path+" imports "+imp+", a test-only package: only tests and test-only packages do")
			case hasRule && inModule(imp) && r.module != nil && !allowed(imp, r.module):
				bad = append(bad, p.Path+" imports "+imp+": "+r.why)
			case hasRule && !inModule(imp) && hasPrefix(imp, r.clients):
				bad = append(bad, p.Path+" imports "+imp+": "+r.why)
			case imp == "internal/config" && !strings.HasPrefix(p.Path, "cmd/"):
				bad = append(bad, p.Path+" imports internal/config: only cmd does (config depends on connectors, not the reverse)")
			case inModule(imp) && strings.HasPrefix(imp, "cmd/"):
				bad = append(bad, p.Path+" imports "+imp+": nothing imports a command")
			}
		}
	}
	return bad
}

func allowed(imp string, ok []string) bool {
	for _, a := range ok {
		if imp == a || (strings.HasSuffix(a, "/") && strings.HasPrefix(imp, a)) {
			return true
		}
	}
	return false
}

func hasPrefix(imp string, prefixes []string) bool {
	for _, p := range prefixes {
		if imp == p || strings.HasPrefix(imp, p+"/") {
			return true
		}
	}
	return false
}

// load lists the module's packages with `go list`.
func load(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "std").Output()
	if err != nil {
		t.Fatalf("go list std: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		std[p] = true
	}
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	rel := func(p string) string {
		if p == module {
			return "."
		}
		return strings.TrimPrefix(p, module+"/")
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath    string
			Imports, Deps []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		q := pkg{Path: rel(p.ImportPath)}
		for _, i := range p.Imports {
			q.Imports = append(q.Imports, rel(i))
		}
		for _, d := range p.Deps {
			q.Deps = append(q.Deps, rel(d))
		}
		pkgs = append(pkgs, q)
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	return pkgs
}

// TestImportRules: every package of the module keeps the import rules of
// docs/package-layout.md. A failure names the package, the import and the
// rule.
func TestImportRules(t *testing.T) {
	for _, v := range check(load(t)) {
		t.Error(v)
	}
}

// TestBinaryLinksNoTestCode: the residency binary links neither testing
// nor a test-only package of the module (`go list -deps ./cmd/residency`
// also prints the standard library's internal/synctest, which package sync
// imports: not test code).
func TestBinaryLinksNoTestCode(t *testing.T) {
	for _, p := range load(t) {
		if p.Path != "cmd/residency" {
			continue
		}
		for _, d := range p.Deps {
			if d == "testing" || (inModule(d) && testOnly(d)) {
				t.Errorf("the residency binary links %s", d)
			}
		}
		return
	}
	t.Fatal("cmd/residency not found")
}

// TestCheckCatchesViolations: the checker reports the imports the rules
// forbid, and only those.
func TestCheckCatchesViolations(t *testing.T) {
	for _, p := range []string{"fmt", "sync", "context", "net/http", "os"} {
		std[p] = true
	}
	got := check([]pkg{
		{Path: "router", Imports: []string{"github.com/redis/go-redis/v9", "connectors/kafka", "stream", "fmt"}},
		{Path: "router/rules", Imports: []string{"github.com/redis/go-redis/v9/internal"}},
		{Path: "stream", Imports: []string{"router"}},
		{Path: "schemas", Imports: []string{"stream", "router/rules"}},
		{Path: "sink", Imports: []string{"connectors/postgres", "github.com/jackc/pgx/v5"}},
		{Path: "connectors/kafka", Imports: []string{"internal/config", "stream", "github.com/segmentio/kafka-go"}},
		{Path: "connectors/redis", Imports: []string{"router/replay", "connectors/kafka"}},
		{Path: "internal/sample", Imports: []string{"testing", "stream/streamtest"}},
		{Path: "internal/config", Imports: []string{"connectors/kafka", "cmd/residency"}},
		{Path: "stream/streamtest", Imports: []string{"testing", "stream"}},
		{Path: "audit", Imports: []string{"router"}},
	})
	want := []string{
		"router imports github.com/redis/go-redis/v9",
		"router imports connectors/kafka",
		"router/rules imports github.com/redis/go-redis/v9/internal",
		"stream imports router",
		"schemas imports router/rules",
		"sink imports connectors/postgres",
		"sink imports github.com/jackc/pgx/v5",
		"connectors/kafka imports internal/config",
		"connectors/redis imports connectors/kafka",
		"internal/sample imports testing",
		"internal/sample imports stream/streamtest",
		"internal/config imports cmd/residency",
		"audit imports router",
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w+":") || strings.HasPrefix(g, w+",") }) {
			t.Errorf("the checker misses %q", w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("the checker reports %d violations, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
}
