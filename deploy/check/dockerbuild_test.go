package check

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// root is the repository's root directory (this module is deploy/check).
var root = func() string {
	p, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return p
}()

// dockerfile is the repository's Dockerfile as BuildKit parses it.
type dockerfile struct {
	stages   []instructions.Stage
	metaArgs []instructions.ArgCommand
	// lint holds BuildKit's parser warnings and the findings of the lint
	// rules it runs while parsing.
	lint []string
}

func parseDockerfile() (*dockerfile, error) {
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		return nil, err
	}
	res, err := parser.Parse(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("Dockerfile: %w", err)
	}
	d := &dockerfile{}
	for _, w := range res.Warnings {
		d.lint = append(d.lint, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		d.lint = append(d.lint, fmt.Sprintf("line %d: %s: %s", line, rule, msg))
	}})
	if d.stages, d.metaArgs, err = instructions.Parse(res.AST, lint); err != nil {
		return nil, fmt.Errorf("Dockerfile: %w", err)
	}
	if len(d.stages) == 0 {
		return nil, errors.New("Dockerfile: no stage")
	}
	return d, nil
}

// final is the stage the image is made of.
func (d *dockerfile) final() *instructions.Stage { return &d.stages[len(d.stages)-1] }

// stage returns the stage named name.
func (d *dockerfile) stage(name string) *instructions.Stage {
	for i := range d.stages {
		if strings.EqualFold(d.stages[i].Name, name) {
			return &d.stages[i]
		}
	}
	return nil
}

// binaryCopy is the final stage's COPY --from=STAGE SRC DEST that brings in
// the residency binary.
func (d *dockerfile) binaryCopy() (from *instructions.Stage, src, dest string, err error) {
	for _, c := range d.final().Commands {
		cp, ok := c.(*instructions.CopyCommand)
		if !ok || cp.From == "" {
			continue
		}
		for _, s := range cp.SourcePaths {
			if path.Base(s) == "residency" {
				st := d.stage(cp.From)
				if st == nil {
					return nil, "", "", fmt.Errorf("COPY --from=%s: no such stage", cp.From)
				}
				dest := cp.DestPath
				if strings.HasSuffix(dest, "/") {
					dest = path.Join(dest, path.Base(s))
				}
				return st, s, dest, nil
			}
		}
	}
	return nil, "", "", errors.New("the final stage has no COPY --from=STAGE .../residency")
}

// contextFiles lists the files (slash-separated, relative to root) that
// `docker build .` sends as its context: every file .dockerignore leaves.
func contextFiles() ([]string, error) {
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return nil, err
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf(".dockerignore: %w", err)
	}
	var files []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		excluded, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && excluded && !pm.Exclusions():
			return filepath.SkipDir
		case excluded || d.IsDir():
			return nil
		}
		files = append(files, rel)
		return nil
	})
	return files, err
}

// built is the residency binary built once per test run, the way the
// Dockerfile builds it.
var built struct {
	once    sync.Once
	path    string
	version string
	commit  string
	log     string
	err     error
}

// residency returns the path of the residency binary, built exactly as the
// Dockerfile's build stage builds it (see buildAsDockerfile), and the
// version and commit stamped into it.
func residency(t testing.TB) (bin, version, commit string) {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "residency-check-")
		if err != nil {
			built.err = err
			return
		}
		built.version = "v0.0.0-check." + time.Now().UTC().Format("20060102150405")
		built.commit = fmt.Sprintf("check%07x", time.Now().UnixNano()&0xfffffff)
		built.path, built.log, built.err = buildAsDockerfile(dir, map[string]string{"VERSION": built.version, "COMMIT": built.commit})
	})
	if built.err != nil {
		t.Fatalf("building residency as the Dockerfile does: %v\n%s", built.err, built.log)
	}
	return built.path, built.version, built.commit
}

// buildAsDockerfile builds the residency binary the way `docker build
// --build-arg K=V` would, without Docker: it lays the build context
// (.dockerignore applied) out under dir, runs the build stage's WORKDIR,
// ARG, ENV, COPY and RUN instructions in order, with dir standing for the
// container's root (the RUN commands through `sh -c`, with the ARG and ENV
// values in their environment and this machine's Go), and returns the path
// of the binary the final stage copies. The one rewrite: that binary's
// absolute path in a RUN command becomes its place under dir. Any other
// instruction in the build stage is an error, so the simulation cannot
// silently drift from the Dockerfile. The module and build caches of the
// RUN --mount=type=cache flags are this machine's own.
func buildAsDockerfile(dir string, buildArgs map[string]string) (bin, log string, err error) {
	d, err := parseDockerfile()
	if err != nil {
		return "", "", err
	}
	stage, src, _, err := d.binaryCopy()
	if err != nil {
		return "", "", err
	}
	files, err := contextFiles()
	if err != nil {
		return "", "", err
	}
	var out bytes.Buffer
	vars := map[string]string{}
	expand := func(s string) string {
		return os.Expand(s, func(k string) string { return vars[k] })
	}
	workdir := "/"
	producedBinary := false
	for _, cmd := range stage.Commands {
		switch c := cmd.(type) {
		case *instructions.WorkdirCommand:
			p := expand(c.Path)
			if !path.IsAbs(p) {
				p = path.Join(workdir, p)
			}
			workdir = p
			if err := os.MkdirAll(filepath.Join(dir, workdir), 0o755); err != nil {
				return "", out.String(), err
			}
		case *instructions.ArgCommand:
			for _, a := range c.Args {
				v := a.ValueString()
				if o, ok := buildArgs[a.Key]; ok {
					v = o
				}
				vars[a.Key] = v
			}
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				vars[kv.Key] = expand(kv.Value)
			}
		case *instructions.CopyCommand:
			if c.From != "" {
				return "", out.String(), fmt.Errorf("%s: COPY --from in the build stage is not simulated", c.String())
			}
			if err := copyFromContext(files, c.SourcePaths, path.Join(workdir, c.DestPath), strings.HasSuffix(c.DestPath, "/"), dir); err != nil {
				return "", out.String(), fmt.Errorf("%s: %w", c.String(), err)
			}
		case *instructions.RunCommand:
			if !c.PrependShell || len(c.CmdLine) != 1 {
				return "", out.String(), fmt.Errorf("%s: only the shell form of RUN is simulated", c.String())
			}
			line := c.CmdLine[0]
			if strings.Contains(line, src) {
				line = strings.ReplaceAll(line, src, filepath.Join(dir, src))
				producedBinary = true
			}
			fmt.Fprintf(&out, "$ %s\n", line)
			run := exec.Command("sh", "-c", line)
			run.Dir = filepath.Join(dir, workdir)
			run.Env = buildEnv(vars)
			run.Stdout, run.Stderr = &out, &out
			if err := run.Run(); err != nil {
				return "", out.String(), fmt.Errorf("%s: %w", c.String(), err)
			}
		default:
			return "", out.String(), fmt.Errorf("%s: instruction not simulated in the build stage (extend buildAsDockerfile)", c.Name())
		}
	}
	if !producedBinary {
		return "", out.String(), fmt.Errorf("no RUN of stage %s writes %s, which the final stage copies", stage.Name, src)
	}
	return filepath.Join(dir, src), out.String(), nil
}

// buildEnv is the environment of a simulated RUN: this machine's, less the
// Go settings the golang image does not have, plus the stage's ARG and ENV
// values. GOTOOLCHAIN=local as in the golang image: a go.mod needing a newer
// Go than this machine's fails here as it would there.
func buildEnv(vars map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOFLAGS", "CGO_ENABLED", "GOOS", "GOARCH", "GOTOOLCHAIN", "GOWORK":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "GOTOOLCHAIN=local")
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	return env
}

// copyFromContext copies the sources of a COPY (paths in the context: a
// file, a directory or ".") to dest in the image's file system under dir.
// Several sources, or a dest ending in "/", make dest a directory.
func copyFromContext(files, sources []string, dest string, destIsDir bool, dir string) error {
	destIsDir = destIsDir || len(sources) > 1
	for _, s := range sources {
		if strings.ContainsAny(s, "*?[") {
			return fmt.Errorf("%s: wildcards are not simulated", s)
		}
		s = strings.TrimPrefix(path.Clean(s), "/")
		copied := 0
		for _, f := range files {
			var to string
			switch {
			case s == ".":
				to = path.Join(dest, f)
			case f == s:
				to = dest
				if destIsDir {
					to = path.Join(dest, path.Base(f))
				}
			case strings.HasPrefix(f, s+"/"):
				to = path.Join(dest, strings.TrimPrefix(f, s+"/"))
			default:
				continue
			}
			if err := copyFile(filepath.Join(root, f), filepath.Join(dir, to)); err != nil {
				return err
			}
			copied++
		}
		if copied == 0 {
			return fmt.Errorf("%s: not in the build context (.dockerignore leaves it out, or it does not exist)", s)
		}
	}
	return nil
}

func copyFile(from, to string) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
