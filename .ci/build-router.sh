#!/usr/bin/env bash
# Builds (once per source) the in-server traffic router as a Triton backend,
# libtriton_tritonoperator_router.so, from operator/triton_operator/render/router_backend.cc, and copies
# it next to that source, where render/router.py ships it with the router's load call.
# The Triton core headers (tritonserver.h, tritonbackend.h; BSD-3, backend API 1.16, which Triton 2.51
# serves) come from the crates.io crate triton-sys 0.2.0, which vendors them: fetched once with cargo
# (crates.io's own client, which checks each crate against the index's checksum), kept in the cache.
# Needs g++ (Debian: build-essential) and, while the headers are not cached, cargo.
# Prints the library's path. `--cached`: exit 0 when it is built for this source, 1 when a run would build.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
CRATE=triton-sys-0.2.0
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
      command -v cargo >/dev/null || { echo "build-router: needs cargo: apt-get install cargo" >&2; exit 1; }
      echo "build-router: fetching the Triton core headers ($CRATE from crates.io)" >&2
      tmp=$(mktemp -d)
      trap 'rm -rf "$tmp"' EXIT
      # A throwaway package that depends on the crate; `cargo fetch` downloads it (and its dependencies,
      # never built) into a CARGO_HOME of its own.
      mkdir -p "$tmp/fetch/src" && : >"$tmp/fetch/src/lib.rs"
      printf '[package]\nname = "fetch-triton-headers"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\ntriton-sys = "=%s"\n' \
        "${CRATE#triton-sys-}" >"$tmp/fetch/Cargo.toml"
      CARGO_HOME="$tmp/cargo" cargo fetch --quiet --manifest-path "$tmp/fetch/Cargo.toml" \
        || { echo "build-router: cargo could not fetch $CRATE from crates.io" >&2; exit 1; }
      fetched=$(find "$tmp/cargo/registry/src" -maxdepth 2 -type d -name "$CRATE" | head -1)
      [ -f "$fetched/deps/core/include/triton/core/tritonbackend.h" ] \
        || { echo "build-router: $CRATE has no deps/core/include/triton/core/tritonbackend.h" >&2; exit 1; }
      rm -rf "$headers" && mkdir -p "$headers/deps/core"
      cp -r "$fetched/deps/core/include" "$fetched/deps/core/LICENSE" "$headers/deps/core/"
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
