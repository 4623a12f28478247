# Switchyard. `make demo` and `make test` are the two commands a newcomer runs.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/switchyard
# Pinned tools live in bin/tools, installed from the Go module proxy.
TOOLS := $(CURDIR)/bin/tools
export PATH := $(TOOLS):$(PATH)
STATICCHECK_VERSION := v0.8.2

.PHONY: all build test test-go demo bench lint fmt vet staticcheck tools-lint

all: build

build:
	$(GO) build -o $(BIN) ./cmd/switchyard

# demo: a complete switch on two in-process clusters, no setup.
demo:
	$(GO) run ./cmd/switchyard demo

# test: everything CI runs. Installs what the tests need, idempotently.
test: deps check-generate lint test-go test-deploy test-real test-testbed
	@echo "make test: all suites passed"

test-go:
	$(GO) test -race -count=1 -timeout 20m ./...

bench: bench-go  # bench-proxy (bench/bench.mk) compares direct vs proxied

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./proxy/...

lint: fmt vet staticcheck

fmt:
	@out="$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.' ))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck: tools-lint
	staticcheck ./...

tools-lint: $(TOOLS)/staticcheck
$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# Fragments owned by their directories.
include api/api.mk
include wirecheck/wirecheck.mk
include testbed/testbed.mk
include testclients/clients.mk
include bench/bench.mk
include deploy/deploy.mk
include internal/compat/compat.mk
