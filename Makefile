# Task index. The README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
OUT ?= out

.PHONY: all build lint fmt test unit bench demo fuzz help

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

unit: ## Fast unit and integration tests (the inner loop)
	$(CARGO) test --workspace --release

test: lint unit ## Every test (what CI runs)

bench: ## Criterion benchmarks (figures in the README)
	$(CARGO) bench -p derm-core

demo: ## The main job on an embedded default
	./hack/demo.sh $(OUT)/demo
