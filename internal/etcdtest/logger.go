package etcdtest

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const (
	// logEnv, when set to a zap level ("debug", "info", "warn", "error"),
	// streams etcd's, the clients' and the proxies' logs at that level to
	// the test log as they happen. That is what to use when a test hangs:
	// a test killed by -timeout runs no cleanup, so nothing buffered is
	// shown.
	logEnv = "BACKFLIP_TEST_ETCD_LOG"
	// defaultLogLevel is the least severe entry kept when logEnv is unset.
	// etcd logs several lines a second at info level; warnings (lost peers,
	// elections, slow applies, retried requests) are what explain a failure.
	defaultLogLevel = zapcore.WarnLevel
	// maxBufferedLines bounds the memory a long test's logs take; the most
	// recent lines are the ones kept.
	maxBufferedLines = 2000
)

// newLogger returns the logger for one component (a member, a cluster, a
// client, a proxy) of tb's test.
//
// By default it keeps the log in memory and writes it to tb's log only if the
// test has failed, when its cleanup runs: even warnings are noise in a passing
// test (etcd logs errors on every normal shutdown), but they are the first
// thing to read when a test fails. With logEnv set it streams instead.
//
// Either way nothing reaches tb after its cleanup: testing panics when
// something logs after the test has finished (zaptest's logger does that), and
// a late line from an etcd or client goroutine must not cost the whole test
// binary.
func newLogger(tb testing.TB) *zap.Logger {
	tb.Helper()
	level, stream := defaultLogLevel, false
	if v := os.Getenv(logEnv); v != "" {
		l, err := zapcore.ParseLevel(v)
		if err != nil {
			tb.Fatalf("etcdtest: %s=%q: want debug, info, warn or error", logEnv, v)
		}
		level, stream = l, true
	}
	w := &tbWriter{tb: tb, stream: stream}
	tb.Cleanup(w.finish)
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level))
}

// tbWriter is the zap sink behind newLogger.
type tbWriter struct {
	tb     testing.TB
	stream bool

	mu       sync.Mutex
	lines    []string
	dropped  int
	finished bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\n"))
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.finished:
	case w.stream:
		w.tb.Log(line)
	default:
		if len(w.lines) == maxBufferedLines {
			w.lines = w.lines[1:]
			w.dropped++
		}
		w.lines = append(w.lines, line)
	}
	return len(p), nil
}

// finish writes the buffered log if the test failed, and stops all further
// writes to tb.
func (w *tbWriter) finish() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.finished = true
	if w.stream || !w.tb.Failed() || len(w.lines) == 0 {
		return
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "etcdtest: log of a failed test (%s and above", defaultLogLevel.CapitalString())
	if w.dropped > 0 {
		fmt.Fprintf(&b, "; %d earlier lines dropped", w.dropped)
	}
	b.WriteString("):")
	for _, l := range w.lines {
		b.WriteString("\n")
		b.WriteString(l)
	}
	w.tb.Log(b.String())
	w.lines = nil
}
