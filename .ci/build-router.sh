#!/usr/bin/env bash
# Builds (once per source) the in-server traffic router as a Triton backend,
# libtriton_tritonoperator_router.so, from operator/triton_operator/render/router_backend.cc, and copies
# it next to that source, where render/router.py ships it with the router's load call.
# The Triton core headers (tritonserver.h, tritonbackend.h; BSD-3, backend API 1.16, which Triton 2.51
# serves) come from the crates.io crate triton-sys 0.2.0, which vendors them: one download, checked by
# its sha256, kept in the cache. Needs g++ (Debian: build-essential).
# Prints the library's path. `--cached`: exit 0 when it is built for this source, 1 when a run would build.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
CRATE=triton-sys-0.2.0
CRATE_SHA256=10f5acb5060e1e726182d9f268ffee22c5444a38343a9466f4cc12d64b037e53
SRC=operator/triton_operator/render/router_backend.cc
OUT=operator/triton_operator/render/libtriton_tritonoperator_router.so
key=$( (cat "$SRC"; echo "$CRATE"; g++ --version 2>/dev/null | head -1) | sha256sum | cut -c1-12)
BUILT="$CACHE_ROOT/router-backend-$key/libtriton_tritonoperator_router.so"
installed() { [ -f "$BUILT" ] && [ -f "$OUT" ] && cmp -s "$BUILT" "$OUT"; }
if [ "${1:-}" = --cached ]; then installed; exit; fi
if ! installed; then
  if [ ! -f "$BUILT" ]; then
    command -v g++ >/dev/null || { echo "build-router: needs g++: apt-get install g++" >&2; exit 1; }
    headers="$CACHE_ROOT/$CRATE"
    if [ ! -f "$headers/deps/core/include/triton/core/tritonbackend.h" ]; then
      echo "build-router: fetching the Triton core headers ($CRATE from crates.io)" >&2
      tmp=$(mktemp -d)
      trap 'rm -rf "$tmp"' EXIT
      curl -fsSL --retry 3 -o "$tmp/crate.tar.gz" "https://static.crates.io/crates/triton-sys/$CRATE.crate" \
        || { echo "build-router: could not download $CRATE from crates.io" >&2; exit 1; }
      echo "$CRATE_SHA256  $tmp/crate.tar.gz" | sha256sum -c --quiet - \
        || { echo "build-router: $CRATE's checksum differs" >&2; exit 1; }
      tar -xzf "$tmp/crate.tar.gz" -C "$tmp" "$CRATE/deps/core/include" "$CRATE/deps/core/LICENSE"
      rm -rf "$headers"
      mv "$tmp/$CRATE" "$headers"
    fi
    echo "build-router: building $BUILT" >&2
    mkdir -p "$(dirname "$BUILT")"
    # Triton's own symbols are resolved when the server loads the library.
    g++ -std=c++17 -O2 -Wall -Wextra -shared -fPIC \
      -I"$headers/deps/core/include" -o "$BUILT.tmp" "$SRC"
    mv "$BUILT.tmp" "$BUILT"
  fi
  cp "$BUILT" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
fi
echo "$PWD/$OUT"
