GO ?= go
BIN := bin/trafficpolice
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: build test unit lint fuzz clean

build:
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/trafficpolice

# test: vet, then every test (root ones included: CI runs as root).
test: lint
	$(GO) test -count=1 -timeout 20m ./...

unit:
	$(GO) test -short -count=1 ./...

lint:
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

clean:
	rm -rf bin
