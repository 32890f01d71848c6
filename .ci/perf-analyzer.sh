#!/usr/bin/env bash
# Installs (once) NVIDIA's perf_analyzer into the cache, keyed by version, and prints the path of a
# wrapper that runs it. make bench's router part measures with it (bench/router.py).
# perf_analyzer ships in the tritonclient 2.51 wheel (tritonclient-2.51.0.data/data/bin/perf_analyzer;
# later wheels dropped it). It links libcudart.so.12 even on a machine without a GPU: that one library
# comes from the nvidia-cuda-runtime-cu12 wheel. It also needs Debian's libb64-0d (.ci/prereqs.sh
# libb64.so.0d installs it for make bench and make test). Both wheels come from PyPI with pip download;
# nothing is installed into a Python environment.
# `--cached`: exit 0 when it is installed, 1 when a run would install it (prints nothing).
set -euo pipefail
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
PA_VERSION=2.51.0
CUDART_VERSION=12.3.101
PY="${PYTHON:-python3}"
DIR="$CACHE_ROOT/perf-analyzer-$PA_VERSION"
if [ "${1:-}" = --cached ]; then [ -x "$DIR/perf_analyzer" ]; exit; fi
if [ ! -x "$DIR/perf_analyzer" ]; then
  echo "perf-analyzer: installing perf_analyzer $PA_VERSION into $DIR" >&2
  staging="$DIR.tmp.$$"
  rm -rf "$staging"
  mkdir -p "$staging/wheels" "$staging/bin" "$staging/lib"
  trap 'rm -rf "$staging"' EXIT
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux1_x86_64 --python-version 3.11 -d "$staging/wheels" \
    "tritonclient==$PA_VERSION" "nvidia-cuda-runtime-cu12==$CUDART_VERSION" >&2 \
    || { echo "perf-analyzer: could not download the wheels from PyPI; check that PyPI is reachable" >&2; exit 1; }
  "$PY" - "$staging" "$PA_VERSION" <<'EOF'
import sys, zipfile
from pathlib import Path

staging, version = Path(sys.argv[1]), sys.argv[2]
wanted = {
    f"tritonclient-{version}.data/data/bin/perf_analyzer": staging / "bin" / "perf_analyzer",
    "nvidia/cuda_runtime/lib/libcudart.so.12": staging / "lib" / "libcudart.so.12",
}
for wheel in (staging / "wheels").glob("*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for name in set(z.namelist()) & wanted.keys():
            wanted.pop(name).write_bytes(z.read(name))
if wanted:
    sys.exit(f"perf-analyzer: the wheels lack {sorted(wanted)}")
EOF
  chmod +x "$staging/bin/perf_analyzer"
  rm -rf "$staging/wheels"
  # The wrapper: its own library folder first, then the caller's.
  cat > "$staging/perf_analyzer" <<'EOF'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/bin/perf_analyzer" "$@"
EOF
  chmod +x "$staging/perf_analyzer"
  # Fails loudly here, not in the middle of a bench, when a library is missing (libb64-0d).
  if ! out=$("$staging/perf_analyzer" --version 2>&1); then
    echo "perf-analyzer: perf_analyzer does not start: $out" >&2
    echo "perf-analyzer: it needs Debian's libb64-0d: apt-get install libb64-0d" >&2
    exit 1
  fi
  rm -rf "$DIR"
  mv "$staging" "$DIR"
  trap - EXIT
fi
echo "$DIR/perf_analyzer"
