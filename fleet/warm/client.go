package warm

import (
	"crypto/tls"
	"net"
	"net/http"
	"time"
)

// NewHTTPClient returns the HTTP client a Checker uses when its Config has
// none: one transport tuned for asking every agent of the fleet once per
// check. Build it once and share it across checks (the Checker does): the
// idle connections it keeps are what make the second and later checks cheap.
//
// Tuning, and why:
//   - MaxIdleConns 0 (no total cap). Every agent is a different host, so the
//     total is what limits reuse; net/http's default of 100 would make a
//     1000-node fleet re-dial 900 agents (TCP and TLS handshakes) on every
//     check. The fleet size bounds it instead.
//   - MaxIdleConnsPerHost 2: a check makes at most one request at a time to
//     an agent, and the warm-keep monitor and a pre-flight check may
//     overlap, so two per agent are enough.
//   - IdleConnTimeout 2 min: longer than a typical monitor interval, so the
//     monitor keeps the connections warm for the next rollback.
//   - No proxy: agents are on the cluster network; an HTTP(S)_PROXY from the
//     environment would funnel the whole fan-out through one box. A caller
//     that needs a proxy passes its own client.
//   - No redirects: a redirect from an agent is an error to report, not a
//     reason to send the bearer token somewhere else.
//   - DisableCompression: replies are small; this keeps the byte cap in
//     fleetapi meaningful on the wire too.
//   - MaxResponseHeaderBytes 64 KiB: an agent's headers are tiny; the default
//     1 MiB would let each of a thousand hostile agents make the bot buffer
//     a megabyte.
//   - No client-wide Timeout: each request carries the check's deadline in
//     its context, which also bounds reading the body.
//
// The bot side of 1000 agents needs about 1000 sockets; the default open-file
// limit of 1024 on many systems is too low for a large fleet plus etcd and
// Slack connections, so the bot's unit or container should raise it
// (LimitNOFILE, ulimit -n).
func NewHTTPClient(tlsConfig *tls.Config) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        tlsConfig,
		TLSHandshakeTimeout:    5 * time.Second,
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        2 * time.Minute,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
		ExpectContinueTimeout:  time.Second,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
