//go:build !unix

package testenv

import "os/exec"

// ownProcessGroup does nothing where there are no process groups.
func ownProcessGroup(*exec.Cmd) {}

// killProcessGroup kills cmd's process (no process groups here).
func killProcessGroup(cmd *exec.Cmd) { _ = cmd.Process.Kill() }
