# Shared helpers for the project's scripts. Source it; it sets ROOT.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

# The Temporal CLI version is pinned here and only here.
TEMPORAL_CLI_VERSION="v1.5.1"
TEMPORAL_BIN="$ROOT/.tools/bin/temporal"
export TEMPORAL_CLI_VERSION TEMPORAL_BIN

# The Temporal server run on PostgreSQL (make temporal-postgres) is pinned here
# too: the same server version the CLI's dev server embeds.
TEMPORAL_SERVER_VERSION="v1.29.1"
TEMPORAL_SERVER_BIN="$ROOT/.tools/bin/temporal-server"
TEMPORAL_SQL_TOOL_BIN="$ROOT/.tools/bin/temporal-sql-tool"
export TEMPORAL_SERVER_VERSION TEMPORAL_SERVER_BIN TEMPORAL_SQL_TOOL_BIN

# The Temporal Web UI beside that server (the dev server embeds it; the server
# binary has none): the UI server module the pinned CLI embeds, the same
# version, built from the module proxy like the rest.
TEMPORAL_UI_VERSION="v2.42.1"
TEMPORAL_UI_BIN="$ROOT/.tools/bin/temporal-ui-server"
export TEMPORAL_UI_VERSION TEMPORAL_UI_BIN

# The linters of make lint are pinned here too, and built the same way from
# the module proxy into .tools/bin, outside the product's go.mod:
# golangci-lint (config in .golangci.yml) and Temporal's workflowcheck, which
# is released apart from the SDK (a module and tags of its own): v0.6.0 is its
# newest release, the one current with go.temporal.io/sdk v1.51.0 in go.mod
# (the SDK internals it treats as deterministic are all still in v1.51.0).
GOLANGCI_LINT_VERSION="v2.15.0"
GOLANGCI_LINT_BIN="$ROOT/.tools/bin/golangci-lint"
WORKFLOWCHECK_VERSION="v0.6.0"
WORKFLOWCHECK_BIN="$ROOT/.tools/bin/workflowcheck"
export GOLANGCI_LINT_VERSION GOLANGCI_LINT_BIN WORKFLOWCHECK_VERSION WORKFLOWCHECK_BIN

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# secret_file FILE COMMAND...: unless FILE holds something already, writes
# COMMAND's output to it; either way FILE ends readable and writable by its
# owner alone (0600). A new FILE is made under umask 077 and renamed into
# place, so it is never readable by others, not even while it is written; one
# an older make run left readable by others is made 0600.
secret_file() {
  local file=$1; shift
  if [ ! -s "$file" ]; then
    (umask 077 && "$@" >"$file.new" && mv -f "$file.new" "$file")
  fi
  chmod 600 "$file"
}

# new_webhook_secret: prints a new Standard Webhooks secret (whsec_ and 32
# random bytes in base64).
new_webhook_secret() { printf 'whsec_%s\n' "$(head -c 32 /dev/urandom | base64 | tr -d '\n')"; }

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND every 0.2s until it succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what did not come up within ${secs}s"
    sleep 0.2
  done
}

# load_env: exports .env (if present) without overriding variables already set.
load_env() {
  [ -f "$ROOT/.env" ] || return 0
  local line key
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%%#*}"
    [[ "$line" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    key="${BASH_REMATCH[1]}"
    [ -n "${!key+x}" ] && continue
    local value="${BASH_REMATCH[2]}"
    value="${value%"${value##*[![:space:]]}"}"
    value="${value#\"}"; value="${value%\"}"
    export "$key=$value"
  done < "$ROOT/.env"
}

# ensure_temporal_cli: builds the pinned Temporal CLI into .tools/bin once.
ensure_temporal_cli() {
  if [ -x "$TEMPORAL_BIN" ] && go version -m "$TEMPORAL_BIN" 2>/dev/null | grep -q "mod[[:space:]]*github.com/temporalio/cli[[:space:]]*$TEMPORAL_CLI_VERSION"; then
    return 0
  fi
  log "building Temporal CLI $TEMPORAL_CLI_VERSION into .tools/bin (first time only, a few minutes)"
  mkdir -p "$ROOT/.tools/bin"
  GOBIN="$ROOT/.tools/bin" go install "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION"
}

# ensure_go_tool NAME BIN MODULE PACKAGE VERSION: builds PACKAGE@VERSION into
# .tools/bin once; again only when BIN is missing or was built from another
# version of MODULE.
ensure_go_tool() {
  local name=$1 bin=$2 module=$3 pkg=$4 version=$5
  if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | grep -q "mod[[:space:]]*$module[[:space:]]*$version[[:space:]]"; then
    return 0
  fi
  log "building $name $version into .tools/bin (first time only, a minute or two)"
  mkdir -p "$ROOT/.tools/bin"
  GOBIN="$ROOT/.tools/bin" go install "$pkg@$version"
}

ensure_golangci_lint() {
  ensure_go_tool golangci-lint "$GOLANGCI_LINT_BIN" github.com/golangci/golangci-lint/v2 \
    github.com/golangci/golangci-lint/v2/cmd/golangci-lint "$GOLANGCI_LINT_VERSION"
}

ensure_workflowcheck() {
  ensure_go_tool workflowcheck "$WORKFLOWCHECK_BIN" go.temporal.io/sdk/contrib/tools/workflowcheck \
    go.temporal.io/sdk/contrib/tools/workflowcheck "$WORKFLOWCHECK_VERSION"
}

# ensure_temporal_server: builds the pinned Temporal server and its SQL schema
# tool into .tools/bin once, as temporal-server and temporal-sql-tool.
ensure_temporal_server() {
  local bin
  for bin in "$TEMPORAL_SERVER_BIN" "$TEMPORAL_SQL_TOOL_BIN"; do
    if ! { [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | grep -q "mod[[:space:]]*go.temporal.io/server[[:space:]]*$TEMPORAL_SERVER_VERSION"; }; then
      log "building Temporal server $TEMPORAL_SERVER_VERSION into .tools/bin (first time only, a few minutes)"
      local stage="$ROOT/.tools/build-temporal-server"
      rm -rf "$stage" && mkdir -p "$stage" "$ROOT/.tools/bin"
      GOBIN="$stage" go install \
        "go.temporal.io/server/cmd/server@$TEMPORAL_SERVER_VERSION" \
        "go.temporal.io/server/cmd/tools/sql@$TEMPORAL_SERVER_VERSION"
      mv "$stage/server" "$TEMPORAL_SERVER_BIN"
      mv "$stage/sql" "$TEMPORAL_SQL_TOOL_BIN"
      rm -rf "$stage"
      return 0
    fi
  done
}

# ensure_temporal_ui: builds the pinned Temporal UI server into .tools/bin once.
ensure_temporal_ui() {
  if [ -x "$TEMPORAL_UI_BIN" ] && go version -m "$TEMPORAL_UI_BIN" 2>/dev/null | grep -q "mod[[:space:]]*github.com/temporalio/ui-server/v2[[:space:]]*$TEMPORAL_UI_VERSION"; then
    return 0
  fi
  log "building Temporal UI server $TEMPORAL_UI_VERSION into .tools/bin (first time only, a minute)"
  local stage="$ROOT/.tools/build-temporal-ui"
  rm -rf "$stage" && mkdir -p "$stage" "$ROOT/.tools/bin"
  GOBIN="$stage" go install "github.com/temporalio/ui-server/v2/cmd/server@$TEMPORAL_UI_VERSION"
  mv "$stage/server" "$TEMPORAL_UI_BIN"
  rm -rf "$stage"
}

# temporal_server_module_dir: where the Go module cache holds the pinned
# server's source (schemas and sample configs), downloading it if needed.
temporal_server_module_dir() {
  go mod download -json "go.temporal.io/server@$TEMPORAL_SERVER_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p'
}

# temporal_dev_args: the dev server's flags — the search attributes and the
# dynamic config the product relies on (DESIGN §5), and SQLite in WAL mode.
temporal_dev_args() {
  printf '%s\n' \
    --search-attribute NotificationStatus=Keyword \
    --search-attribute NotificationChannel=Keyword \
    --search-attribute NotificationPriority=Keyword \
    --search-attribute NotificationAttempts=Int \
    --search-attribute NotificationBatchId=Keyword \
    --search-attribute NotificationProvider=Keyword \
    --search-attribute NotificationTenant=Keyword \
    --dynamic-config-value matching.useNewMatcher=true \
    --dynamic-config-value matching.enableFairness=true \
    --dynamic-config-value matching.numTaskqueueReadPartitions=1 \
    --dynamic-config-value matching.numTaskqueueWritePartitions=1 \
    --sqlite-pragma journal_mode=wal \
    --sqlite-pragma synchronous=normal
}
