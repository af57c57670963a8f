# Task index. The README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
OUT ?= out

.PHONY: all build lint fmt test unit e2e bench demo pipeline help cluster-build cluster-up cluster-down manifests libtorch unit-lstm prometheus-build

all: build

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## Build every binary (release)
	$(CARGO) build --workspace --release

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## fmt check and clippy -D warnings
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: ## Unit and integration tests, release (the Monte Carlo checks run in release only)
	$(CARGO) test --workspace --release

libtorch: ## Install libtorch (torch 2.13.0 from PyPI) into a cached venv for the `lstm` feature
	./hack/install-libtorch.sh >/dev/null

unit-lstm: libtorch ## derm-core and derm-adapter tests with the attention LSTM (feature lstm, libtorch)
	./hack/with-libtorch.sh $(CARGO) clippy -p derm-core -p derm-adapter --all-targets --features lstm -- -D warnings
	./hack/with-libtorch.sh $(CARGO) test -p derm-core --release --features lstm
	./hack/with-libtorch.sh $(CARGO) test -p derm-adapter --release --features lstm --lib model

cluster-build: ## Build kube-apiserver, controller-manager, scheduler, kubectl, etcd from Go modules (cached)
	./hack/build-control-plane.sh

prometheus-build: ## Build a Prometheus server from Go modules (cached; e2e-controller's call counts)
	./hack/build-prometheus.sh >/dev/null

cluster-up: ## Start a loopback control plane (env file: /tmp/derm-cluster/env)
	./hack/cluster-up.sh

cluster-down: ## Stop it
	./hack/cluster-down.sh

e2e: cluster-build prometheus-build ## End-to-end checks against a real local control plane and Prometheus (builds or reuses them)
	./hack/probe-all.sh

test: lint unit unit-lstm e2e ## Every test (what CI runs)

manifests: ## Regenerate manifests/ from deploy/helm/derm (and the CRD from derm-adapter)
	$(CARGO) run --release -q -p derm-adapter -- crd > manifests/crd-dermapp.yaml
	./hack/gen-manifests.sh

bench: ## Criterion benchmarks (figures in the README)
	$(CARGO) bench -p derm-core

demo: ## The main job: derm-adapter demo (simulated trainticket, metrics API on https://127.0.0.1:6443)
	$(CARGO) build --release -p derm-adapter
	./target/release/derm-adapter demo $(DEMO_ARGS)

pipeline: ## The offline pipeline on generated traces: generate -> profile -> latency -> solve
	./hack/pipeline-demo.sh $(OUT)/pipeline
