package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/residency-router/residency/audit"
)

// TestProveErrorAlteredLeaf: a proof that does not verify against the
// checkpoint (the leaf was altered in the bucket) is "the log does not
// verify", exit 1, not "could not read the log", exit 3.
func TestProveErrorAlteredLeaf(t *testing.T) {
	err := proveError(42, fmt.Errorf("%w: calculated root: [1 2 3]", audit.ErrBadProof))
	if got := exitCode(err); got != exitFailure {
		t.Errorf("exit code %d, want %d (%v)", got, exitFailure, err)
	}
	if !errors.Is(err, audit.ErrAlteredLog) || !strings.Contains(err.Error(), "leaf 42") || strings.Contains(err.Error(), "[1 2 3]") {
		t.Errorf("message %q", err)
	}
	if got := exitCode(proveError(1, errors.New("bucket gone"))); got != exitNotReady {
		t.Errorf("an unreadable bucket: exit code %d, want %d", got, exitNotReady)
	}
}
