//go:build !linux

package etcdtest

import (
	"fmt"
	"net"
)

// reservePort picks a free loopback TCP port. Outside Linux it cannot keep
// the port reserved (the bound-but-not-listening SO_REUSEPORT reservation in
// port_linux.go relies on Linux semantics), so another process may take the
// port before etcd binds it or while a member is down; the harness is only
// exercised on Linux, this keeps the package building elsewhere.
func reservePort() (port int, release func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, fmt.Errorf("reserve port: %w", err)
	}
	port = l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, nil, fmt.Errorf("reserve port: %w", err)
	}
	return port, func() {}, nil
}
