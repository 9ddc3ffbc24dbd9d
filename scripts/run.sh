#!/usr/bin/env bash
# make run: one command from a fresh machine to a running Dispatch Engine.
# Ensures PostgreSQL, Redis and RabbitMQ; builds the pinned Temporal CLI and
# server once and starts the server on PostgreSQL with its Web UI (unless a
# Temporal server answers already; TEMPORAL_SERVER=dev: the CLI's dev server); migrates; starts
# the sink (unless WEBHOOK_SITE_URL is set), the API and the worker; prints
# the URLs and an API key. Ctrl-C or SIGTERM stops exactly what it started.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
started_at=$SECONDS
load_env

# /v1/* needs an API key. With API_KEYS set, those keys (the default
# tenant's) are used. Without, a key of the default tenant is made in the
# database once the schema is migrated, and kept in .data/dev-api-key: the
# operator's key, which also reads the dead-letter queues and the metrics
# labelled by tenant (docs/TENANTS.md).
dev_key_file="$ROOT/.data/dev-api-key"
if [ -n "${API_KEYS:-}" ]; then
  api_key="${API_KEYS%%,*}"
  api_key_source='API_KEYS; tenant "default"'
else
  api_key=""
  api_key_source=".data/dev-api-key; tenant \"default\", the operator's"
fi
export API_KEYS="${API_KEYS:-}"

pids=()
names=()
cleanup() {
  trap - INT TERM EXIT
  [ "${#pids[@]}" -eq 0 ] && return
  log "stopping ${names[*]}"
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    # Stop in reverse order: worker, api, sink, then Temporal.
    for _ in $(seq 1 150); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "${pids[$i]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT
trap 'exit 0' TERM

# spawn NAME COMMAND...: starts a background process we own.
spawn() {
  local name=$1; shift
  "$@" &
  pids+=("$!")
  names+=("$name")
}

# supervise NAME COMMAND...: like spawn, but starts the process again when it
# dies unasked (a crash, a kill -9), as a process manager would; a process
# that keeps dying within seconds of its start is given up after 5 tries,
# which stops everything.
supervise() {
  local name=$1; shift
  (
    child=""
    trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0' TERM INT
    quick=0
    while true; do
      started=$SECONDS
      "$@" &
      child=$!
      status=0
      wait "$child" || status=$?
      if [ $((SECONDS - started)) -lt 5 ]; then quick=$((quick + 1)); else quick=0; fi
      if [ "$quick" -ge 5 ]; then
        log "$name keeps exiting (status $status); giving up"
        exit "$status"
      fi
      log "$name exited (status $status); starting it again"
      sleep 1
    done
  ) &
  pids+=("$!")
  names+=("$name")
}

http_ok() { curl -fs -o /dev/null --max-time 2 "$1" 2>/dev/null; }

"$ROOT/scripts/services.sh"
ensure_temporal_cli

log "building binaries into bin/"
go build -o "$ROOT/bin/" ./cmd/...

export TEMPORAL_ADDRESS="${TEMPORAL_ADDRESS:-127.0.0.1:7233}"
# The Temporal server: the pinned server on the local PostgreSQL with four
# history shards and the Web UI on :8233 (scripts/temporal-postgres.sh): with
# it a delivered notification costs all processes ~40% less CPU than with the
# CLI's dev server, and a burst is delivered ~1.7 times as fast
# (make bench-ab; docs/PERFORMANCE.md);
# TEMPORAL_SERVER=dev starts the dev server instead (state in SQLite).
mkdir -p "$ROOT/.data"
if port_open "${TEMPORAL_ADDRESS%:*}" "${TEMPORAL_ADDRESS##*:}"; then
  log "using the Temporal server already at $TEMPORAL_ADDRESS"
elif [ "${TEMPORAL_SERVER:-postgres}" = dev ]; then
  log "starting Temporal dev server (state in .data/temporal.db, log in .data/temporal.log)"
  spawn temporal "$ROOT/scripts/temporal-dev.sh" >"$ROOT/.data/temporal.log" 2>&1
  wait_for "Temporal" 90 "$TEMPORAL_BIN" operator cluster health --address "$TEMPORAL_ADDRESS" --command-timeout 2s
else
  log "starting the Temporal server on PostgreSQL (state in the databases temporal and temporal_visibility, log in .data/temporal.log)"
  spawn temporal "$ROOT/scripts/temporal-postgres.sh" >"$ROOT/.data/temporal.log" 2>&1
  temporal_pid="${pids[-1]}"
  temporal_ready() {
    kill -0 "$temporal_pid" 2>/dev/null || die "the Temporal server stopped while starting; see .data/temporal.log"
    grep -q "Temporal server ready" "$ROOT/.data/temporal.log"
  }
  # The first start builds the server and its UI (a few minutes).
  wait_for "Temporal" 900 temporal_ready
fi

log "migrating the database"
"$ROOT/bin/migrate" up
if [ -z "$API_KEYS" ]; then
  # The development key lives in the database (tenant "default"); the API
  # starts with API_KEYS empty and reads keys from there. A key made before
  # tenants ("dev-…"), or one not active in this database (revoked, expired,
  # another database) or of another tenant (an older make run made one of
  # tenant "development", which cannot read the dead-letter queues), is
  # replaced, and revoked if this database has it.
  if [ -s "$dev_key_file" ]; then
    prefix="$(head -c 11 "$dev_key_file")"
    case "$prefix" in
      dev-*)
        log "replacing the development API key made before tenants (.data/dev-api-key)"
        rm -f "$dev_key_file" ;;
      *)
        dev_keys="$("$ROOT/bin/dispatchctl" keys list --tenant default)"
        if ! grep -q "^$prefix .*[[:space:]]active\$" <<<"$dev_keys"; then
          log "replacing .data/dev-api-key: its key is not an active key of tenant \"default\" in this database"
          "$ROOT/bin/dispatchctl" keys revoke "$prefix" >/dev/null 2>&1 || true
          rm -f "$dev_key_file"
        fi ;;
    esac
  fi
  if [ ! -s "$dev_key_file" ]; then
    mkdir -p "$ROOT/.data"
    key="$("$ROOT/bin/dispatchctl" keys create --tenant default --name "make run" | tail -n 1)"
    [[ "$key" == de_* ]] || die "dispatchctl keys create printed no key"
    secret_file "$dev_key_file" printf '%s\n' "$key"
    log "made a development API key of tenant \"default\" (the operator's) in .data/dev-api-key"
  fi
  chmod 600 "$dev_key_file"
  api_key="$(cat "$dev_key_file")"
fi

# The example providers file routes sms, email and push to providers the
# sink plays (docs/PROVIDERS.md); its push provider sends receipts, signed
# with a development secret kept in .data.
if [ -z "${PROVIDERS_FILE+set}" ] && [ -z "${WEBHOOK_SITE_URL:-}" ]; then
  export PROVIDERS_FILE="$ROOT/deploy/providers.example.yaml"
  push_secret_file="$ROOT/.data/dev-push-provider-secret"
  secret_file "$push_secret_file" new_webhook_secret
  export PUSH_PROVIDER_SECRET="$(cat "$push_secret_file")"
  # Its apns provider trusts the sink's fake APNs: the sink writes the CA
  # and the .p8 key there before its HTTP port opens.
  export APNS_KEY_FILE="$ROOT/.data/apns/AuthKey.p8" APNS_CA_FILE="$ROOT/.data/apns/ca.pem"
  # Its fcm provider buys tokens from the sink's fake FCM with the service
  # account key the sink keeps there (-fcm-dir, .data/fcm by default).
  export FCM_CREDENTIALS_FILE="$ROOT/.data/fcm/service-account.json"
  # Its sendgrid provider calls the sink's fake SendGrid with a development
  # key, and trusts the event batches the sink signs with the key it keeps
  # in .data.
  new_sendgrid_key() { printf 'SG.%s\n' "$(head -c 24 /dev/urandom | base64 | tr -d '\n/+=')"; }
  sendgrid_key_file="$ROOT/.data/dev-sendgrid-api-key"
  secret_file "$sendgrid_key_file" new_sendgrid_key
  export SENDGRID_API_KEY="$(cat "$sendgrid_key_file")" SINK_SENDGRID_API_KEY="$(cat "$sendgrid_key_file")"
  export SENDGRID_EVENT_PUBLIC_KEY="$("$ROOT/bin/sink" -sendgrid-event-key "$ROOT/.data/dev-sendgrid-event-key.pem" -print-sendgrid-public-key)"
fi

if [ -z "${WEBHOOK_SITE_URL:-}" ]; then
  export WEBHOOK_SITE_URL="http://127.0.0.1:9090/webhook"
  spawn sink "$ROOT/bin/sink" -addr 127.0.0.1:9090 -smtp-addr 127.0.0.1:2525 \
    -receipts-url "${RECEIPTS_BASE_URL:-http://127.0.0.1:${API_PORT:-8080}}/v1/receipts/" -receipts-paths /push \
    -receipts-secret "${PUSH_PROVIDER_SECRET:-}" -apns-dir "$ROOT/.data/apns" \
    -sendgrid-event-key "$ROOT/.data/dev-sendgrid-event-key.pem" \
    -sendgrid-events-url "${RECEIPTS_BASE_URL:-http://127.0.0.1:${API_PORT:-8080}}/v1/receipts/sendgrid"
  wait_for "sink" 20 port_open 127.0.0.1 9090
else
  log "delivering to WEBHOOK_SITE_URL=$WEBHOOK_SITE_URL (no local sink)"
fi

export LOG_FORMAT="${LOG_FORMAT:-console}"
api_port="${API_PORT:-8080}"
# Emails of a category that is not critical carry a one-click unsubscribe
# link to this API (docs/RECIPIENTS.md).
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://127.0.0.1:$api_port}"
metrics_port="${WORKER_METRICS_PORT:-8081}"
supervise api "$ROOT/bin/api"
supervise worker "$ROOT/bin/worker"
wait_for "API" 60 http_ok "http://127.0.0.1:$api_port/readyz"
wait_for "worker" 60 http_ok "http://127.0.0.1:$metrics_port/readyz"

cat >&2 <<MSG

  Dispatch Engine is running (ready in $((SECONDS - started_at))s)

  API              http://127.0.0.1:$api_port        (/livez /readyz /metrics /v1/notifications)
  API key          $api_key   (from $api_key_source)
  Worker metrics   http://127.0.0.1:$metrics_port/metrics
  Temporal Web UI  http://127.0.0.1:${TEMPORAL_UI_PORT:-8233}
  Provider         $WEBHOOK_SITE_URL
  Providers file   ${PROVIDERS_FILE:-(none: WEBHOOK_SITE_URL serves every channel)}
$( [ "$WEBHOOK_SITE_URL" = "http://127.0.0.1:9090/webhook" ] && echo "  Sink stats       http://127.0.0.1:9090/_sink/stats   (emails: /_sink/mail, SMTP on 127.0.0.1:2525)" )

  Try:  curl -s -XPOST localhost:$api_port/v1/notifications -H "Authorization: Bearer $api_key" \\
          -H 'content-type: application/json' \\
          -d '{"channel":"sms","recipient":"+14155550123","content":"hello","priority":"HIGH"}'

  Ctrl-C stops what this command started.

MSG

# Exit (and stop everything) as soon as the sink or Temporal dies, or the api
# or the worker keeps dying.
set +e
wait -n "${pids[@]}"
status=$?
log "a process exited (status $status); stopping the rest"
exit "$status"
