#!/usr/bin/env bash
# Parley local infrastructure (no Docker): Kafka (KRaft, 127.0.0.1:19092) + PostgreSQL (127.0.0.1:55432).
#
#   deploy/local/infra.sh up [kafka|postgres]      start (idempotent; a running service is left alone)
#   deploy/local/infra.sh down [kafka|postgres]    stop (idempotent)
#   deploy/local/infra.sh status [kafka|postgres]  print state; exit 0 if everything local is running, else 3
#   deploy/local/infra.sh env                      print shell exports:  eval "$(deploy/local/infra.sh env)"
#
# External services: if PARLEY_KAFKA_BOOTSTRAP / PARLEY_DATABASE_URL is set (to anything other than the
# local endpoint), `up` does not start that local service and `env` prints the external value.
# `down` only ever stops the local processes this script started.
# Details: deploy/local/kafka.sh, deploy/local/postgres.sh, docs/adr/0002-local-kafka-version.md.
set -euo pipefail

PARLEY_LOG_TAG=parley-infra
# shellcheck source=deploy/local/lib.sh
source "$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)/lib.sh"

KAFKA_SH="$PARLEY_LOCAL_DIR/kafka.sh"
POSTGRES_SH="$PARLEY_LOCAL_DIR/postgres.sh"

external_kafka() {
  [[ -n "${PARLEY_KAFKA_BOOTSTRAP:-}" ]] && ! is_local_kafka "$PARLEY_KAFKA_BOOTSTRAP"
}
external_database() {
  [[ -n "${PARLEY_DATABASE_URL:-}" ]] && ! is_local_database "$PARLEY_DATABASE_URL"
}

# Hide credentials when echoing a URL.
redact_url() { sed -E 's#(://[^:/@]+):[^@]*@#\1:***@#' <<<"$1"; }

components() {
  case "${1:-all}" in
    all) echo "kafka postgres" ;;
    kafka|postgres) echo "$1" ;;
    pg|postgresql) echo "postgres" ;;
    *) die "unknown component '$1' (expected kafka or postgres)" ;;
  esac
}

cmd_up() {
  local c t0
  t0="$(timer_start)"
  for c in $(components "${1:-all}"); do
    case "$c" in
      kafka)
        if external_kafka; then
          log "PARLEY_KAFKA_BOOTSTRAP=$PARLEY_KAFKA_BOOTSTRAP is set: using that external Kafka, not starting the local one"
        else
          bash "$KAFKA_SH" up
        fi ;;
      postgres)
        if external_database; then
          log "PARLEY_DATABASE_URL=$(redact_url "$PARLEY_DATABASE_URL") is set: using that external PostgreSQL, not starting the local one"
        else
          bash "$POSTGRES_SH" up
        fi ;;
    esac
  done
  log "done in $(timer_since "$t0") s. In your shell: eval \"\$(deploy/local/infra.sh env)\""
}

cmd_down() {
  local c
  for c in $(components "${1:-all}"); do
    case "$c" in
      kafka)
        if external_kafka; then log "note: PARLEY_KAFKA_BOOTSTRAP points to an external Kafka; it is not touched"; fi
        bash "$KAFKA_SH" down ;;
      postgres)
        if external_database; then log "note: PARLEY_DATABASE_URL points to an external PostgreSQL; it is not touched"; fi
        bash "$POSTGRES_SH" down ;;
    esac
  done
}

cmd_status() {
  local c rc=0
  for c in $(components "${1:-all}"); do
    case "$c" in
      kafka)
        if external_kafka; then
          echo "kafka: external ($PARLEY_KAFKA_BOOTSTRAP, from PARLEY_KAFKA_BOOTSTRAP; not checked)"
        else
          bash "$KAFKA_SH" status || rc=3
        fi ;;
      postgres)
        if external_database; then
          echo "postgres: external ($(redact_url "$PARLEY_DATABASE_URL"), from PARLEY_DATABASE_URL; not checked)"
        else
          bash "$POSTGRES_SH" status || rc=3
        fi ;;
    esac
  done
  return "$rc"
}

cmd_env() {
  local kafka="$PARLEY_LOCAL_KAFKA_BOOTSTRAP" db="$PARLEY_LOCAL_DATABASE_URL"
  if external_kafka; then kafka="$PARLEY_KAFKA_BOOTSTRAP"; fi
  if external_database; then db="$PARLEY_DATABASE_URL"; fi
  printf 'export PARLEY_KAFKA_BOOTSTRAP=%q\n' "$kafka"
  printf 'export PARLEY_DATABASE_URL=%q\n' "$db"
}

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

main() {
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
    up|start) cmd_up "$@" ;;
    down|stop) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env ;;
    -h|--help|help) usage ;;
    *) usage; die "unknown command '${cmd}' (expected up, down, status or env)" ;;
  esac
}

main "$@"
