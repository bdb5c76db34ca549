// Command testreport reads `go test -json` on stdin and prints a compact
// report: one line per package as it finishes, the full output of every test
// that failed, the output of tests whose name matches -show (the harness's
// smoke tests, so a run shows which services it ran against), the list of
// skipped tests, and a closing line "N passed, N failed, N skipped".
//
// It exits 1 when a test or a package failed (a build failure included), or
// when -no-skip is set and any test was skipped.
//
// Usage: go test -json ./... | go run ./internal/tools/testreport [-show REGEXP] [-no-skip]
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

type report struct {
	show                      *regexp.Regexp
	out                       io.Writer
	output                    map[string][]string // package/test -> output lines
	passed, failed, skipped   int
	failedTests, skippedTests []string
	failedPkgs                []string
}

func main() {
	show := flag.String("show", "", "print the output of passing tests whose name matches this regexp")
	noSkip := flag.Bool("no-skip", false, "fail when any test was skipped")
	flag.Parse()
	r := &report{out: os.Stdout, output: map[string][]string{}}
	if *show != "" {
		r.show = regexp.MustCompile(*show)
	}
	if err := r.read(os.Stdin); err != nil {
		fmt.Fprintf(os.Stderr, "testreport: %v\n", err)
		os.Exit(1)
	}
	os.Exit(r.finish(*noSkip))
}

func (r *report) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not JSON: a build error or vet output printed by go itself.
			fmt.Fprintln(r.out, string(line))
			continue
		}
		r.handle(e)
	}
	return sc.Err()
}

func (r *report) handle(e event) {
	key := e.Package + " " + e.Test
	switch e.Action {
	case "output", "build-output":
		r.output[key] = append(r.output[key], e.Output)
	case "pass", "fail", "skip":
		if e.Test == "" {
			r.packageDone(e)
			return
		}
		r.testDone(e, key)
	}
}

func (r *report) testDone(e event, key string) {
	name := e.Package + "." + e.Test
	switch e.Action {
	case "pass":
		r.passed++
		if r.show != nil && r.show.MatchString(e.Test) {
			r.printOutput(key, "    ")
		}
	case "fail":
		r.failed++
		r.failedTests = append(r.failedTests, name)
		fmt.Fprintf(r.out, "--- FAIL: %s (%.2fs)\n", name, e.Elapsed)
		r.printOutput(key, "    ")
	case "skip":
		r.skipped++
		reason := ""
		for _, l := range r.output[key] {
			if s := strings.TrimSpace(l); s != "" && !strings.HasPrefix(s, "=== ") && !strings.HasPrefix(s, "--- SKIP") {
				reason = s
			}
		}
		r.skippedTests = append(r.skippedTests, name+": "+reason)
	}
	delete(r.output, key)
}

func (r *report) packageDone(e event) {
	key := e.Package + " "
	switch e.Action {
	case "pass":
		fmt.Fprintf(r.out, "ok   %s (%.1fs)\n", e.Package, e.Elapsed)
	case "skip":
		fmt.Fprintf(r.out, "--   %s (no tests)\n", e.Package)
	case "fail":
		r.failedPkgs = append(r.failedPkgs, e.Package)
		fmt.Fprintf(r.out, "FAIL %s (%.1fs)\n", e.Package, e.Elapsed)
		r.printOutput(key, "    ")
	}
	delete(r.output, key)
}

func (r *report) printOutput(key, indent string) {
	for _, l := range r.output[key] {
		if strings.HasPrefix(l, "=== ") {
			continue
		}
		fmt.Fprint(r.out, indent+l)
		if !strings.HasSuffix(l, "\n") {
			fmt.Fprintln(r.out)
		}
	}
}

func (r *report) finish(noSkip bool) int {
	code := 0
	if len(r.skippedTests) > 0 {
		sort.Strings(r.skippedTests)
		fmt.Fprintf(r.out, "\nskipped tests:\n")
		for _, s := range r.skippedTests {
			fmt.Fprintf(r.out, "  %s\n", s)
		}
		if noSkip {
			fmt.Fprintln(r.out, "testreport: tests were skipped and -no-skip is set")
			code = 1
		}
	}
	if len(r.failedTests) > 0 || len(r.failedPkgs) > 0 {
		fmt.Fprintf(r.out, "\nfailed:\n")
		for _, s := range append(r.failedTests, r.failedPkgs...) {
			fmt.Fprintf(r.out, "  %s\n", s)
		}
		code = 1
	}
	fmt.Fprintf(r.out, "\n%d passed, %d failed, %d skipped\n", r.passed, r.failed, r.skipped)
	return code
}
