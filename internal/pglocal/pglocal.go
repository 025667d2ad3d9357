package pglocal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

var (
	// ErrNoBinaries means initdb and postgres were not found (Options.Bin, $BACKFLIP_PG_BIN,
	// PATH, /usr/lib/postgresql/*/bin).
	ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found: install the 'postgresql' package " +
		"(as root, scripts/ensure-postgres.sh does it), or set " + EnvBin + " to the folder holding initdb and postgres")

	// ErrUnreachable means we run as root, so the server runs as the 'postgres' OS user, and
	// that user cannot reach or write Options.Dir: a folder above it does not let it search
	// (typically /root, mode 0700), or Dir cannot be handed to it. Nothing was created. A
	// caller that does not care where the data lives can use another folder.
	ErrUnreachable = errors.New("not reachable by the 'postgres' OS user, which runs the server because initdb and postgres refuse to run as root")

	// ErrVersionMismatch means Dir/data was initialised by another major version of
	// PostgreSQL than the binaries found, which cannot open it.
	ErrVersionMismatch = errors.New("data directory of another PostgreSQL major version")
)

const (
	dataName    = "data"
	initName    = "data.initdb" // initdb's folder until it has finished; then renamed to data
	logName     = "postgres.log"
	lockName    = "pglocal.lock" // flock'ed while a Cluster uses the folder
	sockPattern = "bfpg-"        // os.MkdirTemp pattern of socket folders
	socketPort  = 5432           // names the socket when there is no TCP port

	// maxSocketPath is the longest unix socket path Postgres accepts (sun_path less the NUL).
	maxSocketPath = 107

	// logTailBytes is how much of Postgres's log an error quotes.
	logTailBytes = 4 << 10

	// These bound hangs; they are no performance targets. A durable cluster may replay WAL
	// after a crash before it accepts connections.
	readyTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
	staleTimeout = 10 * time.Second // for a killed parent's postmaster to die
)

// Options for Start.
type Options struct {
	// Dir is the cluster's folder: Dir/data is the data directory (initdb'd when it does
	// not exist yet, reused when it does), Dir/postgres.log the server log. Created (0700)
	// when missing, its missing parents 0755.
	Dir string

	// Bin is the folder holding initdb and postgres; "" finds it: $BACKFLIP_PG_BIN (read
	// with Getenv), else initdb on PATH, else the newest /usr/lib/postgresql/*/bin.
	Bin string

	// Getenv reads the environment; nil means os.LookupEnv.
	Getenv func(string) (string, bool)

	// Durable false switches fsync, synchronous_commit and full_page_writes off (a
	// throwaway cluster: a crash may corrupt it); true keeps Postgres's defaults, for data
	// that must survive restarts and crashes.
	Durable bool

	// TCP also listens on 127.0.0.1, on a free port, so TCPURL works with any client. The
	// unix socket is always there.
	TCP bool

	// Logger receives start, stop and unexpected-exit messages; nil discards them.
	Logger *zap.Logger

	// freePort picks the TCP port; nil means pickPort. Tests hand out a busy one.
	freePort func() (int, error)
}

// Cluster is a PostgreSQL cluster in a folder of its own, whose postmaster is a child of
// this process. It is safe for concurrent use.
type Cluster struct {
	dir, bin string
	cred     *syscall.Credential // nil: the server runs as ourselves
	durable  bool
	tcp      bool
	log      *zap.Logger
	lock     *os.File
	sockDir  string // private socket folder, removed by Close

	// Fixed once Start returns.
	port int
	url  string
	cfg  *pgx.ConnConfig

	mu     sync.Mutex
	run    *run // the current or last postmaster; nil before the first start
	closed bool
	err    error // Close's result
}

// run is one postmaster process.
type run struct {
	proc     *os.Process
	done     chan struct{} // closed once proc has exited and been reaped
	stopping atomic.Bool   // Stop asked it to exit
}

func (r *run) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Start runs the cluster in o.Dir, creating it when needed, and returns once it accepts
// connections. If anything fails, whatever it started is stopped and the error says what
// went wrong, including the tail of Postgres's log. Close the Cluster when done.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Dir == "" {
		return nil, errors.New("pglocal: Options.Dir is empty")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("pglocal: %w", err)
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.LookupEnv
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	bin := o.Bin
	if bin == "" {
		if bin, err = findBinDir(getenv, exec.LookPath, debianBinGlob); err != nil {
			return nil, err
		}
	} else if !hasServer(bin) {
		return nil, fmt.Errorf("pglocal: %s does not hold both initdb and postgres: %w", bin, ErrNoBinaries)
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if err := reachable(dir, cred); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("pglocal: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("pglocal: %w", err)
	}
	if cred != nil {
		// Again, now that they exist: a umask may have made new parents 0700.
		if err := reachable(dir, cred); err != nil {
			return nil, err
		}
	}
	pick := o.freePort
	if pick == nil {
		pick = pickPort
	}
	c := &Cluster{dir: dir, bin: bin, cred: cred, durable: o.Durable, tcp: o.TCP, log: log.With(zap.String("dir", dir))}
	if err := c.setUp(ctx, pick); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, dataName) }
func (c *Cluster) logPath() string { return filepath.Join(c.dir, logName) }

func (c *Cluster) setUp(ctx context.Context, pick func() (int, error)) error {
	lock, err := os.OpenFile(filepath.Join(c.dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	c.lock = lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("pglocal: %s is in use by another process", c.dir)
		}
		return fmt.Errorf("pglocal: lock %s: %w", lock.Name(), err)
	}
	// Create the log as ourselves: postgres writes to the descriptor it inherits.
	logf, err := os.OpenFile(c.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	logf.Close()

	_, err = os.Stat(c.dataDir())
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pglocal: %w", err)
	}
	if c.cred != nil {
		if err := handOver(c.dir, c.cred, false); err != nil {
			return fmt.Errorf("pglocal: %s: %w: hand it over: %v", c.dir, ErrUnreachable, err)
		}
		if exists {
			if err := handOver(c.dataDir(), c.cred, true); err != nil {
				return fmt.Errorf("pglocal: %s: %w: hand it over: %v", c.dataDir(), ErrUnreachable, err)
			}
		}
	}
	if exists {
		if err := c.checkVersion(ctx); err != nil {
			return err
		}
	} else if err := c.initdb(ctx); err != nil {
		return err
	}

	if err := c.makeSocketDir(); err != nil {
		return err
	}
	if err := c.awaitStalePostmaster(ctx); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		port := socketPort
		if c.tcp {
			if port, err = pick(); err != nil {
				return fmt.Errorf("pglocal: find a free port: %w", err)
			}
		}
		c.port = port
		c.url = socketURL(c.sockDir, port)
		if c.cfg, err = pgx.ParseConfig(c.url); err != nil {
			return fmt.Errorf("pglocal: parse own URL: %w", err)
		}
		portTaken, err := c.start(ctx)
		if err == nil || !portTaken || attempt == 2 {
			return err
		}
		// Someone took the port between pickPort closing it and postgres binding it.
		c.log.Info("postgres could not bind its port; trying another", zap.Int("port", port))
	}
}

// initdb creates the data directory in a temporary folder and renames it into place once
// complete, so Dir/data exists only as a finished cluster, even if we are killed meanwhile.
func (c *Cluster) initdb(ctx context.Context) error {
	tmp := filepath.Join(c.dir, initName)
	if err := os.RemoveAll(tmp); err != nil { // left by an initdb that was killed
		return fmt.Errorf("pglocal: %w", err)
	}
	args := []string{
		"--pgdata", tmp,
		"--username", "postgres", // the same superuser whether we run as root or not
		"--auth", "trust", // reachable only through the 0700 socket folder and 127.0.0.1
		"--encoding", "UTF8",
		"--locale", "C",
	}
	if !c.durable {
		args = append(args, "--no-sync")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "initdb"), args...)
	cmd.Dir = c.dir // initdb complains when it cannot read its working folder
	cmd.Env = childEnv()
	// No parent-death signal: initdb ends by itself within seconds, and the signal could
	// also fire spuriously if the Go thread that started it exits.
	cmd.SysProcAttr = sysProcAttr(c.cred, false)
	start := time.Now()
	c.log.Info("initdb", zap.String("bin", c.bin))
	out, err := cmd.CombinedOutput()
	if err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("pglocal: initdb failed after %s: %w\n%s", time.Since(start).Round(time.Millisecond), err, tail(out))
	}
	if err := os.Rename(tmp, c.dataDir()); err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	if c.durable {
		if d, err := os.Open(c.dir); err == nil { // make the rename itself durable
			_ = d.Sync()
			d.Close()
		}
	}
	return nil
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// checkVersion compares the data directory's major version (data/PG_VERSION: "15", "9.6")
// with the binaries', so a cluster left by another version fails with a clear message
// rather than a FATAL deep in the log.
func (c *Cluster) checkVersion(ctx context.Context) error {
	b, err := os.ReadFile(filepath.Join(c.dataDir(), "PG_VERSION"))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pglocal: %s is not a PostgreSQL data directory (it has no PG_VERSION): move it away, or remove it to start afresh", c.dataDir())
	}
	if err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	have := strings.TrimSpace(string(b))

	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "postgres"), "--version")
	cmd.Env = childEnv()
	cmd.SysProcAttr = sysProcAttr(c.cred, false)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pglocal: %s --version: %w\n%s", cmd.Path, err, tail(out))
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("pglocal: %s --version printed no version: %q", cmd.Path, tail(out))
	}
	want := string(m[1])
	if n, _ := strconv.Atoi(want); n < 10 && len(m[2]) > 0 { // before 10 a major version was "9.6"
		want += "." + string(m[2])
	}
	if have != want {
		return fmt.Errorf("pglocal: %s: %w: it was created by PostgreSQL %s, and the server binaries in %s are PostgreSQL %s; "+
			"set %s to PostgreSQL %s's binaries, upgrade it with pg_upgrade, or remove %s to start afresh",
			c.dataDir(), ErrVersionMismatch, have, c.bin, want, EnvBin, have, c.dataDir())
	}
	return nil
}

// makeSocketDir creates the private socket folder. It is short (a socket path must stay
// under 108 bytes, and Dir may be deep) and 0700, owned by the server's user: with trust
// authentication, only that user and root may connect through it.
func (c *Cluster) makeSocketDir() error {
	sweepSocketDirs(os.TempDir())
	dir, err := os.MkdirTemp("", sockPattern)
	if err != nil {
		return fmt.Errorf("pglocal: socket folder: %w", err)
	}
	c.sockDir = dir
	if sock := filepath.Join(dir, ".s.PGSQL.65535"); len(sock) > maxSocketPath {
		return fmt.Errorf("pglocal: socket path %s is %d bytes, over Postgres's limit of %d: set TMPDIR to a shorter folder", sock, len(sock), maxSocketPath)
	}
	if c.cred != nil {
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fmt.Errorf("pglocal: hand %s to the postgres user: %w", dir, err)
		}
	}
	return nil
}

// sweepSocketDirs removes socket folders left by postmasters that were killed: their socket
// lock file names a process that is gone. A folder without one (a stopped cluster, or one
// being started) is left alone. Errors are ignored: a folder we cannot read or remove is
// someone else's.
func sweepSocketDirs(parent string) {
	dirs, _ := filepath.Glob(filepath.Join(parent, sockPattern+"*"))
	for _, dir := range dirs {
		locks, _ := filepath.Glob(filepath.Join(dir, ".s.PGSQL.*.lock"))
		stale := len(locks) > 0
		for _, l := range locks {
			if pid := readPid(l); pid <= 0 || !gone(pid) {
				stale = false
			}
		}
		if stale {
			_ = os.RemoveAll(dir)
		}
	}
}

// awaitStalePostmaster deals with a data/postmaster.pid left behind. Holding the folder's
// lock, we know no Cluster runs its postmaster: it is the postmaster of a parent that was
// killed (which the parent-death signal is killing, and whose server processes exit when
// they notice), or the file outlived a crash or reboot.
//
// Postgres itself replaces a postmaster.pid whose process is gone, unless old server
// processes are still attached to the shared memory segment the file names. It refuses
// while the process exists at all: a zombie (killed, not yet reaped: some container inits
// reap only every few seconds), or an unrelated process that got the same pid after a
// reboot. So this waits, up to staleTimeout, for the postmaster to die and the segment to be
// released, and then removes the file if a zombie or a stranger still holds the pid. A live
// postgres that outlasts the wait (one started by hand) is left alone, and postgres's own
// error tells.
func (c *Cluster) awaitStalePostmaster(ctx context.Context) error {
	pidFile := filepath.Join(c.dataDir(), "postmaster.pid")
	deadline := time.Now().Add(staleTimeout)
	for {
		lines := readLines(pidFile, 7)
		if len(lines) == 0 {
			return nil
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(lines[0]))
		var shmID int
		if len(lines) >= 7 {
			if f := strings.Fields(lines[6]); len(f) == 2 { // "key id"
				shmID, _ = strconv.Atoi(f[1])
			}
		}
		dead := pid <= 0 || !alive(pid) || zombie(pid) || notPostgres(pid)
		if dead && (shmID == 0 || shmAttached(shmID) == 0) {
			if pid > 0 && alive(pid) {
				c.log.Info("removing a stale postmaster.pid", zap.Int("pid", pid))
				if err := os.Remove(pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("pglocal: %w", err)
				}
			}
			return nil
		}
		if time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pglocal: waiting for old postmaster %d to exit: %w", pid, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// readLines returns up to n first lines of a file; none when it cannot be read.
func readLines(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for len(lines) < n && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// readPid reads the process id on the first line of a postmaster.pid or socket lock file;
// 0 when there is none.
func readPid(path string) int {
	lines := readLines(path, 1)
	if len(lines) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(lines[0]))
	return pid
}

// alive tells whether a process pid exists (zombies included), by postgres's own rule:
// EPERM means another user's process, so not a postmaster of ours.
func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// gone tells whether a process has exited (zombies included).
func gone(pid int) bool { return !alive(pid) || zombie(pid) }

// pickPort returns a TCP port on 127.0.0.1 that was free a moment ago.
func pickPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// start runs postgres as a child process (not daemonized by pg_ctl, so that the parent-death
// signal applies to it) and waits until it accepts connections. portTaken reports a failure
// to bind the TCP port, which another port may cure.
func (c *Cluster) start(ctx context.Context) (portTaken bool, err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false, errors.New("pglocal: cluster is closed")
	}
	if c.run != nil && !c.run.exited() {
		c.mu.Unlock()
		return false, errors.New("pglocal: postgres is already running")
	}
	logf, err := os.OpenFile(c.logPath(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		c.mu.Unlock()
		return false, fmt.Errorf("pglocal: %w", err)
	}
	var logStart int64
	if fi, err := logf.Stat(); err == nil {
		logStart = fi.Size()
	}
	listen := ""
	if c.tcp {
		listen = "127.0.0.1"
	}
	args := []string{
		"-D", c.dataDir(),
		"-k", c.sockDir,
		"-p", strconv.Itoa(c.port),
		"-c", "listen_addresses=" + listen,
		// Dynamic shared memory as files in the data directory instead of POSIX segments in
		// /dev/shm, which a killed postgres leaves behind and nothing ever removes.
		"-c", "dynamic_shared_memory_type=mmap",
	}
	if !c.durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	cmd := exec.Command(filepath.Join(c.bin, "postgres"), args...)
	cmd.Dir = c.dir
	cmd.Env = childEnv()
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr(c.cred, true)

	// The parent-death signal fires when the thread that forked the child exits, not the
	// process, and Go ends threads whose goroutine exits while locked to them. Starting and
	// waiting on one locked thread keeps that thread alive exactly as long as postgres.
	r := &run{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		if !r.stopping.Load() {
			c.log.Warn("postgres exited", zap.Error(err))
		}
		close(r.done)
	}()
	err = <-started
	logf.Close()
	if err != nil {
		c.mu.Unlock()
		return false, fmt.Errorf("pglocal: start postgres: %w", err)
	}
	r.proc = cmd.Process
	c.run = r
	c.mu.Unlock()

	if err := c.waitReady(ctx, r); err != nil {
		portTaken = c.tcp && r.exited() && c.logSince(logStart, "could not create any TCP/IP sockets")
		return portTaken, errors.Join(err, c.Stop())
	}
	c.log.Info("postgres started", zap.Int("pid", r.proc.Pid), zap.String("socket", c.sockDir), zap.Int("port", c.port), zap.Bool("tcp", c.tcp))
	return false, nil
}

// waitReady connects until a connection succeeds, postgres exits, or readyTimeout passes.
func (c *Cluster) waitReady(ctx context.Context, r *run) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var lastErr error
	for {
		if c.starting(r.proc.Pid) {
			lastErr = errors.New("postmaster.pid says starting")
		} else {
			attempt, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
			conn, err := pgx.ConnectConfig(attempt, c.cfg)
			cancelAttempt()
			if err == nil {
				return conn.Close(ctx)
			}
			lastErr = err
		}
		select {
		case <-r.done:
			return fmt.Errorf("pglocal: postgres exited during start-up; its log ends:\n%s", c.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("pglocal: postgres not accepting connections: %w (last: %v); its log ends:\n%s", ctx.Err(), lastErr, c.LogTail())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// starting tells whether postmaster.pid says that postmaster pid is still starting (its
// status line, as pg_ctl reads it). Connecting then would only fail, and log a FATAL line
// per attempt. A file of another process or without a status line tells nothing.
func (c *Cluster) starting(pid int) bool {
	lines := readLines(filepath.Join(c.dataDir(), "postmaster.pid"), 8)
	return len(lines) == 8 && strings.TrimSpace(lines[0]) == strconv.Itoa(pid) && strings.TrimSpace(lines[7]) != "ready"
}

// logSince tells whether the log written from offset on contains s.
func (c *Cluster) logSince(offset int64, s string) bool {
	f, err := os.Open(c.logPath())
	if err != nil {
		return false
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	return strings.Contains(string(b), s)
}

// ConnConfig returns a configuration for database ("" means postgres) as user postgres over
// the unix socket: a copy of the one parsed at Start.
func (c *Cluster) ConnConfig(database string) *pgx.ConnConfig {
	cfg := c.cfg.Copy()
	if database != "" {
		cfg.Database = database
	}
	return cfg
}

// URL returns a postgres:// URL for database ("" means postgres) over the unix socket.
func (c *Cluster) URL(database string) string {
	if database == "" {
		return c.url
	}
	return WithDatabase(c.url, database)
}

// TCPURL returns a postgres:// URL for database ("" means postgres) over TCP on 127.0.0.1, or
// "" when the cluster was started without Options.TCP.
func (c *Cluster) TCPURL(database string) string {
	if !c.tcp {
		return ""
	}
	if database == "" {
		database = "postgres"
	}
	return "postgres://postgres@127.0.0.1:" + strconv.Itoa(c.port) + "/" + escape(database)
}

// Dir returns the cluster's folder (absolute).
func (c *Cluster) Dir() string { return c.dir }

// PID returns the postmaster's process id, or 0 when it is not running.
func (c *Cluster) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.run == nil || c.run.exited() {
		return 0
	}
	return c.run.proc.Pid
}

// Running tells whether the postmaster is running (it may have exited by itself).
func (c *Cluster) Running() bool { return c.PID() != 0 }

// Stop asks for a fast shutdown (SIGINT: end sessions, checkpoint, exit) and waits for it.
// Stopping a cluster that is not running is not an error.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopLocked()
}

func (c *Cluster) stopLocked() error {
	r := c.run
	if r == nil || r.exited() {
		return nil
	}
	r.stopping.Store(true)
	if err := r.proc.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pglocal: stop postgres: %w", err)
	}
	select {
	case <-r.done:
		c.log.Info("postgres stopped", zap.Int("pid", r.proc.Pid))
		return nil
	case <-time.After(stopTimeout):
		_ = r.proc.Kill()
		<-r.done
		return fmt.Errorf("pglocal: postgres ignored fast shutdown for %s and was killed; its log ends:\n%s", stopTimeout, c.LogTail())
	}
}

// Restart starts the stopped cluster again, on the same socket folder and port, so every
// configuration and URL handed out before stays valid, and waits until it accepts
// connections. It fails if postgres is running or the Cluster is closed.
func (c *Cluster) Restart(ctx context.Context) error {
	_, err := c.start(ctx)
	return err
}

// Close stops postgres, removes the socket folder and releases Dir. It keeps Dir and the
// data. Close is idempotent; the Cluster cannot be restarted afterwards.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.err
	}
	c.closed = true
	c.err = c.stopLocked()
	if c.sockDir != "" {
		if err := os.RemoveAll(c.sockDir); err != nil {
			c.err = errors.Join(c.err, fmt.Errorf("pglocal: remove socket folder: %w", err))
		}
	}
	if c.lock != nil {
		c.lock.Close()
	}
	return c.err
}

// LogTail returns the end of the server's log, for error messages.
func (c *Cluster) LogTail() string {
	f, err := os.Open(c.logPath())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > logTailBytes {
		_, _ = f.Seek(-logTailBytes, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return tail(b)
}

func tail(b []byte) string {
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
	}
	return strings.TrimSpace(string(b))
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
