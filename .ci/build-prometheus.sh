#!/usr/bin/env bash
# Builds (once) Prometheus 3.16 itself from Go modules into the shared cache and prints its path on stdout
# (the same module version as .ci/build-promtool.sh; the second build reuses Go's build cache). The live
# rules test (tests/integration/test_prometheus_live.py) scrapes a real tritonserver with it and reads the
# recording rules back. Without the builtinassets tag the web UI is not embedded; the HTTP API is whole.
# `--cached`: exit 0 when the binary is there, 1 when a run would build (prints nothing, builds nothing).
set -euo pipefail
# Prometheus's Go module is versioned v0.<major><minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}"
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
DEST="$CACHE_ROOT/prometheus-$PROMETHEUS_MODULE_VERSION"
if [ "${1:-}" = --cached ]; then [ -x "$DEST/prometheus" ]; exit; fi
if [ -x "$DEST/prometheus" ]; then
  echo "$DEST/prometheus"
  exit 0
fi
command -v go >/dev/null || {
  echo "build-prometheus: Go not found on PATH; install Go >= 1.26 or put a prometheus binary of Prometheus 3.16 at $DEST/prometheus" >&2
  exit 1
}
# Parallel test runs may all find no binary: one builds, the others wait for it.
mkdir -p "$CACHE_ROOT"
exec 9>"$DEST.lock"
flock 9
if [ -x "$DEST/prometheus" ]; then
  echo "$DEST/prometheus"
  exit 0
fi
echo "build-prometheus: building prometheus (Prometheus module $PROMETHEUS_MODULE_VERSION) into $DEST (a few minutes on a cold Go cache)" >&2
fail() {
  rm -rf "$DEST.tmp"
  echo "build-prometheus: $1 failed; check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))" >&2
  exit 1
}
# v0.MMmm.p -> M.mm.p for `promtool --version` (Prometheus's Makefile stamps it the same way).
IFS=. read -r _ mm patch <<<"${PROMETHEUS_MODULE_VERSION#v}"
release="$((10#$mm / 100)).$((10#$mm % 100)).$patch"
mkdir -p "$DEST.tmp"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$release"
CGO_ENABLED=0 GOBIN="$DEST.tmp" go install -trimpath -ldflags "$ldflags" \
  "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION" >&2 \
  || fail "go install github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION"
# Move into place only when complete, so a killed build never leaves a half-written binary behind.
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "$DEST/prometheus"
