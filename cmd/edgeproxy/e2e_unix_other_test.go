//go:build unix && !linux

package main

import "os/exec"

// killWithParent has no equivalent of Linux's Pdeathsig here: only the
// test's cleanups and the subprocess's context deadline stop it.
func killWithParent(*exec.Cmd) {}
