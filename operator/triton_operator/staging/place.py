"""The model repository side of staging: lock, free space, markers and atomic placement.

Everything is built in `<repository>/.staging-<model>-<random>/` (same volume, so renames are atomic) and
moved into place only when complete: first the version folder (an old one steps aside and is removed after),
then config.pbtxt (os.replace). A failure before the moves leaves the repository untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triton_operator.staging.errors import ExitCode, StagingError
from triton_operator.staging.layout import CONFIG_FILE, folder_size

MARKER = ".staged.json"
TEMP_PREFIX = ".staging-"
# Where removed files go before they are deleted (a rename is atomic; deleting a tree is not).
TRASH_PREFIX = ".trash-"


@contextlib.contextmanager
def repository_lock(repository: Path, timeout_s: float) -> Iterator[bool]:
    """Hold an exclusive flock on the repository folder; yields False where locks are unsupported."""
    fd = os.open(repository, os.O_RDONLY)
    try:
        yield _acquire(fd, repository, timeout_s)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, repository: Path, timeout_s: float) -> bool:
    """Wait (bounded) for the lock; False when the filesystem does not support flock."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise StagingError(
                    ExitCode.SOURCE_UNAVAILABLE,
                    f"another staging Job held {repository} for {timeout_s:.0f} s; retrying may help",
                ) from None
            time.sleep(0.5)
        except OSError:
            return False  # e.g. some network filesystems: stage without the lock


def remove_leftovers(repository: Path) -> None:
    """Remove temp and trash folders of earlier runs that were killed (only call while holding the lock)."""
    for prefix in (TEMP_PREFIX, TRASH_PREFIX):
        for path in repository.glob(prefix + "*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)


def make_temp(repository: Path, model: str, prefix: str = TEMP_PREFIX) -> Path:
    """A fresh temp folder on the repository's volume."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{model[:64]}-", dir=repository))
    path.chmod(0o755)  # mkdtemp makes it 0700; Triton may run as another user
    return path


def space_left(repository: Path, capacity_bytes: int | None) -> int:
    """Bytes staging may still write: free space, and capacity minus what the repository already holds."""
    st = os.statvfs(repository)
    free = st.f_bavail * st.f_frsize
    if capacity_bytes is None:
        return free
    return max(0, min(free, capacity_bytes - folder_size(repository)))


def check_fits(what: str, size: int, repository: Path, capacity_bytes: int | None) -> int:
    """Refuse before downloading when `size` bytes do not fit; returns the space left."""
    left = space_left(repository, capacity_bytes)
    if size > left:
        of_size = (
            f" (spec.modelRepository.size is {capacity_bytes} bytes)" if capacity_bytes is not None else ""
        )
        raise StagingError(
            ExitCode.TOO_LARGE,
            f"{what} needs {size} bytes but only {left} bytes are free in the model repository{of_size}: "
            "grow spec.modelRepository.size of the TritonServer",
        )
    return left


@dataclass(frozen=True)
class Marker:
    """`<model>/<version>/.staged.json`: what was staged there."""

    digest: str
    source: dict[str, Any]
    config_sha256: str
    artifact_config: str | None
    bytes: int

    def to_json(self) -> str:
        """The marker's file content."""
        data = {
            "digest": self.digest,
            "source": self.source,
            "configSha256": self.config_sha256,
            "artifactConfig": self.artifact_config,
            "bytes": self.bytes,
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def read_marker(version_dir: Path) -> Marker | None:
    """The marker of a staged version, or None (absent or unreadable: stage again)."""
    try:
        data = json.loads((version_dir / MARKER).read_text())
        return Marker(
            digest=str(data["digest"]),
            source=dict(data["source"]),
            config_sha256=str(data["configSha256"]),
            artifact_config=data.get("artifactConfig"),
            bytes=int(data.get("bytes", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def versions_on_disk(model_dir: Path) -> list[int]:
    """Version folders of a model in the repository."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def place_version(model_dir: Path, version: int, new_version: Path, config_text: str, temp: Path) -> None:
    """Move the complete `new_version` folder to `model_dir/<version>` and write config.pbtxt."""
    if not model_dir.exists():
        staged_model = temp / "model"
        staged_model.mkdir(mode=0o755)
        os.rename(new_version, staged_model / str(version))
        (staged_model / CONFIG_FILE).write_text(config_text)
        os.rename(staged_model, model_dir)
        return
    config = temp / CONFIG_FILE
    config.write_text(config_text)
    target = model_dir / str(version)
    retired = temp / "retired"
    if target.exists():
        os.rename(target, retired)
    try:
        os.rename(new_version, target)
        os.replace(config, model_dir / CONFIG_FILE)
    except BaseException:
        # Put the old version back so a failure leaves the model as it was.
        if target.exists() and retired.exists():
            os.rename(target, new_version)
        if retired.exists():
            os.rename(retired, target)
        raise


def replace_file(path: Path, text: str, temp: Path) -> None:
    """Write `text` to `path` atomically (written in `temp`, then os.replace)."""
    scratch = temp / (path.name + ".new")
    scratch.write_text(text)
    os.replace(scratch, path)
