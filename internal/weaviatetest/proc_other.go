//go:build !linux

package weaviatetest

import "syscall"

// sysProcAttr puts the server in its own process group, so that a Ctrl-C
// at the terminal reaches only the test binary, which then stops the
// server in order.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
