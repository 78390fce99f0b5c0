# The machines' own Go carries a known HTTP/2 crash; every target uses the
# toolchain the project is tested with (go fetches it on first use).
export GOTOOLCHAIN := go1.27.3
GO ?= go
GOFMT = $$($(GO) env GOROOT)/bin/gofmt

# The build says which commit it is (edgeproxy version, edgeproxy_build_info).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: build run test lint fuzz bench deps
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/edgeproxy ./cmd/edgeproxy

# Two demo machines and edgeproxy on examples/quickstart.toml; Ctrl-C stops all.
run: build
	./scripts/quickstart.sh

lint:
	$(GO) vet ./...
	@test -z "$$($(GOFMT) -l .)" || { echo "gofmt needed:"; $(GOFMT) -l .; exit 1; }

test: lint
	$(GO) test -race -count=1 ./...

# A short run of every fuzz target (FUZZTIME each).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run=NONE -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# edgeproxy against nginx and HAProxy (bench/run.sh installs them with
# apt-get): writes bench/results/latest.csv and docs/performance.md.
# BENCH_ARGS passes flags, e.g. make bench BENCH_ARGS=-quick.
BENCH_ARGS ?=
bench:
	BENCH_INVOCATION="make bench$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" ./bench/run.sh $(BENCH_ARGS)

# Dependency updates (docs/dependencies.md): lists the updates of go.mod's
# direct dependencies and of the toolchain; APPLY=all or APPLY="MODULE... go"
# applies them and runs the checks (builds, make test, shapes, storm, quick
# bench against the previous build, govulncheck) into one report.
# VULNDB=DIR|URL|off picks the vulnerability database; DEPS_ARGS passes flags.
APPLY ?=
VULNDB ?=
DEPS_ARGS ?=
deps:
	$(GO) run ./tools/deps -apply '$(APPLY)' -vulndb '$(VULNDB)' $(DEPS_ARGS)
