#!/usr/bin/env bash
# Builds (once) the helm CLI from Go modules into the shared cache and prints the binary's path on stdout.
# Reused by the chart tests and CI; no download of release tarballs, only the Go module proxy.
# `--cached`: exit 0 when the binary is there, 1 when a run would build (prints nothing, builds nothing).
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
DEST="$CACHE_ROOT/helm-$HELM_VERSION"
if [ "${1:-}" = --cached ]; then [ -x "$DEST/helm" ]; exit; fi
if [ -x "$DEST/helm" ]; then
  echo "$DEST/helm"
  exit 0
fi
command -v go >/dev/null || {
  echo "build-helm: Go not found on PATH; install Go >= 1.26 (helm $HELM_VERSION needs it) or put a helm $HELM_VERSION binary at $DEST/helm" >&2
  exit 1
}
# Parallel test runs may all find no binary: one builds, the others wait for it.
mkdir -p "$CACHE_ROOT"
exec 9>"$DEST.lock"
flock 9
if [ -x "$DEST/helm" ]; then
  echo "$DEST/helm"
  exit 0
fi
echo "build-helm: building helm $HELM_VERSION into $DEST (a few minutes on a cold Go cache)" >&2
fail() {
  rm -rf "$DEST.tmp"
  echo "build-helm: $1 failed; check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))" >&2
  exit 1
}
# Helm's Makefile stamps the Kubernetes version its client libraries speak; without it `helm template`
# and `helm lint` assume Kubernetes 1.20. Read it from the client-go version in helm's own go.mod.
gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p') \
  || fail "go mod download helm.sh/helm/v3@$HELM_VERSION"
k8s_minor=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod" | head -n1)
[ -n "$k8s_minor" ] || fail "reading the client-go version from $gomod"
mkdir -p "$DEST.tmp"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
CGO_ENABLED=0 GOBIN="$DEST.tmp" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2 \
  || fail "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
# Move into place only when complete, so a killed build never leaves a half-written binary behind.
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "$DEST/helm"
