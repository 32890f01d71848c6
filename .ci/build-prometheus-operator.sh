#!/usr/bin/env bash
# Builds (once) the Prometheus Operator into the shared cache, keyed by version, and prints the dir on stdout:
#   prometheus-operator           github.com/prometheus-operator/prometheus-operator/cmd/operator
#   prometheus-config-reloader    .../cmd/prometheus-config-reloader (the sidecar of the Operator's
#                                 Prometheus StatefulSet: it writes prometheus.env.yaml from the Secret the
#                                 Operator renders, and asks Prometheus to reload)
#   crds/*.yaml                   every CRD of the same module zip (the Operator will not run a controller
#                                 whose kind is not served); .ci/fetch-prometheus-crds.sh fetches only the
#                                 three kinds the project's own objects are
# Only the Go module proxy is used. The root module cannot be `go install`ed (its go.mod replaces its own
# pkg/apis/monitoring and pkg/client submodules with local folders): a throwaway module requires the root and
# the two submodules at the same version and imports both commands from a tools.go, as build-argocd.sh does.
# v0.85.0: newer roots are refused by the proxy (DESIGN.md "Monitoring and autoscaling"); the CRDs the
# project installs (.ci/fetch-prometheus-crds.sh) are the same version.
# Keeps only the binaries; the private build cache is deleted. Logs on stderr.
# `--cached`: exit 0 when the cache dir is complete, 1 when a run would build (prints nothing, builds nothing).
set -euo pipefail

PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
DEST="$CACHE_ROOT/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
MODULE="github.com/prometheus-operator/prometheus-operator"
PROGRAMS=(prometheus-operator prometheus-config-reloader)

log() { echo "build-prometheus-operator: $*" >&2; }
complete() { [ -x "$DEST/prometheus-operator" ] && [ -x "$DEST/prometheus-config-reloader" ] && [ -d "$DEST/crds" ] && [ -f "$DEST/.complete" ]; }
if [ "${1:-}" = --cached ]; then complete; exit; fi
if complete; then
  echo "$DEST"
  exit 0
fi

work=""
die() { rm -rf "$DEST.tmp"; [ -z "$work" ] || rm -rf "$work"; echo "build-prometheus-operator: $*" >&2; exit 1; }
command -v go >/dev/null || die "Go is not installed or not on PATH. Install Go >= 1.24 and re-run."

# Parallel runs may all find no cache: one builds, the others wait for it.
mkdir -p "$CACHE_ROOT"
exec 9>"$DEST.lock"
flock 9
if complete; then
  echo "$DEST"
  exit 0
fi
start=$(date +%s)
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
work=$(mktemp -d "${TMPDIR:-/tmp}/build-prometheus-operator.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOCACHE="$work/gocache"
proxy_hint="check that the Go module proxy ($(go env GOPROXY)) is reachable, then re-run"

cd "$work"
log "fetching $MODULE@$PROMETHEUS_OPERATOR_VERSION"
src=$(go mod download -json "$MODULE@$PROMETHEUS_OPERATOR_VERSION" | sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p')
[ -n "$src" ] && [ -f "$src/go.mod" ] || die "go mod download $MODULE@$PROMETHEUS_OPERATOR_VERSION failed; $proxy_hint"
go_version=$(sed -nE 's/^go ([0-9.]+)$/\1/p' "$src/go.mod" | head -1)
mkdir -p "$DEST.tmp/crds"
cp "$src"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml "$DEST.tmp/crds/"
chmod -R u+w "$DEST.tmp/crds"  # files from the module cache are read-only

mkdir -p "$work/mod"
cd "$work/mod"
cat >go.mod <<EOF
module sandbox.local/prometheus-operator-build

go ${go_version:-1.24.0}

require (
	$MODULE $PROMETHEUS_OPERATOR_VERSION
	$MODULE/pkg/apis/monitoring $PROMETHEUS_OPERATOR_VERSION
	$MODULE/pkg/client $PROMETHEUS_OPERATOR_VERSION
)
EOF
cat >tools.go <<EOF
//go:build tools

package tools

import (
	_ "$MODULE/cmd/operator"
	_ "$MODULE/cmd/prometheus-config-reloader"
)
EOF
log "resolving dependencies (go mod tidy)"
go mod tidy >&2 || die "go mod tidy failed; $proxy_hint"
# Stamped as upstream's Makefile does, so `--version` and the build_info metric name the release.
ldflags="-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_OPERATOR_VERSION#v}"
log "building prometheus-operator and prometheus-config-reloader $PROMETHEUS_OPERATOR_VERSION (a few minutes cold)"
go build -trimpath -ldflags "$ldflags" -o "$DEST.tmp/prometheus-operator" "$MODULE/cmd/operator" >&2 \
  || die "go build $MODULE/cmd/operator failed"
go build -trimpath -ldflags "$ldflags" -o "$DEST.tmp/prometheus-config-reloader" \
  "$MODULE/cmd/prometheus-config-reloader" >&2 || die "go build $MODULE/cmd/prometheus-config-reloader failed"
go clean -cache >/dev/null 2>&1 || true
cd /
rm -rf "$work"

for program in "${PROGRAMS[@]}"; do
  "$DEST.tmp/$program" --version >/dev/null 2>&1 || die "the $program binary does not run"
done
touch "$DEST.tmp/.complete"
# Move into place only when complete, so a killed build never leaves a half-filled dir behind.
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
log "prometheus-operator $PROMETHEUS_OPERATOR_VERSION ready in $DEST ($(($(date +%s) - start))s, $(du -sh "$DEST" | cut -f1))"
echo "$DEST"
