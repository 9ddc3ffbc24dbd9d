# syntax=docker/dockerfile:1
# check=error=true
#
# One image with every Dispatch Engine binary: api (the default command),
# worker, migrate, sink and healthcheck, all in /usr/local/bin. Run another
# one by naming it: `docker run IMAGE worker`, `docker run IMAGE migrate up`.
#
#   docker build --build-arg VERSION=1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) \
#     --build-arg BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) -t dispatch-engine .

FROM --platform=$BUILDPLATFORM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
# The Go client is a module of its own, which the product's go.mod replaces
# with this copy.
COPY client/go.mod client/go.sum ./client/
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH
ARG VERSION=dev COMMIT=unknown BUILD_DATE=unknown
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/dispatch-engine/dispatch-engine/internal/version.Version=$VERSION -X github.com/dispatch-engine/dispatch-engine/internal/version.Commit=$COMMIT -X github.com/dispatch-engine/dispatch-engine/internal/version.Date=$BUILD_DATE" \
      -o /out/ ./cmd/api ./cmd/worker ./cmd/migrate ./cmd/sink ./cmd/healthcheck

# Distroless static: no shell, no package manager, CA certificates and
# tzdata only; the binaries are static (CGO_ENABLED=0). The nonroot variant
# runs as uid 65532.
FROM gcr.io/distroless/static-debian13:nonroot
ARG VERSION=dev COMMIT=unknown BUILD_DATE=unknown
LABEL org.opencontainers.image.title="dispatch-engine" \
      org.opencontainers.image.description="Notification dispatch service: api, worker, migrate, sink" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$COMMIT" \
      org.opencontainers.image.created="$BUILD_DATE"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
# API_PORT, WORKER_METRICS_PORT, the sink.
EXPOSE 8080 8081 9090
# The API's liveness probe; compose gives the worker and the sink their own.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
  CMD ["healthcheck", "http://127.0.0.1:8080/livez"]
CMD ["api"]
