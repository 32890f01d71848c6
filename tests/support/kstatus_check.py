"""kstatus itself: its status.Compute (sigs.k8s.io/cli-utils v0.37.2, what Flux, kpt and cli-utils judge
objects with) run on objects, by tests/support/kstatus/main.go built once into
${XDG_CACHE_HOME:-~/.cache}/triton-operator-sandbox/kstatus-v0.37.2/ (about a minute on 2 cores with an
empty Go module cache; Go is a prerequisite of the sandbox already).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any


class KstatusUnavailable(Exception):
    """kstatus-check could not be built here (no Go, or no Go module cache and no registry)."""


ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "support" / "kstatus"
KSTATUS_VERSION = "v0.37.2"
FILES = ("go.mod", "go.sum", "main.go")
BUILD_TIMEOUT_S = 900


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "triton-operator-sandbox" / f"kstatus-{KSTATUS_VERSION}"


def kstatus_binary() -> Path:
    """The kstatus-check program, built from tests/support/kstatus once per version and source."""
    assert f"sigs.k8s.io/cli-utils {KSTATUS_VERSION}" in (SOURCE / "go.mod").read_text()
    digest = hashlib.sha256(b"".join((SOURCE / name).read_bytes() for name in FILES)).hexdigest()[:12]
    binary = cache_dir() / f"kstatus-check-{digest}"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise KstatusUnavailable("Go is not installed (a prerequisite of the sandbox)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent) as work:
        for name in FILES:  # built from a copy: the checkout is never touched
            shutil.copy(SOURCE / name, Path(work) / name)
        env = {
            **os.environ,
            "CGO_ENABLED": "0",
            "GOFLAGS": "-mod=mod -buildvcs=false",
            "GOTOOLCHAIN": "local",
        }
        result = subprocess.run(
            [go, "build", "-o", "kstatus-check", "."],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise KstatusUnavailable(f"building kstatus-check failed:\n{result.stderr[-4000:]}")
        os.replace(Path(work) / "kstatus-check", binary)  # atomic: a concurrent run sees all or nothing
    return binary


def compute(objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    """kstatus's verdict on each object, in order (KstatusUnavailable when it cannot be built)."""
    result = subprocess.run(
        [str(kstatus_binary())],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    verdicts: list[dict[str, str]] = json.loads(result.stdout)
    assert len(verdicts) == len(objects)
    return verdicts


def kstatus(obj: dict[str, Any]) -> dict[str, str]:
    """kstatus's verdict on one object: {"status", "message"}."""
    return compute([obj])[0]


def verdict(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of kstatus itself, or, where it cannot be built (inside the sandbox's network
    namespace with an empty Go module cache), of the transcription of its rules that
    tests/integration/test_kstatus.py checks against it."""
    from tests.support.kstatus_states import kstatus_rules

    try:
        said = kstatus(obj)
    except KstatusUnavailable:
        return kstatus_rules(obj)
    return said["status"], said["message"]
