package main

import (
	"context"
	"fmt"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=..."; otherwise
// it is read from the module build info.
var version = ""

func runVersion(_ context.Context, e env) int {
	if len(e.args) > 0 {
		return fail(e, "version", fmt.Errorf("%w: version takes no arguments", errUsage))
	}
	v := version
	if v == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			v = bi.Main.Version
		}
	}
	if v == "" {
		v = "(devel)"
	}
	fmt.Fprintf(e.stdout, "residency %s\n", v)
	return exitOK
}
