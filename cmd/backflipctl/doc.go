// Command backflipctl is backflip's operator and break-glass CLI: status,
// rollback, promote, history, fleet and drill from a terminal or a script,
// talking to etcd (and, for history, Postgres) directly, so it works when
// Slack or the bot is down. It runs the same use cases as the bot (package
// commands, and package drills behind commands' DrillService),
// with its actor recorded as cli:<os-user>@<host> plus the etcd user, and
// maps their error codes to exit codes: 0 done, 1 failed, 2 bad input,
// 3 refused (see the usage text).
//
// Authorization is etcd's: the credentials it runs with (etcd roles) decide
// what it may write, so Slack user lists do not apply (Origin.Trusted).
//
// It only parses, wires and prints. It must not hold package-level mutable
// state, read the process environment other than through Main.Getenv, or
// show an internal error's detail without --verbose.
package main
