# Skein: build, test and demo. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/skeinvpn/skein/internal/version.Version=$(VERSION)
BIN := bin
LAB_CACHE ?= /var/cache/skein-lab
export SKEIN_LAB_CACHE := $(LAB_CACHE)
FUZZTIME ?= 60s

.PHONY: help build test unit lab-test lab-peers demo bench fuzz vet deps clean

help:
	@echo "make deps      install system packages the tests and demo need (Debian, root)"
	@echo "make build     build skeind, skein and skein-lab into $(BIN)/"
	@echo "make test      vet, unit tests, fuzz seed corpora and lab tests (root)"
	@echo "make demo      start a demo tailnet (Headscale + 2 official peers + skeind) and show it"
	@echo "make lab-peers build Headscale and official tailscale(d) into $(LAB_CACHE)"
	@echo "make fuzz      run every fuzz target for $(FUZZTIME)"
	@echo "make bench     benchmarks"

deps:
	./scripts/deps.sh

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/skeind ./cmd/skein ./cmd/skein-lab

lab-peers:
	./scripts/lab-peers.sh

vet:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

# Unit tests and the fuzz targets' seed corpora (go test runs testdata/fuzz/* as plain tests).
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v -e /tests/lab -e /internal/lab)

# Lab tests drive real Headscale and official tailscaled in network namespaces (needs root).
lab-test: lab-peers
	./scripts/lab-test.sh

test: vet unit lab-test

demo: deps lab-peers build
	./scripts/demo.sh

fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./daemon/...

clean:
	rm -rf $(BIN) lab-test.log
