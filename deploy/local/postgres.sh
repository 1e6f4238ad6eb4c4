#!/usr/bin/env bash
# Parley local PostgreSQL: a throwaway cluster of Parley's own (not the system cluster) on 127.0.0.1:55432,
# from the OS packages, data in <repo>/.parley/pg/data, unix socket in <repo>/.parley/pg/run.
# As root, when the checkout lies where the `postgres` user cannot reach (a home directory of mode 700,
# as root's is on a fresh cloud machine), the cluster lives in /var/lib/parley/<hash of the checkout>/pg
# instead; every command below finds it there.
#
#   deploy/local/postgres.sh up       install (apt, if missing), initdb once, start, ensure role+db (idempotent)
#   deploy/local/postgres.sh down     pg_ctl stop -m fast (idempotent)
#   deploy/local/postgres.sh status   exit 0 if running, 3 if not
#   deploy/local/postgres.sh logs     tail the server log
#   deploy/local/postgres.sh psql     psql as superuser "postgres" over the unix socket (extra args passed on)
#   deploy/local/postgres.sh reset    stop and delete the cluster
#
# Role/database: parley/parley, database parley (owner parley). Superuser "postgres" has no password and is
# reachable only over the unix socket (trust); TCP connections need a password (scram-sha-256).
# Dev-box settings (fsync=off etc.): a crash can corrupt this cluster; `reset` and start again.
# A second, private cluster (the soak's, which it restarts): PARLEY_PG_PORT and PARLEY_PG_STATE (its data,
# socket and log directories; must be reachable by the postgres user when run as root).
set -euo pipefail

PARLEY_LOG_TAG=parley-postgres
# shellcheck source=deploy/local/lib.sh
source "$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)/lib.sh"

PG_HOST=127.0.0.1
PG_PORT="${PARLEY_PG_PORT:-55432}"
[[ "$PG_PORT" =~ ^[0-9]+$ ]] || die "PARLEY_PG_PORT must be a number"
PG_DB=parley
PG_USER=parley
PG_PASSWORD=parley

PG_OS_USER=postgres

# Where the cluster lives: under the checkout, unless we are root and the postgres user cannot traverse
# the checkout's path (initdb and postgres refuse to run as root, so the cluster must be theirs to reach).
pg_state_dir() {
  if [[ $EUID -eq 0 ]] && id -u "$PG_OS_USER" >/dev/null 2>&1 \
      && ! runuser -u "$PG_OS_USER" -- test -x "$PARLEY_ROOT" 2>/dev/null; then
    local h
    h="$(printf '%s' "$PARLEY_ROOT" | sha256sum | cut -c1-12)"
    printf '/var/lib/parley/%s/pg\n' "$h"
  else
    printf '%s/pg\n' "$PARLEY_STATE_DIR"
  fi
}

PG_STATE="${PARLEY_PG_STATE:-$(pg_state_dir)}"
PG_LOCK_DIR="${PARLEY_PG_STATE:+$PG_STATE}"
PG_LOCK_DIR="${PG_LOCK_DIR:-$PARLEY_STATE_DIR}"
PG_DATA="$PG_STATE/data"
PG_RUN="$PG_STATE/run"
PG_LOGDIR="$PG_STATE/log"
PG_LOG="$PG_LOGDIR/postgres.log"
READY_TIMEOUT="${PARLEY_PG_READY_TIMEOUT:-60}"

PG_BIN=""

# Newest installed server major version that has initdb (Debian layout /usr/lib/postgresql/<major>/bin).
detect_pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then printf '%s\n' "$d"; fi
  done | sort -t/ -k5,5V | tail -n1
  return 0
}

ensure_installed() {
  PG_BIN="$(detect_pg_bin)"
  [[ -n "$PG_BIN" ]] && return 0
  if [[ $EUID -ne 0 ]]; then
    die "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; install them: sudo apt-get install -y postgresql"
  fi
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and apt-get is unavailable"
  log "PostgreSQL server not installed; running apt-get install -y postgresql ..."
  local aptlog="$PARLEY_STATE_DIR/apt-postgresql.log"
  mkstate "$PARLEY_STATE_DIR"
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; } >"$aptlog" 2>&1; then
    show_tail "$aptlog"
    die "apt-get install postgresql failed (see $aptlog)"
  fi
  PG_BIN="$(detect_pg_bin)"
  [[ -n "$PG_BIN" ]] || die "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
}

pg_major() { basename "$(dirname "$PG_BIN")"; }

# Run a command as the cluster owner: the postgres OS user when we are root (initdb/postgres refuse root),
# otherwise as ourselves.
as_owner() {
  if [[ $EUID -eq 0 ]]; then
    # From /, so that a checkout the postgres user cannot enter is not its working directory.
    (cd / && runuser -u "$PG_OS_USER" -- "$@")
  else
    "$@"
  fi
}

owner_name() { if [[ $EUID -eq 0 ]]; then echo "$PG_OS_USER"; else id -un; fi; }

prepare_dirs() {
  mkstate "$PARLEY_STATE_DIR" "$(dirname -- "$PG_STATE")" "$PG_STATE"
  mkdir -p -- "$PG_RUN" "$PG_LOGDIR"
  if [[ $EUID -eq 0 ]]; then
    id -u "$PG_OS_USER" >/dev/null 2>&1 || die "OS user '$PG_OS_USER' does not exist (normally created by the postgresql package)"
    chown "$PG_OS_USER:" "$PG_STATE" "$PG_RUN" "$PG_LOGDIR"
    # Every directory from / down to .parley/pg must be traversable by the postgres user.
    if ! runuser -u "$PG_OS_USER" -- test -w "$PG_STATE"; then
      local p="$PG_STATE" bad=""
      while [[ "$p" != "/" ]]; do
        runuser -u "$PG_OS_USER" -- test -x "$p" 2>/dev/null || bad="$p"
        p="$(dirname "$p")"
      done
      die "user '$PG_OS_USER' cannot reach $PG_STATE (blocked at ${bad:-?}); e.g. chmod o+x on that directory, or move the repo"
    fi
  fi
  # Unix socket paths are limited to ~107 bytes.
  local sock="$PG_RUN/.s.PGSQL.$PG_PORT"
  ((${#sock} <= 100)) || die "socket path $sock is too long for a unix socket (${#sock} > 100 chars); use a shorter repo path"
}

write_conf() {
  # Our settings live in parley.conf, included from postgresql.conf (rewritten on every `up`; a restart is
  # needed for changes to take effect).
  local tmp="$PG_DATA/parley.conf.tmp"
  cat >"$tmp" <<EOF
# Written by deploy/local/postgres.sh on every 'up'; edit the script, not this file.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
max_connections = 200
shared_buffers = 256MB
# Dev box only: no durability.
fsync = off
synchronous_commit = off
full_page_writes = off
timezone = 'UTC'
log_timezone = 'UTC'
log_min_messages = warning
log_connections = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  as_owner tee "$PG_DATA/parley.conf" <"$tmp" >/dev/null
  rm -f -- "$tmp"
  if ! grep -q "^include_if_exists = 'parley.conf'" "$PG_DATA/postgresql.conf"; then
    printf "\n# Parley local settings\ninclude_if_exists = 'parley.conf'\n" | as_owner tee -a "$PG_DATA/postgresql.conf" >/dev/null
  fi
}

ensure_initdb() {
  if [[ -f "$PG_DATA/PG_VERSION" ]]; then
    local have
    have="$(cat "$PG_DATA/PG_VERSION")"
    [[ "$have" == "$(pg_major)" ]] || die "$PG_DATA was created by PostgreSQL $have but the binaries are $(pg_major); \
run 'deploy/local/postgres.sh reset' (drops the local database) or install postgresql-$have"
    return 0
  fi
  if [[ -d "$PG_DATA" ]] && [[ -n "$(ls -A -- "$PG_DATA")" ]]; then
    die "$PG_DATA is not empty but has no PG_VERSION; run 'deploy/local/postgres.sh reset' to start clean"
  fi
  log "initdb $PG_DATA (PostgreSQL $(pg_major), owner $(owner_name)) ..."
  local tmpdata="$PG_STATE/data.tmp.$$" initlog="$PG_LOGDIR/initdb.log"
  rm -rf -- "$tmpdata" "$PG_DATA"
  if [[ $EUID -eq 0 ]]; then
    install -d -m 700 -o "$PG_OS_USER" -g "$(id -gn "$PG_OS_USER")" -- "$tmpdata"
    chown "$PG_OS_USER:" "$PG_LOGDIR"
  else
    install -d -m 700 -- "$tmpdata"
  fi
  if ! as_owner "$PG_BIN/initdb" -D "$tmpdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 --no-sync >"$initlog" 2>&1; then
    show_tail "$initlog"
    rm -rf -- "$tmpdata"
    die "initdb failed (see $initlog)"
  fi
  mv -- "$tmpdata" "$PG_DATA"
}

is_running() {
  [[ -f "$PG_DATA/PG_VERSION" && -n "$PG_BIN" ]] || return 1
  as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

postmaster_pid() { head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || true; }

psql_admin() {
  as_owner "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_RUN" -p "$PG_PORT" -U postgres -d postgres
}

ensure_role_and_db() {
  # Idempotent: create if missing, otherwise (re)assert the attributes and password.
  psql_admin <<SQL
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', '$PG_USER', '$PG_PASSWORD')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') \gexec
ALTER ROLE "$PG_USER" LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_USER')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB') \gexec
ALTER DATABASE "$PG_DB" OWNER TO "$PG_USER";
SQL
}

wait_ready() {
  local t0=$SECONDS
  until "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -d "$PG_DB" -t 2; do
    if ((SECONDS - t0 >= READY_TIMEOUT)); then
      show_tail "$PG_LOG"
      die "PostgreSQL did not accept connections on $PG_HOST:$PG_PORT within ${READY_TIMEOUT} s"
    fi
    sleep 0.3
  done
}

cmd_up() {
  with_lock postgres "$PG_LOCK_DIR"
  ensure_installed
  prepare_dirs
  if is_running; then
    wait_ready
    ensure_role_and_db
    log "already running on $PG_HOST:$PG_PORT (pid $(postmaster_pid), PostgreSQL $(pg_major))"
    return 0
  fi
  if port_open "$PG_HOST" "$PG_PORT"; then
    die "port $PG_HOST:$PG_PORT is already in use by another process; not starting PostgreSQL. \
If it is a database you want to use instead, export PARLEY_DATABASE_URL."
  fi
  local t0
  t0="$(timer_start)"
  ensure_initdb
  write_conf
  log "starting PostgreSQL $(pg_major) on $PG_HOST:$PG_PORT ..."
  # 9>&-: do not leak the lock fd into the postmaster. -w waits for startup; pg_isready double-checks TCP.
  if ! as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$READY_TIMEOUT" start >"$PG_LOGDIR/pg_ctl.out" 2>&1 9>&-; then
    cat "$PG_LOGDIR/pg_ctl.out" >&2 || true
    show_tail "$PG_LOG"
    die "pg_ctl start failed (log: $PG_LOG)"
  fi
  wait_ready
  ensure_role_and_db
  log "up in $(timer_since "$t0") s; postgresql://$PG_USER:***@$PG_HOST:$PG_PORT/$PG_DB (log: $PG_LOG)"
}

cmd_down() {
  with_lock postgres "$PG_LOCK_DIR"
  PG_BIN="$(detect_pg_bin)"
  if ! is_running; then
    log "not running"
    return 0
  fi
  log "stopping PostgreSQL (pid $(postmaster_pid)) ..."
  local t0
  t0="$(timer_start)"
  if ! as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >"$PG_LOGDIR/pg_ctl.out" 2>&1; then
    cat "$PG_LOGDIR/pg_ctl.out" >&2 || true
    warn "fast shutdown did not finish in 60 s; trying immediate"
    as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >&2 || die "could not stop PostgreSQL"
  fi
  log "stopped in $(timer_since "$t0") s"
}

cmd_status() {
  PG_BIN="$(detect_pg_bin)"
  if [[ -z "$PG_BIN" ]]; then
    echo "postgres: not installed"
    return 3
  fi
  if is_running; then
    if "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -t 2; then
      echo "postgres: running (pid $(postmaster_pid), $PG_HOST:$PG_PORT, PostgreSQL $(pg_major), data $PG_DATA)"
      return 0
    fi
    echo "postgres: process up (pid $(postmaster_pid)) but not accepting connections on $PG_HOST:$PG_PORT"
    return 3
  fi
  echo "postgres: not running"
  return 3
}

cmd_logs() {
  [[ -f "$PG_LOG" ]] || die "no log yet at $PG_LOG"
  tail -n "${1:-100}" -- "$PG_LOG"
}

cmd_psql() {
  PG_BIN="$(detect_pg_bin)"
  is_running || die "not running; run deploy/local/postgres.sh up"
  as_owner "$PG_BIN/psql" -X -h "$PG_RUN" -p "$PG_PORT" -U postgres -d "$PG_DB" "$@"
}

cmd_reset() {
  cmd_down
  with_lock postgres "$PG_LOCK_DIR"
  log "deleting $PG_STATE"
  rm -rf -- "$PG_STATE"
  # The cluster of a checkout the postgres user cannot reach lived in /var/lib/parley/<hash>/pg: leave no
  # empty <hash> directory behind.
  if [[ "$PG_STATE" == /var/lib/parley/*/pg ]]; then
    rmdir --ignore-fail-on-non-empty -- "$(dirname -- "$PG_STATE")"
  fi
}

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

main() {
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
    up|start) cmd_up ;;
    down|stop) cmd_down ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    psql) cmd_psql "$@" ;;
    reset) cmd_reset ;;
    -h|--help|help) usage ;;
    *) usage; die "unknown command '${cmd}'" ;;
  esac
}

main "$@"
