//go:build unix

package testenv

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup makes cmd, once started, lead a process group of its
// own, so killProcessGroup reaches what it starts too.
func ownProcessGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// killProcessGroup sends SIGKILL to cmd's process group.
func killProcessGroup(cmd *exec.Cmd) { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
