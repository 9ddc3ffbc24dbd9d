#!/usr/bin/env bash
# make ui-screenshots: the screenshots of docs/TEMPORAL_UI.md, taken from a
# running stack (make run, or TEMPORAL_SERVER=dev make run, in another
# terminal, with its example providers file: sms routes to sms-primary, then
# sms-backup, both played by the sink on :9090). It sends four sms through the
# API and tells the sink how to answer each:
#
#   delivered  every provider answers 200
#   failover   sms-primary answers 503, so the next attempt goes to sms-backup
#   failed     both answer 400: FAILED (permanent) at the first attempt
#   retried    failed as the one above, then retried (POST .../retry) and
#              delivered: a second run of the same workflow id
#   cancelled  scheduled an hour ahead, then cancelled while its workflow waits
#
# waits for each to reach its status through GET /v1/notifications/{id}, then
# has headless Chromium (tools/ui-screenshots.mjs, playwright-core) open each
# workflow's page in the Temporal Web UI and the workflow list, and writes
# docs/images/temporal-ui-<name>.png. The sink's sms answers are reset at the
# end, whatever happened. CHROMIUM names the browser (default
# /usr/bin/chromium: apt-get install chromium).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"
load_env

api="http://127.0.0.1:${API_PORT:-8080}"
ui="http://127.0.0.1:${TEMPORAL_UI_PORT:-8233}"
sink="http://127.0.0.1:9090"
out="$ROOT/docs/images"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

command -v jq >/dev/null || die "make ui-screenshots needs jq (apt-get install jq)"
[ -x "$CHROMIUM" ] || die "no Chromium at $CHROMIUM: apt-get install chromium, or set CHROMIUM to a Chromium or Chrome binary"
[ -d "$ROOT/tools/node_modules/playwright-core" ] || die "playwright-core is not installed: run make ui-screenshots (it runs npm ci in tools/) or cd tools && npm ci"

# The stack must be up already: this script starts nothing.
curl -fs -o /dev/null --max-time 3 "$api/readyz" ||
  die "the API does not answer at $api/readyz: start the stack first (make run, or TEMPORAL_SERVER=dev make run, in another terminal) and wait for its banner"
curl -fs -o /dev/null --max-time 3 "$ui/" ||
  die "the Temporal Web UI does not answer at $ui: make run starts it on :${TEMPORAL_UI_PORT:-8233}"
curl -fs -o /dev/null --max-time 3 "$sink/_sink/stats" ||
  die "the sink does not answer at $sink: make run starts it unless WEBHOOK_SITE_URL is set"

if [ -n "${API_KEYS:-}" ]; then
  key="${API_KEYS%%,*}"
elif [ -s "$ROOT/.data/dev-api-key" ]; then
  key="$(cat "$ROOT/.data/dev-api-key")"
else
  die "no API key: set API_KEYS, or let make run make .data/dev-api-key"
fi

# The failover and the failure need sms routed to the two providers of
# deploy/providers.example.yaml, which make run uses unless told otherwise.
sms_providers="$(curl -fs --max-time 5 -H "Authorization: Bearer $key" "$api/v1/providers" |
  jq -r '[.data[] | select(.channels | index("sms")) | .name] | join(" ")' || true)"
[ "$sms_providers" = "sms-primary sms-backup" ] ||
  die "sms is not routed to sms-primary and sms-backup (GET /v1/providers: ${sms_providers:-no answer}): run make run with its example providers file (no PROVIDERS_FILE, no WEBHOOK_SITE_URL)"

# sink_answer PATH JSON: how the sink answers on PATH (internal/sink.Config).
sink_answer() {
  curl -fs -o /dev/null --max-time 5 -X PUT "$sink/_sink/config/$1" -H 'content-type: application/json' -d "$2"
}

# reset_sink: both sms providers accept everything again.
reset_sink() {
  sink_answer sms-primary '{}' || log "could not reset the sink's sms-primary answers"
  sink_answer sms-backup '{}' || log "could not reset the sink's sms-backup answers"
}
trap reset_sink EXIT

# send NAME [JSON FIELDS]: creates an sms notification and prints its id.
send() {
  local name=$1 extra=${2:-}
  local body answer id
  body="{\"channel\":\"sms\",\"recipient\":\"+14155550100\",\"content\":\"Temporal UI screenshot: $name\",\"priority\":\"NORMAL\"${extra:+,$extra}}"
  answer="$(curl -fsS --max-time 10 -X POST "$api/v1/notifications" -H "Authorization: Bearer $key" \
    -H 'content-type: application/json' -d "$body")" || die "POST /v1/notifications ($name) failed"
  id="$(jq -r '.id // empty' <<<"$answer")"
  [ -n "$id" ] || die "POST /v1/notifications ($name) answered no id: $answer"
  printf '%s\n' "$id"
}

# status ID: the notification's status now.
status() {
  curl -fs --max-time 5 -H "Authorization: Bearer $key" "$api/v1/notifications/$1" | jq -r '.status // empty'
}

# await NAME ID STATUS: waits up to 60 s until the notification has STATUS;
# any other final status is an error.
await() {
  local name=$1 id=$2 want=$3 now=""
  local deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    now="$(status "$id" || true)"
    [ "$now" = "$want" ] && { log "$name: $id is $want"; return 0; }
    case "$now" in
      DELIVERED | FAILED | CANCELLED) die "$name: $id ended $now, not $want" ;;
    esac
    sleep 0.3
  done
  die "$name: $id is ${now:-unknown}, not $want, after 60s"
}

# await_running ID: waits until the notification's workflow runs (the
# consumer starts it shortly after the POST), so the cancel reaches it.
await_running() {
  local deadline=$((SECONDS + 60))
  until "$TEMPORAL_BIN" workflow describe --address "${TEMPORAL_ADDRESS:-127.0.0.1:7233}" \
    --workflow-id "notification-$1" -o json 2>/dev/null | jq -e '.workflowExecutionInfo.status == "WORKFLOW_EXECUTION_STATUS_RUNNING"' >/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "the workflow notification-$1 did not start within 60s"
    sleep 0.3
  done
}

reset_sink

delivered="$(send delivered)"
await delivered "$delivered" DELIVERED

sink_answer sms-primary '{"failRate":1,"failStatus":503}'
failover="$(send failover)"
await failover "$failover" DELIVERED

sink_answer sms-backup '{"failRate":1,"failStatus":400}'
sink_answer sms-primary '{"failRate":1,"failStatus":400}'
failed="$(send failed)"
retried="$(send retried)"
await failed "$failed" FAILED
await retried "$retried" FAILED
reset_sink
curl -fsS -o /dev/null --max-time 10 -X POST "$api/v1/notifications/$retried/retry" -H "Authorization: Bearer $key" ||
  die "POST /v1/notifications/$retried/retry failed"
await retried "$retried" DELIVERED

cancelled="$(send cancelled "\"scheduledAt\":\"$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)\"")"
await_running "$cancelled"
curl -fsS -o /dev/null --max-time 10 -X POST "$api/v1/notifications/$cancelled/cancel" -H "Authorization: Bearer $key" ||
  die "POST /v1/notifications/$cancelled/cancel failed"
await cancelled "$cancelled" CANCELLED

mkdir -p "$out"
log "taking the screenshots with $CHROMIUM into docs/images/"
node "$ROOT/tools/ui-screenshots.mjs" --ui "$ui" --out "$out" \
  "delivered=$delivered" "failover=$failover" "failed=$failed" "cancelled=$cancelled" "retried=$retried"
