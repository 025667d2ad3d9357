package pglocal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// serverCredential returns who initdb and postgres run as. They refuse to run as root, so
// root runs them as the postgres OS user (Debian's package creates it); anyone else runs
// them as themselves (nil).
//
// Go's exec clears the supplementary groups of a child given a Credential, so the server
// has exactly this uid and gid, which is what reachable checks against.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pglocal: running as root, and initdb and postgres refuse to, so they run as the 'postgres' OS user, "+
			"which was not found (create it with `useradd --system --user-group postgres`, or run scripts/ensure-postgres.sh): %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("pglocal: postgres user ids: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// reachable checks that the server's user can search every folder above dir (dir itself is
// handed to it), following symbolic links the way the kernel would. Folders that do not
// exist yet are skipped: Start creates them 0755. Only mode bits are read: an ACL that
// grants more is not seen, and the caller then falls back as for any unreachable folder.
func reachable(dir string, cred *syscall.Credential) error {
	p := filepath.Dir(dir)
	for {
		if _, err := os.Stat(p); err == nil || filepath.Dir(p) == p {
			break
		}
		p = filepath.Dir(p)
	}
	resolved, err := filepath.EvalSymlinks(p)
	if err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	var chain []string // from resolved up to the root
	for a := resolved; ; a = filepath.Dir(a) {
		chain = append(chain, a)
		if filepath.Dir(a) == a {
			break
		}
	}
	for i := len(chain) - 1; i >= 0; i-- { // top down: name the highest folder in the way
		fi, err := os.Stat(chain[i])
		if err != nil {
			return fmt.Errorf("pglocal: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil // not a unix file system: let initdb tell
		}
		if !searchable(fi.Mode().Perm(), st.Uid, st.Gid, cred) {
			return fmt.Errorf("pglocal: %s: %w: %s is %s, owner uid %d gid %d, and the server runs as uid %d gid %d",
				dir, ErrUnreachable, chain[i], fi.Mode(), st.Uid, st.Gid, cred.Uid, cred.Gid)
		}
	}
	return nil
}

// searchable applies the kernel's rule for a folder's search (x) permission: the owner's
// bits if the user owns it, else the group's if it is the user's group, else the others'.
func searchable(perm fs.FileMode, uid, gid uint32, cred *syscall.Credential) bool {
	switch {
	case uid == cred.Uid:
		return perm&0o100 != 0
	case gid == cred.Gid:
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

// handOver makes path the server user's. A data directory not owned by it (made by another
// account) is handed over whole: postgres must own every file in it.
func handOver(path string, cred *syscall.Credential, recursive bool) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == cred.Uid && st.Gid == cred.Gid {
		return nil
	}
	if !recursive {
		return os.Chown(path, int(cred.Uid), int(cred.Gid))
	}
	return filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(cred.Uid), int(cred.Gid))
	})
}
