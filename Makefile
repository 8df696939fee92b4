# nodeward — see `make help`.
SHELL := /bin/bash
export PATH := $(CURDIR)/.bin:/usr/local/go/bin:$(PATH)
export GOFLAGS ?= -buildvcs=false

VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
FUZZTIME ?= 10s

# Pinned generator and linter versions: `make tools` installs them in .bin/.
BUF_VERSION                ?= v1.75.0
GOLANGCI_LINT_VERSION      ?= v2.15.0
PROTOC_GEN_GO_VERSION      ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.2

.DEFAULT_GOAL := help

.PHONY: help
help: ## show this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install Debian packages and Go modules the build and tests need
	@scripts/deps.sh

.PHONY: build
build: ## build bin/nodeward (collector and CLI) and bin/nodeward-agent, static (scripts/build.sh)
	scripts/build.sh bin $(VERSION)

.PHONY: run
run: deps build ## run a collector (SQLite) and an agent on this machine, show this node, tail its events
	@scripts/run-local.sh

.PHONY: test
test: deps ## run every test (as root, privileged tests run too), and check the committed eBPF objects
	go test -race -timeout 45m $$(go list ./... | grep -v '/e2e$$')
	@# The collector's SQLite store once more on the pure-Go driver (builds without cgo).
	CGO_ENABLED=0 go test -timeout 10m ./collector/store/sqlite/
	@# The end-to-end tests run the real binaries (sshd, whole-node tracing) on their own.
	go test -race -timeout 30m ./e2e
	cd deploy && GOFLAGS=-mod=mod go test -timeout 30m ./...
	bpf/check-generated.sh

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 10s), keeping the corpus
	@scripts/fuzz.sh $(FUZZTIME)

.PHONY: bench
bench: deps build ## run the benchmarks and print medians and ratios (see docs/BENCHMARKS.md)
	@scripts/deps.sh bench
	@set -e; for b in bench/*.sh; do echo "== $$b"; bash "$$b"; done

.PHONY: tools
tools: ## install the pinned code generators and linters into .bin/
	@mkdir -p .bin
	@test -x .bin/buf || GOBIN=$(CURDIR)/.bin go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@test -x .bin/golangci-lint || GOBIN=$(CURDIR)/.bin go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	@test -x .bin/protoc-gen-go || GOBIN=$(CURDIR)/.bin go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@test -x .bin/protoc-gen-go-grpc || GOBIN=$(CURDIR)/.bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

.PHONY: generate
generate: deps tools ## regenerate the proto Go code and the eBPF objects
	buf generate
	go generate ./...

.PHONY: lint
lint: tools ## gofmt, go vet, golangci-lint and buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -vE '\.pb\.go$$|_bpfel\.go$$')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	golangci-lint run ./...
	cd deploy && golangci-lint run ./...
	buf lint

.PHONY: image
image: ## build the agent and collector images with podman/buildah (no Docker engine needed), saved in bin/images
	@deploy/image.sh --save bin/images

.PHONY: clean
clean: ## remove build output and local run state
	rm -rf bin run
