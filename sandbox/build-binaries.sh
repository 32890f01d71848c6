#!/usr/bin/env bash
# Builds the sandbox's control plane from Go modules, once, into a cache outside the repo:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, kubectl, kwok.
# Re-running is cheap: each binary is rebuilt only when missing. Prints the bin dir on stdout.
# `--cached`: exit 0 when every binary is there, 1 when a run would build (prints nothing, builds nothing).
#
# Why a throwaway module: `go install k8s.io/kubernetes/cmd/...@vX` refuses modules with replace
# directives, and k8s.io/kubernetes replaces every staging module with a local path. We require
# k8s.io/kubernetes and pin each staging module to its published v0.Y.Z twin instead.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"     # requires Go >= 1.26.0
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"    # built against k8s.io/api v0.36
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
BIN_DIR="$CACHE_ROOT/bin-k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
WORK_DIR="$CACHE_ROOT/build"
K8S_COMMANDS="kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl"
ALL_BINARIES="etcd $K8S_COMMANDS kwok"

die() { echo "build-binaries: $*" >&2; exit 1; }
log() { echo "build-binaries: $*" >&2; }

all_built() {
  local b
  for b in $ALL_BINARIES; do
    [ -x "$BIN_DIR/$b" ] || return 1
  done
  [ -d "$BIN_DIR/kwok-stages" ]
}
if [ "${1:-}" = --cached ]; then all_built; exit; fi
# A warm cache needs nothing else, not even Go.
if all_built; then
  log "binaries ready in $BIN_DIR (cached)"
  echo "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null || die "Go is not installed or not on PATH. Install Go >= 1.26 (https://go.dev/dl/) and re-run."
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[ "${go_minor:-0}" -ge 26 ] || die "Go $(go env GOVERSION) is too old: Kubernetes $K8S_VERSION and kwok $KWOK_VERSION need Go >= 1.26. Install a newer Go and re-run."

mkdir -p "$BIN_DIR" "$WORK_DIR"
# Parallel runs (make test's background build and a test that needs kubectl; two checkouts) would share
# $WORK_DIR's throwaway modules: one builds, the others wait for it.
exec 9>"$BIN_DIR.lock"
flock 9
if all_built; then
  log "binaries ready in $BIN_DIR (built by a parallel run)"
  echo "$BIN_DIR"
  exit 0
fi
export CGO_ENABLED=0 GOFLAGS="-mod=mod" GOTOOLCHAIN=local

# Go's errors on a failed download are long; add one line that says what to do.
gofail() { die "$1 failed. Check that the Go module proxy ($(go env GOPROXY)) is reachable, then re-run; finished binaries in $BIN_DIR are kept."; }

build_kubernetes() {
  local mod="$WORK_DIR/k8s-$K8S_VERSION" minor_patch="${K8S_VERSION#v1.}"
  local minor="${minor_patch%%.*}" staging_version="v0.$minor_patch"
  mkdir -p "$mod"; cd "$mod"
  if [ ! -f go.mod ] || ! grep -q "k8s.io/kubernetes $K8S_VERSION" go.mod; then
    log "resolving k8s.io/kubernetes $K8S_VERSION (staging modules pinned to $staging_version)"
    rm -f go.mod go.sum
    go mod init sandbox-k8s-build >/dev/null 2>&1
    local gomod
    gomod=$(curl -fsSL "$(go env GOPROXY | cut -d, -f1)/k8s.io/kubernetes/@v/$K8S_VERSION.mod") \
      || gomod=$(cd "$WORK_DIR" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null && cat "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod") \
      || gofail "downloading k8s.io/kubernetes $K8S_VERSION's go.mod"
    echo "$gomod" | sed -nE 's#^\s*(k8s\.io/[a-z0-9-]+) => \./staging/.*#\1#p' | while read -r m; do
      go mod edit -replace "$m=$m@$staging_version"
    done
    go get "k8s.io/kubernetes@$K8S_VERSION" >&2 || gofail "go get k8s.io/kubernetes@$K8S_VERSION"
  fi
  local pkgs=() b
  for b in $K8S_COMMANDS; do
    [ -x "$BIN_DIR/$b" ] || pkgs+=("k8s.io/kubernetes/cmd/$b")
  done
  [ ${#pkgs[@]} -eq 0 ] && return 0
  log "building ${pkgs[*]##*/} (10-25 min cold on 2 cores)"
  go get "${pkgs[@]/%/@$K8S_VERSION}" >&2 || gofail "resolving Kubernetes commands"
  go build -trimpath -tags=selinux,notest \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    -o "$BIN_DIR/" "${pkgs[@]}" >&2 || gofail "building Kubernetes"
}

build_etcd() {
  [ -x "$BIN_DIR/etcd" ] && return 0
  local mod="$WORK_DIR/etcd-$ETCD_VERSION"
  mkdir -p "$mod"; cd "$mod"
  [ -f go.mod ] || go mod init sandbox-etcd-build >/dev/null 2>&1
  log "building etcd $ETCD_VERSION"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 || gofail "go get etcd $ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3 >&2 || gofail "building etcd"
}

build_kwok() {
  [ -x "$BIN_DIR/kwok" ] && return 0
  log "building kwok $KWOK_VERSION"
  GOBIN="$BIN_DIR" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2 || gofail "go install kwok $KWOK_VERSION"
  # kwok needs Stage objects to move pods and nodes through their lifecycle; they ship in its module.
  local src
  src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -nE 's/.*"Dir": "(.*)".*/\1/p')
  mkdir -p "$BIN_DIR/kwok-stages"
  cp -r "$src/kustomize/stage/." "$BIN_DIR/kwok-stages/"
  chmod -R u+w "$BIN_DIR/kwok-stages"
}

start=$(date +%s)
build_etcd
build_kwok
build_kubernetes
for b in $ALL_BINARIES; do
  [ -x "$BIN_DIR/$b" ] || die "$b is missing from $BIN_DIR after the build"
done
log "binaries ready in $BIN_DIR ($(( $(date +%s) - start ))s)"
echo "$BIN_DIR"
