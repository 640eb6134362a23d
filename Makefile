# Apiary: the two commands a new machine needs are `make demo` and `make test`.
# Both install what is missing first (Debian packages via apt-get; pyzmq, numpy and
# safetensors via pip into the project-local virtual environment .venv).

SHELL := /bin/bash
VENV := $(CURDIR)/.venv
# Recipes (and the tests they run) find the project's Python first.
export PATH := $(VENV)/bin:$(PATH)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SWIFT ?= swift
BIN := .build/debug/apiary

.PHONY: soak all deps deps-python deps-browser build edge edge-dist edge-test demo dp-utility test examples python-test python-torch bench attack-bench bench-python netns-test kill-test fuzz fuzz-smoke deploy-check clean help
FUZZ_SECONDS ?= 3600

all: build

help:
	@echo "make demo    - train the digits model with an aggregator and 20 clients over tcp loopback"
	@echo "make dp-utility - final accuracy of the demo workload without privacy and with central DP at epsilon 1, 4, 8 (about 6 minutes)"
	@echo "make test    - build and run every test (unit, integration, processes, Python interop)"
	@echo "make build   - debug build of the apiary command"
	@echo "make edge    - release build of apiary-edge, the client alone with the Swift runtime linked in (needs only libzmq5)"
	@echo "make edge-dist - edge plus a tarball out/apiary-edge-<arch>.tar.gz laid out for / (binary, config, systemd unit)"
	@echo "make edge-test - apiary-edge (debug, static stdlib) in a chroot of only what ldd lists, training against a real aggregator"
	@echo "make fuzz    - libFuzzer over decoders and merge validator (FUZZ_SECONDS, default 3600)"
	@echo "make examples - build and run Examples/mlp-digits (an MLP on an embedded AggregatorServer) to its stated accuracy"
	@echo "make python-test - the Python SDK: install, mypy, pytest against real aggregators, examples (a) and (b)"
	@echo "make python-torch TORCH_PYTHON=... - the torch bridge tests and example (c), where torch is installed"
	@echo "make bench   - the benchmark suite (apiary-bench) in a release build, about 30 minutes; BENCH_ARGS='--only merge' for some"
	@echo "make attack-bench - five attacks at 10 % and 20 % of the fleet against each defence, two workloads, one table (about 30 minutes)"
	@echo "make bench-python - the SDK against raw pyzmq, 1M-parameter updates (APIARY_BENCH_BIN=release build)"
	@echo "make netns-test - aggregator, gateways and devices in network namespaces with delay, loss and a partition (root)"
	@echo "make kill-test - SIGKILL the aggregator 20 times during training; nothing acknowledged may be lost"
	@echo "make soak    - an aggregator and 8 client processes for an hour; the aggregator's memory every 30 s (MINUTES=...)"

## Install what is missing: libzmq (Debian's libzmq3-dev), pkg-config, pyzmq for interop tests.
deps:
	@if ! pkg-config --exists libzmq 2>/dev/null; then \
	  echo "installing libzmq3-dev and pkg-config"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libzmq3-dev pkg-config >/dev/null; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "Swift 6 toolchain not found on PATH"; exit 1; }

## Python for the interop and model tests: a virtual environment in .venv (never the system's).
deps-python:
	@[ -x $(VENV)/bin/python3 ] || { echo "creating $(VENV)"; python3 -m venv $(VENV); }
	@$(VENV)/bin/python3 -c 'import zmq, numpy, safetensors, sklearn, pytest, mypy, dp_accounting' 2>/dev/null || \
	  { echo "installing pyzmq, numpy, safetensors, scikit-learn, pytest, mypy and dp-accounting into $(VENV)"; \
	    $(VENV)/bin/python3 -m pip install --quiet pyzmq numpy safetensors scikit-learn pytest mypy dp-accounting; }
	@# The Python SDK, as a user installs it (again each time: it follows the checkout).
	@$(VENV)/bin/python3 -m pip install --quiet --force-reinstall --no-deps ./python

## A real browser for the dashboard test (Debian's chromium, run headless).
deps-browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing chromium"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; \
	fi

build: deps
	$(SWIFT) build --product apiary

## The edge client for devices: release, the Swift standard library and Foundation linked in
## (--static-swift-stdlib), so a device needs only libzmq5 (Deploy/README.md, "An edge device").
## Static builds get a build folder of their own: in a folder shared with the dynamic builds, the
## next dynamic link of `apiary` fails (it is handed the static Foundation's libraries).
## Without the package's default trait YAML: config files are read with FlatYAML instead of Yams,
## so no Foundation is linked, only FoundationEssentials (about 5 MiB less resident memory).
EDGE := .build-edge/release/apiary-edge
EDGE_FLAGS := --scratch-path .build-edge --product apiary-edge --static-swift-stdlib --disable-default-traits
edge: deps
	$(SWIFT) build -c release $(EDGE_FLAGS)
	@ls -l $(EDGE) && ldd $(EDGE)

## The edge client as a tarball to unpack at / on a device: /opt/apiary/bin/apiary-edge with its
## resource directory, /etc/apiary/client.yaml, /lib/systemd/system/apiary-edge@.service.
EDGE_DIST := out/apiary-edge-$(shell uname -m).tar.gz
edge-dist: edge
	rm -rf out/edge-root && mkdir -p out/edge-root/opt/apiary/bin out/edge-root/etc/apiary out/edge-root/lib/systemd/system
	@# Without debug sections and symbols: 62 instead of 90 MiB (backtraces lose function names).
	strip -o out/edge-root/opt/apiary/bin/apiary-edge $(EDGE)
	cp -R .build-edge/release/Apiary_ApiaryLearning.resources out/edge-root/opt/apiary/bin/
	cp Deploy/config/client.yaml out/edge-root/etc/apiary/
	cp Deploy/systemd/apiary-edge@.service out/edge-root/lib/systemd/system/
	tar -C out/edge-root --owner=0 --group=0 -czf $(EDGE_DIST) . && rm -rf out/edge-root
	@ls -l $(EDGE_DIST)

## The edge binary (debug, Swift runtime linked in) trains against a real aggregator with no
## Swift library reachable: a chroot of only what ldd lists (as root).
edge-test: deps
	$(SWIFT) build --product apiary
	$(SWIFT) build $(EDGE_FLAGS)
	EDGE_BIN=.build-edge/debug/apiary-edge bash Tests/edge/run.sh

## The main job: an aggregator and 20 clients train to 0.90 test accuracy.
demo: build
	$(BIN) demo

## The DP utility table (docs/BENCHMARKS.md): the demo workload without privacy and with central
## DP-FedBuff spent to epsilon 1, 4 and 8 (delta 1e-5), about 6 minutes; not part of `make test`.
dp-utility: build
	python3 Tests/privacy/dp_utility.py $(BIN) $(DP_UTILITY_ARGS)

## Every test: Swift unit and integration tests (real sockets, real processes), then the
## Python client written from docs/PROTOCOL.md against a real aggregator.
## The scale-out runs (3 shard processes, 2 gateways x 5 devices: a dozen processes each) run
## on their own after the rest, so they neither starve nor are starved by the parallel tests.
SCALE_SUITES := ShardProcessTests|GatewayProcessTests

test: deps deps-python deps-browser
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --skip '$(SCALE_SUITES)'
	$(SWIFT) test --skip-build --no-parallel --filter '$(SCALE_SUITES)'
	$(MAKE) edge-test
	bash Tests/interop/run.sh
	bash Tests/model/run.sh
	@# The privacy accountant against Google's dp-accounting, on a grid (within 1 %).
	$(VENV)/bin/python3 Tests/privacy/check_accountant.py $(BIN)
	$(MAKE) examples
	$(MAKE) python-test
	@# A real network (namespaces, veth links, delay, loss, a partitioned gateway): needs root.
	@if [ "$$(id -u)" = 0 ]; then NETNS_TARGET=0.88 bash Tests/netns/run.sh; \
	 else echo "make test: not root, so the network-namespace run (Tests/netns/run.sh) is skipped"; fi
	bash Tests/deploy/validate.sh
	bash Tests/deploy/smoke.sh
	bash Fuzz/run.sh 60

## The programs in Examples/: each a SwiftPM package that depends on Apiary by path, built
## and run to the accuracy it states (it exits 1 when it falls short).
examples: deps
	cd Examples/mlp-digits && $(SWIFT) build && .build/debug/MLPDigits --target 0.93 --limit 180

## The Python SDK: installed from python/ as a user would (pip install ./python), its types
## checked (mypy --strict), its pytest suite against real aggregator processes, and examples (a)
## and (b) (an aggregator and five Python client processes each) to their stated accuracy.
python-test: deps-python
	$(SWIFT) build --product apiary
	cd python && $(VENV)/bin/mypy --config-file pyproject.toml src
	cd python && APIARY_BIN=$(CURDIR)/$(BIN) $(VENV)/bin/python3 -m pytest -q tests
	APIARY_BIN=$(CURDIR)/$(BIN) PY=$(VENV)/bin/python3 bash python/examples/numpy-softmax/run.sh
	APIARY_BIN=$(CURDIR)/$(BIN) PY=$(VENV)/bin/python3 bash python/examples/sklearn-mlp/run.sh

## The SDK with PyTorch, where torch is installed (never a required install: PyPI's Linux wheel
## pulls several GB of CUDA libraries): the torch bridge tests and example (c).
##   make python-torch TORCH_PYTHON=/path/to/venv/bin/python
TORCH_PYTHON ?= python3
python-torch:
	$(SWIFT) build --product apiary
	$(TORCH_PYTHON) -m pip install --quiet ./python pytest safetensors scikit-learn
	cd python && APIARY_BIN=$(CURDIR)/$(BIN) $(TORCH_PYTHON) -m pytest -q tests/test_adapters.py
	APIARY_BIN=$(CURDIR)/$(BIN) PY=$(TORCH_PYTHON) bash python/examples/torch-mlp/run.sh

## The benchmark suite (docs/BENCHMARKS.md): every figure next to a bound measured in the same
## run. A release build of apiary-bench, whose helper processes it starts itself.
BENCH_ARGS ?=
bench: deps
	$(SWIFT) build -c release --product apiary-bench --scratch-path .build-release
	.build-release/release/apiary-bench $(BENCH_ARGS)

## The attack table (docs/BENCHMARKS.md, "Attacks and defences"): five attacks at 10 % and 20 %
## of the fleet against each defence, two workloads; about 30 minutes. Not part of make test.
attack-bench: deps
	$(SWIFT) build -c release --product apiary-bench --scratch-path .build-release
	.build-release/release/apiary-bench --only attacks $(BENCH_ARGS)

## The Python SDK's cost per update (1M parameters) against raw pyzmq in the same run, and its
## idle memory. Measure against a release aggregator: make bench-python APIARY_BENCH_BIN=.build-release/release/apiary
APIARY_BENCH_BIN ?= $(BIN)
bench-python: deps-python
	APIARY_BIN=$(abspath $(APIARY_BENCH_BIN)) $(VENV)/bin/python3 python/bench/bench_sdk.py

## The network-namespace run alone (root).
netns-test: build
	bash Tests/netns/run.sh

## The long crash test: SIGKILL the aggregator 20 times during training.
kill-test: deps
	$(SWIFT) build --build-tests
	APIARY_KILLS=20 $(SWIFT) test --skip-build --filter KillTests

## The soak: an aggregator (checkpoints, ledger, status server) and 8 client processes for
## MINUTES (default 60); prints the aggregator's VmRSS, RssAnon and RssFile every 30 s and the
## growth from minute 2 to the end (docs/BENCHMARKS.md, "Soak").
MINUTES ?= 60
soak: build
	MINUTES=$(MINUTES) bash Tests/soak/run.sh

## libFuzzer over the wire decoders and the merge validator (Fuzz/README.md): a long run.
fuzz: deps
	bash Fuzz/run.sh $(FUZZ_SECONDS)

## The bounded fuzz run that `make test` ends with (replays Tests/FuzzRegressions first).
fuzz-smoke: deps
	bash Fuzz/run.sh 60

## Deployment files: static checks, then the deploy configs run with the binary.
deploy-check: build
	bash Tests/deploy/validate.sh
	bash Tests/deploy/smoke.sh

clean:
	rm -rf .build .build-fuzz .build-edge
