package pglocal

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// sysProcAttr runs a child as cred (nil: as ourselves) in its own process group, so a
// terminal's Ctrl-C reaches our process, which then decides how Postgres stops. With
// killWithParent the child gets SIGKILL when the thread that started it dies; Go applies it
// after switching credentials, which would otherwise clear it.
func sysProcAttr(cred *syscall.Credential, killWithParent bool) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	if killWithParent {
		attr.Pdeathsig = syscall.SIGKILL
	}
	return attr
}

// zombie tells whether pid has exited but not been reaped yet. A killed dev process's
// postmaster is reparented to PID 1, and some container inits reap only every few seconds.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses, so look after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// notPostgres tells whether pid is certainly not a PostgreSQL server process: its command
// line names neither postgres nor postmaster. Unknown (unreadable) counts as postgres.
func notPostgres(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return false
	}
	return !bytes.Contains(b, []byte("postgres")) && !bytes.Contains(b, []byte("postmaster"))
}

// shmAttached returns how many processes are attached to the System V shared memory
// segment id (from /proc/sysvipc/shm): a postmaster's processes all are, and postgres
// refuses to start on a data directory whose old segment still has any. 0 when the segment
// is gone or nothing is known.
func shmAttached(id int) int {
	b, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return 0
	}
	lines := strings.Split(string(b), "\n")
	idCol, nattchCol := slices.Index(strings.Fields(lines[0]), "shmid"), slices.Index(strings.Fields(lines[0]), "nattch")
	if idCol < 0 || nattchCol < 0 {
		return 0
	}
	want := strconv.Itoa(id)
	for _, line := range lines[1:] {
		if f := strings.Fields(line); len(f) > max(idCol, nattchCol) && f[idCol] == want {
			n, _ := strconv.Atoi(f[nattchCol])
			return n
		}
	}
	return 0
}
