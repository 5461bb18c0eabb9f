# Go lives in /usr/local/go on our machines; a fresh root shell may not have it on PATH.
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin/trafficpolice
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: build release test test-k8s k8s-binaries unit lint fuzz clean demo demo-k8s deps bench soak

build:
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/trafficpolice

# release: static binaries for each platform and their SHA256SUMS in
# $(DIST), the same bytes for the same commit and Go version: -trimpath
# (no local paths), no VCS stamp (the version comes in with -X), and every
# setting that changes the output fixed here rather than taken from the
# caller's environment. `make release VERSION=v1.2.3 DIST=out`.
DIST ?= dist
RELEASE_PLATFORMS := linux/amd64 linux/arm64
release:
	rm -rf $(DIST) && mkdir -p $(DIST)
	set -e; for p in $(RELEASE_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOAMD64=v1 GOARM64=v8.0 GOEXPERIMENT= GOFLAGS=-mod=readonly \
			$(GO) build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=$(VERSION)" \
			-o $(DIST)/trafficpolice-$(VERSION)-$$os-$$arch ./cmd/trafficpolice; \
	done
	cd $(DIST) && sha256sum trafficpolice-* > SHA256SUMS && cat SHA256SUMS

# test: install missing packages, vet, then every test (root ones included:
# CI runs as root). The Kubernetes binaries are built (or found in
# /var/cache/trafficpolice) first, outside the tests' timeout: the first
# build on a machine takes 11-15 minutes.
test: deps lint k8s-binaries
	.ci/containerd.sh with $(GO) test -count=1 -timeout 20m ./...

# test-k8s: only the tests on a real single-node Kubernetes (test/k8s).
test-k8s: deps k8s-binaries
	.ci/containerd.sh with $(GO) test -count=1 -timeout 20m -v ./test/k8s/

# k8s-binaries: build Kubernetes, etcd, the CNI plugins, CoreDNS and the
# registry into the cache.
k8s-binaries:
	$(GO) run ./test/k8s/cmd/k8s-cluster build

unit:
	$(GO) test -short -count=1 ./...

lint:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

# deps: the Debian packages the tests and the demo use (as root).
deps:
	.ci/install-deps.sh

# demo: the seed's uwu story on a namespace "cluster" on this machine (as root).
# `make demo KUBECONFIG=FILE AGENT_IMAGE=REF APP_IMAGE=REF`: the story
# through Kubernetes on that cluster instead (see the README's "Kubernetes").
demo: deps
ifeq ($(origin KUBECONFIG),command line)
	$(MAKE) build
	$(GO) run ./test/k8s/cmd/k8s-cluster demo --kubeconfig $(KUBECONFIG) --trafficpolice $(BIN) \
		--agent-image "$(AGENT_IMAGE)" $(if $(APP_IMAGE),--app-image "$(APP_IMAGE)")
else
	$(GO) run ./test/demo
endif

# demo-k8s: the story through Kubernetes on the test harness's own
# single-node cluster (as root; builds Kubernetes on first use).
demo-k8s: deps k8s-binaries
	.ci/containerd.sh with $(GO) run ./test/k8s/cmd/k8s-cluster demo

# soak: faults and load at full size (as root): 10 000 flows through one
# sandbox and one agent then back to idle, 20 runs killed at moments spread
# over start-up and run then gc, 20 sandboxes at once. `make test` runs the
# same tests in a short form.
soak:
	TP_SOAK=full $(GO) test -count=1 -timeout 40m -v -run 'TestSoak' ./test/e2e/

# bench: the router beside the kernel path, in namespaces of its own (as
# root, 5-7 minutes). BENCHFLAGS=--json for JSON; see docs/benchmarks.md.
# The peers' rows (pasta, slirp4netns) need `make deps`; without them they
# are reported as skipped.
bench:
	$(GO) run ./test/bench $(BENCHFLAGS)

clean:
	rm -rf bin $(DIST)
