# Code generation for api/: protobuf -> Go, gRPC, grpc-gateway, OpenAPI.
#
# buf runs with local plugins only: the Buf Schema Registry (buf.build) is not
# reachable from CI or the dev machines, so buf.yaml has no deps and the HTTP
# rules live in api/switchyard/v1/http.yaml instead of
# google/api/annotations.proto. Every tool is pinned here and installed into
# $(TOOLS) (bin/tools), which the top Makefile puts first on PATH.
BUF_VERSION                := v1.75.0
# Keep in step with google.golang.org/protobuf in go.mod: the generated code
# must match the runtime it links against.
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
# Keep in step with github.com/grpc-ecosystem/grpc-gateway/v2 in go.mod.
GRPC_GATEWAY_VERSION       := v2.32.0

API_TOOLS := $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc \
	$(TOOLS)/protoc-gen-grpc-gateway $(TOOLS)/protoc-gen-openapiv2

.PHONY: generate check-generate tools-gen api-breaking

tools-gen: $(API_TOOLS)

# One stamp per tool binary: a version bump above needs `rm bin/tools/<tool>`
# (or `make -B tools-gen`) to take effect, which keeps repeated builds free.
$(TOOLS)/buf:
	GOBIN=$(TOOLS) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(TOOLS)/protoc-gen-grpc-gateway:
	GOBIN=$(TOOLS) $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION)
$(TOOLS)/protoc-gen-openapiv2:
	GOBIN=$(TOOLS) $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)

# generate: regenerate everything under api/ from the .proto files, then lint.
# buf runs from api/ so buf.yaml's module root is api/ and the plugin outputs
# land next to the .proto files (paths=source_relative).
generate: tools-gen
	cd api && buf generate
	cd api && buf lint

# check-generate: fail when the committed generated code differs from what the
# committed sources produce (someone edited a .proto and did not run
# `make generate`, or edited generated code by hand). GENERATED lists every
# generated path: api/ here, wirecheck's schema (wirecheck/wirecheck.mk).
GENERATED := api/ wirecheck/schema_gen.go wirecheck/stray_gen.go
check-generate: generate
	@if ! git diff --quiet -- $(GENERATED) || [ -n "$$(git ls-files --others --exclude-standard -- $(GENERATED))" ]; then \
		echo "check-generate: generated code ($(GENERATED)) is stale or uncommitted."; \
		echo "Run 'make generate' and commit the result. Differences:"; \
		git --no-pager diff --stat -- $(GENERATED); \
		git ls-files --others --exclude-standard -- $(GENERATED) | sed 's/^/  untracked: /'; \
		exit 1; \
	fi
	@echo "check-generate: $(GENERATED) up to date"

# api-breaking: compare the .proto files with another git ref under buf's FILE
# rules (default: branch main), e.g. before merging an API change. Not part of
# `make test`: on main itself there is nothing to compare against.
API_BREAKING_AGAINST ?= $(CURDIR)/.git\#branch=main,subdir=api
api-breaking: $(TOOLS)/buf
	cd api && buf breaking --against '$(API_BREAKING_AGAINST)'
