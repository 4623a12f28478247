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

# Fuzzing, long and not part of `make test` (FUZZ_TIME per target, default
# 30m). fuzz-upstream runs the proxy against a broker that answers damaged
# responses (proxy.TestHostileBroker); fuzz runs every Go fuzz target, the
# client side (requests, frames, headers) and the broker side (responses).
FUZZ_TIME ?= 30m
FUZZ_TARGETS := \
	./wirecheck/:FuzzRequest ./wirecheck/:FuzzResponse \
	./proxy/:FuzzReadFrame ./proxy/:FuzzParseRequestHeader ./proxy/:FuzzRewriteRequest \
	./proxy/:FuzzRejectResponse ./proxy/:FuzzProduceSequences ./proxy/:FuzzRewriteResponse \
	./proxy/:FuzzPatchBatchEpochs ./proxy/:FuzzIntersectVersions \
	./proxy/:FuzzProduceSplit ./proxy/:FuzzProduceRefusals ./proxy/:FuzzMergeProduce ./proxy/:FuzzRoutedFetchAnswer
.PHONY: fuzz fuzz-upstream
fuzz-upstream:
	SWITCHYARD_FUZZ_UPSTREAM=$(FUZZ_TIME) $(GO) test -count=1 -timeout 0 -run '^TestHostileBroker$$' -v ./proxy/
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "=== fuzz $$pkg $$name for $(FUZZ_TIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZ_TIME) $$pkg; \
	done

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
