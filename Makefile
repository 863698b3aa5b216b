# One entry point for every check. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help deps build test lint fmt clippy check-pure check-examples ci bench lab image image-test fuzz

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

deps: ## install the system packages tests and lab need (Debian, root)
	scripts/deps.sh test

build: ## build the igw binary (release)
	$(CARGO) build --release -p igw

fmt: ## check formatting
	$(CARGO) fmt --all --check

clippy: ## lint every crate and test, warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

check-pure: ## the pure crates (core, ruleset, provisioning) pull in no async runtime
	@for c in igw-core igw-ruleset igw-provisioning; do \
	  if $(CARGO) tree -q -p $$c -e normal --prefix none | grep -Eq '^(tokio|hyper|mio) '; then \
	    echo "$$c depends on an async runtime: keep I/O out of the pure core" >&2; exit 1; \
	  fi; \
	done; echo "check-pure: ok"

lint: fmt clippy check-pure ## fmt + clippy + pure-core check

check-examples: ## igw check on every shipped example
	$(CARGO) run -q -p igw -- check examples/*

test: deps check-examples ## every test: unit, golden, and netns system tests (needs root)
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --profile $(if $(CI),ci,default); \
	else \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi

ci: lint test ## what .ci/run runs

lab: ## the gateway pair in namespaces, then the guided demo (root; `igw lab down` to remove)
	scripts/deps.sh lab
	$(CARGO) build --release -p igw
	./target/release/igw lab down >/dev/null 2>&1 || true
	./target/release/igw lab up
	./target/release/igw lab demo

bench: ## side-by-side benchmarks (writes bench/*/RESULTS.md)
	scripts/deps.sh bench
	@for b in bench/*/run.sh; do echo "== $$b"; bash "$$b" || exit 1; done

FUZZ_SECONDS ?= 60
fuzz: ## run every cargo-fuzz target for FUZZ_SECONDS each (stable toolchain via RUSTC_BOOTSTRAP)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for d in filter-proxy/fuzz conntrack-sync/fuzz arbiter/fuzz; do \
	  for t in $$(cd $$d && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz list); do \
	    echo "== $$d $$t ($(FUZZ_SECONDS) s)"; \
	    (cd $$d && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048) || exit 1; \
	  done; \
	done

IGW_RELEASE_BIN = $${CARGO_TARGET_DIR:-target}/release/igw

image: ## the gateway OS image: Debian 12 + igw (images/build/; root; see images/README.md)
	scripts/deps.sh image
	$(CARGO) build --release -p igw
	images/build.sh --igw $(IGW_RELEASE_BIN)

image-test: image ## boot the image in qemu: smoke test with a good bundle, refusal of a bad one
	images/test.sh --igw $(IGW_RELEASE_BIN)
