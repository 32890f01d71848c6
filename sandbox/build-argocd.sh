#!/usr/bin/env bash
# Builds (once) the sandbox's Argo CD into a cache outside the repo, keyed by version:
#   argocd   the one binary of github.com/argoproj/argo-cd/v3 (module proxy, no patches): every component
#            (argocd-repo-server, argocd-application-controller, ...) is this binary under ARGOCD_BINARY_NAME
#   manifests/crds/*, manifests/base/config/*   the CRDs and base ConfigMaps of the same module zip
#   hack/git-verify-wrapper.sh                  the repo-server runs it to verify commits (PATH)
# The module cannot be `go install`ed (its go.mod has replace directives): a throwaway module requires it,
# copies its replace block and imports its cmd package from a tools.go. v3.2.12 does not compile, v3.3+
# needs a folder the proxy does not serve (see DESIGN.md "Argo CD (measured)").
# Re-running is cheap: a complete cache dir is printed at once. Prints the dir on stdout, logs on stderr.
# `--cached`: exit 0 when the cache dir is complete, 1 when a run would build (prints nothing, builds nothing).
set -euo pipefail

ARGOCD_VERSION="${ARGOCD_VERSION:-v3.2.11}"
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
DEST="$CACHE_ROOT/argocd-$ARGOCD_VERSION"
MODULE="github.com/argoproj/argo-cd/v3"

log() { echo "build-argocd: $*" >&2; }
complete() { [ -x "$DEST/argocd" ] && [ -f "$DEST/.complete" ]; }
if [ "${1:-}" = --cached ]; then complete; exit; fi
# A warm cache needs nothing else, not even Go.
if complete; then
  log "argocd $ARGOCD_VERSION ready in $DEST (cached)"
  echo "$DEST"
  exit 0
fi

work=""
die() { rm -rf "$DEST.tmp"; [ -z "$work" ] || rm -rf "$work"; echo "build-argocd: $*" >&2; exit 1; }
command -v go >/dev/null || die "Go is not installed or not on PATH. Install Go >= 1.25 (https://go.dev/dl/) and re-run."

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
# The throwaway module and a private build cache (~2.2 GB), both deleted afterwards.
work=$(mktemp -d "${TMPDIR:-/tmp}/build-argocd.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOCACHE="$work/gocache"
proxy_hint="check that the Go module proxy ($(go env GOPROXY)) is reachable, then re-run"

cd "$work"
log "fetching $MODULE@$ARGOCD_VERSION"
src=$(go mod download -json "$MODULE@$ARGOCD_VERSION" | sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p')
[ -n "$src" ] && [ -f "$src/go.mod" ] || die "go mod download $MODULE@$ARGOCD_VERSION failed; $proxy_hint"

mkdir -p "$DEST.tmp/manifests/crds" "$DEST.tmp/manifests/base/config" "$DEST.tmp/hack"
cp "$src"/manifests/crds/*.yaml "$DEST.tmp/manifests/crds/"
cp "$src"/manifests/base/config/*.yaml "$DEST.tmp/manifests/base/config/"
cp "$src/hack/git-verify-wrapper.sh" "$DEST.tmp/hack/"
# Files from the module cache are read-only; kustomization.yaml is neither a CRD nor a ConfigMap.
chmod -R u+w "$DEST.tmp"
chmod +x "$DEST.tmp/hack/git-verify-wrapper.sh"
rm -f "$DEST.tmp/manifests/crds/kustomization.yaml" "$DEST.tmp/manifests/base/config/kustomization.yaml"

mkdir -p "$work/mod"
cd "$work/mod"
go_version=$(sed -nE 's/^go ([0-9.]+)$/\1/p' "$src/go.mod" | head -1)
{
  echo "module sandbox.local/argocd-build"
  echo
  echo "go ${go_version:-1.25}"
  echo
  echo "require $MODULE $ARGOCD_VERSION"
  echo
  # The replace block, as is: without it the requirements resolve to versions that do not compile.
  sed -n '/^replace (/,/^)/p' "$src/go.mod"
} >go.mod
cat >tools.go <<EOF
//go:build tools

package tools

import _ "$MODULE/cmd"
EOF
log "resolving dependencies (go mod tidy)"
go mod tidy >&2 || die "go mod tidy failed; $proxy_hint"
# The slow step last: a missing module version fails in seconds, not after the build.
log "building argocd $ARGOCD_VERSION (about 6 min cold on 2 cores)"
go build -trimpath -o "$DEST.tmp/argocd" \
  -ldflags "-s -w -X $MODULE/common.version=${ARGOCD_VERSION#v}" \
  "$MODULE/cmd" >&2 || die "go build argocd $ARGOCD_VERSION failed"
go clean -cache >/dev/null 2>&1 || true
cd /
rm -rf "$work"

ARGOCD_BINARY_NAME=argocd "$DEST.tmp/argocd" version --client --short >/dev/null 2>&1 \
  || die "the argocd binary does not run"
touch "$DEST.tmp/.complete"
# Move into place only when complete, so a killed build never leaves a half-filled dir behind.
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
log "argocd $ARGOCD_VERSION ready in $DEST ($(( $(date +%s) - start ))s, $(du -sh "$DEST/argocd" | cut -f1))"
echo "$DEST"
