#!/usr/bin/env bash
# Builds (once) promtool of Prometheus 3.16 from Go modules into the shared cache and prints its path on
# stdout. The alerting and recording rules' tests (tests/unit/test_prometheus_rules.py) run it; only the Go
# module proxy is used. Prometheus 3.x, not Debian 12's 2.42: kube-prometheus-stack runs 3.x, and 3.x
# changed what rules see (left-open range selectors, UTF-8 names), so 2.42's verdicts could differ.
# `--cached`: exit 0 when the binary is there, 1 when a run would build (prints nothing, builds nothing).
set -euo pipefail
# Prometheus's Go module is versioned v0.<major><minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}"
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
DEST="$CACHE_ROOT/promtool-$PROMETHEUS_MODULE_VERSION"
if [ "${1:-}" = --cached ]; then [ -x "$DEST/promtool" ]; exit; fi
if [ -x "$DEST/promtool" ]; then
  echo "$DEST/promtool"
  exit 0
fi
command -v go >/dev/null || {
  echo "build-promtool: Go not found on PATH; install Go >= 1.26 or put a promtool binary of Prometheus 3.16 at $DEST/promtool" >&2
  exit 1
}
# Parallel test runs may all find no binary: one builds, the others wait for it.
mkdir -p "$CACHE_ROOT"
exec 9>"$DEST.lock"
flock 9
if [ -x "$DEST/promtool" ]; then
  echo "$DEST/promtool"
  exit 0
fi
echo "build-promtool: building promtool (Prometheus module $PROMETHEUS_MODULE_VERSION) into $DEST (a few minutes on a cold Go cache)" >&2
fail() {
  rm -rf "$DEST.tmp"
  echo "build-promtool: $1 failed; check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))" >&2
  exit 1
}
# v0.MMmm.p -> M.mm.p for `promtool --version` (Prometheus's Makefile stamps it the same way).
IFS=. read -r _ mm patch <<<"${PROMETHEUS_MODULE_VERSION#v}"
release="$((10#$mm / 100)).$((10#$mm % 100)).$patch"
mkdir -p "$DEST.tmp"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$release"
CGO_ENABLED=0 GOBIN="$DEST.tmp" go install -trimpath -ldflags "$ldflags" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION" >&2 \
  || fail "go install github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"
# Move into place only when complete, so a killed build never leaves a half-written binary behind.
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "$DEST/promtool"
