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
#   start-secure              a SECOND Kafka (SASL_SSL, SCRAM-SHA-512, KRaft ACLs) and a SECOND
#                             InfluxDB (auth on), beside the plain ones; prints `export ...` lines
#   stop-secure|status-secure|env-secure   the same for the secured pair
#   --keep-data               with a start command: keep the existing data dir (default: wipe)
#
# Env: TELLTALE_CACHE (~/.cache/telltale), TELLTALE_SERVICES_DIR (<repo>/.services),
#      TELLTALE_KAFKA_PORT (19092), TELLTALE_KAFKA_CONTROLLER_PORT (19093),
#      TELLTALE_INFLUX_PORT (18086), TELLTALE_INFLUX_RPC_PORT (18088).
#      Secured pair: TELLTALE_SECURE_KAFKA_PORT (Kafka port + 2), TELLTALE_SECURE_KAFKA_CONTROLLER_PORT
#      (+ 3), TELLTALE_SECURE_INFLUX_PORT (InfluxDB port + 1), TELLTALE_SECURE_INFLUX_RPC_PORT (+ 1),
#      TELLTALE_SECURE_PREFIX (topic prefix the ACLs name, telltale-sec),
#      TELLTALE_SECURE_APP_ID (worker group the ACLs name, telltale-sec-worker),
#      TELLTALE_SECURE_INFLUX_DB (the database its users may write/read, telltale_sec).
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

write_log4j() { # <kafka dir>: the broker logs to <dir>/kafka.log
  cat >"$1/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$1/kafka.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

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
  write_log4j "$KDIR"
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

launch_influxd() { # <dir> <http port> <rpc port> <auth true|false>: influxd in the background
  INFLUXDB_HTTP_BIND_ADDRESS=127.0.0.1:$2 \
  INFLUXDB_BIND_ADDRESS=127.0.0.1:$3 \
  INFLUXDB_HTTP_AUTH_ENABLED=$4 \
  INFLUXDB_HTTP_FLUX_ENABLED=true \
  INFLUXDB_REPORTING_DISABLED=true \
  INFLUXDB_MONITOR_STORE_ENABLED=false \
  INFLUXDB_META_DIR=$1/meta \
  INFLUXDB_DATA_DIR=$1/data \
  INFLUXDB_DATA_WAL_DIR=$1/wal \
  INFLUXDB_HTTP_LOG_ENABLED=false \
  INFLUXDB_DATA_QUERY_LOG_ENABLED=false \
  INFLUXDB_LOGGING_LEVEL=warn \
    nohup "$INFLUXD" run -config /dev/null -pidfile "$1/influxd.pid" >"$1/influxd.log" 2>&1 </dev/null &
  echo $! >"$1/influxd.pid"
}

start_influx() { # <keep-data 0|1>
  if influx_healthy; then log "InfluxDB already running on 127.0.0.1:$INFLUX_PORT"; return 0; fi
  stop_influx 2>/dev/null
  mkdir -p "$IDIR"
  if [[ $1 == 1 ]]; then log "starting InfluxDB $INFLUX_VERSION, keeping $IDIR data";
  else rm -rf "$IDIR/meta" "$IDIR/data" "$IDIR/wal"; log "starting InfluxDB $INFLUX_VERSION (fresh data dir)"; fi
  [[ -f $IDIR/influxd.log ]] && mv "$IDIR/influxd.log" "$IDIR/influxd.log.prev"
  launch_influxd "$IDIR" "$INFLUX_PORT" "$INFLUX_RPC_PORT" false
  wait_healthy "InfluxDB" 60 "$IDIR/influxd.pid" "$IDIR/influxd.log" influx_healthy
}
stop_influx() { stop_proc "InfluxDB" "$IDIR/influxd.pid" "$(influx_marker)"; }

# ---------------------------------------------------------------- secured pair (start-secure)
# Kafka: SASL_SSL listener, SCRAM-SHA-512 users made at format time, StandardAuthorizer ACLs;
# the controller listener is TLS with client certificates required (KRaft cannot use SCRAM
# there): only the broker itself, holding the CA-signed broker certificate, gets in, as the
# super user User:CN=localhost. No ANONYMOUS principal is privileged.
# InfluxDB: HTTP auth on; an admin (set-up only), a write-only user for the worker and a
# read-only user for the page, on database $SINFLUX_DB.
# Certificates and passwords live in $SVC/secure/ (0700) and are kept across starts (made once
# with openssl); broker and InfluxDB data are wiped. Everything is made with umask 077, and no
# secret is ever on a command line: the SCRAM users go to StorageTool through a java @argfile,
# InfluxQL with passwords goes to curl through its config on stdin.
SKAFKA_PORT=${TELLTALE_SECURE_KAFKA_PORT:-$((KAFKA_PORT + 2))}
SKAFKA_CTRL_PORT=${TELLTALE_SECURE_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 3))}
SINFLUX_PORT=${TELLTALE_SECURE_INFLUX_PORT:-$((INFLUX_PORT + 1))}
SINFLUX_RPC_PORT=${TELLTALE_SECURE_INFLUX_RPC_PORT:-$((INFLUX_RPC_PORT + 1))}
SPREFIX=${TELLTALE_SECURE_PREFIX:-telltale-sec}
SAPP=${TELLTALE_SECURE_APP_ID:-telltale-sec-worker}
SINFLUX_DB=${TELLTALE_SECURE_INFLUX_DB:-telltale_sec}
SECDIR=$SVC/secure
SUSERS="admin producer worker alerts"
SINFLUX_USERS="admin writer reader"   # InfluxDB: set-up, the worker, the page

print_secure_env() {
  echo "export TELLTALE_SECURE_KAFKA=127.0.0.1:$SKAFKA_PORT"
  echo "export TELLTALE_SECURE_INFLUX_URL=http://127.0.0.1:$SINFLUX_PORT"
  echo "export TELLTALE_SECURE_DIR=$SECDIR"
  echo "export TELLTALE_SECURE_CAFILE=$SECDIR/ca.crt"
  echo "export TELLTALE_SECURE_PREFIX=$SPREFIX"
  echo "export TELLTALE_SECURE_APP_ID=$SAPP"
  echo "export TELLTALE_SECURE_INFLUX_DB=$SINFLUX_DB"
}

make_secrets() { # CA + broker certificate (SAN 127.0.0.1, localhost) and one password per user
  mkdir -p "$SECDIR" && chmod -R go= "$SECDIR"
  local u
  for u in $SUSERS influx-admin influx-writer influx-reader store; do
    [[ -s $SECDIR/$u.password ]] || (umask 077; openssl rand -hex 16 >"$SECDIR/$u.password")
  done
  for u in $SINFLUX_USERS; do   # InfluxDB 1.8 token = user:password (TELLTALE_INFLUX_TOKEN_FILE)
    (umask 077; printf '%s:%s' "$u" "$(<"$SECDIR/influx-$u.password")" >"$SECDIR/influx-$u.token")
  done
  [[ -s $SECDIR/broker.p12 && -s $SECDIR/ca.crt ]] && return 0
  log "making a CA and the broker's TLS certificate with openssl (one-time)..."
  local d=$SECDIR
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=telltale-test-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null || die "openssl could not make the CA"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$d/broker.key" \
    -out "$d/broker.csr" 2>/dev/null || die "openssl could not make the broker key"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/san.ext"
  openssl x509 -req -in "$d/broker.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/san.ext" -out "$d/broker.crt" 2>/dev/null || die "openssl could not sign"
  openssl pkcs12 -export -in "$d/broker.crt" -inkey "$d/broker.key" -name broker \
    -passout "file:$d/store.password" -out "$d/broker.p12" || die "openssl pkcs12 failed"
}

SKDIR=$SVC/kafka-secure
skafka_healthy() { # TLS handshake on the SASL_SSL port (the stdlib probe cannot authenticate)
  grep -q "Kafka Server started" "$SKDIR/kafka.log" 2>/dev/null &&
    python3 - "$SKAFKA_PORT" "$SECDIR/ca.crt" <<'EOF' 2>/dev/null
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3) as s:
    with ctx.wrap_socket(s, server_hostname="127.0.0.1"):
        pass
EOF
}

write_secure_kafka_config() {
  local admin_pw store_pw
  admin_pw=$(cat "$SECDIR/admin.password"); store_pw=$(cat "$SECDIR/store.password")
  (umask 077; cat >"$SKDIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$SKAFKA_CTRL_PORT
listeners=SASL_SSL://127.0.0.1:$SKAFKA_PORT,CONTROLLER://127.0.0.1:$SKAFKA_CTRL_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$SKAFKA_PORT
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
controller.listener.names=CONTROLLER
listener.name.controller.ssl.client.auth=required
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
ssl.keystore.type=PKCS12
ssl.keystore.location=$SECDIR/broker.p12
ssl.keystore.password=$store_pw
ssl.key.password=$store_pw
ssl.truststore.type=PEM
ssl.truststore.location=$SECDIR/ca.crt
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:CN=localhost
allow.everyone.if.no.acl.found=false
log.dirs=$SKDIR/data
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=5242880
replica.fetch.max.bytes=5242880
EOF
  cat >"$SKDIR/admin.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_pw";
ssl.truststore.type=PEM
ssl.truststore.location=$SECDIR/ca.crt
EOF
  )
  write_log4j "$SKDIR"
}

acl() { # AclCommand as the super user: acl <args...>
  java -cp "$KAFKA_LIBS/*" -Dlog4j.configuration=file:$SKDIR/log4j.properties kafka.admin.AclCommand \
    --bootstrap-server "127.0.0.1:$SKAFKA_PORT" --command-config "$SKDIR/admin.properties" \
    --add --force "$@" >>"$SKDIR/acls.log" 2>&1 || { tail -n 20 "$SKDIR/acls.log" >&2; die "AclCommand $* failed"; }
}

add_acls() { # least privilege per principal; run in parallel (one JVM each)
  local P=$SPREFIX
  log "adding ACLs (producer writes $P.metrics only; worker; alerts reader and notifier)..."
  : >"$SKDIR/acls.log"
  local pids=() rc=0 j
  acl --allow-principal User:producer --operation Write --operation Describe --topic "$P.metrics" &
  pids+=($!)
  acl --allow-principal User:worker --operation Read --operation Describe --operation Create \
    --topic "$P.metrics" & pids+=($!)
  acl --allow-principal User:worker --operation Write --operation Describe --operation Create \
    --topic "$P.alerts" --topic "$P.deadletter" & pids+=($!)
  acl --resource-pattern-type prefixed --allow-principal User:worker --operation All \
    --topic "$SAPP-" --group "$SAPP" & pids+=($!)
  acl --allow-principal User:alerts --operation Read --operation Describe --topic "$P.alerts" &
  pids+=($!)
  # only the groups `telltale alerts` and `telltale notify` use by default: a prefix of
  # "$P-" would also cover the worker's group ($SAPP) and let a reader commit its offsets
  acl --resource-pattern-type prefixed --allow-principal User:alerts --operation Read \
    --group "$P-alerts-" --group "$P-notify" & pids+=($!)
  # telltale notify, as the same reader: silences (compacted topic) and undeliverable alerts
  acl --allow-principal User:alerts --operation All --topic "$P.silences" & pids+=($!)
  acl --allow-principal User:alerts --operation Write --operation Describe --topic "$P.deadletter" &
  pids+=($!)
  for j in "${pids[@]}"; do wait "$j" || rc=1; done   # not `wait`: the broker is a job too
  ((rc == 0)) || die "adding ACLs failed (see $SKDIR/acls.log)"
}

start_secure_kafka() {
  if skafka_healthy; then log "secured Kafka already running on 127.0.0.1:$SKAFKA_PORT"; return 0; fi
  stop_secure_kafka 2>/dev/null
  mkdir -p "$SKDIR" && chmod -R go= "$SKDIR"   # also what an older version left readable
  write_secure_kafka_config
  local cp="$KAFKA_LIBS/*" l4j="-Dlog4j.configuration=file:$SKDIR/log4j.properties" uuid out u
  [[ -f $SKDIR/kafka.log ]] && mv "$SKDIR/kafka.log" "$SKDIR/kafka.log.prev"
  rm -rf "$SKDIR/data"
  uuid=$(java -cp "$cp" "$l4j" kafka.tools.StorageTool random-uuid) || die "StorageTool random-uuid failed"
  # the SCRAM passwords reach StorageTool through a 0600 argument file, not the command line
  printf '%s\n' kafka.tools.StorageTool format -t "$uuid" -c "$SKDIR/server.properties" >"$SKDIR/format.args"
  for u in $SUSERS; do
    printf -- '--add-scram\nSCRAM-SHA-512=[name=%s,password=%s]\n' "$u" "$(<"$SECDIR/$u.password")" \
      >>"$SKDIR/format.args"
  done
  out=$(java -cp "$cp" "$l4j" @"$SKDIR/format.args" 2>&1) || {
    rm -f "$SKDIR/format.args"; die "secured Kafka storage format failed: ${out//password=*]/password=***]}"; }
  rm -f "$SKDIR/format.args"
  log "starting secured Kafka $KAFKA_VERSION on 127.0.0.1:$SKAFKA_PORT (SASL_SSL, SCRAM-SHA-512, ACLs)"
  nohup java -Xmx512m -Djava.awt.headless=true -cp "$cp" "$l4j" \
    kafka.Kafka "$SKDIR/server.properties" >"$SKDIR/kafka.out" 2>&1 </dev/null &
  echo $! >"$SKDIR/kafka.pid"
  wait_healthy "secured Kafka" 90 "$SKDIR/kafka.pid" "$SKDIR/kafka.log" skafka_healthy
  add_acls
}
stop_secure_kafka() { stop_proc "secured Kafka" "$SKDIR/kafka.pid" "$SKDIR/server.properties"; }

SIDIR=$SVC/influx-secure
sinflux_healthy() {
  [[ $(curl -s -o /dev/null -m 3 -w '%{http_code}' "http://127.0.0.1:$SINFLUX_PORT/ping" 2>/dev/null) == 204 ]]
}

influx_admin_query() { # <InfluxQL> [anonymous]: HTTP code; credentials and query on curl's stdin
  local auth=""
  [[ ${2:-} == anonymous ]] || auth="user = \"admin:$(<"$SECDIR/influx-admin.password")\""
  curl -s -o "$SIDIR/query.out" -w '%{http_code}' -m 10 -K - <<EOF
url = "http://127.0.0.1:$SINFLUX_PORT/query"
$auth
data-urlencode = "q=$1"
EOF
}

start_secure_influx() {
  if sinflux_healthy; then log "secured InfluxDB already running on 127.0.0.1:$SINFLUX_PORT"; return 0; fi
  stop_secure_influx 2>/dev/null
  mkdir -p "$SIDIR" && chmod -R go= "$SIDIR"
  rm -rf "$SIDIR/meta" "$SIDIR/data" "$SIDIR/wal"
  [[ -f $SIDIR/influxd.log ]] && mv "$SIDIR/influxd.log" "$SIDIR/influxd.log.prev"
  log "starting secured InfluxDB $INFLUX_VERSION on 127.0.0.1:$SINFLUX_PORT (auth enabled)"
  launch_influxd "$SIDIR" "$SINFLUX_PORT" "$SINFLUX_RPC_PORT" true
  wait_healthy "secured InfluxDB" 60 "$SIDIR/influxd.pid" "$SIDIR/influxd.log" sinflux_healthy
  # the first user may be created without credentials; after that, auth is enforced
  local code q
  code=$(influx_admin_query \
    "CREATE USER admin WITH PASSWORD '$(<"$SECDIR/influx-admin.password")' WITH ALL PRIVILEGES" anonymous)
  [[ $code == 200 ]] || die "creating the InfluxDB admin user failed (HTTP $code): $(cat "$SIDIR/query.out")"
  for q in "CREATE DATABASE $SINFLUX_DB" \
      "CREATE USER writer WITH PASSWORD '$(<"$SECDIR/influx-writer.password")'" \
      "GRANT WRITE ON $SINFLUX_DB TO writer" \
      "CREATE USER reader WITH PASSWORD '$(<"$SECDIR/influx-reader.password")'" \
      "GRANT READ ON $SINFLUX_DB TO reader"; do
    code=$(influx_admin_query "$q")
    [[ $code == 200 ]] && ! grep -q '"error"' "$SIDIR/query.out" ||
      die "InfluxDB set-up failed (HTTP $code) at '${q%%WITH PASSWORD*}': $(cat "$SIDIR/query.out")"
  done
  log "InfluxDB users: admin (set-up), writer (WRITE on $SINFLUX_DB), reader (READ on $SINFLUX_DB)"
}
stop_secure_influx() { stop_proc "secured InfluxDB" "$SIDIR/influxd.pid" "$SIDIR/influxd.pid"; }

status_secure() {
  local rc=0
  if skafka_healthy; then echo "secure kafka:  up   127.0.0.1:$SKAFKA_PORT"; else echo "secure kafka:  down (127.0.0.1:$SKAFKA_PORT)"; rc=1; fi
  if sinflux_healthy; then echo "secure influx: up   http://127.0.0.1:$SINFLUX_PORT"; else echo "secure influx: down (http://127.0.0.1:$SINFLUX_PORT)"; rc=1; fi
  return $rc
}

# ---------------------------------------------------------------- main
prepare_dir() {
  mkdir -p "$SVC" && SVC=$(cd "$SVC" && pwd) && KDIR=$SVC/kafka && IDIR=$SVC/influx
  SECDIR=$SVC/secure && SKDIR=$SVC/kafka-secure && SIDIR=$SVC/influx-secure
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
  start-secure) install_all; umask 077; make_secrets; start_secure_kafka; start_secure_influx; print_secure_env ;;
  stop-secure)  stop_secure_kafka; stop_secure_influx ;;
  status-secure) status_secure ;;
  env-secure)   print_secure_env ;;
  *) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
