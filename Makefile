# credbridge developer entry points. `make demo` and `make test` install everything they need:
# a virtualenv in .venv with the package and its dev tools, the local control plane binaries
# built from Go modules into ~/.cache/credbridge/bin (first build: 15-30 minutes on 2 cores), and
# (`make test`) the operator image, built with buildah, which apt-get installs when missing, the
# flowise npm package for the Flowise tests in ~/.cache/credbridge/flowise (first time: minutes), and
# the oidc-provider npm package, the real OAuth2 server of the OAuth2 tests (seconds).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help venv controlplane image flowise databases oauth2-provider lint test test-unit test-integration test-e2e demo demo-down bench manifests clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "==> installing credbridge and its dev tools into $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP) ## Create .venv with credbridge and the dev tools

controlplane: ## Build etcd, kube-apiserver, kube-controller-manager, kubectl and helm (cached)
	@hack/controlplane/build.sh

image: ## Build the operator image with buildah, no Docker daemon needed (cached; see docs/image.md)
	@hack/image/build.sh

flowise: venv ## Install the flowise npm package for the Flowise tests (cached; first time several minutes, ~3 GiB)
	$(BIN)/python -m credbridge.local.flowise install

databases: venv ## Install Redis and MariaDB (Debian packages, with apt-get when missing) for the verification tests
	$(BIN)/python -m credbridge.local.databases install

oauth2-provider: venv ## Install oidc-provider from npm, the real OAuth2 server of the OAuth2 tests (cached)
	$(BIN)/python -m credbridge.local.oauth2provider install

lint: venv ## ruff, mypy --strict and the import-layer contracts
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test-unit: venv controlplane ## Unit tests (no cluster; the chart tests need the helm binary)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv controlplane flowise databases oauth2-provider ## Operator tests on the local control plane
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: venv controlplane image ## kubectl/helm install and operator-image tests on the local control plane
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

test: venv controlplane image flowise databases oauth2-provider lint ## Every tier: lint, unit, integration, e2e (with the image)
	$(BIN)/python -m pytest tests/unit tests/integration tests/e2e $(PYTEST_ARGS)

demo: venv controlplane ## Start the local control plane and the operator, apply examples/, show them
	$(BIN)/credbridge dev demo

demo-down: venv ## Stop everything `make demo` started
	$(BIN)/credbridge dev down

bench: venv controlplane flowise oauth2-provider ## Benchmarks: tables on stdout, JSON in benchmarks/results/
	$(BIN)/python -m benchmarks

manifests: controlplane ## Copy crds/ into the chart and render deploy/ from the chart
	hack/render-manifests.sh

clean: ## Remove .venv and local state (not the cached control plane binaries)
	-$(BIN)/credbridge dev down 2>/dev/null
	rm -rf $(VENV) .credbridge-dev .pytest_cache .mypy_cache .ruff_cache
