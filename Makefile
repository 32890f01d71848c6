# Everything installs itself on first use, into caches outside the repo (~/.cache/triton-operator-sandbox):
# the virtualenv (keyed by pyproject.toml) and the binaries (keyed by version), each entry point only what
# it runs. Each one first checks this machine's prerequisites (.ci/prereqs.sh, milliseconds; as root with
# apt-get it installs what is missing), then builds (.ci/builds.sh: every build script exits at once when
# its cache is complete), then runs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
SANDBOX_NAME ?= default
VENV = $(shell .ci/ensure-venv.sh)
PY = $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)

# What each entry point needs. NEEDS_x: for .ci/prereqs.sh (root; python >= 3.11; `sandbox`: openssl, ip,
# nsenter, unshare, flock, nft; and single programs). BUILDS_x: for .ci/builds.sh (k8s: etcd, kube-*,
# kubectl, kwok; gateway: Contour, Envoy; argocd; helm; router: the native traffic router, C++), built
# before it runs. LAZY_x: built by its tests when first needed (helm: tests/unit/test_chart_lint.py);
# with BUILDS_x, they tell prereqs.sh whether Go is needed (only while one of them is not cached).
NEEDS_sandbox-up := root python sandbox
BUILDS_sandbox-up := k8s gateway router
NEEDS_demo := root python sandbox curl
# The demo also runs the Prometheus Operator and Prometheus (sandbox/monitoring.py); MONITORING=0 leaves
# them out (and their builds).
MONITORING ?= 1
BUILDS_demo := k8s gateway helm router $(if $(filter 0,$(MONITORING)),,prometheus-operator prometheus)
NEEDS_bench := root python sandbox libb64.so.0d
BUILDS_bench := k8s gateway router
NEEDS_chaos := root python sandbox
BUILDS_chaos := k8s gateway helm router
NEEDS_test := root python sandbox git redis-server libb64.so.0d
BUILDS_test := k8s gateway argocd router prometheus-crds prometheus-operator prometheus keda
LAZY_test := helm promtool
NEEDS_test-e2e := $(NEEDS_test)
BUILDS_test-e2e := $(BUILDS_test) helm
NEEDS_test-unit := python
LAZY_test-unit := helm promtool
NEEDS_lint := python
NEEDS_binaries := python
BUILDS_binaries := k8s gateway argocd
NEEDS_gateway-binaries := python
BUILDS_gateway-binaries := gateway
NEEDS_argocd-binaries := python
BUILDS_argocd-binaries := argocd
ENTRY_POINTS := sandbox-up demo bench chaos test test-e2e test-unit lint binaries gateway-binaries argocd-binaries

.PHONY: help venv binaries sandbox-up sandbox-down sandbox-status sandbox-shell test test-unit test-e2e lint fmt crds dashboard run demo demo-down bench chaos gateway-binaries argocd-binaries
.PHONY: $(addprefix prereqs-,$(ENTRY_POINTS)) $(addprefix builds-,$(ENTRY_POINTS))

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

$(addprefix prereqs-,$(ENTRY_POINTS)): prereqs-%:
	@.ci/prereqs.sh --for "make $*" --builds "$(strip venv $(BUILDS_$*) $(LAZY_$*))" $(NEEDS_$*)

$(addprefix builds-,$(ENTRY_POINTS)): builds-%: prereqs-%
	@.ci/builds.sh $(BUILDS_$*)

venv: ## create the virtualenv (cached) and print its path
	@.ci/ensure-venv.sh

binaries: builds-binaries ## build etcd, kube-* (kube-proxy too), kubectl, kwok, the Gateway (Contour, Envoy) and Argo CD (cached)

sandbox-up: builds-sandbox-up ## start the local cluster (idempotent); eval its output
	@$(PY) -m sandbox up --name $(SANDBOX_NAME)

sandbox-down: ## stop the local cluster; nothing of it is left running
	@$(PY) -m sandbox down --name $(SANDBOX_NAME)

sandbox-status: ## show the sandbox's processes
	@$(PY) -m sandbox status --name $(SANDBOX_NAME)

sandbox-shell: ## a shell inside the sandbox's network namespace (pod IPs, ClusterIPs), KUBECONFIG and PATH set
	@$(PY) -m sandbox shell --name $(SANDBOX_NAME)

# The builds run in the background while the unit and integration tests that need none run (.ci/test.sh).
test: prereqs-test ## run every test: unit, integration (real Triton, S3), end to end (sandbox), 3 seeded chaos kills
	.ci/test.sh "$(PY)" "$(BUILDS_test)" $(PYTEST_ARGS)

test-unit: prereqs-test-unit ## only the fast unit tests (no processes, no cluster)
	$(PY) -m pytest tests sandbox/tests -m unit $(PYTEST_ARGS)

test-e2e: builds-test-e2e ## only the end-to-end tests on the sandbox
	$(PY) -m pytest tests -m e2e $(PYTEST_ARGS)

chaos: builds-chaos ## seeded faults on the sandbox: make chaos SEED=<n> KILLS=<k> (SEED unset: drawn and printed; KILLS 20)
	CHAOS_SEED=$(SEED) CHAOS_KILLS=$(or $(KILLS),20) $(PY) -m pytest tests/chaos -m chaos -s $(PYTEST_ARGS)

lint: prereqs-lint ## ruff, mypy --strict, import layering (shellcheck on the scripts too, where installed)
	$(VENV)/bin/ruff check operator model_builders sandbox tests bench dashboards .ci
	$(VENV)/bin/ruff format --check operator model_builders sandbox tests bench dashboards .ci
	$(VENV)/bin/mypy operator/triton_operator model_builders sandbox tests bench dashboards .ci/pytest_phases.py .ci/report.py
	$(VENV)/bin/lint-imports
	@if command -v shellcheck >/dev/null; then shellcheck --severity=warning .ci/run .ci/*.sh sandbox/*.sh; \
	else echo "lint: shellcheck is not installed (apt-get install shellcheck); the shell scripts are not checked"; fi

fmt: ## format the code
	$(VENV)/bin/ruff format operator model_builders sandbox tests bench dashboards .ci
	$(VENV)/bin/ruff check --fix operator model_builders sandbox tests bench dashboards .ci

run: ## run the operator in the foreground against $$KUBECONFIG
	$(VENV)/bin/triton-operator run

demo: builds-demo ## local cluster + operator + an example model serving real requests (left running; no Argo CD); with Prometheus unless MONITORING=0
	MONITORING=$(MONITORING) $(PY) -m sandbox.demo

demo-down: sandbox-down ## stop what `make demo` left running (the same as make sandbox-down)

bench: builds-bench ## benchmarks: operator overhead against direct apply, API requests at steady state
	$(PY) -m bench.run $(BENCH_ARGS)

crds: ## regenerate crds/ and the chart's copies from the API models
	$(PY) -m triton_operator.api.crdgen --out crds/
	UPDATE_MANIFESTS=1 $(PY) -m pytest -q tests/unit/test_manifests.py

dashboard: ## regenerate the chart's Grafana dashboard (files/grafana-dashboard.json) from dashboards/serving.py
	$(PY) -m dashboards.serving

gateway-binaries: builds-gateway-binaries ## build Contour and fetch Envoy and the Gateway API CRDs for the sandbox's Gateway (cached)

argocd-binaries: builds-argocd-binaries ## build Argo CD (one binary: repo-server, application-controller) and fetch its CRDs for the Argo CD tests (cached)
