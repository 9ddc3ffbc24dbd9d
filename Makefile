# Dispatch Engine — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TEMPORAL_CLI := $(CURDIR)/.tools/bin/temporal
GO_TEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Start everything locally (services, Temporal dev server, migrations, sink, API, worker)
	@scripts/run.sh

.PHONY: build
build: ## Build api, worker, migrate and sink into bin/
	go build -o bin/ ./cmd/...

.PHONY: test
test: services temporal-cli ## Run all tests (unit, integration, end-to-end) against the real services, with -race
	TEMPORAL_CLI=$(TEMPORAL_CLI) go test $(GO_TEST_FLAGS) ./...

.PHONY: bench
bench: ## Measure the running stack (PROVIDERS_FILE= make run first); BENCH_FLAGS=--quick for a short run
	go run ./cmd/bench $(BENCH_FLAGS)

# A count of executions, not a duration: a duration-based -fuzztime races the
# fuzz coordinator's own deadline in Go 1.26 (go.dev/issue/75804) and can
# fail with "context deadline exceeded" and no failing input.
FUZZTIME ?= 20000x

.PHONY: fuzz
fuzz: services ## Fuzz request decoding and validation (single, batch) and the Retry-After parser, FUZZTIME each
	go test -run '^$$' -fuzz '^FuzzCreateNotification$$' -fuzztime $(FUZZTIME) ./internal/httpapi/
	go test -run '^$$' -fuzz '^FuzzCreateBatch$$' -fuzztime $(FUZZTIME) ./internal/httpapi/
	go test -run '^$$' -fuzz '^FuzzParseRetryAfter$$' -fuzztime $(FUZZTIME) ./internal/provider/

.PHONY: chaos
chaos: services temporal-cli ## Fault suite: kill and restart the parts under a stream of notifications, check nothing accepted is lost (own services on ports 55432, 56379, 55672, 57233)
	TEMPORAL_CLI=$(TEMPORAL_CLI) go test -tags chaos -count=1 -v -timeout 30m ./e2e/chaos/

.PHONY: lint
lint: openapi-lint lint-deploy ## gofmt, go vet, the module's tidiness, the OpenAPI contract and the deployment files
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	go vet -tags chaos ./e2e/chaos/
	go mod tidy -diff

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

.PHONY: postman
postman: tools/node_modules/.installed ## Generate the Postman collection and environment in postman/ from openapi.yaml
	cd tools && node postman.js

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
temporal-postgres: ## Run a Temporal server on PostgreSQL (production-like) in the foreground instead of the dev server
	@scripts/temporal-postgres.sh

.PHONY: sink
sink: ## Run the local provider sink on :9090
	go run ./cmd/sink

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
