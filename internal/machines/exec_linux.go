package machines

import "syscall"

// sysProcAttr puts each machine in a process group of its own (so stop
// reaches what it started) and has the kernel kill it if edgeproxy dies
// without stopping it: no machine outlives the proxy that ran it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
