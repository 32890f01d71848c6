#!/usr/bin/env bash
# Fetches (once) the Prometheus Operator's CRDs the project ships objects of (PodMonitor, ServiceMonitor,
# PrometheusRule) from its Go module on the module proxy into the shared cache, and prints the folder.
# The tests validate the operator's PodMonitors and the chart's monitors and rules against these schemas,
# and the e2e tests install the PodMonitor CRD into the sandbox (which has none by default).
# `--cached`: exit 0 when the files are there, 1 when a run would fetch (prints nothing, fetches nothing).
set -euo pipefail
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
DEST="$CACHE_ROOT/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION"
KINDS=(podmonitors servicemonitors prometheusrules)
complete() { local k; for k in "${KINDS[@]}"; do [ -s "$DEST/monitoring.coreos.com_$k.yaml" ] || return 1; done; }
if [ "${1:-}" = --cached ]; then complete; exit; fi
if complete; then echo "$DEST"; exit 0; fi
command -v go >/dev/null || {
  echo "fetch-prometheus-crds: Go not found on PATH; install Go >= 1.26 (its module download fetches the CRDs)" >&2
  exit 1
}
mkdir -p "$CACHE_ROOT"
exec 9>"$DEST.lock"
flock 9
if complete; then echo "$DEST"; exit 0; fi
module="github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION"
dir=$(go mod download -json "$module" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p') || true
[ -n "$dir" ] || { echo "fetch-prometheus-crds: go mod download $module failed (GOPROXY=$(go env GOPROXY))" >&2; exit 1; }
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
for k in "${KINDS[@]}"; do
  cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$k.yaml" "$DEST.tmp/"
done
chmod -R u+w "$DEST.tmp"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
echo "$DEST"
