// Package devstack is what `backflip dev` (and so `make run`) starts on one
// machine: an embedded etcd; the simulated fleet of internal/simfleet (GPU
// nodes running the real agent against simulated inference servers,
// routers embedding the real reader library, and workflow runtimes on the
// real SDK carrying synthetic traffic); the commands.Service that Slack and
// backflipctl use, wired to them, with op recovery running as a singleton
// job; and a terminal that speaks the chat grammar of /rollback, pre-flight
// card included, plus a few dev-only verbs (promote, fleet, sim).
//
// The terminal is a transport, like the bot: it parses with
// commands.Parse, calls the use cases, and prints their results and
// errors. It must not decide anything a use case decides (what a rollback
// does, who may act, what is refused), so that what a person tries here is
// what production does.
//
// It is the embedded default, not production: it must not be imported by
// anything but cmd/backflip, must not need a network, a Slack workspace or an
// external etcd, and must leave nothing running when it is closed.
package devstack
