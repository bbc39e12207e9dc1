# make build      bin/coapgw
# make test       the whole test suite, installing its peers (scripts/test.sh)
# make bench      the gateway and the load generator on two pinned cores (scripts/bench.sh)
# make bench-go   the Go micro-benchmarks of internal/...
.PHONY: build test bench bench-go

build:
	go build -o bin/coapgw ./cmd/coapgw

test:
	scripts/test.sh

bench:
	scripts/bench.sh

bench-go:
	go test -run='^$$' -bench=. -benchmem ./internal/...
