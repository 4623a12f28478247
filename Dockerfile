# syntax=docker/dockerfile:1
#
# One image for every subcommand: `switchyard proxy` (the sidecar),
# `switchyard inject` (the sidecar injector webhook), and later `control`
# and `mirror`. A static binary on distroless/static, run as the nonroot
# user (65532). Build and run (see deploy/README.md):
#
#   docker build -t switchyard:dev --build-arg VERSION=$(git describe --always --dirty) .
#   docker run --rm switchyard:dev version
#
# Checked statically by deploy/dockerfile_test.go (no Docker engine in CI).

ARG GO_VERSION=1.26.8

# Build on the builder's own platform and cross-compile: no emulation for
# multi-platform builds (docker buildx build --platform linux/amd64,linux/arm64).
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/switchyard ./cmd/switchyard

# distroless/static: CA certificates, tzdata, /etc/passwd with nonroot; no
# shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /out/switchyard /usr/local/bin/switchyard
USER 65532:65532
# 9092: proxy bootstrap listener (loopback in a pod); 9190: proxy admin API
# (loopback unless it has a token or mTLS); 9191: proxy health and metrics
# (--health-listen); 8443: injector webhook.
EXPOSE 9092 9190 9191 8443
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["--help"]
