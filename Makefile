# Dispatch Engine — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TEMPORAL_CLI := $(CURDIR)/.tools/bin/temporal
GOLANGCI_LINT := $(CURDIR)/.tools/bin/golangci-lint
WORKFLOWCHECK := $(CURDIR)/.tools/bin/workflowcheck
GO_TEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Start everything locally (services, Temporal dev server, migrations, sink, API, worker)
	@scripts/run.sh

.PHONY: build
build: ## Build api, worker, dispatchctl, migrate and sink into bin/
	go build -o bin/ ./cmd/...

.PHONY: test
test: services temporal-cli tools/node_modules/.installed test-bench test-client ## Run all tests (unit, integration, end-to-end, the Postman collection with newman) against the real services, with -race
	TEMPORAL_CLI=$(TEMPORAL_CLI) go test $(GO_TEST_FLAGS) ./...

# The packages whose tests need no service (PostgreSQL, Redis, RabbitMQ,
# Temporal): a workflow's logic in Temporal's test environment, the
# contract's decoders, the providers against in-process fakes. test-unit
# points the test services at closed ports, so a test that reached for one
# would fail here rather than pass by luck.
UNIT_PKGS = ./workflows/ ./cmd/api/ ./cmd/dispatchctl/... ./internal/config/ ./internal/metrics/ \
	./internal/notification/ ./internal/provider/ ./internal/sink/ ./internal/periodic/ ./internal/profiling/
# The tests of those packages that do need PostgreSQL (the API's refusal to
# start without a key, dispatchctl's keys and tenants); make test runs them.
UNIT_SKIP = TestRefusesToStartWithoutAPIKeys|TestKeysCreateListRevoke|TestTenantsSetChangesOnlyTheFlagsGiven|TestKeysAndTenantsRefuseTextPostgreSQLCannotStore|TestKeysJSONNeverHoldsTheKey|TestKeysOnAnUnmigratedDatabaseSaysToMigrate

.PHONY: test-unit
test-unit: test-bench test-client ## Run the tests that need no services (seconds, on any machine), with -race
	TEST_SERVICES=loopback TEST_POSTGRES_DSN=postgres://127.0.0.1:1/none TEST_REDIS_URL=redis://127.0.0.1:1/0 \
		TEST_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:1/ TEMPORAL_CLI=/nonexistent go test -race -count=1 -skip '$(UNIT_SKIP)' $(UNIT_PKGS)

# The bench (tools/bench) is a Go module of its own, so its dependencies stay
# out of the product's go.mod; it builds against this checkout's packages (a
# replace in its go.mod). It is built into bin/ and run from here, the root:
# it reads .env and .data/ and starts bin/'s API and workers as make run does.
BENCH := $(CURDIR)/bin/bench

# go test ./... at the root does not reach a module of its own, so the
# bench's tests (its parsers and figures; no services) run here.
.PHONY: test-bench
test-bench: ## Run the bench's tests (tools/bench), with -race
	cd tools/bench && go test -race -count=1 ./...

# The Go client (client/) is a module of its own too, so an application that
# imports it gets only what it needs; go test ./... at the root does not
# reach it either.
.PHONY: test-client
test-client: ## Run the Go client's tests (client/), with -race
	cd client && go test -race -count=1 ./...

.PHONY: bench-build
bench-build: ## Build the bench (tools/bench) into bin/bench
	go build -C tools/bench -o $(BENCH) .

.PHONY: bench
bench: bench-build ## Measure the running stack (PROVIDERS_FILE= make run first); BENCH_FLAGS=--quick for a short run, --ordered for ordering keys
	$(BENCH) $(BENCH_FLAGS)

DURATION ?= 20m

.PHONY: soak
soak: bench-build ## Soak the running stack (PROVIDERS_FILE= make run first) at 70% of its probed capacity for DURATION (default 20m), a row a minute; fails if an accepted notification is lost. SOAK_FLAGS=--soak-rate 50 to set the rate
	$(BENCH) --soak $(DURATION) $(SOAK_FLAGS)

.PHONY: bench-ab
bench-ab: ## Bench BASE=<revision> and this checkout on this machine, interleaved (ROUNDS=2), each on a fresh stack; prints the before/after table
	@scripts/bench-ab.sh

# A count of executions, not a duration: a duration-based -fuzztime races the
# fuzz coordinator's own deadline in Go 1.26 (go.dev/issue/75804) and can
# fail with "context deadline exceeded" and no failing input.
FUZZTIME ?= 20000x

.PHONY: fuzz
fuzz: services ## Fuzz request decoding and validation (single, batch, operation) and the Retry-After parser, FUZZTIME each
	go test -run '^$$' -fuzz '^FuzzCreateNotification$$' -fuzztime $(FUZZTIME) ./internal/httpapi/
	go test -run '^$$' -fuzz '^FuzzCreateBatch$$' -fuzztime $(FUZZTIME) ./internal/httpapi/
	go test -run '^$$' -fuzz '^FuzzCreateOperation$$' -fuzztime $(FUZZTIME) ./internal/httpapi/
	go test -run '^$$' -fuzz '^FuzzParseRetryAfter$$' -fuzztime $(FUZZTIME) ./internal/provider/

.PHONY: chaos
chaos: services temporal-cli ## Fault suite: kill and restart the parts under a stream of notifications, check nothing accepted is lost (own services on ports 55432, 56379, 55672, 57233)
	TEMPORAL_CLI=$(TEMPORAL_CLI) go test -tags chaos -count=1 -v -timeout 30m ./e2e/chaos/

.PHONY: lint
lint: openapi-lint lint-deploy client-check postman-check lint-go lint-selftest ## gofmt, go vet, golangci-lint and workflowcheck (make lint-go), the tidiness of the product's, the bench's and the client's modules, the OpenAPI contract, the generated client and Postman collection, and the deployment files
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	go vet -tags chaos ./e2e/chaos/
	go mod tidy -diff
	cd tools/bench && go vet ./... && go mod tidy -diff
	cd client && go vet ./... && go mod tidy -diff

# golangci-lint (.golangci.yml: the default linters, a few cheap ones, and
# depguard holding workflows/ to the standard library and the Temporal SDK and
# internal/testenv to tests) and Temporal's workflowcheck (the determinism of
# every workflow function), both pinned in scripts/lib.sh and built from the
# module proxy into .tools/bin once, like the Temporal CLI; not in go.mod.
.PHONY: lint-go
lint-go: golangci-lint workflowcheck ## golangci-lint over the module, the bench (tools/bench) and the client (client/), workflowcheck over workflows/
	$(GOLANGCI_LINT) run ./...
	cd tools/bench && $(GOLANGCI_LINT) run --config ../../.golangci.yml ./...
	cd client && $(GOLANGCI_LINT) run --config ../.golangci.yml ./...
	$(WORKFLOWCHECK) ./workflows/...

.PHONY: lint-selftest
lint-selftest: golangci-lint workflowcheck ## Prove the rules bite: a workflow importing net/http (or calling time.Now), shipped code importing internal/testenv, must fail
	@scripts/lint-selftest.sh

.PHONY: golangci-lint
golangci-lint: ## Build the pinned golangci-lint into .tools/bin (once)
	@source scripts/lib.sh && ensure_golangci_lint

.PHONY: workflowcheck
workflowcheck: ## Build the pinned Temporal workflowcheck into .tools/bin (once)
	@source scripts/lib.sh && ensure_workflowcheck

# The deployment files, checked offline by tools/deploylint, a Go module of
# its own (pinned in its go.mod) so the product's go.mod stays lean: the
# Compose Specification loader, BuildKit's Dockerfile rules, Prometheus's
# config loader, kustomize and the Kubernetes API types.
.PHONY: lint-deploy
lint-deploy: tools/node_modules/.installed ## Check docker-compose.yml, the Dockerfile, prometheus.yml and deploy/k8s offline
	cd tools/deploylint && go vet ./... && go mod tidy -diff && go run . -root ../..
	cd tools && node k8s-schema.mjs ../deploy/k8s/*.yaml

# npm tools pinned in tools/package.json and package-lock.json, installed
# into tools/node_modules (git-ignored) by npm ci.
REDOCLY_ENV := REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true

tools/node_modules/.installed: tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund
	@touch $@

.PHONY: openapi-lint
openapi-lint: tools/node_modules/.installed ## Lint openapi.yaml with Redocly CLI (recommended rules, warnings fail)
	cd tools && $(REDOCLY_ENV) ./node_modules/.bin/redocly lint ../openapi.yaml --config redocly.yaml

# The Go client (client/) is generated from openapi.yaml by oapi-codegen,
# pinned as a tool in go.mod; client/oapi-codegen.yaml is its configuration.
OAPI_CODEGEN := go tool oapi-codegen -config client/oapi-codegen.yaml

.PHONY: client
client: ## Generate the Go client client/client.gen.go from openapi.yaml (oapi-codegen)
	$(OAPI_CODEGEN) -o client/client.gen.go openapi.yaml

.PHONY: client-check
client-check: ## Fail when client/client.gen.go differs from what make client generates
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(OAPI_CODEGEN) -o "$$tmp/client.gen.go" openapi.yaml && \
	if ! diff -u client/client.gen.go "$$tmp/client.gen.go" >"$$tmp/diff"; then \
	  echo "client/client.gen.go is not what openapi.yaml generates: run make client. The difference (first 40 lines):" >&2; \
	  head -n 40 "$$tmp/diff" >&2; exit 1; \
	fi

.PHONY: postman
postman: tools/node_modules/.installed ## Generate the Postman collection and environment in postman/ from openapi.yaml
	cd tools && node postman.js

.PHONY: postman-check
postman-check: tools/node_modules/.installed ## Fail when postman/ differs from what make postman generates
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	(cd tools && node postman.js "$$tmp/postman" >/dev/null) && \
	if ! diff -ru postman "$$tmp/postman" >"$$tmp/diff"; then \
	  echo "postman/ is not what openapi.yaml generates: run make postman. The difference (first 40 lines):" >&2; \
	  head -n 40 "$$tmp/diff" >&2; exit 1; \
	fi

.PHONY: migrate-up
migrate-up: ## Apply pending migrations (creates the database if missing)
	go run ./cmd/migrate up

.PHONY: migrate-down
migrate-down: ## Revert the last migration
	go run ./cmd/migrate down 1

.PHONY: services
services: ## Make sure PostgreSQL, Redis and RabbitMQ run on loopback (start or install them)
	@scripts/services.sh

.PHONY: temporal-cli
temporal-cli: ## Build the pinned Temporal CLI into .tools/bin (once)
	@source scripts/lib.sh && ensure_temporal_cli

.PHONY: temporal
temporal: ## Run the Temporal dev server in the foreground (UI on :8233)
	@scripts/temporal-dev.sh

.PHONY: temporal-postgres
temporal-postgres: ## Run the Temporal server on PostgreSQL with its Web UI in the foreground (what make run starts; TEMPORAL_PPROF_PORT for its profiler)
	@scripts/temporal-postgres.sh

.PHONY: sink
sink: ## Run the local provider sink on :9090
	go run ./cmd/sink

# The screenshots of docs/TEMPORAL_UI.md, from the stack make run started (in
# another terminal), by headless Chromium (apt-get install chromium) driven by
# playwright-core from tools/.
.PHONY: ui-screenshots
ui-screenshots: tools/node_modules/.installed ## Send a delivered, failed-over, failed and cancelled sms to the running stack (make run first) and screenshot them in the Temporal Web UI into docs/images (needs Chromium)
	@scripts/ui-screenshots.sh

.PHONY: docker-up
docker-up: ## Build the image and start the whole stack with Docker Compose until healthy (needs a Docker engine)
	@docker compose version >/dev/null 2>&1 || { echo "make docker-up needs Docker with the compose plugin (docker compose); without Docker, use make run" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "make docker-up needs a running Docker engine (docker info failed); without one, use make run" >&2; exit 1; }
	COMMIT=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown) VERSION=$$(git describe --tags --always --dirty 2>/dev/null || echo dev) \
	  docker compose up -d --build --wait
	@echo "API http://127.0.0.1:8080 (key: API_KEYS in .env, else local-compose-development-key), sink :9090,"
	@echo "Temporal UI :8233, Grafana :3000, Prometheus :9091, RabbitMQ UI :15672 (guest/guest)"

.PHONY: docker-down
docker-down: ## Stop the Docker Compose stack (keeps its data volumes; docker compose down -v drops them)
	docker compose down

.PHONY: docker-logs
docker-logs: ## Follow the Docker Compose logs
	docker compose logs -f

.PHONY: clean
clean: ## Remove built binaries and local state (.data); keeps the Temporal CLI
	rm -rf bin .data
