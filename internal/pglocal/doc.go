// Package pglocal runs a PostgreSQL cluster from the machine's own server binaries, as a
// child process of the caller.
//
// It is what `backflip dev` keeps its audit history in (Options.Durable, Options.TCP, with
// Dir in the dev state folder, so the data survives restarts) and what internal/pgtest
// builds its throwaway test clusters on (durability off, socket only, Dir on /dev/shm).
//
// Start finds initdb and postgres (Options.Bin, $BACKFLIP_PG_BIN, PATH, then Debian's
// /usr/lib/postgresql/*/bin), creates Dir/data with initdb unless it already holds a cluster
// of the same major version, and runs postgres in the foreground as our child:
//
//	Dir/                 the cluster's folder, handed to the server's OS user
//	Dir/data/            the data directory
//	Dir/postgres.log     postgres's stdout and stderr, appended to across starts
//	Dir/pglocal.lock     flock'ed while a Cluster uses Dir
//	$TMPDIR/bfpg-XXXX/   the unix socket, in a short private (0700) folder: a socket path
//	                     must stay under 108 bytes, and Dir may be deep
//
// initdb and postgres refuse to run as root, so as root they run as the 'postgres' OS user
// (Debian's package creates it; scripts/ensure-postgres.sh too). That user must be able to
// reach Dir: Start returns ErrUnreachable, before creating anything, when a folder above Dir
// does not let it search (as /root does). The superuser is `postgres`, with trust
// authentication: only the server's user and root can enter the socket folder, and TCP, when
// asked for, listens on 127.0.0.1 only.
//
// What this package must not do:
//   - Keep package-level mutable state: everything lives in a Cluster.
//   - Build connection strings by formatting keyword/value pairs (an empty value swallows the
//     next keyword). Configurations are parsed once and copied; URLs are escaped byte by byte.
//   - Touch anything it did not create: no system cluster, service, port or data directory of
//     someone else's, no package installation (scripts/ensure-postgres.sh does that), and no
//     chown or chmod of the folders above Dir. It removes only its own socket folders, and
//     those of postmasters that were killed.
//   - Outlive its parent. Postgres runs in the foreground (no pg_ctl, no daemon) and gets
//     SIGKILL when its parent dies (Pdeathsig, Linux); the next Start on the same Dir
//     recovers the data and runs again.
package pglocal
