"""The manifest of a published model folder: every file with size and sha256, plus one overall digest.

The overall digest is `sha256:` + the sha256 of the lines `"<sha256> <size> <path>\\n"`, one per file,
sorted by path (POSIX paths relative to the model folder). It names the whole content, so a
TritonModel can pin exactly what was published and a fetch can prove it got that.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

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


def build_manifest(model_dir: Path, *, version: int | None = None) -> Manifest:
    """Hash every file of a model folder (`NAME/config.pbtxt`, `NAME/<version>/...`).

    With `version`, the manifest describes the folder published as that one version (see `publish_view`).
    """
    return publish_view(model_dir, version=version).manifest


@dataclass(frozen=True)
class PublishView:
    """A model folder as it is published: its manifest and, for each listed path, the file it comes from."""

    manifest: Manifest
    sources: Mapping[str, Path]
    source_version: int | None  # the version folder of model_dir published as the manifest's version


def publish_view(model_dir: Path, *, version: int | None = None) -> PublishView:
    """What publishing `model_dir` writes.

    Without `version`: the folder as it is, every version folder included. With `version`: the top-level
    files (config.pbtxt, ...) plus one version folder published as `<version>/`: the folder named `version`,
    or the only version folder there is (renamed; e.g. a model built as 1 published as 2). Other version
    folders are left out, so the artifact holds exactly the version a TritonModel points at.
    """
    cfg = _model_config(model_dir)
    folders = _version_folders(model_dir)
    chosen = None if version is None else source_version(model_dir, version, folders)
    if version is not None:
        _check_version_policy(cfg, version, model_dir)
    sources: dict[str, Path] = {}
    for path in model_files(model_dir):
        rel = path.relative_to(model_dir)
        top = rel.parts[0]
        if version is None or len(rel.parts) == 1 or top not in folders:
            sources[rel.as_posix()] = path
        elif folders[top] == chosen:
            sources[PurePosixPath(str(version), *rel.parts[1:]).as_posix()] = path
    versions = tuple(sorted(set(folders.values()))) if version is None else (version,)
    files = tuple(FileEntry(rel, p.stat().st_size, file_sha256(p)) for rel, p in sources.items())
    return PublishView(Manifest(model_dir.name, versions, files), sources, chosen)


def source_version(model_dir: Path, version: int, folders: Mapping[str, int] | None = None) -> int:
    """The version folder of `model_dir` that is published as `version`; BuildError when it is ambiguous."""
    found = sorted(set((_version_folders(model_dir) if folders is None else folders).values()))
    if version in found:
        return version
    if len(found) == 1:
        return found[0]
    listed = ", ".join(map(str, found))
    raise BuildError(
        f"{model_dir} holds versions {listed} but not {version}: build it with --version {version} "
        f"or publish one of {listed} (--version)"
    )


def _model_config(model_dir: Path) -> mc.ModelConfig:
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
    return cfg


def _version_folders(model_dir: Path) -> dict[str, int]:
    """Folder name -> version of every version folder (a name made of digits)."""
    folders = {
        p.name: int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"[0-9]+", p.name)
    }
    if not folders:
        raise BuildError(f"{model_dir} has no version folder (e.g. 1/): build the model with --version N")
    return folders


def _check_version_policy(cfg: mc.ModelConfig, version: int, model_dir: Path) -> None:
    if cfg.version_policy.WhichOneof("policy_choice") != "specific":
        return
    listed = list(cfg.version_policy.specific.versions)
    if version not in listed:
        raise ConfigError(
            f"{model_dir / CONFIG_FILE}: version_policy serves versions {listed}, not {version}: "
            f"add {version} to it or remove version_policy"
        )
