// Package config is backflip's one configuration struct, filled from the
// environment by envconfig, and its validation. The variable names are part of
// the external contract (DESIGN.md, "Configuration"): every one is spelled out
// in full, BACKFLIP_ prefix included, in an envconfig struct tag, so renaming a
// Go field never renames a variable, and Vars lists them for the README's
// configuration reference.
//
// Why the tags carry the full name and Process runs with an empty prefix:
// envconfig v1.4.0 adds a named sub-struct's field name to the prefix
// (BACKFLIP_ETCD_ETCD_ENDPOINTS), and when the prefixed variable is unset it
// falls back to the bare tag name, so envconfig.Process("BACKFLIP", ...) with a
// tag of DATABASE_URL would quietly read a DATABASE_URL meant for something
// else. Processing each group with prefix "" and a full-name tag reads exactly
// one name per field. The tests pin both envconfig behaviours.
//
// The package also builds the process logger (NewLogger) from the log settings,
// and holds the Secret type that keeps tokens and passwords out of %v, JSON and
// log output.
//
// What it must not do:
//   - hold package-level mutable state or install globals (no zap.ReplaceGlobals);
//     the logger is returned to the caller, which passes it on;
//   - read the environment anywhere but FromEnv (FromLookup reads the same
//     variables through a function its caller passes, and reads nothing else);
//   - open files, resolve names or dial anything: paths and addresses are checked
//     for shape only, the parts that use them report what is missing;
//   - import other backflip packages (every binary imports this one);
//   - echo a secret's value, even in an error message.
package config
