package config

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"path"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// VarError is one variable with a missing or malformed value. Its message is
// one line: the variable's full name, then what it expects and, unless the
// variable is a secret, the value it got.
type VarError struct {
	Var     string // full name, e.g. BACKFLIP_WARM_QUORUM
	Problem string // e.g. `must be in (0, 1], got "1.5"`
}

func (e *VarError) Error() string { return e.Var + ": " + e.Problem }

// Errors is several VarErrors, reported on one line joined by "; ".
// errors.As finds each *VarError in it.
type Errors []*VarError

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap returns the VarErrors, for errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// err returns nil for no errors, the *VarError itself for one, es otherwise.
func (es Errors) err() error {
	switch len(es) {
	case 0:
		return nil
	case 1:
		return es[0]
	default:
		return es
	}
}

func (es *Errors) add(name, format string, args ...any) {
	*es = append(*es, &VarError{Var: name, Problem: fmt.Sprintf(format, args...)})
}

// Validate checks the shape of every setting that is set; it requires none of
// the optional ones (ValidateServe and ValidateAgent add what each binary
// needs). It opens no file and resolves no name. FromEnv calls it.
func (c *Config) Validate() error { return c.problems().err() }

// problems is Validate's list, which ValidateServe and ValidateAgent extend.
func (c *Config) problems() Errors {
	var errs Errors

	for _, ep := range c.Etcd.Endpoints {
		if strings.Contains(ep, "@") {
			// Not echoed: user information in a URL is usually user:password.
			errs.add("BACKFLIP_ETCD_ENDPOINTS", "must not hold user information (value not shown, it may hold a password): set BACKFLIP_ETCD_USERNAME and BACKFLIP_ETCD_PASSWORD instead")
			continue
		}
		if !validEndpoint(ep) {
			errs.add("BACKFLIP_ETCD_ENDPOINTS", "expected host:port or a URL with scheme http, https, unix or unixs, got %q", ep)
		}
	}
	if p := c.Etcd.Prefix; !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.ContainsFunc(p, isSpace) {
		errs.add("BACKFLIP_ETCD_PREFIX", `must start with "/", not end with "/" and contain no spaces, got %q`, p)
	}
	bothOrNeither(&errs, "BACKFLIP_ETCD_CERT_FILE", c.Etcd.CertFile != "", "BACKFLIP_ETCD_KEY_FILE", c.Etcd.KeyFile != "")
	bothOrNeither(&errs, "BACKFLIP_ETCD_USERNAME", c.Etcd.Username != "", "BACKFLIP_ETCD_PASSWORD", c.Etcd.Password.IsSet())

	if c.Postgres.URL.IsSet() && !validPostgresURL(c.Postgres.URL.Reveal()) {
		// The value is not shown: a connection URL usually holds a password.
		errs.add("BACKFLIP_DATABASE_URL", "expected a postgres:// or postgresql:// URL (value not shown, it may hold a password)")
	}

	if m := c.Slack.Mode; m != "socket" && m != "http" {
		errs.add("BACKFLIP_SLACK_MODE", "must be socket or http, got %q", m)
	}
	if u := c.Slack.APIURL; u != "" && !validHTTPURL(u) {
		errs.add("BACKFLIP_SLACK_API_URL", "expected an http or https URL, got %q", u)
	}
	for _, ch := range c.Slack.IncidentChannels {
		if _, err := path.Match(ch, ""); err != nil || strings.ContainsFunc(ch, isSpace) {
			errs.add("BACKFLIP_INCIDENT_CHANNELS", "expected channel IDs or name globs such as inc-*, got %q", ch)
		}
	}

	if !validListenAddr(c.HTTP.Addr) {
		errs.add("BACKFLIP_HTTP_ADDR", "expected host:port such as :8080, got %q", c.HTTP.Addr)
	}
	if q := c.Timing.WarmQuorum; !(q > 0 && q <= 1) {
		errs.add("BACKFLIP_WARM_QUORUM", "must be in (0, 1], got %q", strconv.FormatFloat(q, 'g', -1, 64))
	}
	positiveDurations(&errs, c)

	if l := c.Log.Level; !validLevel(l) {
		errs.add("BACKFLIP_LOG_LEVEL", "must be one of debug, info, warn, error, got %q", l)
	}
	if f := c.Log.Format; !validFormat(f) {
		errs.add("BACKFLIP_LOG_FORMAT", "must be json or console, got %q", f)
	}

	if n := c.Agent.Node; n != "" && strings.ContainsFunc(n, func(r rune) bool { return r == '/' || isSpace(r) }) {
		errs.add("BACKFLIP_AGENT_NODE", `must not contain "/" or spaces (it is an etcd key segment), got %q`, n)
	}
	if !validListenAddr(c.Agent.Addr) {
		errs.add("BACKFLIP_AGENT_ADDR", "expected host:port such as :9090, got %q", c.Agent.Addr)
	}
	bothOrNeither(&errs, "BACKFLIP_AGENT_TLS_CERT", c.Agent.TLSCert != "", "BACKFLIP_AGENT_TLS_KEY", c.Agent.TLSKey != "")

	return errs
}

// ValidateServe runs Validate and adds what `backflip serve` needs: etcd
// endpoints, the Slack credentials of SLACK_MODE (socket: bot and app tokens;
// http: bot token and signing secret), the agent token (warm checks call the
// agents with it) and the audit database (without it audit events pile up in
// the etcd outbox).
func (c *Config) ValidateServe() error {
	errs := c.problems()
	requireEndpoints(&errs, c)
	switch c.Slack.Mode {
	case "socket":
		requireToken(&errs, "BACKFLIP_SLACK_BOT_TOKEN", c.Slack.BotToken, "xoxb-", "a bot token", "when BACKFLIP_SLACK_MODE=socket")
		requireToken(&errs, "BACKFLIP_SLACK_APP_TOKEN", c.Slack.AppToken, "xapp-", "an app-level token", "when BACKFLIP_SLACK_MODE=socket")
	case "http":
		requireToken(&errs, "BACKFLIP_SLACK_BOT_TOKEN", c.Slack.BotToken, "xoxb-", "a bot token", "when BACKFLIP_SLACK_MODE=http")
		if !c.Slack.SigningSecret.IsSet() {
			errs.add("BACKFLIP_SLACK_SIGNING_SECRET", "required when BACKFLIP_SLACK_MODE=http (the app's signing secret)")
		}
	}
	if !c.Secrets.AgentToken.IsSet() {
		errs.add("BACKFLIP_AGENT_TOKEN", "required by serve (the bearer token the agents expect)")
	}
	if !c.Postgres.URL.IsSet() {
		errs.add("BACKFLIP_DATABASE_URL", "required by serve (a postgres:// URL of the audit database)")
	}
	if !c.Secrets.RuntimeSecret.IsSet() {
		errs.add("BACKFLIP_RUNTIME_SECRET", "required by serve (signs abort signals to runtimes and verifies their heartbeats and acks)")
	}
	return errs.err()
}

// ValidateAgent runs Validate and adds what backflip-agent needs: etcd
// endpoints, its node name, its inference-server file and the agent token.
// BACKFLIP_AGENT_ADDR defaults to :9090; TLS is on when a cert is set.
func (c *Config) ValidateAgent() error {
	errs := c.problems()
	requireEndpoints(&errs, c)
	if c.Agent.Node == "" {
		errs.add("BACKFLIP_AGENT_NODE", "required by the agent (this node's name, unique in the fleet)")
	}
	if c.Agent.ConfigFile == "" {
		errs.add("BACKFLIP_AGENT_CONFIG", "required by the agent (path of the file listing the local inference servers)")
	}
	if !c.Secrets.AgentToken.IsSet() {
		errs.add("BACKFLIP_AGENT_TOKEN", "required by the agent (the bearer token the bot presents)")
	}
	return errs.err()
}

func requireEndpoints(errs *Errors, c *Config) {
	if len(c.Etcd.Endpoints) == 0 {
		errs.add("BACKFLIP_ETCD_ENDPOINTS", "required (comma-separated etcd endpoints such as http://etcd-0:2379)")
	}
}

// requireToken checks a Slack token is set and has its kind's prefix: a bot
// and an app token swapped is an easy mistake that otherwise shows up as an
// opaque auth failure. The value is never echoed.
func requireToken(errs *Errors, name string, tok Secret, prefix, what, when string) {
	switch {
	case !tok.IsSet():
		errs.add(name, "required %s (%s, %s…)", when, what, prefix)
	case !strings.HasPrefix(tok.Reveal(), prefix):
		errs.add(name, "expected %s starting with %s (value not shown)", what, prefix)
	}
}

func bothOrNeither(errs *Errors, a string, aSet bool, b string, bSet bool) {
	switch {
	case aSet && !bSet:
		errs.add(b, "must be set when %s is set", a)
	case bSet && !aSet:
		errs.add(a, "must be set when %s is set", b)
	}
}

// positiveDurations checks every duration variable is greater than zero:
// none of them has a meaning for zero or less.
func positiveDurations(errs *Errors, c *Config) {
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		g := v.Field(i)
		for j := range g.NumField() {
			d, ok := g.Field(j).Interface().(time.Duration)
			if ok && d <= 0 {
				errs.add(g.Type().Field(j).Tag.Get("envconfig"), "must be greater than 0, got %q", d.String())
			}
		}
	}
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
}

// validEndpoint accepts what the etcd client dials: host:port, or an http,
// https, unix or unixs URL (multi-member test clusters use
// unix://127.0.0.1:<port>).
func validEndpoint(ep string) bool {
	if strings.ContainsFunc(ep, isSpace) {
		return false
	}
	if !strings.Contains(ep, "://") {
		host, port, err := net.SplitHostPort(ep)
		return err == nil && host != "" && validPort(port, 1)
	}
	u, err := url.Parse(ep)
	if err != nil || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return false
	}
	switch u.Scheme {
	case "http", "https":
		return u.Hostname() != "" && (u.Path == "" || u.Path == "/")
	case "unix", "unixs":
		return u.Host != "" || u.Path != ""
	default:
		return false
	}
}

// validListenAddr accepts host:port with a numeric port, 0 included (tests
// listen on :0); the host may be empty (all interfaces).
func validListenAddr(addr string) bool {
	if strings.ContainsFunc(addr, isSpace) {
		return false
	}
	_, port, err := net.SplitHostPort(addr)
	return err == nil && validPort(port, 0)
}

func validPort(port string, lowest uint64) bool {
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n >= lowest && n <= math.MaxUint16
}

func validHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Hostname() != ""
}

// validPostgresURL checks the URL form libpq and pgx accept. The host may be
// empty (a unix socket given as ?host=/path).
func validPostgresURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") && u.Opaque == ""
}
