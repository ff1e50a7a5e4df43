# Tandem: developer entry points. See README.md.
#
#   make check   formatting, vet, the lint test and the unit tests (no root)
#   make test    installs what is missing, then every test: unit, lab (root), e2e
#   make bench   Go benchmarks
#   make fuzz    every fuzz target for FUZZTIME each (default 60s)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
# A Go installed by test/scripts/deps.sh lives here; prefer it when present.
export PATH := /usr/local/go/bin:$(PATH)

GO        ?= go
FUZZTIME  ?= 60s
TESTFLAGS ?=
# CI's hard limit is 90 minutes; the whole suite must finish well inside 60.
TEST_TIMEOUT ?= 50m

.PHONY: all check fmt vet lint unit test deps bench bench-wip fuzz lab-sweep clean

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

# Everything, lab included (needs root). Under CI=true nothing may skip.
test: deps fmt vet
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(TESTFLAGS) ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# WIP store: local-only vs sync-replicated commits (receiver in another
# process over loopback TCP) and resync rates; see docs/benchmarks.md.
WIPBENCH_FLAGS ?= -duration 5s -writers 1,16,64 -resync-mb 1024 -catchup-mb 256
bench-wip:
	$(GO) build -o /tmp/wipbench.$$$$ ./wip/cmd/wipbench && /tmp/wipbench.$$$$ $(WIPBENCH_FLAGS); rc=$$?; rm -f /tmp/wipbench.$$$$; exit $$rc

fuzz:
	@test/scripts/fuzz.sh $(FUZZTIME)

# Remove leftovers of crashed lab runs (never touches live runs).
lab-sweep:
	$(GO) run ./test/lab/cmd/tdlab sweep

clean:
	$(GO) clean -testcache
