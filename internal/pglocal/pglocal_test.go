package pglocal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"
)

// testDir returns a cluster folder that does not exist yet, in a parent the postgres user
// can reach. Not under t.TempDir: as root, the server runs as the postgres user, who cannot
// enter it (it is 0700).
func testDir(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("", "pglocal-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(base, "cluster")
}

func start(t *testing.T, o Options) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func connect(t *testing.T, cfg *pgx.ConnConfig) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("connect to %s: %v", cfg.Database, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func count(t *testing.T, conn *pgx.Conn, table string) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// TestDataSurvivesClose is dev's case: data written, cluster closed, started again on the
// same folder, data still there.
func TestDataSurvivesClose(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	// An initdb killed halfway leaves its folder behind; it is started afresh.
	if err := os.MkdirAll(filepath.Join(dir, initName), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, initName, "junk"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	c := start(t, Options{Dir: dir, Durable: true})
	if got := c.TCPURL("x"); got != "" {
		t.Errorf("TCPURL without Options.TCP = %q, want \"\"", got)
	}
	if _, err := Start(t.Context(), Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Start on a folder in use = %v, want an error saying it is in use", err)
	}
	conn := connect(t, c.ConnConfig(""))
	if _, err := conn.Exec(t.Context(), `CREATE TABLE events (id int PRIMARY KEY); INSERT INTO events VALUES (1), (2)`); err != nil {
		t.Fatalf("write: %v", err)
	}
	conn.Close(t.Context())
	sock := c.sockDir
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if err := c.Restart(t.Context()); err == nil {
		t.Error("Restart after Close succeeded")
	}
	if _, err := os.Stat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket folder %s after Close: %v, want it removed", sock, err)
	}
	if _, err := os.Stat(filepath.Join(dir, dataName, "PG_VERSION")); err != nil {
		t.Errorf("data after Close: %v, want it kept", err)
	}

	c2 := start(t, Options{Dir: dir, Durable: true})
	cfg := c2.ConnConfig("postgres")
	if n := count(t, connect(t, cfg), "events"); n != 2 {
		t.Errorf("after a new Start: %d events, want the 2 written before Close", n)
	}

	// Stop and Restart keep the socket folder and port: cfg stays valid.
	if err := c2.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := c2.Stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if c2.Running() || c2.PID() != 0 {
		t.Errorf("after Stop: Running %v, PID %d", c2.Running(), c2.PID())
	}
	if conn, err := pgx.ConnectConfig(t.Context(), cfg); err == nil {
		conn.Close(t.Context())
		t.Fatal("connected to a stopped cluster")
	}
	if err := c2.Restart(t.Context()); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := c2.Restart(t.Context()); err == nil {
		t.Error("restarting a running cluster succeeded")
	}
	parsed, err := pgx.ParseConfig(c2.URL("postgres"))
	if err != nil {
		t.Fatalf("parse URL %s: %v", c2.URL("postgres"), err)
	}
	if n := count(t, connect(t, parsed), "events"); n != 2 {
		t.Errorf("after Restart: %d events, want 2", n)
	}
}

// TestTCP checks TCPURL works with pgx and reaches the server on 127.0.0.1.
func TestTCP(t *testing.T) {
	t.Parallel()
	c := start(t, Options{Dir: testDir(t), TCP: true})
	url := c.TCPURL("template1")
	if !strings.HasPrefix(url, "postgres://postgres@127.0.0.1:") {
		t.Errorf("TCPURL = %q", url)
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	conn := connect(t, cfg)
	var addr, db, user string
	if err := conn.QueryRow(t.Context(), `SELECT host(inet_server_addr()), current_database(), current_user`).Scan(&addr, &db, &user); err != nil {
		t.Fatalf("query over TCP: %v", err)
	}
	if addr != "127.0.0.1" || db != "template1" || user != "postgres" {
		t.Errorf("over TCP: server %s, database %s, user %s; want 127.0.0.1, template1, postgres", addr, db, user)
	}
	// The socket is there too.
	if got := connect(t, c.ConnConfig("template1")).Config().Host; !strings.HasPrefix(got, "/") {
		t.Errorf("ConnConfig host = %q, want the socket folder", got)
	}
}

// TestTCPPortTaken hands out a port someone holds: postgres fails to bind it, and Start
// tries once more with another.
func TestTCPPortTaken(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	var calls int
	c := start(t, Options{Dir: testDir(t), TCP: true, Logger: zaptest.NewLogger(t), freePort: func() (int, error) {
		calls++
		if calls == 1 {
			return busyPort, nil
		}
		return pickPort()
	}})
	if calls != 2 || strings.Contains(c.TCPURL(""), ":"+strconv.Itoa(busyPort)+"/") {
		t.Errorf("%d ports picked, TCPURL %s; want 2, not the busy port %d", calls, c.TCPURL(""), busyPort)
	}
	connect(t, mustParse(t, c.TCPURL("")))
	if !strings.Contains(c.LogTail(), "could not bind") {
		t.Errorf("log does not show the failed bind:\n%s", c.LogTail())
	}
}

func mustParse(t *testing.T, url string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return cfg
}

// TestUnreachable puts Dir below a 0700 folder of root's. As root the server would run as the
// postgres user, who cannot get there: Start must say so before creating anything. Anyone
// else runs the server as themselves, so it starts.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	base, err := os.MkdirTemp("", "pglocal-private-") // 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dir := filepath.Join(base, "state", "pg")

	if os.Geteuid() != 0 {
		c := start(t, Options{Dir: dir})
		connect(t, c.ConnConfig(""))
		return
	}
	_, err = Start(t.Context(), Options{Dir: dir})
	t.Log(err)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), base) {
		t.Fatalf("Start = %v, want ErrUnreachable naming %s", err, base)
	}
	if _, err := os.Stat(filepath.Join(base, "state")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Start created %s/state (%v) before failing", base, err)
	}
	// Once the folder lets others search it, the same Dir works.
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	c := start(t, Options{Dir: dir})
	connect(t, c.ConnConfig(""))
	if fi, err := os.Stat(base); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("Start changed the owner of %s, a parent of Dir", base)
	}
}

// TestKilledParent SIGKILLs a process running a durable cluster, as a crashed `backflip dev`
// would be: its postmaster must die with it, leaving a stale postmaster.pid, and the next
// Start on the same folder must work and find the committed data.
func TestKilledParent(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var oldPid int
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "postmaster %d", &oldPid); err == nil {
			break
		}
	}
	if oldPid <= 0 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("child printed no postmaster pid")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if readPid(filepath.Join(dir, dataName, "postmaster.pid")) != oldPid {
		t.Fatalf("postmaster.pid does not name the killed postmaster %d", oldPid)
	}

	c := start(t, Options{Dir: dir, Durable: true, Logger: zaptest.NewLogger(t)})
	if !gone(oldPid) {
		t.Errorf("the killed parent's postmaster %d still runs", oldPid)
	}
	if pid := c.PID(); pid == oldPid || readPid(filepath.Join(dir, dataName, "postmaster.pid")) != pid {
		t.Errorf("postmaster.pid names %d; new postmaster %d, old %d",
			readPid(filepath.Join(dir, dataName, "postmaster.pid")), pid, oldPid)
	}
	if n := count(t, connect(t, c.ConnConfig("")), "crash"); n != 1 {
		t.Errorf("after the crash: %d rows, want the 1 committed before it", n)
	}
	t.Logf("old postmaster %d, new %d; log ends:\n%s", oldPid, c.PID(), c.LogTail())
}

// TestNoBinaries points at a folder without server binaries, directly and through
// BACKFLIP_PG_BIN, and checks nothing is created.
func TestNoBinaries(t *testing.T) {
	t.Parallel()
	empty := t.TempDir()
	dir := testDir(t)
	env := func(k string) (string, bool) {
		if k == EnvBin {
			return empty, true
		}
		return "", false
	}
	for name, o := range map[string]Options{
		"Bin":    {Dir: dir, Bin: empty},
		"Getenv": {Dir: dir, Getenv: env},
	} {
		_, err := Start(t.Context(), o)
		t.Logf("%s: %v", name, err)
		if !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), "install the 'postgresql' package") || !strings.Contains(err.Error(), EnvBin) {
			t.Errorf("%s: Start = %v, want ErrNoBinaries saying what to install and naming %s", name, err, EnvBin)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Dir after failed Starts: %v, want it not created", err)
	}
}

// TestWrongVersion starts on a data directory of another major version, and on one that is
// no data directory.
func TestWrongVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, pgVersion string // "" writes no PG_VERSION
		want            []string
		is              error
	}{
		{name: "OtherMajor", pgVersion: "9.6\n", want: []string{"PostgreSQL 9.6", "pg_upgrade"}, is: ErrVersionMismatch},
		{name: "NotADataDir", want: []string{"not a PostgreSQL data directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := testDir(t)
			data := filepath.Join(dir, dataName)
			if err := os.MkdirAll(data, 0o700); err != nil {
				t.Fatal(err)
			}
			if tt.pgVersion != "" {
				if err := os.WriteFile(filepath.Join(data, "PG_VERSION"), []byte(tt.pgVersion), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Start(t.Context(), Options{Dir: dir})
			t.Log(err)
			if err == nil || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("Start = %v, want %v", err, tt.is)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q", w)
				}
			}
		})
	}
}

// TestStalePidFile leaves a postmaster.pid naming a process that is gone (postgres replaces
// such a file itself) or an unrelated live process (a pid reused after a reboot: postgres
// would refuse, so Start removes the file), and checks Start works in both cases without
// touching that process.
func TestStalePidFile(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	c := start(t, Options{Dir: dir})
	pidFile := filepath.Join(dir, dataName, "postmaster.pid")
	content, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	reaped := exec.Command("true")
	if err := reaped.Run(); err != nil {
		t.Fatal(err)
	}
	stranger := exec.Command("sleep", "600")
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stranger.Process.Kill(); stranger.Wait() })

	for _, tt := range []struct {
		name string
		pid  int
	}{
		{"Gone", reaped.Process.Pid},
		{"PidReused", stranger.Process.Pid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, rest, _ := strings.Cut(string(content), "\n")
			if err := os.WriteFile(pidFile, []byte(strconv.Itoa(tt.pid)+"\n"+rest), 0o600); err != nil {
				t.Fatal(err)
			}
			// As the server's user, as postgres would have written it.
			st := dataOwner(t, dir)
			if err := os.Chown(pidFile, int(st.Uid), int(st.Gid)); err != nil {
				t.Fatal(err)
			}
			c := start(t, Options{Dir: dir, Logger: zaptest.NewLogger(t)})
			connect(t, c.ConnConfig(""))
			if got := readPid(pidFile); got != c.PID() {
				t.Errorf("postmaster.pid names %d, want the new postmaster %d", got, c.PID())
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if err := stranger.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the process that got the old pid: %v, want it left alone", err)
	}
}

func dataOwner(t *testing.T, dir string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, dataName))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}
