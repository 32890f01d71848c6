"""promtool of Prometheus 3.16 (built once from Go modules by .ci/build-promtool.sh), for the rules tests."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_PROMTOOL = ROOT / ".ci" / "build-promtool.sh"


@functools.cache
def promtool_binary() -> str:
    """Path of promtool; fails with the build script's message when it cannot be built."""
    done = subprocess.run(
        ["bash", str(BUILD_PROMTOOL)], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        pytest.fail(f".ci/build-promtool.sh could not provide promtool:\n{done.stderr}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run promtool with the given arguments; the caller checks returncode."""
    return subprocess.run(
        [promtool_binary(), *args], capture_output=True, text=True, timeout=300, check=False, cwd=cwd
    )
