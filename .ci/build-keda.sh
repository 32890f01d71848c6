#!/usr/bin/env bash
# Builds (once) KEDA into the shared cache, keyed by version, and prints the dir on stdout:
#   keda            github.com/kedacore/keda/v2/cmd/operator (the ScaledObject controller: it creates and
#                   owns the HPA of each ScaledObject, and polls each trigger's scaler)
#   keda-adapter    .../cmd/adapter (the metrics apiserver behind v1beta1.external.metrics.k8s.io: the HPA
#                   controller asks it for each ScaledObject's metric, and it asks the operator over gRPC)
#   crds/*.yaml     the module's config/crd/bases (keda.sh and eventing.keda.sh kinds: the operator starts
#                   a controller for each and will not run while one is not served)
#   rbac/*.yaml     KEDA's namespace, ServiceAccount, roles and bindings, from the module's config (general,
#                   service_account, rbac, metrics-server), numbered in the order they apply
# The admission webhooks (cmd/webhooks) are not built: the sandbox does not run them (sandbox/keda.py).
# Only the Go module proxy is used. The module cannot be `go install`ed (its go.mod has replace lines, which
# `go install pkg@version` refuses), and a throwaway module requiring it would lose those replace lines (they
# pin k8s.io/* and controller-runtime; without them the build resolves other versions). So the module
# directory is copied out of the module cache and built in place with its own go.mod and go.sum.
# v2.20.2: v2.21 needs Go 1.27.4 (DESIGN.md "Monitoring and autoscaling"); this machine has 1.26.8.
# Cold build (its private Go build cache empty; KEDA's dependencies already in Go's module cache): 578 s on
# the 2-core dev machine while other tests ran (keda ~8 min, then keda-adapter ~1 min on the shared
# packages); a machine that must also download the modules takes longer. The cache dir holds 267 MB.
# Keeps only the binaries, the CRDs and the RBAC files; the private build cache and the copy are deleted.
# Logs on stderr.
# `--cached`: exit 0 when the cache dir is complete, 1 when a run would build (prints nothing, builds nothing).
set -euo pipefail

KEDA_VERSION="${KEDA_VERSION:-v2.20.2}"
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
DEST="$CACHE_ROOT/keda-$KEDA_VERSION"
MODULE="github.com/kedacore/keda/v2"
PROGRAMS=(keda keda-adapter)

log() { echo "build-keda: $*" >&2; }
complete() {
  [ -x "$DEST/keda" ] && [ -x "$DEST/keda-adapter" ] && [ -d "$DEST/crds" ] && [ -d "$DEST/rbac" ] \
    && [ -f "$DEST/.complete" ]
}
if [ "${1:-}" = --cached ]; then complete; exit; fi
if complete; then
  echo "$DEST"
  exit 0
fi

work=""
die() { rm -rf "$DEST.tmp"; [ -z "$work" ] || rm -rf "$work"; echo "build-keda: $*" >&2; exit 1; }
command -v go >/dev/null || die "Go is not installed or not on PATH. Install Go >= 1.26 and re-run."

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
work=$(mktemp -d "${TMPDIR:-/tmp}/build-keda.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOCACHE="$work/gocache"
proxy_hint="check that the Go module proxy ($(go env GOPROXY)) is reachable, then re-run"

cd "$work"
log "fetching $MODULE@$KEDA_VERSION"
src=$(go mod download -json "$MODULE@$KEDA_VERSION" | sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p')
[ -n "$src" ] && [ -f "$src/go.mod" ] || die "go mod download $MODULE@$KEDA_VERSION failed; $proxy_hint"
mkdir -p "$DEST.tmp/crds" "$DEST.tmp/rbac"
cp "$src"/config/crd/bases/*.yaml "$DEST.tmp/crds/"
cp "$src/config/general/namespace.yaml" "$DEST.tmp/rbac/00-namespace.yaml"
cp "$src/config/service_account/service_account.yaml" "$DEST.tmp/rbac/01-service-account.yaml"
cp "$src/config/rbac/role.yaml" "$DEST.tmp/rbac/02-operator-roles.yaml"
cp "$src/config/rbac/role_binding.yaml" "$DEST.tmp/rbac/03-operator-role-bindings.yaml"
cp "$src/config/metrics-server/role.yaml" "$DEST.tmp/rbac/04-metrics-server-roles.yaml"
cp "$src/config/metrics-server/role_binding.yaml" "$DEST.tmp/rbac/05-metrics-server-role-bindings.yaml"
chmod -R u+w "$DEST.tmp/crds" "$DEST.tmp/rbac"  # files from the module cache are read-only

cp -r "$src" "$work/keda"
chmod -R u+w "$work/keda"
cd "$work/keda"
log "downloading dependencies (go mod download)"
go mod download >&2 || die "go mod download failed; $proxy_hint"
# Stamped as upstream's Makefile does, so the operator's first log line and keda_build_info name the release.
ldflags="-s -w -X=$MODULE/version.Version=${KEDA_VERSION#v}"
log "building keda and keda-adapter $KEDA_VERSION (about 10 minutes cold on 2 cores)"
go build -trimpath -ldflags "$ldflags" -o "$DEST.tmp/keda" ./cmd/operator >&2 \
  || die "go build $MODULE/cmd/operator failed"
go build -trimpath -ldflags "$ldflags" -o "$DEST.tmp/keda-adapter" ./cmd/adapter >&2 \
  || die "go build $MODULE/cmd/adapter failed"
go clean -cache >/dev/null 2>&1 || true
cd /
rm -rf "$work"

for program in "${PROGRAMS[@]}"; do
  "$DEST.tmp/$program" --help >/dev/null 2>&1 || die "the $program binary does not run"
done
touch "$DEST.tmp/.complete"
# Move into place only when complete, so a killed build never leaves a half-filled dir behind.
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
log "keda $KEDA_VERSION ready in $DEST ($(($(date +%s) - start))s, $(du -sh "$DEST" | cut -f1))"
echo "$DEST"
