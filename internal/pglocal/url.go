package pglocal

import (
	"net/url"
	"strconv"
	"strings"
)

// Connection URLs are read by pgx with libpq's URI rules, which differ from net/url's: a '+'
// stays a '+', an unescaped space ends the value, and a socket folder must be escaped to go
// in the host query parameter. So every variable part is escaped byte by byte (escape), and
// an existing URL is edited along libpq's own boundaries (WithDatabase) rather than
// re-serialised by net/url, which would also choke on multi-host URLs.

// escape percent-encodes every byte outside RFC 3986's unreserved set.
func escape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// socketURL is the admin URL of a local cluster: user postgres, database postgres, over the
// unix socket in dir.
func socketURL(dir string, port int) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Path:     "/postgres",
		RawQuery: "host=" + escape(dir) + "&port=" + strconv.Itoa(port) + "&sslmode=disable",
	}
	return u.String()
}

// WithDatabase returns the postgres:// (or postgresql://) URL raw with its database replaced
// by db: the path is rewritten and any dbname query parameter, which would override the path,
// is removed. Everything else (user, password, hosts, TLS parameters) is kept byte for byte.
// Cluster.URL uses it, and so may anyone holding a URL of another server.
func WithDatabase(raw, db string) string {
	scheme := "postgres://"
	if strings.HasPrefix(raw, "postgresql://") {
		scheme = "postgresql://"
	}
	p := strings.TrimPrefix(raw, scheme)

	// Like libpq: the user information ends at the first '@', unless a '/' comes first.
	var userinfo string
	if i := strings.IndexAny(p, "@/"); i >= 0 && p[i] == '@' {
		userinfo, p = p[:i+1], p[i+1:]
	}
	hostsEnd := strings.IndexAny(p, "/?")
	if hostsEnd < 0 {
		hostsEnd = len(p)
	}
	hosts, p := p[:hostsEnd], p[hostsEnd:]
	if strings.HasPrefix(p, "/") {
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[i:]
		} else {
			p = ""
		}
	}

	var b strings.Builder
	b.WriteString(scheme + userinfo + hosts + "/" + escape(db))
	if query, ok := strings.CutPrefix(p, "?"); ok {
		sep := "?"
		for pair := range strings.SplitSeq(query, "&") {
			rawKey, _, _ := strings.Cut(pair, "=")
			if key, err := url.PathUnescape(rawKey); err == nil && (key == "dbname" || key == "database") {
				continue
			}
			b.WriteString(sep + pair)
			sep = "&"
		}
	}
	return b.String()
}
