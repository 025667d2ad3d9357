//go:build linux

package commands

import "syscall"

// childProcAttr makes the bot child die with the benchmark.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
