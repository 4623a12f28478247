package childproc

import (
	"os/exec"
	"syscall"
)

// DieWithParent makes the kernel kill cmd's process if the process that
// started it dies without stopping it (a timeout's panic, SIGKILL, an
// interrupted loop). Call it before cmd.Start.
func DieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
