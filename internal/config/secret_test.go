package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestSecretsRedacted(t *testing.T) {
	c := &Config{
		Etcd:     Etcd{Username: "bot", Password: "hunter2-etcd"},
		Postgres: Postgres{URL: "postgres://bot:hunter2-pg@db/audit"},
		Slack:    Slack{BotToken: "xoxb-hunter2", AppToken: "xapp-hunter2", SigningSecret: "hunter2-sign"},
		Secrets:  Secrets{AgentToken: "hunter2-agent", RuntimeSecret: "hunter2-runtime"},
	}
	render := map[string]func() string{
		"%v":       func() string { return fmt.Sprintf("%v", c) },
		"%+v":      func() string { return fmt.Sprintf("%+v", c) },
		"%#v":      func() string { return fmt.Sprintf("%#v", c) },
		"value %v": func() string { return fmt.Sprintf("%v", *c) },
		"%x":       func() string { return fmt.Sprintf("%x", c.Secrets.AgentToken) },
		"%d":       func() string { return fmt.Sprintf("%d", c.Secrets.AgentToken) },
		"%q":       func() string { return fmt.Sprintf("%q", c.Secrets.AgentToken) },
		"json": func() string {
			b, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		},
		"slog": func() string {
			var b bytes.Buffer
			slog.New(slog.NewTextHandler(&b, nil)).Info("config", "token", c.Slack.BotToken, "config", c)
			return b.String()
		},
		"zap": func() string {
			var b bytes.Buffer
			log, err := NewLoggerTo(&b, "info", "json")
			if err != nil {
				t.Fatal(err)
			}
			log.Info("config", zap.Any("config", c), zap.Any("token", c.Slack.BotToken), zap.Stringer("secret", c.Secrets.RuntimeSecret))
			return b.String()
		},
	}
	for name, r := range render {
		t.Run(name, func(t *testing.T) {
			out := r()
			if strings.Contains(out, "hunter2") {
				t.Errorf("secret shown: %s", out)
			}
			if !strings.Contains(out, "[redacted]") && !strings.Contains(out, "5b72656461637465645d") {
				t.Errorf("no redaction marker: %s", out)
			}
		})
	}
}

func TestSecret(t *testing.T) {
	tests := []struct {
		name   string
		s      Secret
		want   string
		wantJS string
		isSet  bool
	}{
		{"Set", "tok", "[redacted]", `"[redacted]"`, true},
		{"Unset", "", "", `""`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprint(tt.s); got != tt.want {
				t.Errorf("Sprint = %q, want %q", got, tt.want)
			}
			if got, _ := json.Marshal(tt.s); string(got) != tt.wantJS {
				t.Errorf("json = %s, want %s", got, tt.wantJS)
			}
			if tt.s.IsSet() != tt.isSet || tt.s.Reveal() != string(tt.s) {
				t.Errorf("IsSet/Reveal wrong for %q", string(tt.s))
			}
		})
	}
}
