export GOTOOLCHAIN := go1.27.3
GO ?= go

.PHONY: build run test vet fmt-check
build:
	$(GO) build -o bin/edgeproxy ./cmd/edgeproxy

run: build
	./scripts/quickstart.sh

test:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) test -race -count=1 ./...
