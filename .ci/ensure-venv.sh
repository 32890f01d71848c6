#!/usr/bin/env bash
# Creates (once) the project's virtualenv outside the repo, keyed by pyproject.toml and Python version,
# and points its editable install at this checkout. Prints the venv path on stdout.
# uv (from PyPI) resolves and installs in a fraction of pip's time; it is installed into the cache too.
# `--cached`: exit 0 when uv and the venv are there, 1 when a run would create them (prints nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"
UV_VERSION=0.13.9
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || { echo "ensure-venv: $PY not found; install Python >= 3.11" >&2; exit 1; }
UV_DIR="$CACHE_ROOT/uv-$UV_VERSION"
venv_dir() {
  local pyver key
  pyver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  key=$( (cat pyproject.toml; echo "$pyver") | sha256sum | cut -c1-12)
  echo "$CACHE_ROOT/venv-py$pyver-$key"
}
if [ "${1:-}" = --cached ]; then [ -x "$UV_DIR/bin/uv" ] && [ -f "$(venv_dir)/.complete" ]; exit; fi
if [ ! -x "$UV_DIR/bin/uv" ]; then
  echo "ensure-venv: installing uv $UV_VERSION into $UV_DIR" >&2
  "$PY" -m pip install -q --disable-pip-version-check --target "$UV_DIR" "uv==$UV_VERSION" >&2 \
    || { echo "ensure-venv: could not install uv from PyPI; check that PyPI is reachable" >&2; exit 1; }
fi
UV="$UV_DIR/bin/uv"
VENV=$(venv_dir)
if [ ! -f "$VENV/.complete" ]; then
  echo "ensure-venv: creating $VENV" >&2
  rm -rf "$VENV"
  "$UV" venv -q -p "$PY" "$VENV" >&2
  VIRTUAL_ENV="$VENV" "$UV" pip install -q -e ".[test]" >&2
  touch "$VENV/.complete"
fi
# The venv is shared by checkouts with the same pyproject.toml: re-point the editable install here.
# Offline (inside a sandbox's network namespace, where `make` targets also run) the editable build
# cannot fetch its build backend; that is no failure: make exports PYTHONPATH=this checkout, which
# Python searches before the editable finder, and pods get the same PYTHONPATH.
if [ "$(cat "$VENV/.checkout" 2>/dev/null)" != "$PWD" ]; then
  if VIRTUAL_ENV="$VENV" "$UV" pip install -q --offline --no-deps -e . >/dev/null 2>&1 \
    || VIRTUAL_ENV="$VENV" "$UV" pip install -q --no-deps -e . >&2; then
    echo "$PWD" > "$VENV/.checkout"
  else
    echo "ensure-venv: could not point the editable install at $PWD (offline?); PYTHONPATH covers make's targets" >&2
  fi
fi
echo "$VENV"
