// Package pgtest gives tests a real, throwaway PostgreSQL.
//
// A test binary starts one Server from TestMain. By default the Server is a private cluster,
// run by internal/pglocal in a fresh folder (under /dev/shm when it has room): initdb, then
// `postgres` as a child process of the test binary, listening only on a unix socket in a
// private folder, with durability switched off for speed. This package adds the folder's
// lifecycle (a lock held while the test binary lives, removal on Close, removal of folders
// left by killed test binaries), the template database and the per-test databases. When
// BACKFLIP_TEST_DATABASE_URL is set, the Server uses that server instead and starts nothing.
// Either way, Options.Template runs once against a template database (typically the
// migrations) and every test gets its own database cloned from it with NewDatabase, which
// drops it again when the test ends. Cloning takes milliseconds; migrating per test would
// not.
//
// Tests that take Postgres down and up again (Stop, Restart) start a Server of their own with
// Options.Local, because stopping a shared one would break every other test using it.
//
// What this package must not do:
//   - Skip. A test that needs Postgres fails, with the error saying what to install, when no
//     server binaries are found; it never passes by not running.
//   - Touch anything it did not create: no system cluster, no service, no package installation
//     (scripts/ensure-postgres.sh does that), and against an external server it drops only the
//     databases it created itself.
//   - Build connection strings by formatting keyword/value pairs (an empty value swallows the
//     next keyword). Configurations are parsed once and copied; URLs are escaped byte by byte.
//   - Outlive its test binary. The postmaster gets SIGKILL when the test binary dies
//     (pglocal), and a later Start removes folders left behind by killed runs.
//   - Run Postgres itself: finding the binaries, the postgres OS user, initdb, starting,
//     waiting and stopping belong to pglocal, which `backflip dev` uses too.
//   - Keep package-level mutable state, or be imported by non-test code.
package pgtest
