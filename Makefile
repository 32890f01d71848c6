# Everything installs itself on first use, into caches outside the repo (~/.cache/triton-operator-sandbox):
# the virtualenv (keyed by pyproject.toml) and the Kubernetes binaries (keyed by version).
SHELL := /bin/bash
.DEFAULT_GOAL := help
SANDBOX_NAME ?= default
VENV = $(shell .ci/ensure-venv.sh)
PY = $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)

.PHONY: help venv binaries sandbox-up sandbox-down sandbox-status sandbox-shell test test-unit test-e2e lint fmt crds run demo demo-down bench

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

venv: ## create the virtualenv (cached) and print its path
	@.ci/ensure-venv.sh

binaries: argocd-binaries ## build etcd, kube-* (kube-proxy too), kubectl, kwok, the Gateway (Contour, Envoy) and Argo CD (cached)
	@bash tests/sandbox/build-binaries.sh >/dev/null
	@bash tests/sandbox/build-gateway.sh >/dev/null

sandbox-up: ## start the local cluster (idempotent); eval its output
	@$(PY) -m tests.sandbox up --name $(SANDBOX_NAME)

sandbox-down: ## stop the local cluster; nothing of it is left running
	@$(PY) -m tests.sandbox down --name $(SANDBOX_NAME)

sandbox-status: ## show the sandbox's processes
	@$(PY) -m tests.sandbox status --name $(SANDBOX_NAME)

sandbox-shell: ## a shell inside the sandbox's network namespace (pod IPs, ClusterIPs), KUBECONFIG and PATH set
	@$(PY) -m tests.sandbox shell --name $(SANDBOX_NAME)

test: binaries ## run every test: unit, integration (real Triton, S3), end to end (sandbox), 3 seeded chaos kills
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: ## only the fast unit tests (no processes, no cluster)
	$(PY) -m pytest tests -m unit $(PYTEST_ARGS)

test-e2e: binaries ## only the end-to-end tests on the sandbox
	$(PY) -m pytest tests -m e2e $(PYTEST_ARGS)

.PHONY: chaos
chaos: binaries ## seeded faults on the sandbox: make chaos SEED=<n> KILLS=<k> (SEED unset: drawn and printed; KILLS 20)
	CHAOS_SEED=$(SEED) CHAOS_KILLS=$(or $(KILLS),20) $(PY) -m pytest tests/chaos -m chaos -s $(PYTEST_ARGS)

lint: ## ruff, mypy --strict, import layering
	$(VENV)/bin/ruff check operator model_builders tests bench
	$(VENV)/bin/ruff format --check operator model_builders tests bench
	$(VENV)/bin/mypy operator/triton_operator model_builders tests bench
	$(VENV)/bin/lint-imports

fmt: ## format the code
	$(VENV)/bin/ruff format operator model_builders tests bench
	$(VENV)/bin/ruff check --fix operator model_builders tests bench

run: ## run the operator in the foreground against $$KUBECONFIG
	$(VENV)/bin/triton-operator run

demo: binaries ## local cluster + operator + an example model serving real requests (left running)
	$(PY) -m tests.sandbox.demo

demo-down: sandbox-down ## stop what `make demo` left running (the same as make sandbox-down)

bench: binaries ## benchmarks: operator overhead against direct apply, API requests at steady state
	$(PY) -m bench.run $(BENCH_ARGS)

crds: ## regenerate crds/ and the chart's copies from the API models
	$(PY) -m triton_operator.api.crdgen --out crds/
	UPDATE_MANIFESTS=1 $(PY) -m pytest -q tests/unit/test_manifests.py

.PHONY: gateway-binaries
gateway-binaries: ## build Contour and fetch Envoy and the Gateway API CRDs for the sandbox's Gateway (cached)
	@bash tests/sandbox/build-gateway.sh >/dev/null

.PHONY: argocd-binaries
argocd-binaries: ## build Argo CD (one binary: repo-server, application-controller) and fetch its CRDs for the Argo CD tests (cached)
	@bash tests/sandbox/build-argocd.sh >/dev/null
