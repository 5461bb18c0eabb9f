# Go lives in /usr/local/go on our machines; a fresh root shell may not have it on PATH.
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
BIN := bin/trafficpolice
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: build test unit lint fuzz clean demo deps

build:
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/trafficpolice

# test: install missing packages, vet, then every test (root ones included:
# CI runs as root).
test: deps lint
	$(GO) test -count=1 -timeout 20m ./...

unit:
	$(GO) test -short -count=1 ./...

lint:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

# deps: the Debian packages the tests and the demo use (as root).
deps:
	.ci/install-deps.sh

# demo: the seed's uwu story on a namespace "cluster" on this machine (as root).
demo: deps
	$(GO) run ./test/demo

clean:
	rm -rf bin
