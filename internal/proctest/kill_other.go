//go:build !linux

package proctest

import "os/exec"

// killWithParent has no equivalent of Linux's Pdeathsig here: only the
// test's cleanups and the subprocess's lifetime stop it.
func killWithParent(*exec.Cmd) {}
