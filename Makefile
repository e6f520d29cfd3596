# palisade: the two commands of the README, and what they need.
#   make demo   runs palisade's main job on this machine
#   make test   runs the whole test suite (as CI does)

SHELL := /bin/bash
CARGO ?= cargo
PALISADE := target/release/palisade

# Debian packages the build, the tests and the demo use.
# chromium: the web UI's browser test (headless, driven by playwright-core;
# Node.js >= 20.19 and npm build the UI and must be installed beforehand).
DEB_PACKAGES := clang llvm libbpf-dev linux-libc-dev gcc-multilib protobuf-compiler \
	iproute2 iptables nftables iperf3 tcpdump etcd-server etcd-client bpftool chromium

.PHONY: deps demo test build lint

# Installs only what is missing, so a second run is quick and offline.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs) first"; exit 1; }
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

build: deps
	$(CARGO) build --release --bin palisade

demo: build
	$(PALISADE) demo

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: lint
	$(CARGO) test --workspace
