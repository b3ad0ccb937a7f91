# Skein: build, test and demo. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/skeinvpn/skein/internal/version.Version=$(VERSION)
BIN := bin
LAB_CACHE ?= /var/cache/skein-lab
export SKEIN_LAB_CACHE := $(LAB_CACHE)
FUZZTIME ?= 60s

.PHONY: help build build-gui test unit fuzz-ci lab-test gui-test lab-peers demo bench fuzz vet deps clean

help:
	@echo "make deps      install system packages the tests and demo need (Debian, root)"
	@echo "make build     build skeind, skein and skein-lab into $(BIN)/"
	@echo "make build-gui build the desktop app $(BIN)/skein-gui (cgo; needs libgl1-mesa-dev xorg-dev)"
	@echo "make test      vet, unit tests, 50,000 inputs of each fuzz target, lab, GUI and packaging tests (root)"
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
	# The checks the race detector would distort (memory, allocation counts) skip under -race:
	# they run here once more without it.
	set -o pipefail; $(GO) test -count=1 -run '^(TestEndToEnd|TestNoAllocsPerRecord)$$' -v ./daemon/taildrop/ ./daemon/control/ts2021/ | grep -E '^(--- |ok|FAIL|PASS)|MB/s|RSS'

# Lab tests drive real Headscale and official tailscaled in network namespaces (needs root).
lab-test: lab-peers
	./scripts/lab-test.sh

# The desktop app end to end (root): skein-gui under Xvfb with a private session bus, its tray
# read and clicked over D-Bus, against skeind in the lab; screenshots go to lab-artifacts/.
gui-test: lab-peers
	mkdir -p lab-artifacts && $(GO) test -count=1 -timeout 15m -artifacts -outputdir $(CURDIR)/lab-artifacts ./tests/gui/

test: vet unit fuzz-ci lab-test gui-test package-test

demo: deps lab-peers build
	./scripts/demo.sh

fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# The short fuzz pass of make test and CI: 50,000 inputs per target (seed corpora run in unit).
# A count, not a duration: Go 1.26's fuzzing coordinator can fail a target with "context
# deadline exceeded" when -fuzztime's deadline races a busy worker (golang/go#75804, fixed in
# Go 1.27); on a loaded CI machine FuzzRequest did.
fuzz-ci:
	./scripts/fuzz.sh 50000x

# Lab benchmarks (root): Skein vs official tailscaled vs upstream wireguard-go, ~9 min; the
# summary also lands in bench-results.txt.
bench: lab-peers
	$(GO) test -tags bench -run . -v -count=1 -timeout 30m ./tests/bench/
	$(GO) test -tags bench -run TestBenchApp -v -count=1 -timeout 10m ./tests/gui/

clean:
	rm -rf $(BIN) lab-test.log

# Packaging and installation (packaging/): Debian packages, `make install`, the Flatpak.
PREFIX ?= /usr/local
DESTDIR ?=
PKGDIR ?= $(BIN)/packages
# With SYSTEMD_ENABLE=0, `make install` leaves skeind.service disabled and stopped.
SYSTEMD_ENABLE ?= 1

.PHONY: package package-test pkgtest-root install install-helper install-desktop uninstall flatpak flatpak-prepare

# The .deb packages skein and skein-desktop, built reproducibly with nfpm into $(PKGDIR).
package:
	OUT=$(PKGDIR) VERSION=$(VERSION) GO=$(GO) packaging/build-packages.sh

# Checks of the packages, unit, desktop file, metainfo and Flatpak manifest; installs the
# packages into a clean Debian root made by debootstrap (cached in /var/cache/skein-pkgtest;
# root; the first run fetches about 40 MB and takes a few minutes).
package-test: package
	VERSION=$(VERSION) $(GO) test -count=1 -timeout 30m -v ./tests/packaging/ -args -package-test -packages $(CURDIR)/$(PKGDIR)

# Only the clean Debian root's cache (debootstrap, mostly download): CI makes it in the
# background while the other tests run.
pkgtest-root:
	$(GO) test -count=1 -timeout 20m -v -run '^TestDebianRootCache$$' ./tests/packaging/ -args -package-test

# Install on a host without packages (root, Go on PATH): `make install` or, for a machine
# without a desktop, `make install-helper`. DESTDIR and PREFIX work as usual.
install: install-helper install-desktop

install-helper: build
	$(GO) run ./packaging/gen docs -skein $(BIN)/skein -skeind $(BIN)/skeind -version $(VERSION) -out $(BIN)/gen
	GO=$(GO) $(GO) run ./packaging/gen notices -bin $(BIN)/skeind -bin $(BIN)/skein -out $(BIN)/gen/doc/skein/copyright
	DESTDIR=$(DESTDIR) PREFIX=$(PREFIX) BIN=$(BIN) GEN=$(BIN)/gen packaging/install.sh helper
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl daemon-reload && systemd-tmpfiles --create skein.conf; \
		if [ "$(SYSTEMD_ENABLE)" = 1 ]; then systemctl enable --now skein-session-helper.socket && systemctl enable skeind.service && systemctl restart skeind.service && echo "skeind is running: next, sudo skein set --operator=\$$USER"; \
		else echo "start the helper with: sudo systemctl enable --now skeind skein-session-helper.socket"; fi; \
	fi

install-desktop: build-gui
	$(GO) run ./packaging/gen icons -src assets/skein.png -out $(BIN)/gen/icons
	GO=$(GO) $(GO) run ./packaging/gen notices -bin $(BIN)/skein-gui -out $(BIN)/gen/doc/skein-desktop/copyright
	DESTDIR=$(DESTDIR) PREFIX=$(PREFIX) BIN=$(BIN) GEN=$(BIN)/gen packaging/install.sh desktop
	@if [ -z "$(DESTDIR)" ]; then \
		command -v update-desktop-database >/dev/null && update-desktop-database -q $(PREFIX)/share/applications || true; \
		command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t $(PREFIX)/share/icons/hicolor || true; \
	fi

# Removes what `make install` put in place; /var/lib/skein (this machine's keys) stays.
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now skeind.service skein-session-helper.socket || true; systemctl stop skein-session-helper.service || true; fi
	DESTDIR=$(DESTDIR) PREFIX=$(PREFIX) BIN=$(BIN) packaging/install.sh --uninstall helper desktop
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# The Flatpak of the desktop app (bin/skein.flatpak): needs flatpak-builder and the
# freedesktop 25.08 runtime, SDK and Go extension from Flathub (see packaging/flatpak/build.sh).
flatpak:
	VERSION=$(VERSION) GO=$(GO) packaging/flatpak/build.sh

# Only the offline build directory for flatpak-builder (bin/flatpak): sources + vendor/.
flatpak-prepare:
	VERSION=$(VERSION) GO=$(GO) packaging/flatpak/prepare.sh $(BIN)/flatpak
