#!/usr/bin/env bash
# make bench-ab BASE=<revision>: the same bench against two builds on this
# machine, interleaved (base, head, base, head, ...), so a before/after ratio
# comes from one run on one machine rather than from figures taken on
# different days. The base is checked out into .data/ab/base (a git
# worktree); the head is this checkout, uncommitted changes included. Every
# round starts each side afresh: its own `make run` (Ctrl-C stops it), an
# empty product database, and an empty Temporal state (the dev server's
# SQLite file, or the Postgres-backed server's two databases), so neither
# side pays for the other's dead rows (this machine's PostgreSQL may run
# without autovacuum). Each run's output is kept in .data/ab/; a table of
# the figures that matter ends it.
#
# BASE (required), ROUNDS (2), BENCH_FLAGS (3,000 notifications by single
# POSTs at 32 clients, no ingest, no paced section).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$ROOT"

base="${BASE:-}"
[ -n "$base" ] || die "BASE=<revision> names the build to compare with (say, BASE=origin/main or a commit)"
rounds="${ROUNDS:-2}"
read -r -a bench_flags <<<"${BENCH_FLAGS:---skip-ingest --no-batch --n 3000 --ceiling-n 300 --idle 10 --paced-duration 0}"
command -v jq >/dev/null || die "make bench-ab needs jq for its table (apt-get install jq)"
port_open 127.0.0.1 "${API_PORT:-8080}" && die "something listens on the API port already: stop make run first"

out="$ROOT/.data/ab"
mkdir -p "$out"
base_dir="$out/base"
if [ -d "$base_dir" ]; then
  git -C "$base_dir" checkout -q --detach "$base"
else
  git worktree add -q --detach "$base_dir" "$base"
fi
# The tools (the Temporal CLI and server) are the same pinned builds.
mkdir -p "$base_dir/.tools"
[ -e "$base_dir/.tools/bin" ] || ln -s "$ROOT/.tools/bin" "$base_dir/.tools/bin"
base_rev="$(git -C "$base_dir" rev-parse --short HEAD)"
head_rev="$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo +changes)"
log "base $base_rev in .data/ab/base, head $head_rev here; $rounds rounds; bench ${bench_flags[*]}"

# One bench binary, built before anything is measured, measures both sides.
go build -C tools/bench -o "$out/bench" .

pg() { psql -h 127.0.0.1 -U postgres -d postgres -tAq -v ON_ERROR_STOP=1 -c "$1"; }

stack_pid=""
stop_stack() {
  [ -n "$stack_pid" ] || return 0
  kill -TERM -- "-$stack_pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 -- "-$stack_pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$stack_pid" 2>/dev/null || true
  stack_pid=""
  # The next side binds the same ports.
  wait_for "the stack's ports to close" 30 ports_closed
}
ports_closed() { ! port_open 127.0.0.1 "${API_PORT:-8080}" && ! port_open 127.0.0.1 7233 && ! port_open 127.0.0.1 9090; }
trap stop_stack EXIT
trap 'exit 130' INT TERM

# run_side NAME DIR ROUND: one fresh stack of DIR and one bench against it.
run_side() {
  local name=$1 dir=$2 round=$3 db="dispatch_ab_$1"
  log "round $round: $name"
  pg "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  pg "CREATE DATABASE $db"
  pg "DROP DATABASE IF EXISTS temporal WITH (FORCE)"
  pg "DROP DATABASE IF EXISTS temporal_visibility WITH (FORCE)"
  rm -f "$dir"/.data/temporal.db* "$dir/.data/dev-api-key"
  local logf="$out/$name-$round.log"
  # In a session of its own (setsid keeps the pid: a background job of a
  # script leads no group), so stop_stack stops all of it.
  DATABASE_DSN="postgres://postgres@127.0.0.1:5432/$db?sslmode=disable" PROVIDERS_FILE= \
    setsid bash -c 'cd "$1" && exec make run' _ "$dir" >"$logf" 2>&1 &
  stack_pid=$!
  wait_for "$name's make run" 900 grep -q "Dispatch Engine is running" "$logf"
  "$out/bench" "${bench_flags[@]}" --api-key "$(cat "$dir/.data/dev-api-key")" \
    --database-dsn "postgres://postgres@127.0.0.1:5432/$db?sslmode=disable" >"$out/$name-$round.txt" 2>"$out/$name-$round.err" ||
    log "the bench of $name round $round failed; see .data/ab/$name-$round.err"
  stop_stack
}

for round in $(seq 1 "$rounds"); do
  run_side base "$base_dir" "$round"
  run_side head "$ROOT" "$round"
done

printf '\nA/B  (base %s, head %s; %s)\n' "$base_rev" "$head_rev" "${bench_flags[*]}"
printf '%-8s %12s %8s %8s %8s %8s %9s %9s %8s %8s\n' run "delivered/s" events api worker temporal postgres rabbitmq redis total
for f in "$out"/base-*.txt "$out"/head-*.txt; do
  [ -f "$f" ] || continue
  grep '^BENCH_JSON ' "$f" | cut -d' ' -f2- | jq -r --arg run "$(basename "$f" .txt)" '
    def cost($n): ([.cost.processes[] | select(.name == $n) | .cpuSecondsPer1000][0] // null);
    [$run, (.endToEnd.deliveredPerSec | tostring), (.endToEnd.history.events | tostring),
     (cost("api"), cost("worker"), cost("temporal"), cost("postgres"), cost("rabbitmq"), cost("redis") | tostring),
     (.cost.cpuSecondsPer1000 | tostring)] | @tsv' |
    awk -F'\t' '{printf "%-8s %12s %8s %8s %8s %8s %8s %9s %9s %8s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10}'
done
echo "(CPU in ms per delivered notification: CPU s per 1,000; events: history events per notification workflow)"
