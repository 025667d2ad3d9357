package etcdclient

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/backflip-dev/backflip/internal/config"
)

// Timeouts of the connection. The keepalive pair makes a client notice a
// dead or partitioned member in about 13 s rather than at the next TCP
// timeout, minutes later.
const (
	DialTimeout          = 5 * time.Second
	DialKeepAliveTime    = 10 * time.Second
	DialKeepAliveTimeout = 3 * time.Second
)

// New connects to etcd as c says. Without etcd auth it does not wait for a
// member to answer (the client dials lazily; the first request waits). With
// auth it authenticates first, within DialTimeout, so unreachable members or
// wrong credentials fail here. log may be nil.
func New(c config.Etcd, log *zap.Logger) (*clientv3.Client, error) {
	if len(c.Endpoints) == 0 {
		return nil, errors.New("etcd client: no endpoints (BACKFLIP_ETCD_ENDPOINTS)")
	}
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("etcd")
	if log.Core().Enabled(zapcore.WarnLevel) {
		// etcd's client logs every reconnect at info; warnings are what
		// matter. (A logger already above warn needs no raising: zap
		// refuses to "increase" it to a lower level.)
		log = log.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))
	}
	cc := clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          DialTimeout,
		DialKeepAliveTime:    DialKeepAliveTime,
		DialKeepAliveTimeout: DialKeepAliveTimeout,
		Username:             c.Username,
		Password:             c.Password.Reveal(),
		Logger:               log,
	}
	if c.CAFile != "" || c.CertFile != "" {
		info := transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.CAFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		tc.MinVersion = tls.VersionTLS12
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}
