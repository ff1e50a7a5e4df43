# Tandem: developer entry points. See README.md.
#
#   make check   formatting, vet, the lint test and the unit tests (no root)
#   make test    installs what is missing, then every test: unit, lab (root), e2e
#   make bench   Go benchmarks
#   make fuzz    every fuzz target for FUZZTIME each (default 60s)
#   make demo    a real pair in network namespaces, a workload, a failover (root)
#   make bench-failover   failover distributions of the real pair (root, ~20 min)
#   make soak    10 min per profile under CPU hogs and 5 % loss (root)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
# A Go installed by test/scripts/deps.sh lives here; prefer it when present.
export PATH := /usr/local/go/bin:$(PATH)

GO        ?= go
FUZZTIME  ?= 60s
TESTFLAGS ?=
# CI's hard limit is 90 minutes; the whole suite must finish well inside 60.
TEST_TIMEOUT ?= 50m

.PHONY: all check fmt vet lint unit test deps bench bench-heartbeat fuzz lab-sweep clean bench-runtime services demo bench-failover soak bench-wip bench-wip-lab chaos

all: check

check: fmt vet lint unit

fmt:
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

lint:
	$(GO) test -count=1 ./internal/lint/

unit:
	$(GO) test -race -short $(TESTFLAGS) ./...

deps:
	@test/scripts/deps.sh

# Endpoint servers of the connector tests (PostgreSQL, MariaDB, NATS, RabbitMQ).
services:
	@test/scripts/services.sh

# Everything, lab included (needs root). Under CI=true nothing may skip.
test: deps services fmt vet
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(TESTFLAGS) ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# The runtime's jobs/s and checkpoints/s on real pebble (fsync per commit).
bench-runtime:
	$(GO) test -run '^$$' -bench 'BenchmarkRuntime' -benchtime $${JOBS:-2000}x ./internal/engine/ | grep -E '^(runtime-bench|Benchmark)'

# WIP store: local-only vs sync-replicated commits (receiver in another
# process over loopback TCP) and resync rates; see docs/benchmarks.md.
WIPBENCH_FLAGS ?= -duration 5s -rounds 3 -writers 1,16,64 -resync-mb 1024 -catchup-mb 256
bench-wip:
	$(GO) build -o /tmp/wipbench.$$$$ ./wip/cmd/wipbench && /tmp/wipbench.$$$$ $(WIPBENCH_FLAGS); rc=$$?; rm -f /tmp/wipbench.$$$$; exit $$rc

# The same with the receivers in another lab host, across the HA link
# (root; test/scripts/bench-wip-lab.sh). Two machines: see wipbench's
# -receiver-via.
bench-wip-lab:
	GO=$(GO) test/scripts/bench-wip-lab.sh $(WIPBENCH_FLAGS)

fuzz:
	@test/scripts/fuzz.sh $(FUZZTIME)

# CPU cost of the heartbeat at 1 ms, 10 ms and 100 ms intervals, and the
# per-datagram work (docs/benchmarks.md).
bench-heartbeat:
	$(GO) test -run '^$$' -bench 'HeartbeatCPU' -benchtime 3x ./heartbeat
	$(GO) test -run '^$$' -bench 'Datagram' -benchtime 300ms -benchmem ./heartbeat

demo: deps
	$(GO) run ./test/pairlab/cmd/demo

FAILOVERS ?= 30
bench-failover: deps
	$(GO) run ./test/pairlab/cmd/failbench -n $(FAILOVERS)

SOAK ?= 10m
soak: deps
	$(GO) run ./test/pairlab/cmd/failbench -soak $(SOAK)

# Exactly-once under random failovers, real endpoints (root, ~8 min).
CHAOS ?= 5m
chaos: deps services
	$(GO) run ./test/pairlab/cmd/chaos -duration $(CHAOS)

# Remove leftovers of crashed lab runs (never touches live runs).
lab-sweep:
	$(GO) run ./test/lab/cmd/tdlab sweep

clean:
	$(GO) clean -testcache
