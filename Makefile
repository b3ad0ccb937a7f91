# Skein: build, test and demo. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/skeinvpn/skein/internal/version.Version=$(VERSION)
BIN := bin
LAB_CACHE ?= /var/cache/skein-lab
export SKEIN_LAB_CACHE := $(LAB_CACHE)
FUZZTIME ?= 60s

.PHONY: help build build-gui test unit lab-test gui-test lab-peers demo bench fuzz vet deps clean

help:
	@echo "make deps      install system packages the tests and demo need (Debian, root)"
	@echo "make build     build skeind, skein and skein-lab into $(BIN)/"
	@echo "make build-gui build the desktop app $(BIN)/skein-gui (cgo; needs libgl1-mesa-dev xorg-dev)"
	@echo "make test      vet, unit tests, fuzz seed corpora and lab tests (root)"
	@echo "make demo      start a demo tailnet (Headscale + 2 official peers + skeind) and show it"
	@echo "make lab-peers build Headscale and official tailscale(d) into $(LAB_CACHE)"
	@echo "make fuzz      run every fuzz target for $(FUZZTIME)"
	@echo "make bench     benchmarks"

deps:
	./scripts/deps.sh

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/skeind ./cmd/skein ./cmd/skein-lab

build-gui:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/skein-gui .

lab-peers:
	./scripts/lab-peers.sh

vet:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...

# Unit tests and the fuzz targets' seed corpora (go test runs testdata/fuzz/* as plain tests).
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v -e /tests/lab -e /internal/lab -e /tests/gui)

# Lab tests drive real Headscale and official tailscaled in network namespaces (needs root).
lab-test: lab-peers
	./scripts/lab-test.sh

# The desktop app end to end (root): skein-gui under Xvfb with a private session bus, its tray
# read and clicked over D-Bus, against skeind in the lab; screenshots go to lab-artifacts/.
gui-test: lab-peers
	mkdir -p lab-artifacts && $(GO) test -count=1 -timeout 15m -artifacts -outputdir $(CURDIR)/lab-artifacts ./tests/gui/

test: vet unit lab-test gui-test

demo: deps lab-peers build
	./scripts/demo.sh

fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# Lab benchmarks (root): Skein vs official tailscaled vs upstream wireguard-go, ~9 min; the
# summary also lands in bench-results.txt.
bench: lab-peers
	$(GO) test -tags bench -run . -v -count=1 -timeout 30m ./tests/bench/
	$(GO) test -tags bench -run TestBenchApp -v -count=1 -timeout 10m ./tests/gui/

clean:
	rm -rf $(BIN) lab-test.log
