# ioc-agent — the two commands a newcomer needs:
#   make demo   three cameras on real footage over loopback RTSP: red light, wrong way and crowd
#               events printed as they arrive, each with its evidence verified
#   make test   every test (unit, integration against real RTSP/decoder/model/broker), fmt, clippy,
#               cargo deny (advisories from the offline snapshot, licences, bans, sources),
#               and the Debian package built, installed, checked and purged
# Both install what they need first (idempotent): system packages, ONNX Runtime, models
# (and, for make test, the Kubernetes schema validator: deploy/bootstrap.sh k8s).

SHELL := /bin/bash
ORT_VERSION := 1.31.1
export ORT_DYLIB_PATH := $(CURDIR)/.ort/lib/libonnxruntime.so.$(ORT_VERSION)
# Model files come from this mirror when it exists (../shared/models here; a USB stick on site),
# else from the URLs in models/*.toml.
MODEL_MIRROR ?= $(CURDIR)/../shared/models
MODEL_DIR := $(CURDIR)/data/models
CARGO ?= cargo

.PHONY: demo test setup system ort k8s-validate contract-validators models build release lint bench clean deb deb-test systemd-test container-test docs mdbook deny cargo-deny fuzz

demo: system ort release
	$(call pull_models,target/release/ioc-agent)
	scripts/demo.sh

test: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(MAKE) deny
	$(CARGO) test --all-targets
	$(MAKE) docs-build
	$(MAKE) deb-test
	scripts/systemd-test.sh $(DEB)    # make systemd-test, on the package deb-test built
	scripts/container-test.sh         # make container-test

# Tools that make installs, each at a pinned version (cargo install --locked: their own
# Cargo.lock), reinstalled when another version is found.
CARGO_DENY_VERSION := 0.20.2
CARGO_DEB_VERSION := 3.8.0
CARGO_FUZZ_VERSION := 0.13.2
MDBOOK_VERSION := 0.5.4
MDBOOK := $(shell command -v mdbook 2>/dev/null || echo $(HOME)/.cargo/bin/mdbook)

mdbook:
	@$(MDBOOK) --version 2>/dev/null | grep -qx "mdbook v$(MDBOOK_VERSION)" || \
		$(CARGO) install mdbook --locked --version $(MDBOOK_VERSION) --no-default-features --features search

cargo-deny:
	@$(CARGO) deny --version 2>/dev/null | grep -qx "cargo-deny $(CARGO_DENY_VERSION)" || \
		$(CARGO) install cargo-deny --locked --version $(CARGO_DENY_VERSION)

# Supply chain (deny.toml): RustSec advisories from the offline snapshot in
# ../shared/advisory-db (ADVISORY_DB= for another), licences, banned crates,
# sources. The database is never fetched; the crates come from crates.io.
deny: cargo-deny
	scripts/deny.sh

# The book under docs/ (into docs/book): the generated references (CLI from
# clap, config from the config types' doc comments) are rewritten first.
docs: mdbook
	UPDATE_DOCS=1 $(CARGO) test --test it docs::
	$(MDBOOK) build docs

# Builds the book as committed (make test: a stale reference already failed in cargo test).
docs-build: mdbook
	$(MDBOOK) build docs

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
# cargo-deb writes under the cargo target directory (CARGO_TARGET_DIR when set).
DEB := $(or $(CARGO_TARGET_DIR),target)/debian/ioc-agent_$(VERSION)-1_amd64.deb

# Debian package: binary, ONNX Runtime, manifests, systemd unit, default config.
deb: ort release
	@$(CARGO) deb --version 2>/dev/null | grep -qx "cargo-deb $(CARGO_DEB_VERSION)" || \
		$(CARGO) install cargo-deb --locked --version $(CARGO_DEB_VERSION)
	$(CARGO) deb --no-build --strip --deb-version $(VERSION)-1

# Installs the package here, checks it, purges it (root or sudo).
deb-test: deb
	deploy/deb-test.sh $(DEB)

# The package in a Debian 12 root booted with systemd-nspawn: the unit as shipped
# against a simulated camera and a broker on this host (root; the root is cached
# in /var/cache/ioc-edge/systemd-test). Skips, saying why, where nspawn cannot run.
systemd-test: deb
	scripts/systemd-test.sh $(DEB)

# The image from deploy/Containerfile, built with podman on bases made from Debian's
# packages and run read-only as its header says, against a simulated camera and a
# broker on this host (root; bases kept in podman's storage). Skips, saying why,
# where podman cannot run.
container-test:
	scripts/container-test.sh

setup: system ort models k8s-validate contract-validators

system:
	deploy/bootstrap.sh system
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust 1.95 (https://rustup.rs)"; exit 1; }

ort:
	deploy/bootstrap.sh ort

# Ajv (strict) and the AsyncAPI parser for tests/it/contract.rs (npm, pinned by
# tests/contract/package-lock.json, into .tools/contract).
contract-validators:
	deploy/bootstrap.sh contract

# The Kubernetes schema validator for tests/it/k8s.rs (a venv in .tools/).
k8s-validate:
	deploy/bootstrap.sh k8s

# Verified model files from the mirror (when present) or the manifests' URLs.
pull_models = $(1) models pull --manifests models --dest $(MODEL_DIR) $(if $(wildcard $(MODEL_MIRROR)),--mirror $(MODEL_MIRROR))

models: build
	$(call pull_models,target/debug/ioc-agent)

build:
	$(CARGO) build

release:
	$(CARGO) build --release

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

bench: setup
	$(CARGO) bench

clean:
	$(CARGO) clean
	rm -rf data .demo

# Fuzz every parser target for FUZZ_SECS seconds each (nightly, cargo-fuzz);
# crashes land in fuzz/artifacts/<target>/. Not part of make test.
FUZZ_SECS ?= 60
FUZZ_TARGETS = config manifest plate_text signal_payload review_record annexb
fuzz: ort
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)
	@for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECS) s"; \
	  cargo +nightly fuzz run --fuzz-dir fuzz $$t -- -max_total_time=$(FUZZ_SECS) -rss_limit_mb=4096 > fuzz/last-run.log 2>&1 \
	    || { tail -n 40 fuzz/last-run.log; echo "fuzz: $$t found a crash (input in fuzz/artifacts/$$t/); make it a regression test"; exit 1; }; \
	  grep -E '^Done [0-9]+ runs' fuzz/last-run.log; \
	done
