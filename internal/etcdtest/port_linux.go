package etcdtest

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// reservePort picks a free loopback TCP port and keeps it reserved until
// release is called, while letting etcd listen on it (etcd must be started
// with embedetcd.Config.ReusePort).
//
// The reservation is a socket bound to 127.0.0.1:port with SO_REUSEPORT that
// never listens. While it exists, a plain bind of the port fails, the kernel
// never hands the port out for a ":0" bind or an outgoing connection, and only
// sockets of this user that also set SO_REUSEPORT (etcd's listeners) can bind
// it. Because it does not listen, it never receives a connection itself. This
// closes the two races of "listen on :0, note the port, close": another
// process taking the port before etcd binds it, and taking it while a member
// is down between HardStop and Restart. SO_REUSEADDR is deliberately left
// unset: Go sets it on every listener, and Linux lets two sockets that both
// set it share a port as long as neither listens yet.
func reservePort() (port int, release func(), err error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("reserve port: socket: %w", err)
	}
	fail := func(step string, err error) (int, func(), error) {
		_ = syscall.Close(fd)
		return 0, nil, fmt.Errorf("reserve port: %s: %w", step, err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fail("SO_REUSEPORT", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fail("bind", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	sa4, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		return fail("getsockname", fmt.Errorf("unexpected address %T", sa))
	}
	return sa4.Port, func() { _ = syscall.Close(fd) }, nil
}
