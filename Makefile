# tollgate — every target sets itself up: Go modules are downloaded on demand,
# tools are installed with `go install` into ./bin, and nothing else is needed
# on a fresh machine but Go (see README.md).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)
export CGO_ENABLED ?= 1

BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION := v1.21.1
STATICCHECK_VERSION := v0.8.2

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Whole-suite bound; `make test` must stay well under 15 minutes on 2 cores.
TEST_TIMEOUT ?= 12m

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all run build test lint generate check-generate tools deps clean help image cluster-up cluster-down jepsen fuzz sim bench bench-quick bench-build bench-deps test-bench

all: build

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "%-16s %s\n", $$1, $$2 }'

run: build ## build and start a single dev node on :7070 (data in ./data)
	$(BIN)/tollgate serve --dev

build: ## build the static tollgate binary into ./bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/tollgate ./cmd/tollgate

test: deps lint check-generate ## everything CI runs: lint, generated-code check, all tests with -race, more simulation seeds, the bench module's tests
	$(GO) test -race -count=1 -parallel 8 -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) sim SEEDS=$(SIM_TEST_SEEDS) FIRST_SEED=1001
	$(MAKE) test-bench

# The bench module (its own go.mod) has tests of its drivers against real
# etcd, Redis and gubernator servers; redis-server is installed if missing.
test-bench: bench-deps ## the bench module's tests, with -race
	cd bench && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 10m ./...

# The simulation runs 50 seeds inside the -race run above and SIM_TEST_SEEDS
# more (other seeds) without -race, which is several times faster.
SIM_TEST_SEEDS ?= 250
SEEDS ?= 1000
FIRST_SEED ?= 1

sim: ## run the in-process simulation for SEEDS seeds (default 1000) from FIRST_SEED
	TOLLGATE_SIM_SEEDS=$(SEEDS) TOLLGATE_SIM_FIRST_SEED=$(FIRST_SEED) \
		$(GO) test -count=1 -parallel 8 -timeout 60m -run '^TestSimulation$$' ./node/

lint: tools ## buf lint, gofmt, go vet, staticcheck
	cd proto && $(BIN)/buf lint
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/staticcheck ./...

generate: tools ## regenerate gen/ from proto/ with buf and local plugins
	cd proto && $(BIN)/buf generate

check-generate: tools ## fail if `make generate` would change the committed gen/
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cp -r gen "$$tmp/gen"; \
	(cd proto && $(BIN)/buf generate); \
	if ! diff -r "$$tmp/gen" gen; then echo "gen/ is out of date: run 'make generate' and commit"; exit 1; fi

tools: $(BIN)/.buf-$(BUF_VERSION) $(BIN)/.protoc-gen-go-$(PROTOC_GEN_GO_VERSION) \
	$(BIN)/.protoc-gen-connect-go-$(PROTOC_GEN_CONNECT_GO_VERSION) $(BIN)/.staticcheck-$(STATICCHECK_VERSION)

$(BIN)/.buf-%:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$*
	@touch $@
$(BIN)/.protoc-gen-go-%:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$*
	@touch $@
$(BIN)/.protoc-gen-connect-go-%:
	GOBIN=$(BIN) $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$*
	@touch $@
$(BIN)/.staticcheck-%:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$*
	@touch $@

deps: ## install gcc (the race detector needs cgo) with apt-get when missing
	@command -v gcc >/dev/null || { echo "installing gcc for the race detector"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq gcc; }

clean: ## remove ./bin and the dev data dir
	rm -rf $(BIN) ./data

# --- containers (deploy/) ---------------------------------------------------
# The image is FROM scratch around a static linux binary built here: no
# registry is needed (deploy/DESIGN.md).

IMAGE ?= tollgate:dev
CLUSTER_PROJECT ?= tollgate
# Bound on how long cluster-up waits for 3 voters and a leader.
CLUSTER_WAIT_SECONDS ?= 60
# `docker compose` (v2) when installed, else docker-compose (v1). Decided on
# first use, so targets that never use it never run docker.
ifndef COMPOSE
COMPOSE = $(eval COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose))$(COMPOSE)
endif
CLUSTER = TOLLGATE_IMAGE=$(IMAGE) $(COMPOSE) -p $(CLUSTER_PROJECT) -f deploy/compose.yaml

image: ## build the FROM-scratch image tollgate:dev (IMAGE=...) around a static bin/tollgate-linux
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/tollgate-linux ./cmd/tollgate
	@# The context holds only the binary and an empty data/ (the volume's
	@# mount point, owned by the image's user), not the repository.
	@ctx=$$(mktemp -d); trap 'rm -rf "$$ctx"' EXIT; \
	cp $(BIN)/tollgate-linux "$$ctx/tollgate"; mkdir "$$ctx/data"; \
	docker build -t $(IMAGE) -f deploy/Dockerfile "$$ctx"

cluster-up: image ## start a 3-node cluster in Docker (deploy/compose.yaml), wait for a leader, print where it is
	$(CLUSTER) up -d
	@echo "waiting up to $(CLUSTER_WAIT_SECONDS)s for 3 voters and a leader"; \
	deadline=$$((SECONDS + $(CLUSTER_WAIT_SECONDS))); \
	while :; do \
		st=$$($(CLUSTER) exec -T n1 /tollgate cluster status --addr 127.0.0.1:7070 --output json 2>&1) || true; \
		voters=$$(grep -o '"suffrage": *"Voter"' <<<"$$st" | wc -l || true); \
		leaders=$$(grep -o '"leader": *true' <<<"$$st" | wc -l || true); \
		if [ "$$voters" -eq 3 ] && [ "$$leaders" -eq 1 ]; then break; fi; \
		if [ "$$SECONDS" -ge "$$deadline" ]; then \
			echo "no leader with 3 voters after $(CLUSTER_WAIT_SECONDS)s; last answer from n1:"; echo "$$st"; \
			$(CLUSTER) ps; $(CLUSTER) logs --no-color --tail 20; exit 1; fi; \
		sleep 1; \
	done
	@$(CLUSTER) exec -T n1 /tollgate cluster status --addr 127.0.0.1:7070
	@echo; echo "API (Connect, gRPC, JSON) of each node on this host:"; \
	for n in n1 n2 n3; do echo "  $$n  http://$$($(CLUSTER) port $$n 7070)"; done; \
	echo "try:  curl -s http://$$($(CLUSTER) port n2 7070)/tollgate.v1.ClusterService/Status -H 'content-type: application/json' -d '{}'"; \
	echo "stop: make cluster-down (deletes the data volumes)"

cluster-down: ## stop the Docker cluster and delete its data volumes
	$(CLUSTER) down -v

# --- black-box fault injection (test/jepsen) --------------------------------
# One long run of the jepsen harness: real processes, each in its own network
# namespace (needs root), faults on a schedule drawn from SEED (default: from
# the clock; the run prints it), every check at the end. Results (summary; on
# failure also seed, history, porcupine visualization, node logs) go to
# test/jepsen/results/<time>-long-seed<N>/. TestJepsenLong is behind the
# jepsen_long build tag, so `make test` never runs it.

DURATION ?= 600
NODES ?= 5
SEED ?=

jepsen: deps ## one long jepsen run: DURATION=600 (seconds) NODES=5 (3 or 5) SEED=... (root)
	TOLLGATE_JEPSEN_DURATION=$(DURATION) TOLLGATE_JEPSEN_NODES=$(NODES) TOLLGATE_JEPSEN_SEED=$(SEED) \
		$(GO) test -tags jepsen_long -count=1 -v -timeout $$(( $(DURATION) + 900 ))s -run '^TestJepsenLong$$' ./test/jepsen/

# --- fuzzing -----------------------------------------------------------------
# `go test -fuzz` takes one target per run, so `make fuzz` runs every Fuzz*
# function of FUZZ_PKGS in turn for FUZZTIME each (`make test` already runs
# their seed corpora). A failing input is minimized for at most
# FUZZMINIMIZETIME and written to <pkg>/testdata/fuzz/<target>/; the other
# targets still run, and make fails at the end.

FUZZTIME ?= 30s
FUZZMINIMIZETIME ?= 30s
FUZZ_PKGS := ./fsm/ ./transport/

fuzz: ## run each fuzz target of fsm and transport for FUZZTIME (default 30s)
	@failed=""; \
	for pkg in $(FUZZ_PKGS); do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "$(GO) test -run XXX -fuzz '^$$target\$$' -fuzztime $(FUZZTIME) $$pkg"; \
			$(GO) test -run XXX -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg \
				|| failed="$$failed $$pkg$$target"; \
		done; \
	done; \
	if [ -n "$$failed" ]; then echo "failed fuzz targets:$$failed"; exit 1; fi

# --- side-by-side benchmark (bench/, its own module) --------------------------
# tollgate (3 processes) against etcd (3 members), Redis (appendfsync always /
# everysec) and gubernator (3 nodes), with the fsync / loopback / no-op RPC
# floors, servers pinned to CPU 1 and the load generator to CPU 0. Results:
# bench/results/<date>-quick|full/{results.json,results.md,*.png}.

bench-deps: ## install redis-server from Debian's archive if missing
	bash bench/scripts/ensure-redis.sh

bench-build: build ## build the benchmark driver into ./bin/tgbench
	cd bench && $(GO) build -trimpath -o $(BIN)/tgbench ./cmd/tgbench

bench-quick: bench-deps bench-build ## short side-by-side benchmark (under 3 minutes)
	cd bench && $(BIN)/tgbench run --quick --tollgate $(BIN)/tollgate $(BENCH_FLAGS)

bench: bench-deps bench-build ## full side-by-side benchmark (under 15 minutes)
	cd bench && $(BIN)/tgbench run --tollgate $(BIN)/tollgate $(BENCH_FLAGS)
