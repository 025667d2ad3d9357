package config

import (
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// contractVars is the configuration contract of DESIGN.md plus the agent's and
// the reader's variables, written out by hand so that renaming a field's tag
// fails a test instead of silently renaming a public variable.
var contractVars = []string{
	"BACKFLIP_ETCD_ENDPOINTS", "BACKFLIP_ETCD_PREFIX", "BACKFLIP_ETCD_CA_FILE",
	"BACKFLIP_ETCD_CERT_FILE", "BACKFLIP_ETCD_KEY_FILE", "BACKFLIP_ETCD_USERNAME", "BACKFLIP_ETCD_PASSWORD",
	"BACKFLIP_DATABASE_URL",
	"BACKFLIP_SLACK_MODE", "BACKFLIP_SLACK_BOT_TOKEN", "BACKFLIP_SLACK_APP_TOKEN", "BACKFLIP_SLACK_SIGNING_SECRET",
	"BACKFLIP_SLACK_API_URL", "BACKFLIP_INCIDENT_CHANNELS", "BACKFLIP_OPS_CHANNEL", "BACKFLIP_ANNOUNCE_CHANNEL",
	"BACKFLIP_CARD_TTL", "BACKFLIP_USERGROUP_CACHE_TTL",
	"BACKFLIP_ROLLBACK_USERS", "BACKFLIP_ROLLBACK_USERGROUPS", "BACKFLIP_DRILL_USERS", "BACKFLIP_DRILL_USERGROUPS",
	"BACKFLIP_HTTP_ADDR", "BACKFLIP_WARM_QUORUM", "BACKFLIP_WARM_TIMEOUT", "BACKFLIP_WARM_MAX_AGE",
	"BACKFLIP_ROUTER_CONVERGE_TIMEOUT", "BACKFLIP_ABORT_ACK_TIMEOUT", "BACKFLIP_ROLLBACK_SLO",
	"BACKFLIP_DRILL_VERIFY_WINDOW", "BACKFLIP_DRILL_QUIET_PERIOD", "BACKFLIP_READER_MAX_STALENESS",
	"BACKFLIP_AGENT_TOKEN", "BACKFLIP_RUNTIME_SECRET",
	"BACKFLIP_LOG_LEVEL", "BACKFLIP_LOG_FORMAT",
	"BACKFLIP_AGENT_NODE", "BACKFLIP_AGENT_ADDR", "BACKFLIP_AGENT_CONFIG", "BACKFLIP_AGENT_TLS_CERT", "BACKFLIP_AGENT_TLS_KEY",
	"BACKFLIP_PIN_FILE",
}

// contractDefaults are the defaults DESIGN.md promises, plus AGENT_ADDR's.
var contractDefaults = map[string]string{
	"BACKFLIP_ETCD_PREFIX":             "/backflip",
	"BACKFLIP_SLACK_MODE":              "socket",
	"BACKFLIP_CARD_TTL":                "10m",
	"BACKFLIP_USERGROUP_CACHE_TTL":     "5m",
	"BACKFLIP_HTTP_ADDR":               ":8080",
	"BACKFLIP_WARM_QUORUM":             "1.0",
	"BACKFLIP_WARM_TIMEOUT":            "2s",
	"BACKFLIP_WARM_MAX_AGE":            "15s",
	"BACKFLIP_ROUTER_CONVERGE_TIMEOUT": "5s",
	"BACKFLIP_ABORT_ACK_TIMEOUT":       "10s",
	"BACKFLIP_ROLLBACK_SLO":            "90s",
	"BACKFLIP_DRILL_VERIFY_WINDOW":     "30s",
	"BACKFLIP_DRILL_QUIET_PERIOD":      "24h",
	"BACKFLIP_READER_MAX_STALENESS":    "30s",
	"BACKFLIP_LOG_LEVEL":               "info",
	"BACKFLIP_LOG_FORMAT":              "json",
	"BACKFLIP_AGENT_ADDR":              ":9090",
}

// cleanEnv unsets every variable Config reads, and their unprefixed forms,
// for the duration of the test (t.Setenv restores them afterwards).
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, v := range Vars() {
		for _, name := range []string{v.Name, strings.TrimPrefix(v.Name, Prefix)} {
			t.Setenv(name, "")
			if err := os.Unsetenv(name); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
}

func mustFromEnv(t *testing.T) *Config {
	t.Helper()
	c, err := FromEnv()
	if err != nil {
		t.Fatalf("FromEnv: %v", err)
	}
	return c
}

func TestFromEnvDefaults(t *testing.T) {
	cleanEnv(t)
	got := mustFromEnv(t)
	want := &Config{
		Etcd:   Etcd{Prefix: "/backflip"},
		Slack:  Slack{Mode: "socket", CardTTL: 10 * time.Minute, UsergroupCacheTTL: 5 * time.Minute},
		HTTP:   HTTP{Addr: ":8080"},
		Timing: Timing{WarmQuorum: 1, WarmTimeout: 2 * time.Second, WarmMaxAge: 15 * time.Second, RouterConvergeTimeout: 5 * time.Second, AbortAckTimeout: 10 * time.Second, RollbackSLO: 90 * time.Second, DrillVerifyWindow: 30 * time.Second, DrillQuietPeriod: 24 * time.Hour},
		Log:    Log{Level: "info", Format: "json"},
		Agent:  Agent{Addr: ":9090"},
		Reader: Reader{MaxStaleness: 30 * time.Second},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestFromEnvReadsEveryContractVariable(t *testing.T) {
	cleanEnv(t)
	// One valid environment with every variable set to a distinct value that
	// is not its default: each value landing in its own field proves the name
	// is read, and read into the right place.
	env := map[string]string{
		"BACKFLIP_ETCD_ENDPOINTS":          "http://etcd-0:2379, etcd-1:2379,unix://127.0.0.1:21001",
		"BACKFLIP_ETCD_PREFIX":             "/bf/prod",
		"BACKFLIP_ETCD_CA_FILE":            "/tls/ca.pem",
		"BACKFLIP_ETCD_CERT_FILE":          "/tls/etcd.pem",
		"BACKFLIP_ETCD_KEY_FILE":           "/tls/etcd-key.pem",
		"BACKFLIP_ETCD_USERNAME":           "bot",
		"BACKFLIP_ETCD_PASSWORD":           "etcd-pw",
		"BACKFLIP_DATABASE_URL":            "postgres://bot:pw@db:5432/audit?sslmode=require",
		"BACKFLIP_SLACK_MODE":              "http",
		"BACKFLIP_SLACK_BOT_TOKEN":         "xoxb-bot",
		"BACKFLIP_SLACK_APP_TOKEN":         "xapp-app",
		"BACKFLIP_SLACK_SIGNING_SECRET":    "signing",
		"BACKFLIP_SLACK_API_URL":           "http://127.0.0.1:9999/api/",
		"BACKFLIP_INCIDENT_CHANNELS":       "C0123,inc-*",
		"BACKFLIP_OPS_CHANNEL":             "C0OPS",
		"BACKFLIP_ANNOUNCE_CHANNEL":        "C0ANN",
		"BACKFLIP_CARD_TTL":                "3m",
		"BACKFLIP_USERGROUP_CACHE_TTL":     "7m",
		"BACKFLIP_ROLLBACK_USERS":          "U1,U2",
		"BACKFLIP_ROLLBACK_USERGROUPS":     "S1",
		"BACKFLIP_DRILL_USERS":             "U3",
		"BACKFLIP_DRILL_USERGROUPS":        "S2,S3",
		"BACKFLIP_HTTP_ADDR":               "127.0.0.1:0",
		"BACKFLIP_WARM_QUORUM":             "0.75",
		"BACKFLIP_WARM_TIMEOUT":            "3s",
		"BACKFLIP_WARM_MAX_AGE":            "16s",
		"BACKFLIP_ROUTER_CONVERGE_TIMEOUT": "6s",
		"BACKFLIP_ABORT_ACK_TIMEOUT":       "11s",
		"BACKFLIP_ROLLBACK_SLO":            "91s",
		"BACKFLIP_DRILL_VERIFY_WINDOW":     "31s",
		"BACKFLIP_DRILL_QUIET_PERIOD":      "25h",
		"BACKFLIP_READER_MAX_STALENESS":    "32s",
		"BACKFLIP_AGENT_TOKEN":             "agent-tok",
		"BACKFLIP_RUNTIME_SECRET":          "runtime-key",
		"BACKFLIP_LOG_LEVEL":               "debug",
		"BACKFLIP_LOG_FORMAT":              "console",
		"BACKFLIP_AGENT_NODE":              "gpu-17",
		"BACKFLIP_AGENT_ADDR":              ":9443",
		"BACKFLIP_AGENT_CONFIG":            "/etc/backflip/agent.yaml",
		"BACKFLIP_AGENT_TLS_CERT":          "/tls/agent.pem",
		"BACKFLIP_AGENT_TLS_KEY":           "/tls/agent-key.pem",
		"BACKFLIP_PIN_FILE":                "/run/backflip/pin.json",
	}
	setEnv(t, env)
	c := mustFromEnv(t)

	tests := []struct {
		name string
		got  any
		want any
	}{
		{"BACKFLIP_ETCD_ENDPOINTS", c.Etcd.Endpoints, []string{"http://etcd-0:2379", "etcd-1:2379", "unix://127.0.0.1:21001"}},
		{"BACKFLIP_ETCD_PREFIX", c.Etcd.Prefix, "/bf/prod"},
		{"BACKFLIP_ETCD_CA_FILE", c.Etcd.CAFile, "/tls/ca.pem"},
		{"BACKFLIP_ETCD_CERT_FILE", c.Etcd.CertFile, "/tls/etcd.pem"},
		{"BACKFLIP_ETCD_KEY_FILE", c.Etcd.KeyFile, "/tls/etcd-key.pem"},
		{"BACKFLIP_ETCD_USERNAME", c.Etcd.Username, "bot"},
		{"BACKFLIP_ETCD_PASSWORD", c.Etcd.Password.Reveal(), "etcd-pw"},
		{"BACKFLIP_DATABASE_URL", c.Postgres.URL.Reveal(), "postgres://bot:pw@db:5432/audit?sslmode=require"},
		{"BACKFLIP_SLACK_MODE", c.Slack.Mode, "http"},
		{"BACKFLIP_SLACK_BOT_TOKEN", c.Slack.BotToken.Reveal(), "xoxb-bot"},
		{"BACKFLIP_SLACK_APP_TOKEN", c.Slack.AppToken.Reveal(), "xapp-app"},
		{"BACKFLIP_SLACK_SIGNING_SECRET", c.Slack.SigningSecret.Reveal(), "signing"},
		{"BACKFLIP_SLACK_API_URL", c.Slack.APIURL, "http://127.0.0.1:9999/api/"},
		{"BACKFLIP_INCIDENT_CHANNELS", c.Slack.IncidentChannels, []string{"C0123", "inc-*"}},
		{"BACKFLIP_OPS_CHANNEL", c.Slack.OpsChannel, "C0OPS"},
		{"BACKFLIP_ANNOUNCE_CHANNEL", c.Slack.AnnounceChannel, "C0ANN"},
		{"BACKFLIP_CARD_TTL", c.Slack.CardTTL, 3 * time.Minute},
		{"BACKFLIP_USERGROUP_CACHE_TTL", c.Slack.UsergroupCacheTTL, 7 * time.Minute},
		{"BACKFLIP_ROLLBACK_USERS", c.Access.RollbackUsers, []string{"U1", "U2"}},
		{"BACKFLIP_ROLLBACK_USERGROUPS", c.Access.RollbackUsergroups, []string{"S1"}},
		{"BACKFLIP_DRILL_USERS", c.Access.DrillUsers, []string{"U3"}},
		{"BACKFLIP_DRILL_USERGROUPS", c.Access.DrillUsergroups, []string{"S2", "S3"}},
		{"BACKFLIP_HTTP_ADDR", c.HTTP.Addr, "127.0.0.1:0"},
		{"BACKFLIP_WARM_QUORUM", c.Timing.WarmQuorum, 0.75},
		{"BACKFLIP_WARM_TIMEOUT", c.Timing.WarmTimeout, 3 * time.Second},
		{"BACKFLIP_WARM_MAX_AGE", c.Timing.WarmMaxAge, 16 * time.Second},
		{"BACKFLIP_ROUTER_CONVERGE_TIMEOUT", c.Timing.RouterConvergeTimeout, 6 * time.Second},
		{"BACKFLIP_ABORT_ACK_TIMEOUT", c.Timing.AbortAckTimeout, 11 * time.Second},
		{"BACKFLIP_ROLLBACK_SLO", c.Timing.RollbackSLO, 91 * time.Second},
		{"BACKFLIP_DRILL_VERIFY_WINDOW", c.Timing.DrillVerifyWindow, 31 * time.Second},
		{"BACKFLIP_DRILL_QUIET_PERIOD", c.Timing.DrillQuietPeriod, 25 * time.Hour},
		{"BACKFLIP_READER_MAX_STALENESS", c.Reader.MaxStaleness, 32 * time.Second},
		{"BACKFLIP_AGENT_TOKEN", c.Secrets.AgentToken.Reveal(), "agent-tok"},
		{"BACKFLIP_RUNTIME_SECRET", c.Secrets.RuntimeSecret.Reveal(), "runtime-key"},
		{"BACKFLIP_LOG_LEVEL", c.Log.Level, "debug"},
		{"BACKFLIP_LOG_FORMAT", c.Log.Format, "console"},
		{"BACKFLIP_AGENT_NODE", c.Agent.Node, "gpu-17"},
		{"BACKFLIP_AGENT_ADDR", c.Agent.Addr, ":9443"},
		{"BACKFLIP_AGENT_CONFIG", c.Agent.ConfigFile, "/etc/backflip/agent.yaml"},
		{"BACKFLIP_AGENT_TLS_CERT", c.Agent.TLSCert, "/tls/agent.pem"},
		{"BACKFLIP_AGENT_TLS_KEY", c.Agent.TLSKey, "/tls/agent-key.pem"},
		{"BACKFLIP_PIN_FILE", c.Reader.PinFile, "/run/backflip/pin.json"},
	}
	var covered []string
	for _, tt := range tests {
		covered = append(covered, tt.name)
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := env[tt.name]; !ok {
				t.Fatalf("%s is not set in the test environment", tt.name)
			}
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("%s=%q: got %#v, want %#v", tt.name, env[tt.name], tt.got, tt.want)
			}
		})
	}
	for _, name := range contractVars {
		if !slices.Contains(covered, name) {
			t.Errorf("contract variable %s has no case", name)
		}
	}
	// The one environment is also what serve and the agent need.
	if err := c.ValidateServe(); err != nil {
		t.Errorf("ValidateServe: %v", err)
	}
	if err := c.ValidateAgent(); err != nil {
		t.Errorf("ValidateAgent: %v", err)
	}
}

func TestFromEnvIgnoresUnprefixedNames(t *testing.T) {
	cleanEnv(t)
	// envconfig.Process("BACKFLIP", ...) would fall back to these; FromEnv
	// must not, or a DATABASE_URL meant for another program would be used.
	setEnv(t, map[string]string{
		"LOG_LEVEL":    "debug",
		"DATABASE_URL": "postgres://other@db/other",
		"HTTP_ADDR":    ":1",
		"ETCD_PREFIX":  "/other",
	})
	c := mustFromEnv(t)
	if c.Log.Level != "info" || c.Postgres.URL.IsSet() || c.HTTP.Addr != ":8080" || c.Etcd.Prefix != "/backflip" {
		t.Errorf("unprefixed variables were read: %+v", c)
	}
}

// TestEnvconfigPrefixBehaviour pins the two envconfig v1.4.0 behaviours that
// made us tag every field with its full name and process with an empty
// prefix. If an envconfig upgrade changes them, this test says so.
func TestEnvconfigPrefixBehaviour(t *testing.T) {
	t.Run("NamedSubStructAddsItsNameToThePrefix", func(t *testing.T) {
		t.Setenv("BACKFLIP_ETCD_ENDPOINTS", "flat")
		t.Setenv("BACKFLIP_ETCD_ETCD_ENDPOINTS", "nested")
		var spec struct {
			Etcd struct {
				Endpoints string `envconfig:"ETCD_ENDPOINTS"`
			}
		}
		if err := envconfig.Process("BACKFLIP", &spec); err != nil {
			t.Fatal(err)
		}
		if spec.Etcd.Endpoints != "nested" {
			t.Errorf("got %q, want the value of BACKFLIP_ETCD_ETCD_ENDPOINTS", spec.Etcd.Endpoints)
		}
	})
	t.Run("UnsetPrefixedNameFallsBackToBareTag", func(t *testing.T) {
		t.Setenv("BACKFLIP_LOG_LEVEL", "")
		if err := os.Unsetenv("BACKFLIP_LOG_LEVEL"); err != nil {
			t.Fatal(err)
		}
		t.Setenv("LOG_LEVEL", "bare")
		var spec struct {
			Level string `envconfig:"LOG_LEVEL"`
		}
		if err := envconfig.Process("BACKFLIP", &spec); err != nil {
			t.Fatal(err)
		}
		if spec.Level != "bare" {
			t.Errorf("got %q, want the value of the bare LOG_LEVEL", spec.Level)
		}
	})
}

func TestFromEnvErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"DurationNotADuration", map[string]string{"BACKFLIP_WARM_TIMEOUT": "soon"}, `BACKFLIP_WARM_TIMEOUT: expected a duration like 2s, got "soon"`},
		{"DurationEmpty", map[string]string{"BACKFLIP_CARD_TTL": ""}, `BACKFLIP_CARD_TTL: expected a duration like 10m, got ""`},
		{"DurationZero", map[string]string{"BACKFLIP_CARD_TTL": "0s"}, `BACKFLIP_CARD_TTL: must be greater than 0, got "0s"`},
		{"DurationNegative", map[string]string{"BACKFLIP_DRILL_QUIET_PERIOD": "-1h"}, `BACKFLIP_DRILL_QUIET_PERIOD: must be greater than 0, got "-1h0m0s"`},
		{"QuorumAboveOne", map[string]string{"BACKFLIP_WARM_QUORUM": "1.5"}, `BACKFLIP_WARM_QUORUM: must be in (0, 1], got "1.5"`},
		{"QuorumZero", map[string]string{"BACKFLIP_WARM_QUORUM": "0"}, `BACKFLIP_WARM_QUORUM: must be in (0, 1], got "0"`},
		{"QuorumNaN", map[string]string{"BACKFLIP_WARM_QUORUM": "NaN"}, `BACKFLIP_WARM_QUORUM: must be in (0, 1], got "NaN"`},
		{"QuorumNotANumber", map[string]string{"BACKFLIP_WARM_QUORUM": "high"}, `BACKFLIP_WARM_QUORUM: expected a number like 1.0, got "high"`},
		{"PrefixRelative", map[string]string{"BACKFLIP_ETCD_PREFIX": "backflip"}, `BACKFLIP_ETCD_PREFIX: must start with "/", not end with "/" and contain no spaces, got "backflip"`},
		{"PrefixTrailingSlash", map[string]string{"BACKFLIP_ETCD_PREFIX": "/backflip/"}, `BACKFLIP_ETCD_PREFIX: must start with "/", not end with "/" and contain no spaces, got "/backflip/"`},
		{"PrefixSpace", map[string]string{"BACKFLIP_ETCD_PREFIX": "/back flip"}, `BACKFLIP_ETCD_PREFIX: must start with "/", not end with "/" and contain no spaces, got "/back flip"`},
		{"EndpointBadScheme", map[string]string{"BACKFLIP_ETCD_ENDPOINTS": "http://etcd-0:2379,ftp://etcd-1:2379"}, `BACKFLIP_ETCD_ENDPOINTS: expected host:port or a URL with scheme http, https, unix or unixs, got "ftp://etcd-1:2379"`},
		{"EndpointNoPort", map[string]string{"BACKFLIP_ETCD_ENDPOINTS": "etcd-0"}, `BACKFLIP_ETCD_ENDPOINTS: expected host:port or a URL with scheme http, https, unix or unixs, got "etcd-0"`},
		{"EndpointWithPasswordNotEchoed", map[string]string{"BACKFLIP_ETCD_ENDPOINTS": "http://root:hunter2@etcd-0:2379"}, `BACKFLIP_ETCD_ENDPOINTS: must not hold user information (value not shown, it may hold a password): set BACKFLIP_ETCD_USERNAME and BACKFLIP_ETCD_PASSWORD instead`},
		{"EndpointUnparseableWithPasswordNotEchoed", map[string]string{"BACKFLIP_ETCD_ENDPOINTS": "http://root:hunter2@etcd-0:port"}, `BACKFLIP_ETCD_ENDPOINTS: must not hold user information (value not shown, it may hold a password): set BACKFLIP_ETCD_USERNAME and BACKFLIP_ETCD_PASSWORD instead`},
		{"EndpointNoHost", map[string]string{"BACKFLIP_ETCD_ENDPOINTS": "http://:2379"}, `BACKFLIP_ETCD_ENDPOINTS: expected host:port or a URL with scheme http, https, unix or unixs, got "http://:2379"`},
		{"SlackModeUnknown", map[string]string{"BACKFLIP_SLACK_MODE": "rtm"}, `BACKFLIP_SLACK_MODE: must be socket or http, got "rtm"`},
		{"SlackAPIURLNotURL", map[string]string{"BACKFLIP_SLACK_API_URL": "slack.com/api"}, `BACKFLIP_SLACK_API_URL: expected an http or https URL, got "slack.com/api"`},
		{"IncidentChannelBadGlob", map[string]string{"BACKFLIP_INCIDENT_CHANNELS": "C01,inc-["}, `BACKFLIP_INCIDENT_CHANNELS: expected channel IDs or name globs such as inc-*, got "inc-["`},
		{"LogLevelUnknown", map[string]string{"BACKFLIP_LOG_LEVEL": "verbose"}, `BACKFLIP_LOG_LEVEL: must be one of debug, info, warn, error, got "verbose"`},
		{"LogLevelSetEmpty", map[string]string{"BACKFLIP_LOG_LEVEL": ""}, `BACKFLIP_LOG_LEVEL: must be one of debug, info, warn, error, got ""`},
		{"LogFormatUnknown", map[string]string{"BACKFLIP_LOG_FORMAT": "text"}, `BACKFLIP_LOG_FORMAT: must be json or console, got "text"`},
		{"HTTPAddrNoColon", map[string]string{"BACKFLIP_HTTP_ADDR": "8080"}, `BACKFLIP_HTTP_ADDR: expected host:port such as :8080, got "8080"`},
		{"AgentAddrPortTooBig", map[string]string{"BACKFLIP_AGENT_ADDR": ":99999"}, `BACKFLIP_AGENT_ADDR: expected host:port such as :9090, got ":99999"`},
		{"AgentNodeWithSlash", map[string]string{"BACKFLIP_AGENT_NODE": "rack1/gpu-17"}, `BACKFLIP_AGENT_NODE: must not contain "/" or spaces (it is an etcd key segment), got "rack1/gpu-17"`},
		{"EtcdCertWithoutKey", map[string]string{"BACKFLIP_ETCD_CERT_FILE": "/tls/c.pem"}, `BACKFLIP_ETCD_KEY_FILE: must be set when BACKFLIP_ETCD_CERT_FILE is set`},
		{"EtcdKeyWithoutCert", map[string]string{"BACKFLIP_ETCD_KEY_FILE": "/tls/k.pem"}, `BACKFLIP_ETCD_CERT_FILE: must be set when BACKFLIP_ETCD_KEY_FILE is set`},
		{"EtcdPasswordWithoutUser", map[string]string{"BACKFLIP_ETCD_PASSWORD": "pw"}, `BACKFLIP_ETCD_USERNAME: must be set when BACKFLIP_ETCD_PASSWORD is set`},
		{"AgentKeyWithoutCert", map[string]string{"BACKFLIP_AGENT_TLS_KEY": "/tls/k.pem"}, `BACKFLIP_AGENT_TLS_CERT: must be set when BACKFLIP_AGENT_TLS_KEY is set`},
		{"DatabaseURLWrongSchemeNotEchoed", map[string]string{"BACKFLIP_DATABASE_URL": "mysql://bot:hunter2@db/audit"}, `BACKFLIP_DATABASE_URL: expected a postgres:// or postgresql:// URL (value not shown, it may hold a password)`},
		{"DatabaseURLUnparseableNotEchoed", map[string]string{"BACKFLIP_DATABASE_URL": "postgres://bot:hunter2@db:port/audit"}, `BACKFLIP_DATABASE_URL: expected a postgres:// or postgresql:// URL (value not shown, it may hold a password)`},
		{"SeveralProblemsOneLine", map[string]string{"BACKFLIP_LOG_LEVEL": "verbose", "BACKFLIP_LOG_FORMAT": "text"}, `BACKFLIP_LOG_LEVEL: must be one of debug, info, warn, error, got "verbose"; BACKFLIP_LOG_FORMAT: must be json or console, got "text"`},
		{"ParseErrorsOfSeveralGroups", map[string]string{"BACKFLIP_CARD_TTL": "later", "BACKFLIP_WARM_MAX_AGE": "old"}, `BACKFLIP_CARD_TTL: expected a duration like 10m, got "later"; BACKFLIP_WARM_MAX_AGE: expected a duration like 15s, got "old"`},
		{"ValueWithNewlineStaysOneLine", map[string]string{"BACKFLIP_SLACK_MODE": "socket\nhttp"}, `BACKFLIP_SLACK_MODE: must be socket or http, got "socket\nhttp"`},
	}
	known := make(map[string]bool)
	for _, v := range Vars() {
		known[v.Name] = true
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			setEnv(t, tt.env)
			c, err := FromEnv()
			if err == nil {
				t.Fatalf("FromEnv succeeded: %+v", c)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error:\n got %s\nwant %s", got, tt.want)
			}
			if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error is not one line or shows a secret: %q", err)
			}
			var ve *VarError
			if !errors.As(err, &ve) || !known[ve.Var] {
				t.Errorf("error %v does not carry a known variable (%#v)", err, ve)
			}
		})
	}
}

// validConfig is a Config that passes Validate, ValidateServe (socket mode)
// and ValidateAgent.
func validConfig(t *testing.T) *Config {
	t.Helper()
	cleanEnv(t)
	setEnv(t, map[string]string{
		"BACKFLIP_ETCD_ENDPOINTS":  "http://127.0.0.1:2379",
		"BACKFLIP_DATABASE_URL":    "postgres://bot@127.0.0.1/audit",
		"BACKFLIP_SLACK_BOT_TOKEN": "xoxb-1",
		"BACKFLIP_SLACK_APP_TOKEN": "xapp-1",
		"BACKFLIP_AGENT_TOKEN":     "tok",
		"BACKFLIP_RUNTIME_SECRET":  "hmac-key",
		"BACKFLIP_AGENT_NODE":      "gpu-1",
		"BACKFLIP_AGENT_CONFIG":    "/etc/backflip/agent.yaml",
	})
	return mustFromEnv(t)
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"HostPortEndpoint", func(c *Config) { c.Etcd.Endpoints = []string{"etcd-0.etcd:2379"} }},
		{"IPv6Endpoint", func(c *Config) { c.Etcd.Endpoints = []string{"https://[::1]:2379"} }},
		{"UnixHostPortEndpoint", func(c *Config) { c.Etcd.Endpoints = []string{"unix://127.0.0.1:21001"} }},
		{"UnixPathEndpoint", func(c *Config) { c.Etcd.Endpoints = []string{"unix:///run/etcd.sock"} }},
		{"EndpointWithoutPort", func(c *Config) { c.Etcd.Endpoints = []string{"https://etcd.example.com"} }},
		{"QuorumJustAboveZero", func(c *Config) { c.Timing.WarmQuorum = 0.01 }},
		{"ListenOnAnyPort", func(c *Config) { c.HTTP.Addr = "127.0.0.1:0" }},
		{"ListenOnIPv6", func(c *Config) { c.Agent.Addr = "[::1]:9090" }},
		{"DatabaseURLUnixSocket", func(c *Config) { c.Postgres.URL = "postgresql:///audit?host=/run/postgresql" }},
		{"EtcdCAOnly", func(c *Config) { c.Etcd.CAFile = "/tls/ca.pem" }},
		{"HTTPMode", func(c *Config) { c.Slack.Mode = "http"; c.Slack.AppToken = ""; c.Slack.SigningSecret = "s" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			tt.mutate(c)
			for name, validate := range map[string]func() error{"Validate": c.Validate, "ValidateServe": c.ValidateServe, "ValidateAgent": c.ValidateAgent} {
				if err := validate(); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
		})
	}
}

func TestValidateServe(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"NoEndpoints", func(c *Config) { c.Etcd.Endpoints = nil }, `BACKFLIP_ETCD_ENDPOINTS: required (comma-separated etcd endpoints such as http://etcd-0:2379)`},
		{"SocketNeedsBotToken", func(c *Config) { c.Slack.BotToken = "" }, `BACKFLIP_SLACK_BOT_TOKEN: required when BACKFLIP_SLACK_MODE=socket (a bot token, xoxb-…)`},
		{"SocketNeedsAppToken", func(c *Config) { c.Slack.AppToken = "" }, `BACKFLIP_SLACK_APP_TOKEN: required when BACKFLIP_SLACK_MODE=socket (an app-level token, xapp-…)`},
		{"TokensSwapped", func(c *Config) { c.Slack.BotToken, c.Slack.AppToken = "xapp-hunter2", "xoxb-hunter2" },
			`BACKFLIP_SLACK_BOT_TOKEN: expected a bot token starting with xoxb- (value not shown); BACKFLIP_SLACK_APP_TOKEN: expected an app-level token starting with xapp- (value not shown)`},
		{"HTTPNeedsSigningSecret", func(c *Config) { c.Slack.Mode = "http" }, `BACKFLIP_SLACK_SIGNING_SECRET: required when BACKFLIP_SLACK_MODE=http (the app's signing secret)`},
		{"HTTPNeedsBotToken", func(c *Config) { c.Slack.Mode = "http"; c.Slack.SigningSecret = "s"; c.Slack.BotToken = "" }, `BACKFLIP_SLACK_BOT_TOKEN: required when BACKFLIP_SLACK_MODE=http (a bot token, xoxb-…)`},
		{"NeedsAgentToken", func(c *Config) { c.Secrets.AgentToken = "" }, `BACKFLIP_AGENT_TOKEN: required by serve (the bearer token the agents expect)`},
		{"NeedsDatabase", func(c *Config) { c.Postgres.URL = "" }, `BACKFLIP_DATABASE_URL: required by serve (a postgres:// URL of the audit database)`},
		{"NeedsRuntimeSecret", func(c *Config) { c.Secrets.RuntimeSecret = "" }, `BACKFLIP_RUNTIME_SECRET: required by serve (signs abort signals to runtimes and verifies their heartbeats and acks)`},
		{"IncludesValidate", func(c *Config) { c.Log.Format = "xml" }, `BACKFLIP_LOG_FORMAT: must be json or console, got "xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			tt.mutate(c)
			err := c.ValidateServe()
			if err == nil || err.Error() != tt.want {
				t.Errorf("ValidateServe:\n got %v\nwant %s", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error shows a token: %v", err)
			}
		})
	}
}

func TestValidateAgent(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"NoEndpoints", func(c *Config) { c.Etcd.Endpoints = nil }, `BACKFLIP_ETCD_ENDPOINTS: required (comma-separated etcd endpoints such as http://etcd-0:2379)`},
		{"NeedsNode", func(c *Config) { c.Agent.Node = "" }, `BACKFLIP_AGENT_NODE: required by the agent (this node's name, unique in the fleet)`},
		{"NeedsConfigFile", func(c *Config) { c.Agent.ConfigFile = "" }, `BACKFLIP_AGENT_CONFIG: required by the agent (path of the file listing the local inference servers)`},
		{"NeedsToken", func(c *Config) { c.Secrets.AgentToken = "" }, `BACKFLIP_AGENT_TOKEN: required by the agent (the bearer token the bot presents)`},
		{"NoSlackNeeded", func(c *Config) {
			c.Slack = Slack{Mode: "socket", CardTTL: time.Minute, UsergroupCacheTTL: time.Minute}
			c.Postgres.URL = ""
		}, ""},
		{"TLSCertWithoutKey", func(c *Config) { c.Agent.TLSCert = "/tls/a.pem" }, `BACKFLIP_AGENT_TLS_KEY: must be set when BACKFLIP_AGENT_TLS_CERT is set`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			tt.mutate(c)
			err := c.ValidateAgent()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("ValidateAgent:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestVars(t *testing.T) {
	vars := Vars()
	var names []string
	for _, v := range vars {
		names = append(names, v.Name)
		if !strings.HasPrefix(v.Name, Prefix) {
			t.Errorf("%s: does not start with %s", v.Name, Prefix)
		}
		if v.Desc == "" || v.Group == "" || v.Type == "" {
			t.Errorf("%s: incomplete %+v", v.Name, v)
		}
		if want := contractDefaults[v.Name]; v.Default != want {
			t.Errorf("%s: default %q, want %q", v.Name, v.Default, want)
		}
		if v.Secret != (v.Type == typeSecret) {
			t.Errorf("%s: Secret %v but type %s", v.Name, v.Secret, v.Type)
		}
	}
	if got, want := slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(contractVars)); !slices.Equal(got, want) {
		t.Errorf("Vars() names differ from the contract:\n got %v\nwant %v", got, want)
	}

	types := map[string]string{
		"BACKFLIP_ETCD_ENDPOINTS": typeList, "BACKFLIP_WARM_QUORUM": typeNumber, "BACKFLIP_CARD_TTL": typeDuration,
		"BACKFLIP_SLACK_BOT_TOKEN": typeSecret, "BACKFLIP_DATABASE_URL": typeSecret, "BACKFLIP_ETCD_PASSWORD": typeSecret,
		"BACKFLIP_SLACK_MODE": typeString,
	}
	for _, v := range vars {
		if want, ok := types[v.Name]; ok && v.Type != want {
			t.Errorf("%s: type %s, want %s", v.Name, v.Type, want)
		}
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	var b strings.Builder
	if err := Usage(&b); err != nil {
		t.Fatal(err)
	}
	for _, name := range contractVars {
		if !strings.Contains(b.String(), name) {
			t.Errorf("Usage does not list %s", name)
		}
	}
}

func TestUnknownVars(t *testing.T) {
	environ := []string{
		"BACKFLIP_WARM_QORUM=0.5", "BACKFLIP_LOG_LEVEL=debug", "PATH=/bin",
		"BACKFLIP_TEST_DATABASE_URL=postgres://x", "BACKFLIP_WARM_QORUM=0.6", "LOG_LEVEL=x",
	}
	got := UnknownVars(environ)
	want := []string{"BACKFLIP_TEST_DATABASE_URL", "BACKFLIP_WARM_QORUM"}
	if !slices.Equal(got, want) {
		t.Errorf("UnknownVars = %v, want %v", got, want)
	}
}

// FuzzValidateOneLine checks Validate never panics on operator input and its
// error stays one line whatever the values hold.
func FuzzValidateOneLine(f *testing.F) {
	f.Add("http://etcd:2379", "/backflip", ":8080", "info", "inc-*")
	f.Add("unix://127.0.0.1:1", "/a b", "[::1]:x", "INFO\n", "[")
	f.Add("http://[::1", "", "::::", "", "\x00")
	f.Fuzz(func(t *testing.T, endpoint, prefix, addr, level, channel string) {
		c := Config{
			Etcd:   Etcd{Endpoints: []string{endpoint}, Prefix: prefix},
			Slack:  Slack{Mode: "socket", IncidentChannels: []string{channel}, CardTTL: 1, UsergroupCacheTTL: 1},
			HTTP:   HTTP{Addr: addr},
			Timing: Timing{WarmQuorum: 1},
			Log:    Log{Level: level, Format: "json"},
			Agent:  Agent{Addr: addr},
		}
		if err := c.Validate(); err != nil && strings.ContainsAny(err.Error(), "\n\r") {
			t.Errorf("error is not one line: %q", err)
		}
	})
}
