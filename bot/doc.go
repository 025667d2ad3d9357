// Package bot is backflip's Slack transport: Socket Mode and HTTP (slash
// commands, interactions, events) with request signing, fast acks and
// deduplication; Block Kit rendering of pre-flight cards, live progress,
// timing reports and audit summaries; the Slack Web API client with rate
// limits, user-group and channel caches; and the terminal chat adapter
// that renders the same messages as text for `backflip dev`.
//
// It turns chat into calls of the commands package and results into
// messages. It must not decide anything itself: who may act, what a
// rollback does and every refusal come from commands. Nothing but cmd/
// imports it. It holds no package-level mutable state.
package bot
