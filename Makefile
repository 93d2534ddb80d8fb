# Developer entry points; `make help` lists them. The scripts they call live in scripts/.
#
# Variables (set on the command line or in the environment):
#   RELAY_PORT        port of the relay started by `make run` (default 8080)
#   REDIS_PORT        port of the Redis started by `make run` (default 6379, or a free one should another
#                     Redis hold 6379); `make test` picks a free one itself
#   CLUSTER=1         `make run CLUSTER=1` is `make cluster`
#   SWIFT_FLAGS       extra flags for every swift build/test, e.g. SWIFT_FLAGS=--scratch-path=.build-mine
#   SWIFT_TEST_FLAGS  extra flags for swift test, e.g. SWIFT_TEST_FLAGS="--filter RedisClientTests"

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
.NOTPARALLEL:
MAKEFLAGS += --no-print-directory

# Swift on PATH, or where the swift.org tarball for Debian 12 is usually unpacked.
SWIFT ?= $(or $(shell command -v swift 2>/dev/null),$(wildcard /opt/swift/usr/bin/swift),swift)
SWIFT_FLAGS ?=
SWIFT_TEST_FLAGS ?=
RELAY_PORT ?= 8080
REDIS_PORT ?=
export SWIFT SWIFT_FLAGS SWIFT_TEST_FLAGS

APT_PACKAGES := redis-server libhiredis-dev libssl-dev
# Only `make test` needs these: the browser test of the web client (Tests/browser), and HAProxy in front of
# two relays (LoadBalancerTests).
BROWSER_APT_PACKAGES := chromium chromium-driver python3-venv
TEST_APT_PACKAGES := haproxy
FORMAT_PATHS := Sources Tests
REDIS_DIR := data/redis

.PHONY: help deps build release run cluster stop redis-cli test bench fmt format lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  \1\t/' | expand -t 14

deps: ## install the missing apt packages (redis-server, libhiredis-dev, libssl-dev); check for Swift
	@bash scripts/deps.sh $(APT_PACKAGES)
	@command -v "$(SWIFT)" >/dev/null || { echo "error: no Swift toolchain found (not on PATH, nor in /opt/swift)." \
		"Install Swift 6 for Debian 12 from https://www.swift.org/install/linux/ and put its usr/bin on PATH." >&2; exit 1; }

build: deps ## debug build
	@bash scripts/embedded.sh
	$(SWIFT) build $(SWIFT_FLAGS)

release: deps ## release build
	@bash scripts/embedded.sh
	$(SWIFT) build $(SWIFT_FLAGS) -c release

run: ## local Redis (AOF, data/redis) + the release relay in dev mode on RELAY_PORT (CLUSTER=1: make cluster)
ifeq ($(CLUSTER),1)
	@$(MAKE) cluster
else
	@RELAY_PORT=$(RELAY_PORT) REDIS_PORT=$(REDIS_PORT) bash scripts/run.sh check
	@$(MAKE) release
	@RELAY_PORT=$(RELAY_PORT) REDIS_PORT=$(REDIS_PORT) bash scripts/run.sh
endif

cluster: ## Redis Cluster (3+3, data/cluster) + two release relays + HAProxy on RELAY_PORT; prints the URL
	@bash scripts/deps.sh $(APT_PACKAGES) haproxy curl
	@RELAY_PORT=$(RELAY_PORT) bash scripts/cluster.sh check
	@$(MAKE) release
	@RELAY_PORT=$(RELAY_PORT) bash scripts/cluster.sh start

stop: ## stop what `make run` or `make cluster` started
	@if bash scripts/redis.sh stop $(REDIS_DIR); then echo "Stopped the local Redis."; else echo "The local Redis is not running."; fi
	@RELAY_PORT=$(RELAY_PORT) bash scripts/cluster.sh stop

redis-cli: ## redis-cli on the local Redis of `make run`
	@bash scripts/redis.sh cli $(REDIS_DIR)

test: deps ## all tests (Swift, then the web client in headless Chromium), against a private Redis on a free port
	@bash scripts/deps.sh $(BROWSER_APT_PACKAGES) $(TEST_APT_PACKAGES)
	@bash scripts/embedded.sh
	@bash scripts/test.sh

bench: ## benchmarks, each beside a baseline from the same run (docs/BENCHMARKS.md)
	@bash scripts/deps.sh $(APT_PACKAGES) wrk
	@bash scripts/embedded.sh
	@bash scripts/bench.sh

fmt: ## format Sources and Tests in place
	$(SWIFT) format format --in-place --recursive --parallel $(FORMAT_PATHS)

format: fmt

lint: ## check formatting, strict (fails on any finding)
	$(SWIFT) format lint --strict --recursive --parallel $(FORMAT_PATHS)

clean: ## swift package clean; stop the local Redis and the cluster, and delete data/ (their data too)
	@bash scripts/redis.sh stop $(REDIS_DIR) || true
	@bash scripts/cluster.sh stop || true
	@bash scripts/redis.sh reap
	rm -rf data
	$(SWIFT) package $(SWIFT_FLAGS) clean
