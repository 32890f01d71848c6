"""`triton-operator stage --remove`: take one staged version of a model out of the model repository.

Run under the same repository lock as staging. The config is rewritten first (to serve only the versions
that stay), then the version folder is renamed into `<repository>/.trash-<model>-<random>/` (atomic, same
volume) and deleted there; the last version takes the whole model folder with it. At every moment Triton
finds a config that lists only versions on disk. Re-running after a crash finishes the job; nothing to
remove is success.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from model_builders.errors import ConfigError
from triton_operator.staging.configs import final_config_text
from triton_operator.staging.errors import ExitCode, StagingError
from triton_operator.staging.layout import CONFIG_FILE
from triton_operator.staging.place import (
    TRASH_PREFIX,
    make_temp,
    remove_leftovers,
    replace_file,
    repository_lock,
    versions_on_disk,
)


@dataclass(frozen=True)
class RemoveResult:
    """What a removal did; printed as one JSON line."""

    model: str
    version: int
    removed: bool
    remaining_versions: tuple[int, ...]
    model_removed: bool

    def to_json(self) -> str:
        """The one-line JSON result."""
        return json.dumps(
            {
                "model": self.model,
                "version": self.version,
                "removed": self.removed,
                "remainingVersions": list(self.remaining_versions),
                "modelRemoved": self.model_removed,
            },
            sort_keys=True,
        )


def _serve_only(model_dir: Path, versions: list[int], trash: Path) -> None:
    """Rewrite config.pbtxt (if there is one) to serve exactly `versions`."""
    config_path = model_dir / CONFIG_FILE
    if not config_path.is_file():
        return
    current = config_path.read_text()
    try:
        wanted = final_config_text(current, versions)
    except ConfigError as exc:
        raise StagingError(
            ExitCode.CONFIG_REJECTED,
            f"{config_path} cannot be parsed ({exc}): stage the model again to rewrite it, then delete",
        ) from None
    if wanted != current:
        replace_file(config_path, wanted, trash)


def _remove_locked(model_dir: Path, version: int, trash: Path) -> RemoveResult:
    model = model_dir.name
    version_dir = model_dir / str(version)
    present = version_dir.is_dir()
    remaining = [v for v in versions_on_disk(model_dir) if v != version]
    if remaining:
        _serve_only(model_dir, remaining, trash)
        if present:
            os.rename(version_dir, trash / "version")
        return RemoveResult(model, version, present, tuple(remaining), False)
    model_removed = model_dir.is_dir()
    if model_removed:
        os.rename(model_dir, trash / "model")
    return RemoveResult(model, version, present, (), model_removed)


def remove(model: str, version: int, repository: Path, lock_timeout_s: float) -> RemoveResult:
    """Remove `<repository>/<model>/<version>`; StagingError on failure (a re-run finishes what it began)."""
    if not repository.is_dir():
        raise StagingError(
            ExitCode.INVALID_ARGUMENTS,
            f"model repository {repository} is not a folder: mount the server's PVC there",
        )
    with repository_lock(repository, lock_timeout_s) as locked:
        if locked:
            remove_leftovers(repository)
        trash = make_temp(repository, model, prefix=TRASH_PREFIX)
        try:
            return _remove_locked(repository / model, version, trash)
        finally:
            shutil.rmtree(trash, ignore_errors=True)
