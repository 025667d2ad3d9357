// Package etcdclient builds the etcd client every backflip binary talks to
// its etcd cluster with, from the BACKFLIP_ETCD_* settings: endpoints, TLS
// from PEM files (minimum TLS 1.2), etcd auth, and keepalives that notice a
// dead connection within seconds. The agent and backflipctl share it so
// that a TLS or auth setting means the same in both.
//
// It must not read the environment (the caller hands it a config.Etcd),
// must not log a password or the contents of a key file, and holds no
// package-level mutable state.
package etcdclient
