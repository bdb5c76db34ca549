package check

import (
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"
)

// imageUser is the numeric user (and group) the image runs as; the
// Kubernetes manifests' runAsUser must match it.
const imageUser = 65532

// TestDockerfile checks the Dockerfile without building it: BuildKit parses
// it with no lint finding; it has a build stage and a final stage from
// another base; every base image is pinned (a digest, or a tag other than
// latest, never an ARG); the golang image's Go is at least go.mod's; no ADD
// fetches a URL or a git repository; the build stage disables cgo and runs
// `go build -trimpath` with main.version and main.commit stamped from the
// declared ARGs VERSION and COMMIT; the final stage copies the binary from the build stage, runs as
// a numeric non-root user, exposes the default ops port and has the binary
// as its exec-form ENTRYPOINT.
func TestDockerfile(t *testing.T) {
	d, err := parseDockerfile()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range d.lint {
		t.Errorf("BuildKit lint: %s", l)
	}
	if len(d.stages) < 2 {
		t.Fatalf("%d stage(s): want a build stage and a small final stage", len(d.stages))
	}
	if len(d.metaArgs) > 0 {
		t.Errorf("ARG before the first FROM: base images must be pinned in the file, not chosen by build arguments")
	}

	// Base images.
	stageNames := map[string]bool{}
	for _, st := range d.stages {
		base := st.BaseName
		if stageNames[strings.ToLower(base)] {
			t.Logf("stage %q builds on stage %q", st.Name, base)
		} else {
			checkPinned(t, base)
		}
		if st.Name != "" {
			stageNames[strings.ToLower(st.Name)] = true
		}
		for _, c := range st.Commands {
			if add, ok := c.(*instructions.AddCommand); ok {
				for _, s := range add.SourcePaths {
					if strings.Contains(s, "://") || strings.HasPrefix(s, "git@") {
						t.Errorf("ADD %s: fetches from the network at build time; download in a RUN with a checksum, or COPY", s)
					}
				}
			}
		}
	}
	final := d.final()
	if stageNames[strings.ToLower(final.BaseName)] {
		t.Errorf("the final stage builds on stage %q: it must start from a small base image", final.BaseName)
	}

	// The build stage.
	build, src, dest, err := d.binaryCopy()
	if err != nil {
		t.Fatal(err)
	}
	if build == final {
		t.Fatal("the binary is copied from the final stage itself")
	}
	checkGoImage(t, build.BaseName)
	var goBuild string
	cgoOff, versionArg, commitArg := false, false, false
	for _, c := range build.Commands {
		switch c := c.(type) {
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				if kv.Key == "CGO_ENABLED" && kv.Value == "0" {
					cgoOff = true
				}
			}
		case *instructions.ArgCommand:
			for _, a := range c.Args {
				versionArg = versionArg || a.Key == "VERSION"
				commitArg = commitArg || a.Key == "COMMIT"
			}
		case *instructions.RunCommand:
			line := strings.Join(c.CmdLine, " ")
			if strings.Contains(line, "go build") {
				if goBuild != "" {
					t.Errorf("two RUNs with go build: keep one")
				}
				goBuild = line
				cgoOff = cgoOff || strings.Contains(line, "CGO_ENABLED=0")
				if !versionArg || !commitArg {
					t.Errorf("ARG VERSION and ARG COMMIT are not both declared in stage %q before its go build", build.Name)
				}
			}
		}
	}
	switch {
	case goBuild == "":
		t.Errorf("stage %q has no RUN with go build", build.Name)
	default:
		for _, want := range []string{"-trimpath", "-X main.version=${VERSION}", "-X main.commit=${COMMIT}", "-o " + src, "./cmd/residency"} {
			if !strings.Contains(goBuild, want) {
				t.Errorf("go build in stage %q lacks %q: %s", build.Name, want, goBuild)
			}
		}
	}
	if !cgoOff {
		t.Errorf("stage %q does not set CGO_ENABLED=0: the binary would not be static", build.Name)
	}

	// The final stage.
	var user, entrypoint string
	var exposed []string
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.ExposeCommand:
			exposed = append(exposed, c.Ports...)
		case *instructions.EntrypointCommand:
			if c.PrependShell {
				t.Errorf("ENTRYPOINT in shell form: signals would go to the shell, not residency; use the exec form")
			}
			if len(c.CmdLine) > 0 {
				entrypoint = c.CmdLine[0]
			}
		case *instructions.RunCommand:
			t.Errorf("RUN in the final stage: its base has no shell; do the work in the build stage")
		}
	}
	uid, gid, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric, non-root user (Kubernetes' runAsNonRoot can only check a number)", user)
	} else if n != imageUser {
		t.Errorf("USER %q: the manifests (deploy/kubernetes) run as %d", user, imageUser)
	}
	if n, err := strconv.Atoi(gid); gid != "" && (err != nil || n == 0) {
		t.Errorf("USER %q: want a numeric, non-root group", user)
	}
	if entrypoint != dest || path.Base(dest) != "residency" {
		t.Errorf("ENTRYPOINT %q, but the binary is copied to %q", entrypoint, dest)
	}
	port := defaultOpsPort(t)
	found := false
	for _, p := range exposed {
		found = found || strings.TrimSuffix(p, "/tcp") == port
	}
	if !found {
		t.Errorf("EXPOSE %v lacks the ops port %s (http.listen)", exposed, port)
	}
}

// defaultOpsPort is the port of http.listen in the commented example
// config, which shows the default.
func defaultOpsPort(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy", "examples", "residency.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^http:\n(?:\s+#.*\n)*\s+listen:\s*"?[^:"]*:(\d+)"?`).FindSubmatch(b)
	if m == nil {
		t.Fatal("deploy/examples/residency.yaml: no http.listen")
	}
	return string(m[1])
}

// checkPinned fails unless image names a digest, or a tag other than
// "latest", with no build-argument in it.
func checkPinned(t *testing.T, image string) {
	t.Helper()
	switch {
	case strings.Contains(image, "$"):
		t.Errorf("FROM %s: chosen by a build argument, not pinned", image)
	case strings.Contains(image, "@sha256:"):
		t.Logf("FROM %s: pinned by digest", image)
	default:
		name := image[strings.LastIndex(image, "/")+1:]
		_, tag, ok := strings.Cut(name, ":")
		if !ok || tag == "" || tag == "latest" {
			t.Errorf("FROM %s: pin the image by digest or by a tag other than latest", image)
		} else {
			t.Logf("FROM %s: pinned by tag (no registry here to resolve its digest)", image)
		}
	}
}

// checkGoImage checks that the build stage's golang image has at least the
// Go that go.mod asks for.
func checkGoImage(t *testing.T, image string) {
	t.Helper()
	name, tag, _ := strings.Cut(image, ":")
	if path.Base(name) != "golang" {
		t.Errorf("the build stage starts from %s, not the golang image", image)
		return
	}
	tag, _, _ = strings.Cut(tag, "@")
	goVersion, _, _ := strings.Cut(tag, "-")
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.ParseLax("go.mod", b, nil)
	if err != nil || mf.Go == nil {
		t.Fatalf("go.mod: %v", err)
	}
	need := mf.Go.Version
	if mf.Toolchain != nil {
		need = strings.TrimPrefix(mf.Toolchain.Name, "go")
	}
	if semver.Compare("v"+goVersion, "v"+need) < 0 || !semver.IsValid("v"+goVersion) {
		t.Errorf("the build stage's %s has Go %q; go.mod needs %s", image, goVersion, need)
	}
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err == nil && strings.TrimSpace(string(out)) != "go"+goVersion {
		t.Logf("note: this machine builds with %s, the image with go%s", strings.TrimSpace(string(out)), goVersion)
	}
}

// TestDockerignore checks the build context .dockerignore leaves: the
// module's sources, and neither the git directory, the dev stack's caches
// and keys, built binaries, nor tests.
func TestDockerignore(t *testing.T) {
	files, err := contextFiles()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range files {
		have[f] = true
		switch {
		case f == ".git" || strings.HasPrefix(f, ".git/"),
			strings.HasPrefix(f, "deploy/"), strings.HasPrefix(f, "bin/"),
			strings.HasSuffix(f, "_test.go"), strings.HasSuffix(f, ".key"), strings.HasSuffix(f, ".pem"):
			t.Errorf("the build context holds %s", f)
		}
	}
	for _, want := range []string{"go.mod", "go.sum", "cmd/residency/main.go"} {
		if !have[want] {
			t.Errorf("the build context lacks %s", want)
		}
	}
	t.Logf("build context: %d files", len(files))
}

// TestDockerBuildIsStatic builds residency as the Dockerfile's build stage
// does (from the context .dockerignore leaves, with --build-arg VERSION and
// COMMIT) and
// checks the binary: statically linked (no PT_INTERP program header, no
// DT_NEEDED library), built with -trimpath and CGO_ENABLED=0 (its build
// info), and `residency version` and `residency --version` print the
// stamped version and commit.
func TestDockerBuildIsStatic(t *testing.T) {
	bin, version, commit := residency(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary has an ELF interpreter (PT_INTERP): it is dynamically linked")
		}
	}
	if libs, err := f.DynString(elf.DT_NEEDED); err != nil || len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v (%v)", libs, err)
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["-trimpath"] != "true" {
		t.Errorf("not built with -trimpath: %v", settings)
	}
	if settings["CGO_ENABLED"] != "0" {
		t.Errorf("CGO_ENABLED=%q, want 0", settings["CGO_ENABLED"])
	}
	// (With -trimpath the build info leaves -ldflags out; the version
	// printed below shows the stamp.)
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).CombinedOutput()
		if err != nil {
			t.Fatalf("residency %s: %v\n%s", arg, err, out)
		}
		if got, want := strings.TrimSpace(string(out)), "residency "+version+" (commit "+commit+")"; got != want {
			t.Errorf("residency %s printed %q, want %q", arg, got, want)
		}
	}
	if st, err := os.Stat(bin); err == nil {
		t.Logf("%s: %.1f MiB, %s, built by %s", bin, float64(st.Size())/(1<<20), version, bi.GoVersion)
	}
}
