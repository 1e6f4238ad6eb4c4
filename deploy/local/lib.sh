# shellcheck shell=bash
# Shared helpers for deploy/local/*.sh. Source it; do not run it.

# Repo root from this file's location (deploy/local/lib.sh -> ../..), independent of $PWD.
PARLEY_LOCAL_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
PARLEY_ROOT="$(cd -- "$PARLEY_LOCAL_DIR/../.." && pwd -P)"
PARLEY_STATE_DIR="$PARLEY_ROOT/.parley"

# Local endpoints (fixed; the env subcommand prints them).
# shellcheck disable=SC2034  # used by the scripts that source this file
PARLEY_LOCAL_KAFKA_BOOTSTRAP="127.0.0.1:19092"
PARLEY_LOCAL_DATABASE_URL="postgresql://parley:parley@127.0.0.1:55432/parley"

_parley_tag="${PARLEY_LOG_TAG:-parley-infra}"

log()  { printf '[%s] %s\n' "$_parley_tag" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$_parley_tag" "$*" >&2; }
die()  { printf '[%s] ERROR: %s\n' "$_parley_tag" "$*" >&2; exit 1; }

# True if something accepts TCP connections on host:port.
port_open() {
  local host="$1" port="$2"
  # shellcheck disable=SC2016  # $0/$1 expand in the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# Create a state dir that other users (postgres) can traverse, whatever the umask.
mkstate() {
  local d
  for d in "$@"; do
    mkdir -p -- "$d"
    chmod 755 -- "$d"
  done
}

# Serialise concurrent invocations per component: `with_lock NAME [DIR]` (holds until the script exits;
# the lock file is DIR/.NAME.lock, DIR defaulting to the state dir).
with_lock() {
  local dir="${2:-$PARLEY_STATE_DIR}"
  mkstate "$dir"
  local lock="$dir/.$1.lock"
  exec 9>"$lock"
  if ! flock -w 180 9; then
    die "another deploy/local/$1 command holds $lock for >180 s; giving up"
  fi
}

# Wall-clock timer with 0.1 s resolution: t0=$(timer_start); ...; log "took $(timer_since "$t0") s"
timer_start() { printf '%s\n' "${EPOCHREALTIME//[^0-9]/}"; }
timer_since() {
  local d=$(( (${EPOCHREALTIME//[^0-9]/} - $1) / 100000 ))
  printf '%d.%d\n' $((d / 10)) $((d % 10))
}

# Print the last lines of a file to stderr, framed.
show_tail() {
  local f="$1" n="${2:-40}"
  if [[ -s "$f" ]]; then
    printf -- '----- last %s lines of %s -----\n' "$n" "$f" >&2
    tail -n "$n" -- "$f" >&2
    printf -- '-----\n' >&2
  else
    printf -- '(%s is missing or empty)\n' "$f" >&2
  fi
}

# Is an override value the same as the local endpoint? (So `eval "$(infra.sh env)"` in a shell does not
# make later `infra.sh up` runs think an *external* service is configured.)
is_local_kafka() {
  case "$1" in
    127.0.0.1:19092|localhost:19092|PLAINTEXT://127.0.0.1:19092|PLAINTEXT://localhost:19092) return 0 ;;
    *) return 1 ;;
  esac
}
is_local_database() {
  case "$1" in
    "$PARLEY_LOCAL_DATABASE_URL"|postgresql://parley:parley@localhost:55432/parley|postgres://parley:parley@127.0.0.1:55432/parley|postgres://parley:parley@localhost:55432/parley) return 0 ;;
    *) return 1 ;;
  esac
}
