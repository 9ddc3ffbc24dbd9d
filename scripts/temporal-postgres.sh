#!/usr/bin/env bash
# make temporal-postgres: runs the pinned Temporal server (not the CLI's dev
# server) on PostgreSQL in the foreground, as a production deployment would:
# frontend on TEMPORAL_ADDRESS (default 127.0.0.1:7233), single node, state in
# the databases temporal and temporal_visibility. It builds the server and its
# schema tool once into .tools/bin, creates the databases and applies (or
# updates) their schemas from the server module's own schema files, writes its
# config to .data/temporal-postgres/config/, starts the server, makes sure
# namespace default exists and registers the product's search attributes.
# Beside it, the Temporal Web UI on TEMPORAL_UI_PORT (8233, as the dev server
# serves it; 0: none), the UI server the pinned CLI embeds, built from the
# module proxy too. Ctrl-C or SIGTERM stops both.
#
# PostgreSQL: TEMPORAL_PG_HOST (127.0.0.1), TEMPORAL_PG_PORT (5432),
# TEMPORAL_PG_USER (postgres), TEMPORAL_PG_PASSWORD (empty).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
load_env
ensure_temporal_server
ensure_temporal_cli
ui_port="${TEMPORAL_UI_PORT:-8233}"
[ "$ui_port" = 0 ] || ensure_temporal_ui

address="${TEMPORAL_ADDRESS:-127.0.0.1:7233}"
host="${address%:*}"
port="${address##*:}"
pg_host="${TEMPORAL_PG_HOST:-127.0.0.1}"
pg_port="${TEMPORAL_PG_PORT:-5432}"
pg_user="${TEMPORAL_PG_USER:-postgres}"
pg_password="${TEMPORAL_PG_PASSWORD:-}"
log_level="${TEMPORAL_LOG_LEVEL:-warn}"
# TEMPORAL_PPROF_PORT serves Go's profiler of the server on 127.0.0.1 at that
# port (docs/PERFORMANCE.md); unset or 0, none.
pprof_port="${TEMPORAL_PPROF_PORT:-0}"
pprof_block=""
if [ "$pprof_port" != 0 ]; then
  pprof_block="  pprof:
    port: $pprof_port
    host: 127.0.0.1"
fi

if port_open "$host" "$port"; then
  die "something already listens on $address (the dev server? stop it first)"
fi

module_dir="$(temporal_server_module_dir)"
[ -d "$module_dir/schema/postgresql/v12" ] || die "no PostgreSQL schema in the Temporal server module ($module_dir)"

# --- databases and schemas (idempotent) -------------------------------------
psql_q() { PGPASSWORD="$pg_password" psql -h "$pg_host" -p "$pg_port" -U "$pg_user" -d "$1" -tAq -v ON_ERROR_STOP=1 -c "$2"; }
data="$ROOT/.data/temporal-postgres"
mkdir -p "$data/config"
schema_log="$data/schema.log"
: >"$schema_log"
# sql_tool DB ARGS...: the schema tool, its (verbose) output in schema.log.
sql_tool() {
  local db=$1; shift
  "$TEMPORAL_SQL_TOOL_BIN" --plugin postgres12 --ep "$pg_host" -p "$pg_port" \
    -u "$pg_user" --pw "$pg_password" --db "$db" "$@" >>"$schema_log" 2>&1 ||
    die "temporal-sql-tool $* on $db failed; see .data/temporal-postgres/schema.log"
}

for pair in temporal:temporal temporal_visibility:visibility; do
  db="${pair%%:*}"
  schema="${pair##*:}"
  if [ "$(psql_q postgres "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
    log "creating database $db"
    sql_tool "$db" create-database
  fi
  if [ "$(psql_q "$db" "SELECT 1 FROM information_schema.tables WHERE table_schema = 'public' AND table_name = 'schema_version'")" != 1 ]; then
    log "setting up the schema of $db"
    sql_tool "$db" setup-schema -v 0.0
  fi
  sql_tool "$db" update-schema -d "$module_dir/schema/postgresql/v12/$schema/versioned"
  log "database $db at schema version $(psql_q "$db" "SELECT curr_version FROM schema_version LIMIT 1")"
done

# --- config (from the module's config/development-postgres12.yaml) ---------
# dynamic_config FORCE: writes the dynamic config (the server reads it again
# every 10s). FORCE true makes search attributes visible at once after their
# creation (the dev server runs so all the time): every read of them then
# reads the database, a fifth of the server's CPU under load (measured:
# docs/PERFORMANCE.md), so it is on only until they are registered.
dynamic_config() {
  cat >"$data/config/dynamicconfig.yaml" <<YAML
# Written by scripts/temporal-postgres.sh; edits are overwritten on the next start.
# The same values the product's dev server runs with (scripts/lib.sh temporal_dev_args).
matching.useNewMatcher:
  - value: true
matching.enableFairness:
  - value: true
matching.numTaskqueueReadPartitions:
  - value: 1
matching.numTaskqueueWritePartitions:
  - value: 1
system.forceSearchAttributesCacheRefreshOnRead:
  - value: $1
# Each shard reads its visibility tasks at most 4 times a second (20 by
# default): a notification on the fast path has closed by the time its
# start's task is read, and a closed workflow's start and search-attribute
# tasks write nothing, so its record is written once, at its close, rather
# than three times; the Web UI sees a run at most ~250 ms later. A read
# takes up to 100 tasks: 1,600 a second on four shards.
history.visibilityProcessorMaxPollRPS:
  - value: 4
# The history cache holds a workflow's mutable state after its last task, by
# default up to 128,000 of them for an hour: some 40 KB each, it grew the
# server from 583 to 1,534 MiB in the first 7 minutes of a soak at 73/s
# (docs/PERFORMANCE.md). A notification's workflow lives a few milliseconds
# on the fast path; one that waits on a timer is read again when it fires.
history.hostLevelCacheMaxSize:
  - value: 8192
limit.maxIDLength:
  - value: 255
YAML
}
dynamic_config true

# The password is written only into this git-ignored file.
cat >"$data/config/postgres.yaml" <<YAML
# Written by scripts/temporal-postgres.sh; edits are overwritten on the next start.
log:
  stdout: true
  level: $log_level

# Each of the server's four services (frontend, history, matching, worker)
# has its own pools: at most 4 × (8 + 4) = 48 connections, so the product's
# API and worker (DATABASE_MAX_CONNS each) fit beside them in PostgreSQL's
# default max_connections of 100. Idle connections are kept (maxIdleConns =
# maxConns): one closed and opened again costs PostgreSQL a backend's start
# and pgx its cache of prepared statements: PostgreSQL's CPU per
# notification more than doubled (3.9 to 8.3 ms) in the run that showed it.
persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: 4
  datastores:
    postgres-default:
      sql:
        pluginName: postgres12_pgx
        databaseName: temporal
        connectAddr: "$pg_host:$pg_port"
        connectProtocol: tcp
        user: "$pg_user"
        password: "$pg_password"
        maxConns: 8
        maxIdleConns: 8
        maxConnLifetime: 1h
    postgres-visibility:
      sql:
        pluginName: postgres12_pgx
        databaseName: temporal_visibility
        connectAddr: "$pg_host:$pg_port"
        connectProtocol: tcp
        user: "$pg_user"
        password: "$pg_password"
        maxConns: 4
        maxIdleConns: 4
        maxConnLifetime: 1h

global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: "$host"
$pprof_block

services:
  frontend:
    rpc:
      grpcPort: $port
      membershipPort: 6933
      bindOnIP: "$host"
      httpPort: 7243
  history:
    rpc:
      grpcPort: 7234
      membershipPort: 6934
      bindOnIP: "$host"
  matching:
    rpc:
      grpcPort: 7235
      membershipPort: 6935
      bindOnIP: "$host"
  worker:
    rpc:
      grpcPort: 7239
      membershipPort: 6939
      bindOnIP: "$host"

clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: "$address"

dcRedirectionPolicy:
  policy: noop

dynamicConfigClient:
  filepath: "$data/config/dynamicconfig.yaml"
  pollInterval: 10s
YAML

# --- start, then namespace and search attributes ----------------------------
log "starting Temporal server $TEMPORAL_SERVER_VERSION on PostgreSQL at $address (config in .data/temporal-postgres/config)"
# GOGC: the server allocates a lot per request and its heap is small next to
# the machine; collecting at twice the default growth halves the share of its
# CPU the garbage collector takes (a tenth, measured: docs/PERFORMANCE.md) for
# a larger heap. TEMPORAL_GOGC overrides it.
GOGC="${TEMPORAL_GOGC:-200}" "$TEMPORAL_SERVER_BIN" --root "$data" --config config --env postgres --allow-no-auth start &
server_pid=$!
ui_pid=""
# Whatever ends this script (Ctrl-C, SIGTERM, a failed step) stops the server
# and the UI.
stop_server() {
  trap - INT TERM EXIT
  [ -n "$ui_pid" ] && kill -TERM "$ui_pid" 2>/dev/null
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
trap stop_server EXIT
trap 'exit 0' INT TERM

server_alive() { kill -0 "$server_pid" 2>/dev/null || die "the Temporal server exited"; }
healthy() { server_alive && "$TEMPORAL_BIN" operator cluster health --address "$address" --command-timeout 2s >/dev/null 2>&1; }
wait_for "Temporal server" 120 healthy

tcli() { "$TEMPORAL_BIN" "$@" --address "$address" --command-timeout 5s; }
if ! tcli operator namespace describe --namespace default >/dev/null 2>&1; then
  log "registering namespace default"
  tcli operator namespace create --namespace default --retention 24h >/dev/null
fi

registered() { tcli operator search-attribute list --namespace default 2>/dev/null | grep -qw "$1"; }
create_attribute() { registered "$1" || { server_alive && tcli operator search-attribute create --namespace default --name "$1" --type "$2" >/dev/null 2>&1 && registered "$1"; }; }
# A new namespace reaches every service's cache within ~10s: retry until then.
for attr in NotificationStatus:Keyword NotificationChannel:Keyword NotificationPriority:Keyword \
  NotificationAttempts:Int NotificationBatchId:Keyword NotificationProvider:Keyword NotificationTenant:Keyword; do
  wait_for "search attribute ${attr%%:*}" 60 create_attribute "${attr%%:*}" "${attr##*:}"
done
# Registered: from here the server's cache of them (refreshed every minute) serves.
dynamic_config false

ui_note="no Web UI"
if [ "$ui_port" != 0 ]; then
  mkdir -p "$data/ui/config"
  cat >"$data/ui/config/development.yaml" <<YAML
# Written by scripts/temporal-postgres.sh; edits are overwritten on the next start.
temporalGrpcAddress: "$address"
host: "$host"
port: $ui_port
enableUi: true
defaultNamespace: default
notifyOnNewVersion: false
cors:
  cookieInsecure: true
YAML
  "$TEMPORAL_UI_BIN" --root "$data/ui" --config config --env development start >"$data/ui.log" 2>&1 &
  ui_pid=$!
  wait_for "Temporal Web UI" 30 port_open "$host" "$ui_port"
  ui_note="Web UI http://$host:$ui_port"
fi
log "Temporal server ready at $address (namespace default, search attributes registered; $ui_note)"

# The server's exit ends this script; the UI's alone does not stop the server.
wait "$server_pid"
