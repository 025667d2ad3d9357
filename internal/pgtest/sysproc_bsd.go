//go:build darwin || freebsd

package pgtest

import "syscall"

// sysProcAttr runs a child as cred (nil: as ourselves) in its own process group. Without a
// parent-death signal here, a killed test binary leaves its postgres running until the next
// Start removes the folder (its lock is free) and postgres, finding its postmaster.pid gone,
// shuts itself down within a minute.
func sysProcAttr(cred *syscall.Credential, killWithParent bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true}
}
