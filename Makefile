# bty-lab: every target installs what it needs (Debian packages when root, npm ci, Node 24 when
# the system Node is older than 22.12) and is quick when everything is already there.
SHELL := /bin/bash
.DEFAULT_GOAL := help

NODE_BIN := $(shell scripts/node-env.sh)
ifeq ($(NODE_BIN),)
$(error could not set up Node 24; see the messages above)
endif
export PATH := $(NODE_BIN):$(PATH)

RUNTIME_DEBS := qemu-utils zstd xz-utils bzip2 gzip util-linux fdisk parted udev ipxe
TEST_DEBS := $(RUNTIME_DEBS) e2fsprogs dosfstools bmap-tools time docker-registry openssl apache2-utils curl postgresql qemu-system-x86 seabios ipxe-qemu ovmf nasm mtools chromium dnsmasq-base isc-dhcp-server kea-dhcp4-server tftpd-hpa tmux ipxe tftp-hpa atftp nftables
BENCH_DEBS := $(TEST_DEBS)
BENCH_PXE_DEBS := wrk nginx
SOURCES := $(shell find src assets -name '*.ts' -o -name '*.tsx' -o -name '*.js' -o -name '*.css') tsconfig.json tsconfig.build.json

.PHONY: help run demo build test lint typecheck bench bench-pxe bench-tftp bench-cache deps-runtime deps-test deps-bench clean

help:
	@echo "make run    - start bty-web on the embedded defaults (state in .state/web, http://localhost:8080)"
	@echo "make demo   - build a sample image, serve it over HTTP, flash it with progress, verify"
	@echo "make test   - lint, type check and every test (real tools, loop devices: run as root)"
	@echo "make build  - compile to dist/ (bin/bty runs from there)"
	@echo "make lint   - ESLint (type-aware) and Prettier"
	@echo "make bench  - flash benchmark against dd and bmaptool (see docs/performance.md)"
	@echo "make bench-pxe - PXE boot storm against bty-web, nginx as the ceiling (docs/performance.md)"
	@echo "make bench-tftp - bty-tftp against tftpd-hpa (docs/performance.md)"
	@echo "make bench-cache - image serving from the artifact cache against nginx (docs/performance.md)"

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

dist/.stamp: node_modules/.stamp $(SOURCES)
	npx tsc -p tsconfig.build.json
	@touch $@

build: dist/.stamp

deps-runtime:
	@scripts/deps-debian.sh $(RUNTIME_DEBS)

deps-test:
	@scripts/deps-debian.sh $(TEST_DEBS)

deps-bench:
	@scripts/deps-debian.sh $(BENCH_DEBS)

typecheck: dist/.stamp
	npx tsc -p tsconfig.json --noEmit

lint: dist/.stamp
	npx eslint --max-warnings=0 .
	npx prettier --check --log-level=warn .

test: deps-test build typecheck lint
	@mkdir -p .state
	@set +e; npx vitest run --reporter=default --reporter=json --outputFile.json=.state/vitest.json; \
	  rc=$$?; node scripts/test-summary.ts .state/vitest.json; exit $$rc

run: deps-runtime build
	BTY_PATHS_STATE_DIR="$${BTY_PATHS_STATE_DIR:-$(CURDIR)/.state/web}" \
	BTY_PATHS_CATALOG_FILE="$${BTY_PATHS_CATALOG_FILE:-$(CURDIR)/scripts/demo-catalog.toml}" \
	BTY_TFTP_ENABLED="$${BTY_TFTP_ENABLED:-$$([ "$$(id -u)" = 0 ] && echo true || echo false)}" \
	bin/bty-web

demo: deps-runtime build
	node scripts/demo.ts

bench: deps-bench build
	node bench/flash/run.ts $(BENCH_ARGS)

bench-pxe: build
	@scripts/deps-debian.sh $(BENCH_PXE_DEBS)
	node bench/pxe/run.ts $(BENCH_PXE_ARGS)

bench-tftp: deps-bench build
	node bench/tftp/run.ts $(BENCH_TFTP_ARGS)

bench-cache: build
	@scripts/deps-debian.sh nginx curl time
	node bench/cache/run.ts $(BENCH_CACHE_ARGS)

clean:
	rm -rf dist .state .bench
