#!/usr/bin/env bash
# Parley local Kafka: a real single-node KRaft broker (combined broker+controller) on 127.0.0.1:19092
# (controller 127.0.0.1:19093), run from the broker's Maven Central jars. No Docker, no tarball.
#
#   deploy/local/kafka.sh up       download jars if needed, format once, start, wait until ready (idempotent)
#   deploy/local/kafka.sh down     SIGTERM, wait, SIGKILL if needed (idempotent)
#   deploy/local/kafka.sh status   exit 0 if running, 3 if not
#   deploy/local/kafka.sh logs     tail the broker log
#   deploy/local/kafka.sh reset    stop and delete data + logs (keeps the downloaded jars)
#
# State lives in <repo>/.parley/kafka/{libs,data,logs,server.properties,kafka.pid}.
# Tunables (env): PARLEY_KAFKA_HEAP_OPTS (default "-Xmx768m -Xms256m"), PARLEY_KAFKA_READY_TIMEOUT (240 s),
# PARLEY_KAFKA_STOP_TIMEOUT (60 s), JAVA_HOME.
# A second, private broker (the soak's, which it restarts): PARLEY_KAFKA_PORT, PARLEY_KAFKA_CONTROLLER_PORT
# and PARLEY_KAFKA_STATE (its data, logs, config and pid file; the jars stay in <repo>/.parley/kafka/libs).
set -euo pipefail

PARLEY_LOG_TAG=parley-kafka
# shellcheck source=deploy/local/lib.sh
source "$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)/lib.sh"

KAFKA_HOST=127.0.0.1
KAFKA_PORT="${PARLEY_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${PARLEY_KAFKA_CONTROLLER_PORT:-19093}"
[[ "$KAFKA_PORT" =~ ^[0-9]+$ && "$KAFKA_CONTROLLER_PORT" =~ ^[0-9]+$ ]] || die "Kafka ports must be numbers"

KAFKA_STATE="${PARLEY_KAFKA_STATE:-$PARLEY_STATE_DIR/kafka}"
KAFKA_LIBS="$PARLEY_STATE_DIR/kafka/libs"
KAFKA_LOCK_DIR="${PARLEY_KAFKA_STATE:+$KAFKA_STATE}"
KAFKA_LOCK_DIR="${KAFKA_LOCK_DIR:-$PARLEY_STATE_DIR}"
KAFKA_DATA="$KAFKA_STATE/data"
KAFKA_LOGS="$KAFKA_STATE/logs"
KAFKA_CONF="$KAFKA_STATE/server.properties"
KAFKA_PIDFILE="$KAFKA_STATE/kafka.pid"
KAFKA_POM="$PARLEY_LOCAL_DIR/kafka/pom.xml"
KAFKA_CONF_TEMPLATE="$PARLEY_LOCAL_DIR/kafka/server.properties"
KAFKA_LOG4J="$PARLEY_LOCAL_DIR/kafka/log4j2.properties"
KAFKA_LIBS_MARKER="$KAFKA_LIBS/.parley-libs-complete"
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

READY_TIMEOUT="${PARLEY_KAFKA_READY_TIMEOUT:-240}"
STOP_TIMEOUT="${PARLEY_KAFKA_STOP_TIMEOUT:-60}"
HEAP_OPTS="${PARLEY_KAFKA_HEAP_OPTS:--Xmx768m -Xms256m}"

kafka_version() {
  local v
  v="$(sed -n 's:.*<kafka.version>[[:space:]]*\([^<[:space:]]*\)[[:space:]]*</kafka.version>.*:\1:p' "$KAFKA_POM" | head -n1)"
  [[ -n "$v" ]] || die "cannot read <kafka.version> from $KAFKA_POM"
  printf '%s\n' "$v"
}

# Install a Debian package when a tool is missing (a fresh machine must need nothing by hand).
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "$1 is missing and apt-get is unavailable; install it yourself"
  log "installing $1 with apt-get ..."
  local aptlog="$PARLEY_STATE_DIR/apt-$1.log"
  mkdir -p "$PARLEY_STATE_DIR"
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$1"; } >"$aptlog" 2>&1 \
    || { show_tail "$aptlog"; die "apt-get install $1 failed (see $aptlog)"; }
}

JAVA=""
find_java() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then
    JAVA="$(command -v java)"
  else
    apt_install openjdk-17-jre-headless
    command -v java >/dev/null 2>&1 || die "java not found (need Java 17+ for Kafka 4.x); set JAVA_HOME"
    JAVA="$(command -v java)"
  fi
  local spec
  spec="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^[[:space:]]*java.specification.version = //p' | head -n1)"
  spec="${spec#1.}"
  [[ "$spec" =~ ^[0-9]+$ ]] || die "cannot determine the Java version of $JAVA"
  ((spec >= 17)) || die "$JAVA is Java $spec; Kafka $(kafka_version) needs Java 17+ (set JAVA_HOME)"
}

libs_marker_content() {
  printf 'kafka_2.13=%s pom-sha256=%s\n' "$(kafka_version)" "$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
}

# Marker: first line = version + pom hash, then one line per jar that must be present.
libs_complete() {
  [[ -f "$KAFKA_LIBS_MARKER" ]] || return 1
  [[ "$(head -n1 "$KAFKA_LIBS_MARKER")" == "$(libs_marker_content)" ]] || return 1
  [[ -f "$KAFKA_LIBS/kafka_2.13-$(kafka_version).jar" ]] || return 1
  local jar
  while IFS= read -r jar; do
    [[ -f "$KAFKA_LIBS/$jar" ]] || { log "libs incomplete ($jar missing)"; return 1; }
  done < <(tail -n +2 "$KAFKA_LIBS_MARKER")
}

# Resolve the broker's runtime classpath from Maven Central into .parley/kafka/libs (only when missing,
# incomplete or stale). Downloads into a temp dir and renames, so an interrupted run leaves nothing half-done.
ensure_libs() {
  libs_complete && return 0
  command -v mvn >/dev/null 2>&1 || apt_install maven
  command -v mvn >/dev/null 2>&1 || die "mvn not found (needed once to fetch the Kafka jars)"
  local v tmp mvnlog t0
  v="$(kafka_version)"
  tmp="$KAFKA_STATE/libs.tmp.$$"
  mvnlog="$KAFKA_STATE/mvn-copy-dependencies.log"
  rm -rf -- "$tmp"
  mkdir -p -- "$tmp"
  log "fetching kafka_2.13 $v + log4j2 backend from Maven Central into $KAFKA_LIBS (only when missing or stale; cached in ~/.m2) ..."
  t0="$(timer_start)"
  if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_POM" "$DEPENDENCY_PLUGIN:copy-dependencies" \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$mvnlog" 2>&1; then
    show_tail "$mvnlog" 40
    rm -rf -- "$tmp"
    die "Maven could not resolve kafka_2.13 $v (see $mvnlog). Is Maven Central reachable?"
  fi
  local jar
  for jar in "kafka_2.13-$v.jar" "kafka-clients-$v.jar" "kafka-server-$v.jar" "kafka-raft-$v.jar"; do
    [[ -f "$tmp/$jar" ]] || { rm -rf -- "$tmp"; die "Maven finished but $jar is missing (see $mvnlog)"; }
  done
  if ! compgen -G "$tmp/log4j-core-*.jar" >/dev/null || ! compgen -G "$tmp/log4j-slf4j-impl-*.jar" >/dev/null; then
    rm -rf -- "$tmp"
    die "log4j-core / log4j-slf4j-impl missing from the resolved jars (see $KAFKA_POM)"
  fi
  { libs_marker_content; (cd "$tmp" && ls -1 -- *.jar); } >"$tmp/.parley-libs-complete"
  rm -rf -- "$KAFKA_LIBS"
  mv -- "$tmp" "$KAFKA_LIBS"
  log "fetched $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$KAFKA_LIBS" | cut -f1)) in $(timer_since "$t0") s"
}

render_conf() {
  # The data dir path goes into a properties file: refuse characters that would need escaping.
  [[ "$KAFKA_DATA" != *[[:space:]\\:=#!]* ]] || die "repo path '$PARLEY_ROOT' contains characters unsafe for server.properties"
  local tmp="$KAFKA_CONF.tmp.$$"
  sed -e "s|@LOG_DIRS@|$KAFKA_DATA|g" -e "s|:19092|:$KAFKA_PORT|g" -e "s|:19093|:$KAFKA_CONTROLLER_PORT|g" \
    "$KAFKA_CONF_TEMPLATE" >"$tmp"
  mv -- "$tmp" "$KAFKA_CONF"
}

# Format the KRaft log dir once (dynamic quorum, --standalone). Formats into a temp dir and renames.
ensure_formatted() {
  if [[ -f "$KAFKA_DATA/meta.properties" ]]; then
    return 0
  fi
  if [[ -d "$KAFKA_DATA" ]] && [[ -n "$(ls -A -- "$KAFKA_DATA")" ]]; then
    die "$KAFKA_DATA is not empty but has no meta.properties; run 'deploy/local/kafka.sh reset' to start clean"
  fi
  local tmpdata="$KAFKA_STATE/data.tmp.$$" tmpconf="$KAFKA_STATE/server.properties.format.$$" fmtlog="$KAFKA_LOGS/format.log"
  local cluster_id
  rm -rf -- "$tmpdata"
  sed "s|^log.dirs=.*|log.dirs=$tmpdata|" "$KAFKA_CONF" >"$tmpconf"
  cluster_id="$("$JAVA" -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="file:$KAFKA_LOG4J" -Dkafka.logs.dir="$KAFKA_LOGS" \
                kafka.tools.StorageTool random-uuid 2>>"$fmtlog" | tail -n1)"
  [[ "$cluster_id" =~ ^[A-Za-z0-9_-]{22}$ ]] || { show_tail "$fmtlog"; die "StorageTool random-uuid returned '$cluster_id'"; }
  log "formatting $KAFKA_DATA (cluster id $cluster_id, standalone KRaft controller) ..."
  if ! "$JAVA" -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="file:$KAFKA_LOG4J" -Dkafka.logs.dir="$KAFKA_LOGS" \
        kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$tmpconf" >>"$fmtlog" 2>&1; then
    rm -rf -- "$tmpdata" "$tmpconf"
    show_tail "$fmtlog"
    die "kafka StorageTool format failed (see $fmtlog)"
  fi
  rm -f -- "$tmpconf"
  [[ -f "$tmpdata/meta.properties" ]] || { show_tail "$fmtlog"; die "format produced no meta.properties"; }
  rm -rf -- "$KAFKA_DATA"
  mv -- "$tmpdata" "$KAFKA_DATA"
  printf '%s\n' "$cluster_id" >"$KAFKA_STATE/cluster.id"
}

# Print the pid of *our* broker if it is running (pid file + process is kafka.Kafka with our config).
running_pid() {
  [[ -f "$KAFKA_PIDFILE" ]] || return 1
  local pid cmd
  pid="$(tr -dc '0-9' <"$KAFKA_PIDFILE")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmd" == *kafka.Kafka*"$KAFKA_CONF"* ]] || return 1
  printf '%s\n' "$pid"
}

server_log() { printf '%s\n' "$KAFKA_LOGS/server.log"; }


# "Kafka Server started" written after byte offset $1 of server.log (or anywhere, if the log was rotated).
# Did the broker log "Kafka Server started" at or after $1 ("YYYY-MM-DD HH:MM:SS", the log's own
# timestamp format)? Reads the rotated files too: a broker with much state can log enough during
# start-up to roll server.log before it is ready.
started_since() {
  local since="$1"
  grep -h 'Kafka Server started' "$KAFKA_LOGS"/server.log* 2>/dev/null | cut -c2-20 \
    | awk -v s="$since" '$0 >= s { found = 1 } END { exit !found }'
}

fail_start() {
  local pid="$1" why="$2"
  show_tail "$KAFKA_LOGS/kafka.out" 20
  show_tail "$(server_log)" 60
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    warn "stopping the half-started broker (pid $pid)"
    stop_pid "$pid"
  fi
  rm -f -- "$KAFKA_PIDFILE"
  die "$why"
}

wait_ready() {
  local pid="$1" off="$2" t0=$SECONDS t1
  t1="$(timer_start)"
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      fail_start "" "Kafka (pid $pid) exited during startup; logs above ($KAFKA_LOGS)"
    fi
    if port_open "$KAFKA_HOST" "$KAFKA_PORT" && started_since "$off"; then
      log "ready on $KAFKA_HOST:$KAFKA_PORT (pid $pid, $(timer_since "$t1") s after launch)"
      return 0
    fi
    if ((SECONDS - t0 >= READY_TIMEOUT)); then
      fail_start "$pid" "Kafka did not become ready within ${READY_TIMEOUT} s (port $KAFKA_PORT open: $(port_open "$KAFKA_HOST" "$KAFKA_PORT" && echo yes || echo no))"
    fi
    sleep 0.5
  done
}

stop_pid() {
  local pid="$1" t0=$SECONDS
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS - t0 >= STOP_TIMEOUT)); then
      warn "pid $pid still alive after ${STOP_TIMEOUT} s of SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      local _
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && die "pid $pid survived SIGKILL"
      break
    fi
    sleep 0.2
  done
}

port_owner() {
  ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n1
}

cmd_up() {
  with_lock kafka "$KAFKA_LOCK_DIR"
  local pid
  if pid="$(running_pid)"; then
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
      log "already running on $KAFKA_HOST:$KAFKA_PORT (pid $pid)"
      return 0
    fi
    log "process $pid is up but the port is not open yet; waiting"
    wait_ready "$pid" 0
    return 0
  fi
  rm -f -- "$KAFKA_PIDFILE"
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open "$KAFKA_HOST" "$p"; then
      die "port $KAFKA_HOST:$p is already in use by another process ($(port_owner "$p" || true)); not starting Kafka. \
If it is a broker you want to use instead, export PARLEY_KAFKA_BOOTSTRAP."
    fi
  done

  find_java
  mkstate "$PARLEY_STATE_DIR" "$KAFKA_STATE" "$KAFKA_LOGS"
  ensure_libs
  render_conf
  ensure_formatted

  local off t0
  t0="$(timer_start)"
  off="$(date '+%Y-%m-%d %H:%M:%S')"
  log "starting Kafka $(kafka_version) (KRaft broker+controller, heap: $HEAP_OPTS) ..."
  # setsid: own session, so the caller's Ctrl-C / process-group kill does not take the broker down.
  # 9>&-: do not leak the lock fd into the long-lived broker.
  # shellcheck disable=SC2086,SC2016  # HEAP_OPTS is a list of JVM flags; $$ is for the inner bash
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PIDFILE" \
    "$JAVA" $HEAP_OPTS \
      -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExitOnOutOfMemoryError \
      -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="file:$KAFKA_LOG4J" \
      -Dkafka.logs.dir="$KAFKA_LOGS" \
      -cp "$KAFKA_LIBS/*" \
      kafka.Kafka "$KAFKA_CONF" \
    </dev/null >"$KAFKA_LOGS/kafka.out" 2>&1 9>&- &
  local _
  for _ in $(seq 1 50); do [[ -s "$KAFKA_PIDFILE" ]] && break; sleep 0.1; done
  pid="$(tr -dc '0-9' <"$KAFKA_PIDFILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] || fail_start "" "could not launch java (no pid written to $KAFKA_PIDFILE)"
  wait_ready "$pid" "$off"
  log "up in $(timer_since "$t0") s; bootstrap servers: $KAFKA_HOST:$KAFKA_PORT (log: $(server_log))"
}

cmd_down() {
  with_lock kafka "$KAFKA_LOCK_DIR"
  local pid
  if ! pid="$(running_pid)"; then
    rm -f -- "$KAFKA_PIDFILE"
    log "not running"
    return 0
  fi
  log "stopping Kafka (pid $pid) ..."
  local t0
  t0="$(timer_start)"
  stop_pid "$pid"
  rm -f -- "$KAFKA_PIDFILE"
  log "stopped in $(timer_since "$t0") s"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
      echo "kafka: running (pid $pid, $KAFKA_HOST:$KAFKA_PORT, version $(kafka_version), data $KAFKA_DATA)"
      return 0
    fi
    echo "kafka: starting (pid $pid, port $KAFKA_PORT not open yet)"
    return 3
  fi
  echo "kafka: not running"
  return 3
}

cmd_logs() {
  local f
  f="$(server_log)"
  [[ -f "$f" ]] || die "no log yet at $f"
  tail -n "${1:-100}" -- "$f"
}

cmd_reset() {
  cmd_down
  with_lock kafka "$KAFKA_LOCK_DIR"
  log "deleting $KAFKA_DATA, $KAFKA_LOGS and generated config (keeping $KAFKA_LIBS)"
  rm -rf -- "$KAFKA_DATA" "$KAFKA_LOGS" "$KAFKA_CONF" "$KAFKA_STATE/cluster.id"
}

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

main() {
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
    up|start) cmd_up ;;
    down|stop) cmd_down ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    reset) cmd_reset ;;
    -h|--help|help) usage ;;
    *) usage; die "unknown command '${cmd}'" ;;
  esac
}

main "$@"
