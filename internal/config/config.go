package config

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Prefix starts the name of every backflip environment variable.
const Prefix = "BACKFLIP_"

// Config is every setting of the backflip binaries (bot, agent, CLI, dev).
// Each field of Config is a group; each field of a group is one environment
// variable, named in full by its envconfig tag. Groups hold only variables:
// FromEnv and Vars walk them by reflection, so a field added to a group with an
// envconfig tag is loaded, validated for its type and listed without further
// wiring.
type Config struct {
	Etcd     Etcd
	Postgres Postgres
	Slack    Slack
	Access   Access
	HTTP     HTTP
	Timing   Timing
	Secrets  Secrets
	Log      Log
	Agent    Agent
	Reader   Reader
}

// Etcd is how every binary reaches backflip's etcd cluster.
type Etcd struct {
	Endpoints []string `envconfig:"BACKFLIP_ETCD_ENDPOINTS" desc:"etcd endpoints, comma-separated: host:port or http, https, unix or unixs URLs (required by serve and the agent)"`
	Prefix    string   `envconfig:"BACKFLIP_ETCD_PREFIX" default:"/backflip" desc:"key prefix all backflip keys live under; starts with / and has no trailing /"`
	CAFile    string   `envconfig:"BACKFLIP_ETCD_CA_FILE" desc:"PEM CA bundle that verifies the etcd servers"`
	CertFile  string   `envconfig:"BACKFLIP_ETCD_CERT_FILE" desc:"PEM client certificate for etcd; set together with BACKFLIP_ETCD_KEY_FILE"`
	KeyFile   string   `envconfig:"BACKFLIP_ETCD_KEY_FILE" desc:"PEM private key of BACKFLIP_ETCD_CERT_FILE"`
	Username  string   `envconfig:"BACKFLIP_ETCD_USERNAME" desc:"etcd user (etcd auth); set together with BACKFLIP_ETCD_PASSWORD"`
	Password  Secret   `envconfig:"BACKFLIP_ETCD_PASSWORD" desc:"password of BACKFLIP_ETCD_USERNAME"`
}

// Postgres is where audit events are stored.
type Postgres struct {
	// URL is a Secret because a connection URL usually embeds a password.
	URL Secret `envconfig:"BACKFLIP_DATABASE_URL" desc:"Postgres connection URL (postgres:// or postgresql://) of the audit database (required by serve)"`
}

// Slack is the chat transport and the channels backflip talks in.
type Slack struct {
	Mode              string        `envconfig:"BACKFLIP_SLACK_MODE" default:"socket" desc:"how Slack reaches the bot: socket (Socket Mode) or http (Events API and slash commands over HTTP)"`
	BotToken          Secret        `envconfig:"BACKFLIP_SLACK_BOT_TOKEN" desc:"bot token (xoxb-…), required by serve"`
	AppToken          Secret        `envconfig:"BACKFLIP_SLACK_APP_TOKEN" desc:"app-level token (xapp-…), required by serve in socket mode"`
	SigningSecret     Secret        `envconfig:"BACKFLIP_SLACK_SIGNING_SECRET" desc:"request signing secret, required by serve in http mode"`
	APIURL            string        `envconfig:"BACKFLIP_SLACK_API_URL" desc:"override of the Slack Web API base URL, for tests"`
	IncidentChannels  []string      `envconfig:"BACKFLIP_INCIDENT_CHANNELS" desc:"where /rollback is accepted: channel IDs and/or name globs such as inc-*, comma-separated"`
	OpsChannel        string        `envconfig:"BACKFLIP_OPS_CHANNEL" desc:"channel for warm-keep alerts and recovery notices"`
	AnnounceChannel   string        `envconfig:"BACKFLIP_ANNOUNCE_CHANNEL" desc:"channel where drills are announced"`
	CardTTL           time.Duration `envconfig:"BACKFLIP_CARD_TTL" default:"10m" desc:"how long a pre-flight card's confirm button stays valid"`
	UsergroupCacheTTL time.Duration `envconfig:"BACKFLIP_USERGROUP_CACHE_TTL" default:"5m" desc:"how long Slack user-group memberships are cached"`
}

// Access is who may act, as Slack IDs. Per-route owners in etcd
// policies/<route> narrow these lists further.
type Access struct {
	RollbackUsers      []string `envconfig:"BACKFLIP_ROLLBACK_USERS" desc:"Slack user IDs allowed to roll back and promote, comma-separated"`
	RollbackUsergroups []string `envconfig:"BACKFLIP_ROLLBACK_USERGROUPS" desc:"Slack user-group IDs whose members may roll back and promote, comma-separated"`
	DrillUsers         []string `envconfig:"BACKFLIP_DRILL_USERS" desc:"Slack user IDs allowed to run and schedule drills, comma-separated"`
	DrillUsergroups    []string `envconfig:"BACKFLIP_DRILL_USERGROUPS" desc:"Slack user-group IDs whose members may run and schedule drills, comma-separated"`
}

// HTTP is the bot's HTTP server.
type HTTP struct {
	Addr string `envconfig:"BACKFLIP_HTTP_ADDR" default:":8080" desc:"listen address (host:port) of the bot's HTTP server: Slack endpoints, runtime protocol, health, metrics"`
}

// Timing is the timing and policy of rollbacks and drills.
type Timing struct {
	WarmQuorum            float64       `envconfig:"BACKFLIP_WARM_QUORUM" default:"1.0" desc:"share of the active version's GPUs that must be warm on the rollback target, in (0, 1]; a route's policy overrides it"`
	WarmTimeout           time.Duration `envconfig:"BACKFLIP_WARM_TIMEOUT" default:"2s" desc:"budget of the pre-flip warm check fan-out"`
	WarmMaxAge            time.Duration `envconfig:"BACKFLIP_WARM_MAX_AGE" default:"15s" desc:"oldest warm status an agent may report without a fresh canary"`
	RouterConvergeTimeout time.Duration `envconfig:"BACKFLIP_ROUTER_CONVERGE_TIMEOUT" default:"5s" desc:"how long to wait for routers to observe a flip"`
	AbortAckTimeout       time.Duration `envconfig:"BACKFLIP_ABORT_ACK_TIMEOUT" default:"10s" desc:"how long to wait for workflow runtimes to acknowledge an abort"`
	RollbackSLO           time.Duration `envconfig:"BACKFLIP_ROLLBACK_SLO" default:"90s" desc:"end-to-end rollback objective; slower rollbacks and drills are flagged"`
	DrillVerifyWindow     time.Duration `envconfig:"BACKFLIP_DRILL_VERIFY_WINDOW" default:"30s" desc:"how long a drill stays on the previous version verifying before flipping back"`
	DrillQuietPeriod      time.Duration `envconfig:"BACKFLIP_DRILL_QUIET_PERIOD" default:"24h" desc:"no drill on a route within this long after a non-drill operation on it"`
}

// Secrets are shared with other parts of the system.
type Secrets struct {
	AgentToken    Secret `envconfig:"BACKFLIP_AGENT_TOKEN" desc:"bearer token between the bot and the agents; same value on both sides (required by serve and the agent)"`
	RuntimeSecret Secret `envconfig:"BACKFLIP_RUNTIME_SECRET" desc:"HMAC-SHA256 key of the runtime HTTP protocol"`
}

// Log is how the binaries log.
type Log struct {
	Level  string `envconfig:"BACKFLIP_LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	Format string `envconfig:"BACKFLIP_LOG_FORMAT" default:"json" desc:"json (one object a line) or console (human-readable)"`
}

// Agent is the GPU node agent (backflip-agent); it also uses Etcd and
// Secrets.AgentToken.
type Agent struct {
	Node       string `envconfig:"BACKFLIP_AGENT_NODE" desc:"this node's name, the key under fleet/nodes/ (required by the agent)"`
	Addr       string `envconfig:"BACKFLIP_AGENT_ADDR" default:":9090" desc:"listen address (host:port) of the agent's status API"`
	ConfigFile string `envconfig:"BACKFLIP_AGENT_CONFIG" desc:"file listing the local inference servers: kind, URL, route, version, GPUs, canary prompt, latency budget (required by the agent)"`
	TLSCert    string `envconfig:"BACKFLIP_AGENT_TLS_CERT" desc:"PEM certificate the agent serves TLS with; set together with BACKFLIP_AGENT_TLS_KEY"`
	TLSKey     string `envconfig:"BACKFLIP_AGENT_TLS_KEY" desc:"PEM private key of BACKFLIP_AGENT_TLS_CERT"`
}

// Reader is the routing reader library as embedded by backflip's own
// (simulated) routers.
type Reader struct {
	MaxStaleness time.Duration `envconfig:"BACKFLIP_READER_MAX_STALENESS" default:"30s" desc:"after this long without hearing from etcd the reader reports its routing copy stale"`
	PinFile      string        `envconfig:"BACKFLIP_PIN_FILE" desc:"break-glass pin file that forces a version on a router when etcd is down"`
}

// FromEnv fills a Config from the process environment with envconfig,
// applying the contract's defaults, and validates it. An error names the
// variable and what it expects, on one line; several problems are joined with
// "; " so an operator can fix them in one go.
//
// Only the BACKFLIP_ names are read. A set but empty variable counts as set
// (envconfig's rule): BACKFLIP_LOG_LEVEL= is an error, not "info".
func FromEnv() (*Config, error) {
	var c Config
	if err := c.process(); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// process runs envconfig over each group. Parse errors of every group are
// collected; within a group envconfig stops at the first.
func (c *Config) process() error {
	var errs Errors
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		group := v.Field(i)
		err := envconfig.Process("", group.Addr().Interface())
		var pe *envconfig.ParseError
		switch {
		case errors.As(err, &pe):
			errs = append(errs, parseError(pe))
		case err != nil:
			return fmt.Errorf("config: %s: %w", v.Type().Field(i).Name, err)
		}
		trimLists(group)
	}
	return errs.err()
}

// trimLists trims the entries of every list in group and drops empty ones,
// so "a, b," reads as [a b] (envconfig splits on commas and keeps the rest).
func trimLists(group reflect.Value) {
	for i := range group.NumField() {
		f := group.Field(i)
		list, ok := f.Interface().([]string)
		if !ok || list == nil {
			continue
		}
		out := make([]string, 0, len(list))
		for _, s := range list {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		f.Set(reflect.ValueOf(out))
	}
}

// parseError rewrites envconfig's parse error in the package's one-line form.
func parseError(pe *envconfig.ParseError) *VarError {
	v, _ := lookupVar(pe.KeyName)
	example := v.Default
	switch v.Type {
	case typeDuration:
		if example == "" {
			example = "30s"
		}
		return &VarError{Var: pe.KeyName, Problem: fmt.Sprintf("expected a duration like %s, got %q", example, pe.Value)}
	case typeNumber:
		if example == "" {
			example = "1.0"
		}
		return &VarError{Var: pe.KeyName, Problem: fmt.Sprintf("expected a number like %s, got %q", example, pe.Value)}
	default:
		return &VarError{Var: pe.KeyName, Problem: fmt.Sprintf("expected a %s, got %q", pe.TypeName, pe.Value)}
	}
}

// Var describes one environment variable: what Vars returns, for usage text
// and the README's configuration reference.
type Var struct {
	Name    string // full name, e.g. BACKFLIP_WARM_QUORUM
	Group   string // the Config field holding it, e.g. Timing
	Type    string // string, list, duration, number or secret
	Default string // "" when there is none
	Desc    string
	Secret  bool // never printed; Type is "secret"
}

// Type names of Var.Type.
const (
	typeString   = "string"
	typeList     = "list"
	typeDuration = "duration"
	typeNumber   = "number"
	typeSecret   = "secret"
)

// Vars lists every variable Config reads, in declaration order.
func Vars() []Var {
	var vars []Var
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		g := ct.Field(i)
		for j := range g.Type.NumField() {
			f := g.Type.Field(j)
			name := f.Tag.Get("envconfig")
			if name == "" {
				continue
			}
			t := typeName(f.Type)
			vars = append(vars, Var{
				Name:    name,
				Group:   g.Name,
				Type:    t,
				Default: f.Tag.Get("default"),
				Desc:    f.Tag.Get("desc"),
				Secret:  t == typeSecret,
			})
		}
	}
	return vars
}

func typeName(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[Secret]():
		return typeSecret
	case reflect.TypeFor[time.Duration]():
		return typeDuration
	case reflect.TypeFor[[]string]():
		return typeList
	case reflect.TypeFor[float64]():
		return typeNumber
	default:
		return typeString
	}
}

func lookupVar(name string) (Var, bool) {
	for _, v := range Vars() {
		if v.Name == name {
			return v, true
		}
	}
	return Var{}, false
}

// Usage writes a table of every variable: name, type, default, description.
func Usage(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tTYPE\tDEFAULT\tDESCRIPTION")
	for _, v := range Vars() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, v.Type, v.Default, v.Desc)
	}
	return tw.Flush()
}

// UnknownVars returns, sorted, the BACKFLIP_ names in environ (os.Environ's
// "NAME=value" form) that Config does not read: most likely typos, which would
// otherwise leave a default in force silently. Callers decide whether to warn
// or fail; the harness variable BACKFLIP_TEST_DATABASE_URL, for one, is
// legitimate.
func UnknownVars(environ []string) []string {
	known := make(map[string]bool)
	for _, v := range Vars() {
		known[v.Name] = true
	}
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, Prefix) && !known[name] && !slices.Contains(unknown, name) {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	return unknown
}
