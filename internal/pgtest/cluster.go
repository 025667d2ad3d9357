package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	dirPattern = "backflip-pgtest-" // os.MkdirTemp pattern of a cluster's folder
	lockName   = "lock"             // flock'ed by the owning test binary while it lives
	logName    = "postgres.log"
	port       = "5432" // only names the socket file: each cluster has its own socket folder

	// maxSocketPath is the longest unix socket path Postgres accepts (sun_path less the NUL).
	maxSocketPath = 107

	// logTail is how much of Postgres's log an error quotes.
	logTail = 4 << 10
)

// cluster is a Postgres cluster in a private folder, run by this process:
//
//	<base>/               owned by the server's OS user, mode 0700: with trust
//	                      authentication, only that user and root may connect
//	<base>/data/          the data directory
//	<base>/.s.PGSQL.5432  the socket (listen_addresses is empty: no TCP)
//	<base>/postgres.log   postgres's stdout and stderr
//	<base>/lock           held with flock(2) while the owning process lives
type cluster struct {
	bin  string
	base string
	cred *syscall.Credential // nil: run as ourselves
	lock *os.File
	url  string
	cfg  *pgx.ConnConfig

	mu   sync.Mutex
	proc *os.Process
	done chan struct{} // closed once proc has exited; nil before the first start
}

func startCluster(ctx context.Context) (*cluster, error) {
	bin, err := findBinDir(os.Getenv, exec.LookPath, debianBinGlob)
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	base, err := makeBase()
	if err != nil {
		return nil, err
	}
	c := &cluster{bin: bin, base: base, cred: cred}
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
	if sock := filepath.Join(c.base, ".s.PGSQL."+port); len(sock) > maxSocketPath {
		return fmt.Errorf("pgtest: socket path %s is %d bytes, over Postgres's limit of %d: use a shorter TMPDIR", sock, len(sock), maxSocketPath)
	}
	// Create the log as ourselves before handing the folder over: postgres writes to the
	// descriptor it inherits and never needs to open it.
	logf, err := os.OpenFile(c.logPath(), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	logf.Close()
	if c.cred != nil {
		if err := os.Chown(c.base, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: hand %s to the postgres user: %w", c.base, err)
		}
	}
	if err := c.initdb(ctx); err != nil {
		return err
	}
	c.url = socketURL(c.base, port)
	if c.cfg, err = pgx.ParseConfig(c.url); err != nil {
		return fmt.Errorf("pgtest: parse own URL: %w", err)
	}
	return c.start(ctx)
}

func (c *cluster) dataDir() string { return filepath.Join(c.base, "data") }
func (c *cluster) logPath() string { return filepath.Join(c.base, logName) }

func (c *cluster) initdb(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "initdb"),
		"--pgdata", c.dataDir(),
		"--username", "postgres", // the same superuser whether we run as root or not
		"--auth", "trust", // reachable only through the 0700 socket folder
		"--encoding", "UTF8",
		"--locale", "C",
		"--no-sync",
	)
	cmd.Dir = c.base // initdb complains when it cannot read its working folder
	cmd.Env = childEnv()
	// No parent-death signal: initdb ends by itself within seconds, and the signal could
	// also fire spuriously if the Go thread that started it exits.
	cmd.SysProcAttr = sysProcAttr(c.cred, false)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: initdb failed after %s: %w\n%s", time.Since(start).Round(time.Millisecond), err, tail(out))
	}
	return nil
}

// start runs postgres as a child process (not daemonized by pg_ctl, so that the parent-death
// signal applies to it) and waits until it accepts connections.
func (c *cluster) start(ctx context.Context) error {
	c.mu.Lock()
	if c.runningLocked() {
		c.mu.Unlock()
		return errors.New("pgtest: postgres is already running")
	}
	logf, err := os.OpenFile(c.logPath(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("pgtest: %w", err)
	}
	cmd := exec.Command(filepath.Join(c.bin, "postgres"),
		"-D", c.dataDir(),
		"-k", c.base,
		"-p", port,
		"-c", "listen_addresses=",
		// A throwaway cluster has nothing to protect from a crash.
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		// Dynamic shared memory as files in the data directory instead of POSIX segments in
		// /dev/shm, which a killed postgres leaves behind and nothing ever removes.
		"-c", "dynamic_shared_memory_type=mmap",
	)
	cmd.Dir = c.base
	cmd.Env = childEnv()
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr(c.cred, true)

	// The parent-death signal fires when the thread that forked the child exits, not the
	// process, and Go ends threads whose goroutine exits while locked to them. Starting and
	// waiting on one locked thread keeps that thread alive exactly as long as postgres.
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait() // an exit status tells nothing the log does not
		close(done)
	}()
	err = <-started
	logf.Close()
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	c.proc, c.done = cmd.Process, done
	c.mu.Unlock()

	if err := c.waitReady(ctx, done); err != nil {
		return errors.Join(err, c.stop())
	}
	return nil
}

// waitReady connects until a connection succeeds, postgres exits, or readyTimeout passes.
func (c *cluster) waitReady(ctx context.Context, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var lastErr error
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.ConnectConfig(attempt, c.cfg)
		cancelAttempt()
		if err == nil {
			return conn.Close(ctx)
		}
		lastErr = err
		select {
		case <-exited:
			return fmt.Errorf("pgtest: postgres exited during start-up; its log ends:\n%s", c.logTail())
		case <-ctx.Done():
			return fmt.Errorf("pgtest: postgres not accepting connections: %w (last: %v); its log ends:\n%s", ctx.Err(), lastErr, c.logTail())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (c *cluster) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runningLocked()
}

func (c *cluster) runningLocked() bool {
	if c.done == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// stop asks for a fast shutdown (SIGINT: end sessions, checkpoint, exit) and waits for it.
// Stopping a cluster that is not running is not an error.
func (c *cluster) stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.runningLocked() {
		return nil
	}
	if err := c.proc.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pgtest: stop postgres: %w", err)
	}
	select {
	case <-c.done:
		return nil
	case <-time.After(opTimeout):
		_ = c.proc.Kill()
		<-c.done
		return fmt.Errorf("pgtest: postgres ignored fast shutdown for %s and was killed; its log ends:\n%s", opTimeout, c.logTail())
	}
}

// close stops postgres and removes the folder. It works on a half-provisioned cluster.
func (c *cluster) close() error {
	err := c.stop()
	if rmErr := os.RemoveAll(c.base); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("pgtest: remove cluster folder: %w", rmErr))
	}
	if c.lock != nil {
		c.lock.Close()
	}
	return err
}

func (c *cluster) logTail() string {
	f, err := os.Open(c.logPath())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > logTail {
		_, _ = f.Seek(-logTail, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return tail(b)
}

func tail(b []byte) string {
	if len(b) > logTail {
		b = b[len(b)-logTail:]
	}
	return strings.TrimSpace(string(b))
}

// serverCredential returns who initdb and postgres run as. They refuse to run as root, so
// root runs them as the postgres OS user (Debian's package creates it); anyone else runs
// them as themselves.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and initdb and postgres refuse to, so they run as the 'postgres' OS user, "+
			"which was not found (create it with `useradd --system --user-group postgres`, or run scripts/ensure-postgres.sh): %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("pgtest: postgres user ids: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
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

// childEnv is our environment without the PG* variables (PGDATA, PGPORT, PGOPTIONS, ... are
// read by the server tools too) and with messages in the C locale, so logs quoted in errors
// read the same everywhere.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}
