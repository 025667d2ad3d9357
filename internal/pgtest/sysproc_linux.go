package pgtest

import "syscall"

// sysProcAttr runs a child as cred (nil: as ourselves) in its own process group, so a
// terminal's Ctrl-C reaches the test binary, which then decides how Postgres stops. With
// killWithParent the child gets SIGKILL when the thread that started it dies; Go applies it
// after switching credentials, which would otherwise clear it.
func sysProcAttr(cred *syscall.Credential, killWithParent bool) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	if killWithParent {
		attr.Pdeathsig = syscall.SIGKILL
	}
	return attr
}
