package main

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version and commit are stamped at build time with
// -ldflags "-X main.version=v1.2.3 -X main.commit=0123abc" (the
// Dockerfile's VERSION and COMMIT build arguments, `make build` and `make
// image`); otherwise they are read from the module build info (the
// module's version, and the VCS revision `go build` records in a git
// checkout).
var (
	version = ""
	commit  = ""
)

// buildVersion returns the version and commit of this binary: the stamped
// ones, else the build info's, else "(devel)" and "unknown".
func buildVersion() (v, c string) {
	v, c = version, commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		if c == "" {
			var rev, modified string
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					modified = s.Value
				}
			}
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if rev != "" && modified == "true" {
				rev += "-dirty"
			}
			c = rev
		}
	}
	return cmp.Or(v, "(devel)"), cmp.Or(c, "unknown")
}

// runVersion is `residency version` (and `residency --version`).
func runVersion(_ context.Context, e env) int {
	fs := newFlags(e, "version", "version [--output text|json]")
	out := addOutput(fs)
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return fail(e, "version", fmt.Errorf("%w: version takes no arguments", errUsage))
	}
	v, c := buildVersion()
	if out.JSON() {
		_ = writeJSON(e.stdout, map[string]string{"version": v, "commit": c, "go": runtime.Version()})
		return exitOK
	}
	fmt.Fprintf(e.stdout, "residency %s (commit %s)\n", v, c)
	return exitOK
}
