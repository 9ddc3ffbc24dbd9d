#!/usr/bin/env bash
# make lint-selftest: proves that the design rules of make lint bite, on a
# throwaway copy of the module's layout in a temp dir (the work tree is not
# touched). It holds the repository's go.mod, go.sum and .golangci.yml, a stub
# internal/testenv, and files that must fail and files that must pass:
#   depguard (golangci-lint, .golangci.yml's rules):
#     workflows/ importing net/http, os, math/rand/v2, the SDK's client or a
#     module outside the SDK fails; importing time and the SDK's workflow and
#     temporal packages passes, and so does a workflows/ test importing
#     net/http and internal/testenv;
#     non-test code importing internal/testenv fails, a test importing it passes.
#   workflowcheck: a workflow calling time.Now fails, one calling workflow.Now
#     passes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$ROOT/go.mod" "$ROOT/go.sum" "$ROOT/.golangci.yml" "$tmp/"
# The product's go.mod replaces the client module with ./client.
mkdir -p "$tmp/client" && cp "$ROOT/client/go.mod" "$ROOT/client/go.sum" "$tmp/client/"
mkdir -p "$tmp/workflows" "$tmp/internal/testenv" "$tmp/internal/leak"

put() { cat >"$tmp/$1"; }
put internal/testenv/testenv.go <<'EOF'
package testenv
EOF
put internal/leak/leak.go <<'EOF'
package leak

import _ "github.com/dispatch-engine/dispatch-engine/internal/testenv"
EOF
put internal/leak/leak_test.go <<'EOF'
package leak

import _ "github.com/dispatch-engine/dispatch-engine/internal/testenv"
EOF
put workflows/net.go <<'EOF'
package workflows

import _ "net/http"
EOF
put workflows/os.go <<'EOF'
package workflows

import _ "os"
EOF
put workflows/rand.go <<'EOF'
package workflows

import _ "math/rand/v2"
EOF
put workflows/client.go <<'EOF'
package workflows

import _ "go.temporal.io/sdk/client"
EOF
put workflows/uuid.go <<'EOF'
package workflows

import _ "github.com/google/uuid"
EOF
put workflows/good.go <<'EOF'
package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

var _ = temporal.NewNonRetryableApplicationError

// Good is deterministic: it reads the workflow's clock.
func Good(ctx workflow.Context) (time.Time, error) {
	return workflow.Now(ctx), nil
}
EOF
put workflows/clock.go <<'EOF'
package workflows

import (
	"time"

	"go.temporal.io/sdk/workflow"
)

// Clock is not deterministic: it reads the machine's clock.
func Clock(ctx workflow.Context) (time.Time, error) {
	return time.Now(), nil
}
EOF
put workflows/good_test.go <<'EOF'
package workflows

import (
	_ "net/http"
	"testing"

	_ "github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

func TestNothing(t *testing.T) {}
EOF

failed=0
fail() { printf 'lint-selftest: %s\n' "$*" >&2; failed=1; }

# depguard, with the repository's configuration.
set +e
(cd "$tmp" && "$GOLANGCI_LINT_BIN" run --enable-only depguard --output.text.colors=false --output.text.print-issued-lines=false ./...) >"$tmp/depguard.out" 2>&1
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "golangci-lint exited $rc, want 1 (issues found)"
expect_denied() { # FILE PACKAGE RULE
  grep -Eq "^$1:[0-9]+:[0-9]+: import '$2' is not allowed from list '$3'" "$tmp/depguard.out" ||
    fail "depguard did not reject $2 in $1 (rule $3)"
}
expect_denied workflows/net.go net/http workflows
expect_denied workflows/os.go os workflows
expect_denied workflows/rand.go math/rand/v2 workflows
expect_denied workflows/client.go go.temporal.io/sdk/client workflows
expect_denied workflows/uuid.go github.com/google/uuid workflows
expect_denied internal/leak/leak.go github.com/dispatch-engine/dispatch-engine/internal/testenv testenv
for ok in workflows/good.go workflows/clock.go workflows/good_test.go internal/leak/leak_test.go; do
  if grep -q "^$ok:" "$tmp/depguard.out"; then fail "depguard rejected $ok, which is allowed"; fi
done

# workflowcheck.
set +e
(cd "$tmp" && "$WORKFLOWCHECK_BIN" ./workflows/...) >"$tmp/workflowcheck.out" 2>&1
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "workflowcheck exited 0 on a workflow calling time.Now"
grep -q "workflows/clock.go:.*Clock is non-deterministic, reason: calls non-deterministic function time.Now" "$tmp/workflowcheck.out" ||
  fail "workflowcheck did not report Clock's time.Now"
if grep -q "Good is non-deterministic" "$tmp/workflowcheck.out"; then fail "workflowcheck rejected Good, which is deterministic"; fi

if [ "$failed" -ne 0 ]; then
  echo "--- golangci-lint (depguard) said:" >&2; cat "$tmp/depguard.out" >&2
  echo "--- workflowcheck said:" >&2; cat "$tmp/workflowcheck.out" >&2
  exit 1
fi
echo "lint-selftest: depguard rejects net/http, os, math/rand/v2, the SDK's client and other modules in workflows/ and internal/testenv outside tests; workflowcheck rejects time.Now in a workflow; the allowed files pass"
