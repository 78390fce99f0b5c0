package proctest

import (
	"os/exec"
	"syscall"
)

// killWithParent makes the kernel kill the subprocess if the test binary
// dies without running its cleanups (a -timeout panic, a SIGKILL), so no
// proxy or demo machine is left holding ports. Pdeathsig fires when the
// thread that started the child exits; os/exec does not lock goroutines
// to threads, so in practice that is when the test process exits.
func killWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
