#!/usr/bin/env bash
# roles.sh: create backflip's etcd roles and users, then enable etcd auth.
#
# Run it once against backflip's own etcd cluster (not the Kubernetes one),
# with etcdctl v3.5 or later, before the bot and the agents start; re-running
# it is safe: roles and users that exist are kept, permissions are granted
# again, a user's password is set again only when it no longer logs in (or
# auth is still off), and enabling auth when it is already on does nothing.
#
# Roles, on the keys under BACKFLIP_ETCD_PREFIX (default /backflip), as in
# the design's etcd contract (only the bot and backflipctl write routes/,
# ops/, idem/, audit/, drills/, policies/):
#
#   backflip-agent    readwrite fleet/nodes/                     (its leased node record)
#   backflip-router   read routes/; readwrite routers/           (reader library: watch, leased observed epochs)
#   backflip-runtime  read routes/, ops/; readwrite runtime/     (SDK: instance records and acks, leased)
#   backflip-bot      readwrite routes/ ops/ idem/ audit/ drills/ policies/ election/ runtime/ warmkeep/;
#                     read fleet/nodes/, routers/ and the key readyz
#   backflip-ctl      readwrite routes/ ops/ idem/ audit/ drills/ policies/ runtime/acks/;
#                     read fleet/nodes/, routers/, runtime/instances/
#
# Leases need no permission of their own: granting and keeping one alive is
# open to every authenticated user, and a put or revoke is checked against
# the keys it touches.
#
# Environment:
#   ETCDCTL_ENDPOINTS, ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY
#                           where etcd is and how to reach it (etcdctl's own variables)
#   ETCDCTL                 the etcdctl binary (default: etcdctl on PATH)
#   BACKFLIP_ETCD_PREFIX    key prefix (default /backflip), as the binaries are given it
#   ETCD_ROOT_PASSWORD      etcd's root user (created if missing; required)
#   ETCD_BOT_PASSWORD       user backflip-bot, role backflip-bot (required)
#   ETCD_CTL_PASSWORD       user backflipctl, role backflip-ctl
#   ETCD_AGENT_PASSWORD     user backflip-agent, role backflip-agent
#   ETCD_ROUTER_PASSWORD    user backflip-router, role backflip-router
#   ETCD_RUNTIME_PASSWORD   user backflip-runtime, role backflip-runtime
# The roles are always created; a user other than root and the bot is
# created only when its password is set (runtimes that use the HTTP protocol,
# say, need no etcd user). Passwords must not contain whitespace: etcdctl
# reads them from standard input with scanf. They never appear on a command
# line. Per-operator backflipctl users (the CLI records the etcd user as the
# actor's name) are added by hand:
#   etcdctl user add alice && etcdctl user grant-role alice backflip-ctl
#
# What it does not do: it never revokes a permission. A permission removed
# from this script in a later release must be revoked by hand
# (etcdctl role revoke-permission).
set -euo pipefail

die() {
	printf 'roles.sh: %s\n' "$*" >&2
	exit 1
}

prefix="${BACKFLIP_ETCD_PREFIX:-/backflip}"
case "$prefix" in
/*) ;;
*) die "BACKFLIP_ETCD_PREFIX must start with /, got '$prefix'" ;;
esac
[[ "$prefix" != */ ]] || die "BACKFLIP_ETCD_PREFIX must not end with /, got '$prefix'"
[[ "$prefix" != *[[:space:]]* ]] || die "BACKFLIP_ETCD_PREFIX must not contain spaces, got '$prefix'"

# password NAME: the value of variable NAME, checked; empty when unset.
password() {
	local name=$1 value=${!1:-}
	if [[ "$value" == *[[:space:]]* ]]; then
		die "$name must not contain whitespace (etcdctl reads passwords with scanf)"
	fi
	printf '%s' "$value"
}

root_password=$(password ETCD_ROOT_PASSWORD)
[[ -n "$root_password" ]] || die "ETCD_ROOT_PASSWORD is required: the password of etcd's root user (created when missing)"
bot_password=$(password ETCD_BOT_PASSWORD)
[[ -n "$bot_password" ]] || die "ETCD_BOT_PASSWORD is required: the password of the backflip-bot user (BACKFLIP_ETCD_PASSWORD of backflip serve)"
ctl_password=$(password ETCD_CTL_PASSWORD)
agent_password=$(password ETCD_AGENT_PASSWORD)
router_password=$(password ETCD_ROUTER_PASSWORD)
runtime_password=$(password ETCD_RUNTIME_PASSWORD)

etcdctl_bin="${ETCDCTL:-etcdctl}"
command -v "$etcdctl_bin" >/dev/null 2>&1 || die "etcdctl not found: put it on PATH or set ETCDCTL=/path/to/etcdctl"

ctl() {
	"$etcdctl_bin" "$@"
}

# Every etcdctl call below runs as root once auth is on. The credentials
# travel in the environment, never on a command line. While auth is still off
# they are left out: etcd would ignore them, and the client would log a
# warning on every call.
export ETCDCTL_USER=root
export ETCDCTL_PASSWORD="$root_password"
if ! status=$(ctl auth status 2>&1); then
	die "etcd did not answer 'auth status' as root (check ETCDCTL_ENDPOINTS, the TLS settings and ETCD_ROOT_PASSWORD): $status"
fi
auth_enabled=false
if grep -q 'Authentication Status: true' <<<"$status"; then
	auth_enabled=true
else
	unset ETCDCTL_USER ETCDCTL_PASSWORD
fi
printf 'etcd at %s, prefix %s, auth enabled: %s\n' "${ETCDCTL_ENDPOINTS:-127.0.0.1:2379}" "$prefix" "$auth_enabled"

ensure_role() {
	local role=$1
	if ctl role get "$role" >/dev/null 2>&1; then
		printf 'role %s: exists\n' "$role"
	else
		ctl role add "$role" >/dev/null
		printf 'role %s: created\n' "$role"
	fi
}

# grant ROLE PERM PATH [key]: PERM (read, write or readwrite) on every key
# under <prefix>/PATH, or on the single key <prefix>/PATH with "key". etcd
# keeps one permission per range and a grant replaces its type, so a range
# that needs both is granted readwrite, never read then write.
grant() {
	local role=$1 perm=$2 path=$3 kind=${4:-prefix}
	local key="$prefix/$path"
	if [[ "$kind" == key ]]; then
		ctl role grant-permission "$role" "$perm" "$key" >/dev/null
	else
		ctl role grant-permission --prefix=true "$role" "$perm" "$key" >/dev/null
	fi
	printf '  %-16s %-9s %s (%s)\n' "$role" "$perm" "$key" "$kind"
}

# logs_in USER PASSWORD: whether USER authenticates with PASSWORD. Only
# meaningful once auth is enabled: before, etcd accepts any password.
logs_in() {
	ETCDCTL_USER="$1" ETCDCTL_PASSWORD="$2" ctl auth status >/dev/null 2>&1
}

# ensure_user USER PASSWORD [ROLE]: create USER, or set its password to
# PASSWORD unless it already logs in with it, and grant it ROLE. While auth is
# still off, an existing user's password is always set (root's included, so
# that enabling auth cannot lock this script out); once it is on, only a
# password that no longer logs in is reset, so a re-run does not touch the
# credentials of running clients.
ensure_user() {
	local user=$1 pass=$2 role=${3:-}
	if ! ctl user get "$user" >/dev/null 2>&1; then
		printf '%s\n' "$pass" | ctl user add "$user" --interactive=false >/dev/null
		printf 'user %s: created\n' "$user"
	elif [[ "$auth_enabled" == false ]] || ! logs_in "$user" "$pass"; then
		printf '%s\n' "$pass" | ctl user passwd "$user" --interactive=false >/dev/null
		printf 'user %s: password set\n' "$user"
	else
		printf 'user %s: exists, password unchanged\n' "$user"
	fi
	if [[ -n "$role" ]]; then
		ctl user grant-role "$user" "$role" >/dev/null
		printf 'user %s: has role %s\n' "$user" "$role"
	fi
}

for role in backflip-agent backflip-router backflip-runtime backflip-bot backflip-ctl; do
	ensure_role "$role"
done

echo "permissions:"
grant backflip-agent readwrite fleet/nodes/

grant backflip-router read routes/
grant backflip-router readwrite routers/

grant backflip-runtime read routes/
grant backflip-runtime read ops/
grant backflip-runtime readwrite runtime/

for path in routes/ ops/ idem/ audit/ drills/ policies/ election/ runtime/ warmkeep/; do
	grant backflip-bot readwrite "$path"
done
grant backflip-bot read fleet/nodes/
grant backflip-bot read routers/
# /readyz reads this one key to prove etcd answers the bot.
grant backflip-bot read readyz key

for path in routes/ ops/ idem/ audit/ drills/ policies/ runtime/acks/; do
	grant backflip-ctl readwrite "$path"
done
grant backflip-ctl read fleet/nodes/
grant backflip-ctl read routers/
grant backflip-ctl read runtime/instances/

ensure_user root "$root_password" root
ensure_user backflip-bot "$bot_password" backflip-bot
if [[ -n "$ctl_password" ]]; then
	ensure_user backflipctl "$ctl_password" backflip-ctl
else
	echo "user backflipctl: skipped (ETCD_CTL_PASSWORD not set)"
fi
if [[ -n "$agent_password" ]]; then
	ensure_user backflip-agent "$agent_password" backflip-agent
else
	echo "user backflip-agent: skipped (ETCD_AGENT_PASSWORD not set)"
fi
if [[ -n "$router_password" ]]; then
	ensure_user backflip-router "$router_password" backflip-router
else
	echo "user backflip-router: skipped (ETCD_ROUTER_PASSWORD not set)"
fi
if [[ -n "$runtime_password" ]]; then
	ensure_user backflip-runtime "$runtime_password" backflip-runtime
else
	echo "user backflip-runtime: skipped (ETCD_RUNTIME_PASSWORD not set)"
fi

# Last: from here on every request needs a user.
ctl auth enable >/dev/null
echo "auth: enabled"
