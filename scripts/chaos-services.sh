#!/usr/bin/env bash
# The fault suite's own services: a PostgreSQL cluster, a Redis, a RabbitMQ
# node and a Temporal dev server, on ports of their own and with their state
# under CHAOS_DIR, so the suite can stop and restart them without touching
# the machine's services. Each is stopped by the pid it wrote at start.
#
#   scripts/chaos-services.sh start   postgres|redis|rabbitmq|temporal
#   scripts/chaos-services.sh stop    postgres|redis|rabbitmq|temporal   (graceful, waits)
#   scripts/chaos-services.sh kill    postgres|redis|rabbitmq|temporal   (SIGKILL, waits)
#   scripts/chaos-services.sh stop-all
#
# Ports: CHAOS_POSTGRES_PORT (55432), CHAOS_REDIS_PORT (56379),
# CHAOS_RABBITMQ_PORT (55672), CHAOS_TEMPORAL_PORT (57233).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CHAOS_DIR="${CHAOS_DIR:-${TMPDIR:-/tmp}/dispatch-chaos}"
PG_PORT="${CHAOS_POSTGRES_PORT:-55432}"
REDIS_PORT="${CHAOS_REDIS_PORT:-56379}"
MQ_PORT="${CHAOS_RABBITMQ_PORT:-55672}"
TEMPORAL_PORT="${CHAOS_TEMPORAL_PORT:-57233}"
MQ_NODE="dispatch-chaos-$MQ_PORT@localhost"

mkdir -p "$CHAOS_DIR"

# pidfile SERVICE: where the service's pid is kept (RabbitMQ writes its own,
# as the rabbitmq user, so it lives in that node's directory).
pidfile() {
  if [ "$1" = rabbitmq ]; then echo "$CHAOS_DIR/rabbitmq/rabbitmq.pid"; else echo "$CHAOS_DIR/$1.pid"; fi
}

# alive SERVICE: the pid the service wrote is a running process.
alive() {
  local f; f=$(pidfile "$1")
  [ -s "$f" ] && kill -0 "$(head -1 "$f")" 2>/dev/null
}

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$dir" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql (scripts/services.sh installs them)"
  echo "$dir"
}

# as_postgres CMD...: PostgreSQL refuses to run as root.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local data="$CHAOS_DIR/postgres" bin; bin=$(pg_bin)
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres: "$data" && chmod 0755 "$CHAOS_DIR"
    as_postgres "$bin/initdb" -D "$data" -U postgres -A trust --no-sync >/dev/null
  fi
  as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start -o \
    "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$data -c max_connections=300 -c fsync=off" >/dev/null
  head -1 "$data/postmaster.pid" > "$(pidfile postgres)"
}

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --pidfile "$(pidfile redis)" --dir "$CHAOS_DIR" --logfile "$CHAOS_DIR/redis.log"
  wait_for "redis on :$REDIS_PORT" 20 port_open 127.0.0.1 "$REDIS_PORT"
}

mq_env() {
  local base="$CHAOS_DIR/rabbitmq"
  mkdir -p "$base/log"
  [ -f "$base/enabled_plugins" ] || echo '[].' > "$base/enabled_plugins"
  # rabbitmq-server run as root drops to the rabbitmq user.
  if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq: "$base"; fi
  export RABBITMQ_NODENAME="$MQ_NODE" RABBITMQ_NODE_PORT="$MQ_PORT" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_DIST_PORT=$((MQ_PORT - 10000)) RABBITMQ_MNESIA_BASE="$base/mnesia" RABBITMQ_LOG_BASE="$base/log" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins" RABBITMQ_PID_FILE="$(pidfile rabbitmq)" \
    RABBITMQ_CONFIG_FILE="$base/rabbitmq" # none there: the machine's rabbitmq.conf (its ports) is not read
}

start_rabbitmq() {
  mq_env
  launch_rabbitmq
  # `rabbitmqctl wait` can give up at once ("rabbit_is_not_running") while
  # the node is still booting (seen once in CI, passing on the next run): ask
  # again until the deadline rather than fail the suite. A node that exits
  # while booting (a restart right after a stop can find the node's name or
  # ports not yet released) is launched again rather than waited for until
  # the deadline, as the fault suite's RabbitMQ restart once was in CI.
  local deadline=$((SECONDS + 150))
  until rabbitmqctl -n "$MQ_NODE" -q wait --timeout 15 "$(pidfile rabbitmq)" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -40 "$CHAOS_DIR"/rabbitmq/log/*.log >&2 2>/dev/null || true
      die "rabbitmq node $MQ_NODE did not start"
    fi
    if ! kill -0 "$(cat "$CHAOS_DIR/rabbitmq.launcher")" 2>/dev/null; then
      log "rabbitmq node $MQ_NODE exited while booting; launching it again"
      tail -5 "$CHAOS_DIR/rabbitmq/log/launch.log" >&2 2>/dev/null || true
      rm -f "$(pidfile rabbitmq)"
      sleep 1
      launch_rabbitmq
    fi
    sleep 1
  done
  wait_for "rabbitmq on :$MQ_PORT" 60 port_open 127.0.0.1 "$MQ_PORT"
}

# launch_rabbitmq: starts the node in the background, keeping the launcher's
# pid, which lives as long as the node does.
launch_rabbitmq() {
  nohup rabbitmq-server >>"$CHAOS_DIR/rabbitmq/log/launch.log" 2>&1 &
  echo $! > "$CHAOS_DIR/rabbitmq.launcher"
}

start_temporal() {
  ensure_temporal_cli
  local args; mapfile -t args < <(temporal_dev_args)
  nohup "$TEMPORAL_BIN" server start-dev --headless --ip 127.0.0.1 --port "$TEMPORAL_PORT" \
    --http-port $((TEMPORAL_PORT + 10)) --metrics-port $((TEMPORAL_PORT + 11)) \
    --db-filename "$CHAOS_DIR/temporal.db" --log-level error "${args[@]}" \
    >>"$CHAOS_DIR/temporal.log" 2>&1 &
  echo $! > "$(pidfile temporal)"
  wait_for "temporal on :$TEMPORAL_PORT" 60 port_open 127.0.0.1 "$TEMPORAL_PORT"
}

# stop SERVICE SIGNAL: signals the service's own pid and waits until it is gone.
stop() {
  local svc=$1 sig=$2 pid
  alive "$svc" || { rm -f "$(pidfile "$svc")"; return 0; }
  pid=$(head -1 "$(pidfile "$svc")")
  kill "-$sig" "$pid"
  local deadline=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { kill -KILL "$pid" 2>/dev/null || true; }
    sleep 0.1
  done
  rm -f "$(pidfile "$svc")"
}

start() {
  local svc=$1
  alive "$svc" && return 0
  "start_$svc"
}

case "${1:-}" in
  start) start "${2:?service}" ;;
  # PostgreSQL's fast shutdown is SIGINT; the others stop on SIGTERM.
  stop) if [ "${2:?service}" = postgres ]; then stop postgres INT; else stop "$2" TERM; fi ;;
  kill) stop "${2:?service}" KILL ;;
  stop-all) for s in temporal rabbitmq redis postgres; do
      if [ "$s" = postgres ]; then stop postgres INT; else stop "$s" TERM; fi
    done ;;
  *) die "usage: $0 start|stop|kill SERVICE | stop-all" ;;
esac
