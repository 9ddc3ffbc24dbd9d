#!/usr/bin/env bash
# make temporal-postgres: runs the pinned Temporal server (not the CLI's dev
# server) on PostgreSQL in the foreground, as a production deployment would:
# frontend on TEMPORAL_ADDRESS (default 127.0.0.1:7233), single node, state in
# the databases temporal and temporal_visibility. It builds the server and its
# schema tool once into .tools/bin, creates the databases and applies (or
# updates) their schemas from the server module's own schema files, writes its
# config to .data/temporal-postgres/config/, starts the server, makes sure
# namespace default exists and registers the product's search attributes.
# There is no Web UI: it is not part of the server binary. Ctrl-C or SIGTERM
# stops the server.
#
# PostgreSQL: TEMPORAL_PG_HOST (127.0.0.1), TEMPORAL_PG_PORT (5432),
# TEMPORAL_PG_USER (postgres), TEMPORAL_PG_PASSWORD (empty).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
load_env
ensure_temporal_server
ensure_temporal_cli

address="${TEMPORAL_ADDRESS:-127.0.0.1:7233}"
host="${address%:*}"
port="${address##*:}"
pg_host="${TEMPORAL_PG_HOST:-127.0.0.1}"
pg_port="${TEMPORAL_PG_PORT:-5432}"
pg_user="${TEMPORAL_PG_USER:-postgres}"
pg_password="${TEMPORAL_PG_PASSWORD:-}"
log_level="${TEMPORAL_LOG_LEVEL:-warn}"

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
cat >"$data/config/dynamicconfig.yaml" <<'YAML'
# The same values the product's dev server runs with (scripts/lib.sh temporal_dev_args).
matching.useNewMatcher:
  - value: true
matching.enableFairness:
  - value: true
matching.numTaskqueueReadPartitions:
  - value: 1
matching.numTaskqueueWritePartitions:
  - value: 1
# Search attributes visible at once after creation (the dev server does the same).
system.forceSearchAttributesCacheRefreshOnRead:
  - value: true
limit.maxIDLength:
  - value: 255
YAML

# The password is written only into this git-ignored file.
cat >"$data/config/postgres.yaml" <<YAML
# Written by scripts/temporal-postgres.sh; edits are overwritten on the next start.
log:
  stdout: true
  level: $log_level

persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: 4
  datastores:
    postgres-default:
      sql:
        pluginName: postgres12
        databaseName: temporal
        connectAddr: "$pg_host:$pg_port"
        connectProtocol: tcp
        user: "$pg_user"
        password: "$pg_password"
        maxConns: 20
        maxIdleConns: 20
        maxConnLifetime: 1h
    postgres-visibility:
      sql:
        pluginName: postgres12
        databaseName: temporal_visibility
        connectAddr: "$pg_host:$pg_port"
        connectProtocol: tcp
        user: "$pg_user"
        password: "$pg_password"
        maxConns: 10
        maxIdleConns: 10
        maxConnLifetime: 1h

global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: "$host"

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
"$TEMPORAL_SERVER_BIN" --root "$data" --config config --env postgres --allow-no-auth start &
server_pid=$!
# Whatever ends this script (Ctrl-C, SIGTERM, a failed step) stops the server.
stop_server() {
  trap - INT TERM EXIT
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
log "Temporal server ready at $address (namespace default, search attributes registered; no Web UI)"

wait "$server_pid"
