"""The native traffic router's library, built (once per source) by .ci/build-router.sh for the tests that
load it. Its name marks the modules that import it as needing a build (.ci/pytest_phases.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def ensure_router_binaries() -> Path:
    """The path of libtriton_tritonoperator_router.so beside render/router.py (built when missing)."""
    done = subprocess.run(
        [str(REPO_ROOT / ".ci" / "build-router.sh")], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the native router did not build:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])
