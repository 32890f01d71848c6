"""The manifest of a published model folder: every file with size and sha256, plus one overall digest.

The overall digest is `sha256:` + the sha256 of the lines `"<sha256> <size> <path>\\n"`, one per file,
sorted by path (POSIX paths relative to the model folder). It names the whole content, so a
TritonModel can pin exactly what was published and a fetch can prove it got that.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_builders.config import parse_config
from model_builders.errors import BuildError, ConfigError
from model_builders.repository import CONFIG_FILE

MANIFEST_FILE = "manifest.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    """One published file: path relative to the model folder, size in bytes, hex sha256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What was published: model name, its versions, its files and their overall digest."""

    model_name: str
    versions: tuple[int, ...]
    files: tuple[FileEntry, ...]

    @property
    def digest(self) -> str:
        """`sha256:<hex>` over every file's digest, size and path."""
        lines = "".join(f"{f.sha256} {f.size} {f.path}\n" for f in sorted(self.files, key=lambda f: f.path))
        return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()

    @property
    def latest_version(self) -> int:
        """The highest version folder, the one a TritonModel points at."""
        return max(self.versions)

    def to_json(self) -> str:
        """The manifest.json text."""
        data = {
            "model": self.model_name,
            "versions": list(self.versions),
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
            "digest": self.digest,
        }
        return json.dumps(data, indent=2) + "\n"


def manifest_from_json(text: str, *, where: str) -> Manifest:
    """Parse manifest.json; BuildError when it is malformed or its digest does not add up."""
    try:
        data: dict[str, Any] = json.loads(text)
        manifest = Manifest(
            model_name=str(data["model"]),
            versions=tuple(int(v) for v in data["versions"]),
            files=tuple(FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in data["files"]),
        )
        recorded = str(data["digest"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"{where} is not a valid manifest ({exc}): publish the model again") from None
    if recorded != manifest.digest:
        raise BuildError(
            f"{where} records digest {recorded} but its files add up to {manifest.digest}: publish again"
        )
    return manifest


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_files(model_dir: Path) -> list[Path]:
    """The files to publish, sorted; skips dotfiles, __pycache__ and a previous manifest.json."""
    files: list[Path] = []
    for path in sorted(model_dir.rglob("*")):
        rel = path.relative_to(model_dir)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if rel.as_posix() == MANIFEST_FILE or not path.is_file():
            continue
        files.append(path)
    return files


def build_manifest(model_dir: Path) -> Manifest:
    """Hash every file of a model folder (`NAME/config.pbtxt`, `NAME/<version>/...`)."""
    if not model_dir.is_dir():
        raise BuildError(
            f"{model_dir}: no such model folder: give REPO_DIR/NAME as written by a build command"
        )
    config_path = model_dir / CONFIG_FILE
    if not config_path.is_file():
        raise BuildError(f"{model_dir} has no {CONFIG_FILE}: build the model with model-builders first")
    cfg = parse_config(config_path.read_text())
    if cfg.name and cfg.name != model_dir.name:
        raise ConfigError(
            f"{config_path}: name {cfg.name!r} differs from its folder {model_dir.name!r}: "
            "Triton needs them equal; rename one"
        )
    versions = tuple(sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()))
    if not versions:
        raise BuildError(f"{model_dir} has no version folder (e.g. 1/): build the model with --version N")
    files = tuple(
        FileEntry(p.relative_to(model_dir).as_posix(), p.stat().st_size, file_sha256(p))
        for p in model_files(model_dir)
    )
    return Manifest(model_name=model_dir.name, versions=versions, files=files)
