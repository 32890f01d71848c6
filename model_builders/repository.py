"""Write a model entry (`REPO/NAME/config.pbtxt` + `REPO/NAME/VERSION/...`) atomically.

The entry is built in a hidden temp folder beside the target (same filesystem) and renamed into
place, so a failure at any step leaves the repository as it was: no half-written model folder.
When `REPO/NAME` already exists its other versions are kept; `config.pbtxt` and the written
version are replaced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tritonclient.grpc import model_config_pb2 as mc

from model_builders.config import emit_config, validate_config
from model_builders.errors import BuildError

CONFIG_FILE = "config.pbtxt"
# The highest version a TritonModel's spec.version admits (triton_operator.api.tritonmodel.MAX_VERSION;
# a unit test keeps the two equal).
MAX_VERSION = 2**31 - 1


def check_version(version: int, *, flag: str = "--version") -> int:
    """`version` when it is one a TritonModel can serve (1..MAX_VERSION), else BuildError naming `flag`."""
    if not 1 <= version <= MAX_VERSION:
        raise BuildError(
            f"{flag} {version}: Triton versions are integers >= 1 and a TritonModel's spec.version "
            f"admits at most {MAX_VERSION}: pick a version in that range"
        )
    return version


@dataclass(frozen=True)
class ModelEntry:
    """A repository entry to write: its config and the files of one version (paths relative to it)."""

    config: mc.ModelConfig
    version: int = 1
    files: Mapping[str, Path | bytes] = field(default_factory=dict)


def write_entry(repository: Path, entry: ModelEntry) -> Path:
    """Validate `entry` and write it as `repository/NAME`; returns that folder."""
    validate_config(entry.config)
    check_version(entry.version)
    for rel in entry.files:
        _check_relative(rel)
    repository.mkdir(parents=True, exist_ok=True)
    target = repository / entry.config.name
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.config.name}.", suffix=".tmp", dir=repository))
    staging.chmod(0o755)  # mkdtemp makes it 0700; Triton may run as another user
    try:
        if target.is_dir():
            _copy_other_versions(target, staging, entry.version)
        version_dir = staging / str(entry.version)
        version_dir.mkdir()
        for rel, content in sorted(entry.files.items()):
            dest = version_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                dest.write_bytes(content)
            else:
                shutil.copyfile(content, dest)
        (staging / CONFIG_FILE).write_text(emit_config(entry.config))
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Path(target)


def replace_dir(staging: Path, target: Path) -> None:
    """Move a fully written `staging` folder to `target`, replacing what was there."""
    _swap_into_place(staging, target)


def _check_relative(rel: str) -> None:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BuildError(f"file path {rel!r} must stay inside the version folder: use a relative path")


def _copy_other_versions(target: Path, staging: Path, version: int) -> None:
    for item in target.iterdir():
        if item.name in (CONFIG_FILE, str(version)):
            continue
        if item.is_dir():
            shutil.copytree(item, staging / item.name, symlinks=True)
        else:
            shutil.copy2(item, staging / item.name)


def _swap_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
        return
    # Two renames: the old folder steps aside, the new one takes its place; the old one is then removed.
    # If the second rename fails, the old folder is put back.
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    retired.rmdir()
    os.rename(target, retired)
    try:
        os.rename(staging, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)
