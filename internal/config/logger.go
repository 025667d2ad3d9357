package config

import (
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger builds the process logger, writing to standard error: level is
// debug, info, warn or error; format is json (zap's production encoder, one
// object a line) or console (zap's development encoder, tab-separated). Times
// are ISO 8601. The logger is returned, never installed as zap's global; call
// Sync before exiting.
func NewLogger(level, format string) (*zap.Logger, error) {
	return NewLoggerTo(os.Stderr, level, format)
}

// NewLoggerTo is NewLogger writing to w, e.g. a file under `backflip dev`'s
// state folder while the terminal is the chat, or a buffer in a test. Writes
// are serialised, so w need not be safe for concurrent use.
func NewLoggerTo(w io.Writer, level, format string) (*zap.Logger, error) {
	if !validLevel(level) {
		return nil, fmt.Errorf("log level %q: must be one of debug, info, warn, error", level)
	}
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	var enc zapcore.Encoder
	switch format {
	case "json":
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("log format %q: must be json or console", format)
	}
	ws := zapcore.Lock(zapcore.AddSync(w))
	// No sampling: backflip logs little, and the lines of an incident are the
	// ones a sampler would drop.
	return zap.New(zapcore.NewCore(enc, ws, lvl),
		zap.AddCaller(),
		zap.AddStacktrace(zapcore.ErrorLevel),
		zap.ErrorOutput(ws),
	), nil
}

func validLevel(l string) bool {
	switch l {
	case "debug", "info", "warn", "error":
		return true
	}
	return false
}

func validFormat(f string) bool { return f == "json" || f == "console" }
