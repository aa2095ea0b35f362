#!/usr/bin/env bash
# Real local services for the Telltale test suite, without Docker:
#   Kafka 3.9.1 (KRaft, single combined broker+controller) and InfluxDB 1.8.10.
#
# Usage: scripts/services.sh <command> [--keep-data]
#   install                   fetch Kafka jars (Maven) and build influxd (go install); cached
#   start                     install + start both (idempotent); prints `export ...` lines on stdout
#   stop                      stop both (SIGTERM, 20 s grace, then SIGKILL); idempotent
#   status                    exit 0 if both are healthy, 1 otherwise
#   env                       print the `export ...` lines only
#   start-kafka|stop-kafka|start-influx|stop-influx   one service (fault-tolerance tests)
#   --keep-data               with a start command: keep the existing data dir (default: wipe)
#
# Env: TELLTALE_CACHE (~/.cache/telltale), TELLTALE_SERVICES_DIR (<repo>/.services),
#      TELLTALE_KAFKA_PORT (19092), TELLTALE_KAFKA_CONTROLLER_PORT (19093),
#      TELLTALE_INFLUX_PORT (18086), TELLTALE_INFLUX_RPC_PORT (18088).
# Everything except the export lines goes to stderr.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${TELLTALE_CACHE:-$HOME/.cache/telltale}
SVC=${TELLTALE_SERVICES_DIR:-$REPO/.services}
KAFKA_VERSION=3.9.1
INFLUX_VERSION=1.8.10
KAFKA_LIBS=$CACHE/kafka-$KAFKA_VERSION/libs
INFLUXD=$CACHE/influxdb-$INFLUX_VERSION/bin/influxd
KAFKA_PORT=${TELLTALE_KAFKA_PORT:-19092}
KAFKA_CTRL_PORT=${TELLTALE_KAFKA_CONTROLLER_PORT:-19093}
INFLUX_PORT=${TELLTALE_INFLUX_PORT:-18086}
INFLUX_RPC_PORT=${TELLTALE_INFLUX_RPC_PORT:-18088}

log() { echo "services: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

print_env() {
  echo "export TELLTALE_KAFKA=127.0.0.1:$KAFKA_PORT"
  echo "export TELLTALE_INFLUX_URL=http://127.0.0.1:$INFLUX_PORT"
}

# ---------------------------------------------------------------- install
wait_for_other() { # <pgrep -f pattern> <what>: let a concurrent install finish instead of duplicating it
  if pgrep -f "$1" >/dev/null; then
    log "waiting for a $2 already running in the background..."
    while pgrep -f "$1" >/dev/null; do sleep 2; done
  fi
}

install_kafka() {
  local jar=$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar
  [[ -f $jar ]] || wait_for_other "dependency:copy-dependencies" "Maven download"
  [[ -f $jar ]] && return 0
  command -v mvn >/dev/null || die "mvn not found (needed once to fetch the Kafka jars)"
  log "installing Kafka $KAFKA_VERSION jars (one-time, ~20 s)..."
  rm -rf "$KAFKA_LIBS.tmp" && mkdir -p "$KAFKA_LIBS.tmp"
  mvn -B -q -Dstyle.color=never -f "$REPO/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_LIBS.tmp" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2 || die "Maven could not fetch the Kafka jars"
  rm -rf "$KAFKA_LIBS" && mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"   # all-or-nothing
  log "Kafka jars in $KAFKA_LIBS"
}

install_influx() {
  [[ -x $INFLUXD ]] || wait_for_other "go install github.com/influxdata/influxdb/cmd/influxd" "go install"
  [[ -x $INFLUXD ]] && return 0
  command -v go >/dev/null || die "go not found (needed once to build influxd)"
  local pkg=github.com/influxdata/influxdb/cmd/influxd@v$INFLUX_VERSION
  local ld="-X main.version=$INFLUX_VERSION" gobin; gobin=$(dirname "$INFLUXD")
  log "building influxd $INFLUX_VERSION with $(go env GOVERSION) (one-time, ~1-3 min)..."
  if ! GOBIN=$gobin go install -ldflags "$ld" "$pkg" >&2; then
    log "go install failed with $(go env GOVERSION); retrying with GOTOOLCHAIN=go1.20.14 (fetched via the module proxy)..."
    GOBIN=$gobin GOTOOLCHAIN=go1.20.14 go install -ldflags "$ld" "$pkg" >&2 ||
      die "go install of influxd failed with both toolchains"
    log "influxd built with go1.20.14"
  fi
  log "influxd in $INFLUXD"
}

install_all() { install_kafka; install_influx; }

# ---------------------------------------------------------------- process helpers
# Processes are identified by a marker path (under $SVC) that appears on their command line.
cmdline_has() { [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$2"; }

our_pids() { # <pidfile> <marker>
  local p
  { cat "$1" 2>/dev/null && echo; pgrep -f "$(sed 's/[][\.*^$+?(){}|]/\\&/g' <<<"$2")" || true; } |
    sort -u | while read -r p; do [[ $p =~ ^[0-9]+$ ]] && cmdline_has "$p" "$2" && echo "$p"; done
  return 0
}

stop_proc() { # <name> <pidfile> <marker>
  local pids left i
  pids=$(our_pids "$2" "$3")
  if [[ -z $pids ]]; then log "$1 not running"; rm -f "$2"; return 0; fi
  log "stopping $1 (pid $(echo $pids))..."
  kill -TERM $pids 2>/dev/null || true
  for i in $(seq 40); do
    left=$(for p in $pids; do kill -0 "$p" 2>/dev/null && echo "$p"; done || true)
    [[ -z $left ]] && break
    sleep 0.5
  done
  if [[ -n $left ]]; then log "$1 did not exit within 20 s; SIGKILL"; kill -KILL $left 2>/dev/null || true; sleep 0.5; fi
  rm -f "$2"
  log "$1 stopped"
}

fail_with_log() { # <message> <logfile>
  log "ERROR: $1"
  if grep -qE '(ERROR|FATAL|error|fatal)' "$2" 2>/dev/null; then
    log "first error lines of $2:"; grep -m 5 -E '(ERROR|FATAL|error|fatal)' "$2" | cut -c1-400 >&2
  fi
  log "last 30 lines of $2:"; tail -n 30 "$2" >&2 2>/dev/null || true
  exit 1
}

wait_healthy() { # <name> <timeout s> <pidfile> <logfile> <check function>
  local t0=$SECONDS start=$EPOCHREALTIME pid
  pid=$(cat "$3")   # read once: influxd deletes its pid file when it exits
  until "$5"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      fail_with_log "$1 exited during startup" "$4"
    fi
    if ((SECONDS - t0 >= $2)); then
      fail_with_log "$1 not healthy after $2 s (still running; 'stop' cleans up)" "$4"
    fi
    sleep 0.5
  done
  log "$1 healthy after $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s"
}

# ---------------------------------------------------------------- Kafka
KDIR=$SVC/kafka
kafka_marker() { echo "$KDIR/server.properties"; }

kafka_healthy() { # TCP connect + Metadata v0 request answered with >= 1 broker (stdlib only)
  python3 - "$KAFKA_PORT" <<'EOF' 2>/dev/null
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
cid = b"telltale-health"
req = struct.pack(">hhih", 3, 0, 42, len(cid)) + cid + struct.pack(">i", 0)  # Metadata v0, all topics
s.sendall(struct.pack(">i", len(req)) + req)
buf = b""
while len(buf) < 12:
    chunk = s.recv(4096)
    if not chunk: sys.exit(1)
    buf += chunk
_size, corr, nbrokers = struct.unpack(">iii", buf[:12])
sys.exit(0 if corr == 42 and nbrokers >= 1 else 1)
EOF
}
kafka_started() { grep -q "Kafka Server started" "$KDIR/kafka.log" 2>/dev/null && kafka_healthy; }

write_kafka_config() {
  cat >"$KDIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CTRL_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CTRL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$KDIR/data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=5242880
replica.fetch.max.bytes=5242880
EOF
  cat >"$KDIR/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$KDIR/kafka.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

start_kafka() { # <keep-data 0|1>
  if kafka_healthy; then log "Kafka already running on 127.0.0.1:$KAFKA_PORT"; return 0; fi
  stop_kafka 2>/dev/null   # clear a half-started leftover from this services dir
  mkdir -p "$KDIR"
  write_kafka_config
  local cp="$KAFKA_LIBS/*" l4j="-Dlog4j.configuration=file:$KDIR/log4j.properties" uuid out
  [[ -f $KDIR/kafka.log ]] && mv "$KDIR/kafka.log" "$KDIR/kafka.log.prev"
  if [[ $1 == 1 && -f $KDIR/data/meta.properties ]]; then
    log "starting Kafka $KAFKA_VERSION, keeping $KDIR/data"
  else
    rm -rf "$KDIR/data"
    uuid=$(java -cp "$cp" "$l4j" kafka.tools.StorageTool random-uuid) || die "StorageTool random-uuid failed"
    out=$(java -cp "$cp" "$l4j" kafka.tools.StorageTool format -t "$uuid" -c "$KDIR/server.properties" 2>&1) ||
      die "Kafka storage format failed: $out"
    log "starting Kafka $KAFKA_VERSION (fresh data dir, cluster id $uuid)"
  fi
  nohup java -Xmx512m -Djava.awt.headless=true -cp "$cp" "$l4j" \
    kafka.Kafka "$KDIR/server.properties" >"$KDIR/kafka.out" 2>&1 </dev/null &
  echo $! >"$KDIR/kafka.pid"
  wait_healthy "Kafka" 90 "$KDIR/kafka.pid" "$KDIR/kafka.log" kafka_started
}
stop_kafka() { stop_proc "Kafka" "$KDIR/kafka.pid" "$(kafka_marker)"; }

# ---------------------------------------------------------------- InfluxDB
IDIR=$SVC/influx
influx_marker() { echo "$IDIR/influxd.pid"; }   # passed as -pidfile, so it is on the command line
influx_healthy() {
  [[ $(curl -s -o /dev/null -m 3 -w '%{http_code}' "http://127.0.0.1:$INFLUX_PORT/ping" 2>/dev/null) == 204 ]]
}

start_influx() { # <keep-data 0|1>
  if influx_healthy; then log "InfluxDB already running on 127.0.0.1:$INFLUX_PORT"; return 0; fi
  stop_influx 2>/dev/null
  mkdir -p "$IDIR"
  if [[ $1 == 1 ]]; then log "starting InfluxDB $INFLUX_VERSION, keeping $IDIR data";
  else rm -rf "$IDIR/meta" "$IDIR/data" "$IDIR/wal"; log "starting InfluxDB $INFLUX_VERSION (fresh data dir)"; fi
  [[ -f $IDIR/influxd.log ]] && mv "$IDIR/influxd.log" "$IDIR/influxd.log.prev"
  INFLUXDB_HTTP_BIND_ADDRESS=127.0.0.1:$INFLUX_PORT \
  INFLUXDB_BIND_ADDRESS=127.0.0.1:$INFLUX_RPC_PORT \
  INFLUXDB_HTTP_FLUX_ENABLED=true \
  INFLUXDB_REPORTING_DISABLED=true \
  INFLUXDB_MONITOR_STORE_ENABLED=false \
  INFLUXDB_META_DIR=$IDIR/meta \
  INFLUXDB_DATA_DIR=$IDIR/data \
  INFLUXDB_DATA_WAL_DIR=$IDIR/wal \
  INFLUXDB_HTTP_LOG_ENABLED=false \
  INFLUXDB_DATA_QUERY_LOG_ENABLED=false \
  INFLUXDB_LOGGING_LEVEL=warn \
    nohup "$INFLUXD" run -config /dev/null -pidfile "$IDIR/influxd.pid" >"$IDIR/influxd.log" 2>&1 </dev/null &
  echo $! >"$IDIR/influxd.pid"
  wait_healthy "InfluxDB" 60 "$IDIR/influxd.pid" "$IDIR/influxd.log" influx_healthy
}
stop_influx() { stop_proc "InfluxDB" "$IDIR/influxd.pid" "$(influx_marker)"; }

# ---------------------------------------------------------------- main
prepare_dir() {
  mkdir -p "$SVC" && SVC=$(cd "$SVC" && pwd) && KDIR=$SVC/kafka && IDIR=$SVC/influx
  [[ -f $SVC/.gitignore ]] || echo '*' >"$SVC/.gitignore"   # runtime state never shows up in git
}

status() {
  local rc=0
  if kafka_healthy; then echo "kafka:  up   127.0.0.1:$KAFKA_PORT"; else echo "kafka:  down (127.0.0.1:$KAFKA_PORT)"; rc=1; fi
  if influx_healthy; then echo "influx: up   http://127.0.0.1:$INFLUX_PORT"; else echo "influx: down (http://127.0.0.1:$INFLUX_PORT)"; rc=1; fi
  return $rc
}

cmd=${1:-}; shift || true
keep=0
for arg in "$@"; do
  case $arg in --keep-data) keep=1 ;; *) die "unknown argument: $arg" ;; esac
done
prepare_dir
case $cmd in
  install)      install_all ;;
  start)        install_all; start_kafka "$keep"; start_influx "$keep"; print_env ;;
  stop)         stop_kafka; stop_influx ;;
  status)       status ;;
  env)          print_env ;;
  start-kafka)  install_kafka; start_kafka "$keep" ;;
  stop-kafka)   stop_kafka ;;
  start-influx) install_influx; start_influx "$keep" ;;
  stop-influx)  stop_influx ;;
  *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
