// Package devstack is what `backflip dev` (and so `make run`) starts on one
// machine: an embedded etcd, the simulated fleet of internal/simfleet (GPU
// nodes running the real agent against simulated inference servers,
// routers embedding the real reader library, and, when asked for, workflow
// runtimes on the real SDK carrying synthetic traffic), and a terminal where
// an operator promotes and rolls back routes through the real routing store
// and watches the routers converge.
//
// It is the embedded default, not production: it must not be imported by
// anything but cmd/backflip, must not need a network, a Slack workspace or an
// external etcd, and must leave nothing running when its context ends. Until
// the commands and bot packages exist, its terminal verbs are a thin layer
// over fleet/routing; they will be replaced by the chat grammar.
package devstack
