package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/backflip-dev/backflip/internal/pglocal"
)

const (
	dirPattern = "backflip-pgtest-" // os.MkdirTemp pattern of a cluster's folder
	lockName   = "lock"             // flock'ed by the owning test binary while it lives
)

// cluster is a throwaway pglocal cluster in a private folder, run by this process:
//
//	<base>/               the pglocal folder (data/, postgres.log, ...); durability is off
//	                      and it listens only on a unix socket in a private folder
//	<base>/lock           held with flock(2) while the owning process lives
type cluster struct {
	base string
	lock *os.File
	pg   *pglocal.Cluster // nil until started
}

func startCluster(ctx context.Context) (*cluster, error) {
	base, err := makeBase()
	if err != nil {
		return nil, err
	}
	c := &cluster{base: base}
	if err := c.provision(ctx); err != nil {
		return nil, errors.Join(err, c.close())
	}
	return c, nil
}

func (c *cluster) provision(ctx context.Context) error {
	// Lock under a temporary name and only then rename into place (a flock belongs to the
	// file, not the name), so a concurrent sweepStale never finds our lock file unlocked.
	lockPath := filepath.Join(c.base, lockName)
	lock, err := os.OpenFile(lockPath+".new", os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	c.lock = lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("pgtest: lock %s: %w", lock.Name(), err)
	}
	if err := os.Rename(lockPath+".new", lockPath); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	pg, err := pglocal.Start(ctx, pglocal.Options{Dir: c.base})
	if errors.Is(err, pglocal.ErrNoBinaries) {
		return fmt.Errorf("pgtest: %w; or set %s to a server the tests may create databases on", err, EnvDatabaseURL)
	}
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	c.pg = pg
	return nil
}

func (c *cluster) running() bool { return c.pg != nil && c.pg.Running() }

// close stops postgres and removes the folder. It works on a half-provisioned cluster.
func (c *cluster) close() error {
	var err error
	if c.pg != nil {
		err = c.pg.Close()
	}
	if rmErr := os.RemoveAll(c.base); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("pgtest: remove cluster folder: %w", rmErr))
	}
	if c.lock != nil {
		c.lock.Close()
	}
	return err
}

// minShmFree is the free space /dev/shm must have to hold clusters: one takes about 40 MB
// after initdb and every test database 7 MB more, and several test binaries run at once.
// Docker gives containers a 64 MB /dev/shm by default, where initdb or a CREATE DATABASE
// would fail with "No space left on device"; such a /dev/shm is skipped.
const minShmFree = 512 << 20

// makeBase creates the cluster folder, on /dev/shm when possible (a cluster there starts in
// about a second), never under t.TempDir (the postgres user cannot enter it, and the testing
// package would remove it under a running server). Folders left by killed test binaries are
// removed first.
func makeBase() (string, error) {
	var errs []error
	for _, parent := range baseParents(freeBytes) {
		sweepStale(parent)
		dir, err := os.MkdirTemp(parent, dirPattern)
		if err == nil {
			return dir, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("pgtest: create cluster folder: %w", errors.Join(errs...))
}

// baseParents lists where a cluster folder may go, best first: /dev/shm when it has room
// (free reports its available bytes), then the temporary folder. A /dev/shm too small for
// clusters is still swept of stale folders, which is how it would have filled up.
func baseParents(free func(string) (uint64, error)) []string {
	const shm = "/dev/shm"
	if n, err := free(shm); err == nil && n >= minShmFree {
		return []string{shm, os.TempDir()}
	} else if err == nil {
		sweepStale(shm)
	}
	return []string{os.TempDir()}
}

// freeBytes returns the bytes available to us on the file system holding path.
func freeBytes(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}

// sweepStale removes cluster folders whose owner died without Close (a test timeout panics,
// a CI job is killed): their lock is free, as the kernel releases a flock with its last
// descriptor. On /dev/shm they would otherwise hold memory until reboot. Errors are ignored:
// a folder we cannot remove is someone else's business.
func sweepStale(parent string) {
	dirs, _ := filepath.Glob(filepath.Join(parent, dirPattern+"*"))
	for _, dir := range dirs {
		f, err := os.Open(filepath.Join(dir, lockName))
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			_ = os.RemoveAll(dir)
		}
		f.Close()
	}
}
