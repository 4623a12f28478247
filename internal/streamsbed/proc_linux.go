package streamsbed

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel kill the JVM if the test process dies
// without stopping it (a timeout's panic, SIGKILL).
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
