#!/usr/bin/env bash
# Builds (once) a program of Prometheus 3.16 from Go modules into the shared cache and prints its path on
# stdout: `prometheus` itself (the default), or `promtool` (.ci/build-promtool.sh runs this with
# PROMETHEUS_PROGRAM=promtool). Only the Go module proxy is used; the second program's build reuses Go's
# build cache.
# - promtool: the alerting and recording rules' tests (tests/unit/test_prometheus_rules.py). Prometheus
#   3.x, not Debian 12's 2.42: kube-prometheus-stack runs 3.x, and 3.x changed what rules see (left-open
#   range selectors, UTF-8 names), so 2.42's verdicts could differ.
# - prometheus: the live rules test (tests/integration/test_prometheus_live.py) scrapes a real tritonserver
#   with it and reads the recording rules back. Without the builtinassets tag the web UI is not embedded;
#   the HTTP API is whole.
# `--cached`: exit 0 when the binary is there, 1 when a run would build (prints nothing, builds nothing).
set -euo pipefail
# Prometheus's Go module is versioned v0.<major><minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}"
PROGRAM="${PROMETHEUS_PROGRAM:-prometheus}"
case "$PROGRAM" in prometheus|promtool) ;; *) echo "build-$PROGRAM: not a Prometheus program" >&2; exit 2 ;; esac
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
DEST="$CACHE_ROOT/$PROGRAM-$PROMETHEUS_MODULE_VERSION"
if [ "${1:-}" = --cached ]; then [ -x "$DEST/$PROGRAM" ]; exit; fi
if [ -x "$DEST/$PROGRAM" ]; then
  echo "$DEST/$PROGRAM"
  exit 0
fi
command -v go >/dev/null || {
  echo "build-$PROGRAM: Go not found on PATH; install Go >= 1.26 or put a $PROGRAM binary of Prometheus 3.16 at $DEST/$PROGRAM" >&2
  exit 1
}
# Parallel test runs may all find no binary: one builds, the others wait for it.
mkdir -p "$CACHE_ROOT"
exec 9>"$DEST.lock"
flock 9
if [ -x "$DEST/$PROGRAM" ]; then
  echo "$DEST/$PROGRAM"
  exit 0
fi
echo "build-$PROGRAM: building $PROGRAM (Prometheus module $PROMETHEUS_MODULE_VERSION) into $DEST (a few minutes on a cold Go cache)" >&2
fail() {
  rm -rf "$DEST.tmp"
  echo "build-$PROGRAM: $1 failed; check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))" >&2
  exit 1
}
# v0.MMmm.p -> M.mm.p for `promtool --version` (Prometheus's Makefile stamps it the same way).
IFS=. read -r _ mm patch <<<"${PROMETHEUS_MODULE_VERSION#v}"
release="$((10#$mm / 100)).$((10#$mm % 100)).$patch"
mkdir -p "$DEST.tmp"
ldflags="-s -w -X github.com/prometheus/common/version.Version=$release"
CGO_ENABLED=0 GOBIN="$DEST.tmp" go install -trimpath -ldflags "$ldflags" \
  "github.com/prometheus/prometheus/cmd/$PROGRAM@$PROMETHEUS_MODULE_VERSION" >&2 \
  || fail "go install github.com/prometheus/prometheus/cmd/$PROGRAM@$PROMETHEUS_MODULE_VERSION"
# Move into place only when complete, so a killed build never leaves a half-written binary behind.
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "$DEST/$PROGRAM"
