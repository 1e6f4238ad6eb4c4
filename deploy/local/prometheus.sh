#!/usr/bin/env bash
# Prometheus and promtool from the operating system's packages (Debian/Ubuntu: apt), for
# `make run-observed` and the alerting-rule checks of the test suite.
#
#   deploy/local/prometheus.sh install   install the `prometheus` package if prometheus or promtool is missing
#   deploy/local/prometheus.sh check     exit 0 if both are on PATH, 3 if not
#
# Parley never uses the system service the package may start (on hosts with systemd, on :9090): it
# runs its own Prometheus process with its own configuration and data under .parley/prometheus.
set -euo pipefail

PARLEY_LOG_TAG=parley-prometheus
# shellcheck source=deploy/local/lib.sh
source "$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)/lib.sh"

have() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

install() {
  have && return 0
  [[ $EUID -eq 0 ]] || die "prometheus/promtool not found; install them: sudo apt-get install -y prometheus"
  command -v apt-get >/dev/null 2>&1 || die "prometheus is not installed and apt-get is unavailable"
  mkstate "$PARLEY_STATE_DIR"
  local aptlog="$PARLEY_STATE_DIR/apt-prometheus.log"
  log "prometheus not installed; running apt-get update && apt-get install -y prometheus ..."
  with_lock apt
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; } \
      >"$aptlog" 2>&1; then
    show_tail "$aptlog"
    die "apt-get install prometheus failed (see $aptlog)"
  fi
  have || die "the prometheus package is installed but prometheus/promtool are not on PATH"
  log "installed $(prometheus --version 2>&1 | head -n1)"
}

case "${1:-}" in
  install) install ;;
  check) have || exit 3 ;;
  *) die "usage: $0 install|check" ;;
esac
