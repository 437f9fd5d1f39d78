package weaviatetest

import "syscall"

// sysProcAttr puts the server in its own process group, so that a Ctrl-C
// at the terminal reaches only the test binary, which then stops the
// server in order; and has the kernel kill the server if the test binary
// dies without stopping it (a panic, or go test's -timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
