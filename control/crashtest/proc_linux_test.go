package crashtest

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel kill the control plane if the test
// process dies without stopping it (a timeout's panic, SIGKILL, a loop
// interrupted): otherwise it goes on running its cutovers against the test
// bed that the next run shares.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
