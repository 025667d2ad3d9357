#!/usr/bin/env bash
# ensure-postgres.sh makes PostgreSQL server binaries available to the tests and prints the
# folder holding them (initdb and postgres) on stdout; the Makefile exports it as
# BACKFLIP_PG_BIN. Everything else goes to stderr.
#
# Search order, the same as internal/pgtest: $BACKFLIP_PG_BIN, then initdb on PATH (symlinks
# resolved), then the newest /usr/lib/postgresql/*/bin (Debian keeps them off PATH). When
# nothing is found and we are root with apt-get, the 'postgresql' package is installed.
# As root it also makes sure the 'postgres' OS user exists: initdb and postgres refuse to run
# as root, so the tests run them as that user.
#
# BACKFLIP_TEST_DATABASE_URL does not make the binaries optional: with it most tests use that
# server, but the ones that stop and restart Postgres (pgtest.Options.Local) start their own.
set -euo pipefail

readonly missing="backflip tests need PostgreSQL server binaries (initdb, postgres): install the 'postgresql' package or set BACKFLIP_PG_BIN"

has_server() {
	[[ -f "$1/initdb" && -x "$1/initdb" && -f "$1/postgres" && -x "$1/postgres" ]]
}

# An explicit BACKFLIP_PG_BIN is used as is or refused; nothing is searched or installed.
if [[ -n "${BACKFLIP_PG_BIN:-}" ]] && ! has_server "$BACKFLIP_PG_BIN"; then
	echo "BACKFLIP_PG_BIN=$BACKFLIP_PG_BIN does not hold both initdb and postgres" >&2
	exit 1
fi

# find_bin prints the folder and succeeds, or fails silently. It runs in a subshell ($(...)),
# so it must return, never exit.
find_bin() {
	if [[ -n "${BACKFLIP_PG_BIN:-}" ]]; then
		printf '%s\n' "$BACKFLIP_PG_BIN"
		return 0
	fi
	local initdb dir
	if initdb=$(command -v initdb 2>/dev/null); then
		for dir in "$(dirname -- "$(readlink -f -- "$initdb")")" "$(dirname -- "$initdb")"; do
			if has_server "$dir"; then
				printf '%s\n' "$dir"
				return 0
			fi
		done
	fi
	# Newest major version first; sort -V orders 9.6 before 10.
	local versions
	versions=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V -r || true)
	for v in $versions; do
		if has_server "/usr/lib/postgresql/$v/bin"; then
			printf '%s\n' "/usr/lib/postgresql/$v/bin"
			return 0
		fi
	done
	return 1
}

is_root() { [[ "$(id -u)" == 0 ]]; }

if ! bin=$(find_bin); then
	if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
		echo "$missing" >&2
		exit 1
	fi
	echo "ensure-postgres: installing the 'postgresql' package" >&2
	# apt's own output goes to stderr: stdout carries only the folder.
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
	if ! bin=$(find_bin); then
		echo "$missing (installing 'postgresql' did not provide them)" >&2
		exit 1
	fi
fi

if is_root && ! id -u postgres >/dev/null 2>&1; then
	echo "ensure-postgres: creating the 'postgres' system user (initdb and postgres refuse to run as root)" >&2
	useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres
fi

printf '%s\n' "$bin"
