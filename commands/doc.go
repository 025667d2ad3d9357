// Package commands holds backflip's verbs, independent of any transport: the
// chat grammar of /rollback and /drill, the authorization decision, and the
// rollback, promote, status and history use cases with a timing for every
// phase, plus op recovery after a bot replica dies. Slack (bot/), the
// terminal chat of `backflip dev` and backflipctl all call these same use
// cases, so a rollback behaves the same whichever way it was asked for.
//
// The package owns the error codes (see Error): transports map a code to
// what their user sees (an ephemeral Slack reply, an exit code) and never
// show an internal error's detail.
//
// It must not import bot/ or drills/ (drills implement DrillService, declared
// here), must not talk to Slack, and must never put a name from chat into an
// etcd key before routing.ValidateRoute / ValidateVersion accepted it. It
// holds no package-level mutable state: clocks and loggers are injected.
package commands
