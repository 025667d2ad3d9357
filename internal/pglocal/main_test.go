package pglocal

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

// childDirEnv makes the test binary a child that runs a durable cluster in the folder it
// names, writes a row, prints the postmaster's pid and waits on stdin: TestKilledParent
// SIGKILLs it.
const childDirEnv = "PGLOCAL_TEST_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childDirEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	// After the tests: the goroutine waiting on a postmaster ends with it.
	goleak.VerifyTestMain(m)
}

func runChild(dir string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Dir: dir, Durable: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	defer c.Close()
	conn, err := pgx.ConnectConfig(ctx, c.ConnConfig(""))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE TABLE crash (id int); INSERT INTO crash VALUES (42)`); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	fmt.Printf("postmaster %d\n", c.PID())
	_, _ = io.Copy(io.Discard, os.Stdin) // until killed, or the parent test dies and the pipe closes
	return 0
}
