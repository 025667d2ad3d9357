package config

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// iso8601 matches zap's ISO8601TimeEncoder output, e.g. 2026-05-01T12:00:00.000Z
// or 2026-05-01T12:00:00.000+0200.
var iso8601 = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|[+-]\d{4})$`)

func TestNewLoggerJSON(t *testing.T) {
	var b bytes.Buffer
	log, err := NewLoggerTo(&b, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("flipped", zap.String("route", "chat-70b"))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one line (debug filtered at info), got %q", b.String())
	}
	var entry map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &entry); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	if entry["level"] != "info" || entry["msg"] != "flipped" || entry["route"] != "chat-70b" || entry["caller"] == nil {
		t.Errorf("unexpected entry %v", entry)
	}
	if ts, _ := entry["ts"].(string); !iso8601.MatchString(ts) {
		t.Errorf("ts %q is not ISO 8601", entry["ts"])
	}
}

func TestNewLoggerConsole(t *testing.T) {
	var b bytes.Buffer
	log, err := NewLoggerTo(&b, "debug", "console")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("probing", zap.String("node", "gpu-1"))
	fields := strings.Split(strings.TrimSpace(b.String()), "\t")
	if len(fields) < 4 || !iso8601.MatchString(fields[0]) || fields[1] != "DEBUG" || fields[3] != "probing" {
		t.Errorf("unexpected console line %q", b.String())
	}
	if !strings.Contains(b.String(), `{"node": "gpu-1"}`) {
		t.Errorf("fields missing: %q", b.String())
	}
}

func TestNewLoggerRejects(t *testing.T) {
	tests := []struct {
		name, level, format, want string
	}{
		{"UnknownLevel", "verbose", "json", `log level "verbose": must be one of debug, info, warn, error`},
		{"UpperCaseLevel", "INFO", "json", `log level "INFO": must be one of debug, info, warn, error`},
		{"FatalLevel", "fatal", "json", `log level "fatal": must be one of debug, info, warn, error`},
		{"EmptyLevel", "", "json", `log level "": must be one of debug, info, warn, error`},
		{"UnknownFormat", "info", "text", `log format "text": must be json or console`},
		{"EmptyFormat", "info", "", `log format "": must be json or console`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, err := NewLogger(tt.level, tt.format)
			if err == nil || err.Error() != tt.want {
				t.Errorf("NewLogger(%q, %q) = %v, %v; want error %s", tt.level, tt.format, log, err, tt.want)
			}
		})
	}
}

func TestNewLoggerEveryLevel(t *testing.T) {
	for _, level := range []string{"debug", "info", "warn", "error"} {
		for _, format := range []string{"json", "console"} {
			t.Run(level+"/"+format, func(t *testing.T) {
				if _, err := NewLogger(level, format); err != nil {
					t.Error(err)
				}
			})
		}
	}
}
