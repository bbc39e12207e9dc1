# make build      bin/coapgw
# make build-bench bin/coapgw-bench, the load generator (not part of the gateway binary)
# make test       the whole test suite, installing its peers (scripts/test.sh)
# make bench      the gateway and the load generator on two pinned cores, then libcoap's
#                 coap-server-notls on the gateway's core under the same load (scripts/bench.sh)
# make bench-go   the Go micro-benchmarks of internal/...
# make soak       30 minutes of mixed load, restarts and a loss check on the real binary, local mode
#                 (scripts/soak.sh; SOAK_DURATION=3m for a short try; not part of make test)
# make lambda-zip bin/lambda/coapgw-lambda.zip and coapgw-canary.zip (provided.al2023, arm64)
# make release    dist/coapgw-$(VERSION)-linux-{amd64,arm64}: static binaries (CGO_ENABLED=0,
#                 -trimpath), and dist/SHA256SUMS (check with: cd dist && sha256sum -c SHA256SUMS)
.PHONY: build build-bench test bench bench-go soak lambda-zip release

# The version --version prints and /health reports: the nearest tag and the commits since
# (git describe), or the commit; override with make build VERSION=v1.2.3.
# COMMIT is the full commit hash `coapgw version` prints and coapgw_build_info reports.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS = -X github.com/coapgw/coapgw/internal/gateway.Version=$(VERSION) -X github.com/coapgw/coapgw/internal/gateway.Commit=$(COMMIT)

build:
	go build -ldflags '$(LDFLAGS)' -o bin/coapgw ./cmd/coapgw

build-bench:
	go build -o bin/coapgw-bench ./cmd/coapgw-bench

test:
	scripts/test.sh

bench:
	scripts/bench.sh

bench-go:
	go test -run='^$$' -bench=. -benchmem ./internal/...

soak:
	scripts/soak.sh

# Reproducible Lambda packages: fixed mtime, no extra attributes, so an unchanged build keeps the
# same source_code_hash in Terraform. Uses zip(1) if present, else Python's zipfile.
LAMBDA_GOFLAGS = GOOS=linux GOARCH=arm64 CGO_ENABLED=0
lambda-zip:
	@set -e; for f in coapgw-lambda coapgw-canary; do \
		rm -rf bin/lambda/$$f && mkdir -p bin/lambda/$$f; \
		$(LAMBDA_GOFLAGS) go build -trimpath -tags lambda.norpc -ldflags='-s -w' -o bin/lambda/$$f/bootstrap ./cmd/$$f; \
		touch -t 202001010000 bin/lambda/$$f/bootstrap; rm -f bin/lambda/$$f.zip; \
		if command -v zip >/dev/null; then (cd bin/lambda/$$f && zip -q -X ../$$f.zip bootstrap); \
		else (cd bin/lambda/$$f && python3 -m zipfile -c ../$$f.zip bootstrap); fi; \
		echo "bin/lambda/$$f.zip"; \
	done

# Static release binaries: no cgo (the registry's SQLite is pure Go), no local paths in the
# binary (-trimpath), symbols stripped; one per platform, with their SHA-256 sums.
RELEASE_PLATFORMS = linux/amd64 linux/arm64
release:
	@set -e; rm -rf dist && mkdir -p dist; \
	for p in $(RELEASE_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; out=dist/coapgw-$(VERSION)-$$os-$$arch; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch go build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $$out ./cmd/coapgw; \
		echo "$$out"; \
	done; \
	cd dist && sha256sum coapgw-* > SHA256SUMS && echo dist/SHA256SUMS
