#!/usr/bin/env bash
# Runs the pinned Temporal CLI's dev server in the foreground: frontend on
# TEMPORAL_ADDRESS (default 127.0.0.1:7233), Web UI on 127.0.0.1:8233, state in
# .data/temporal.db, with the product's search attributes and dynamic config.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
load_env
ensure_temporal_cli

address="${TEMPORAL_ADDRESS:-127.0.0.1:7233}"
mkdir -p "$ROOT/.data"
mapfile -t extra < <(temporal_dev_args)
exec "$TEMPORAL_BIN" server start-dev \
  --ip "${address%:*}" --port "${address##*:}" \
  --ui-ip 127.0.0.1 --ui-port "${TEMPORAL_UI_PORT:-8233}" \
  --db-filename "$ROOT/.data/temporal.db" \
  --log-level warn \
  "${extra[@]}"
