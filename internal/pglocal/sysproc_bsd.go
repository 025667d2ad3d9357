//go:build darwin || freebsd

package pglocal

import "syscall"

// sysProcAttr runs a child as cred (nil: as ourselves) in its own process group. There is no
// parent-death signal here: a killed parent leaves its postgres running, and the next Start
// on the same folder fails with postgres's "lock file already exists" until it is stopped
// (pg_ctl stop -D <Dir>/data).
func sysProcAttr(cred *syscall.Credential, killWithParent bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true}
}

// zombie tells whether pid has exited but not been reaped yet; not known here.
func zombie(pid int) bool { return false }

// notPostgres tells whether pid is certainly not a PostgreSQL server process; not known here.
func notPostgres(pid int) bool { return false }

// shmAttached returns how many processes are attached to a System V shared memory segment;
// not known here.
func shmAttached(id int) int { return 0 }
