// Package devstack is what `backflip dev` (and so `make run`) starts on one
// machine: an embedded etcd; the simulated fleet of internal/simfleet (GPU
// nodes running the real agent against simulated inference servers,
// routers embedding the real reader library, and workflow runtimes on the
// real SDK carrying synthetic traffic); the commands.Service that Slack and
// backflipctl use, wired to them, with op recovery running as a singleton
// job; and a few dev-only verbs (promote, fleet, sim, quit) for the
// terminal to offer besides the chat.
//
// The chat itself is not here: cmd/backflip puts the bot on the Service,
// with the terminal chat adapter of the bot package as its Slack, so what a
// person types at `backflip dev` is answered by the same code, and rendered
// from the same messages, as in Slack. The dev-only verbs call the use
// cases directly and must not decide anything a use case decides (what a
// rollback does, who may act, what is refused).
//
// It is the embedded default, not production: it must not be imported by
// anything but cmd/backflip, must not import the bot package (nothing but
// cmd does), must not need a network, a Slack workspace or an external
// etcd, and must leave nothing running when it is closed.
package devstack
