//go:build !linux

package machines

import "syscall"

// sysProcAttr puts each machine in a process group of its own, so stop
// reaches what it started. Without Linux's parent-death signal, a machine
// outlives an edgeproxy that is killed rather than stopped.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
