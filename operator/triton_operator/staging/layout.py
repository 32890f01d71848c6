"""Turn a fetched artifact (a model folder, an archive or one file) into a version folder and a config.

Layout rules, in order:
- an archive (.tar.gz, .tgz, .tar, .zip) is unpacked; a single top-level folder without config.pbtxt
  is entered;
- `config.pbtxt` at the top is the artifact's config; `manifest.json` (from `model-builders publish`)
  is dropped;
- numeric folders are versions: the one named spec.version is taken, or the only one there is (renamed);
  several without spec.version among them is an error;
- without numeric folders everything else at the top is the version's content (e.g. a single model.onnx).
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from model_builders.manifest import FileEntry, Manifest, file_sha256, model_files
from triton_operator.staging.errors import ExitCode, StagingError

CONFIG_FILE = "config.pbtxt"
MANIFEST_FILE = "manifest.json"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def is_archive(name: str) -> bool:
    """Whether a file name is an archive staging unpacks."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_member(name: str, archive: str) -> PurePosixPath:
    """A member path that stays inside the destination."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.startswith("\\"):
        raise StagingError(
            ExitCode.INVALID_ARTIFACT,
            f"{archive} holds the unsafe path {name!r}: rebuild it with relative paths",
        )
    return path


def _too_large(what: str, size: int, space_left: int) -> StagingError:
    return StagingError(
        ExitCode.TOO_LARGE,
        f"{what} needs {size} bytes but only {space_left} bytes are free in the model repository: "
        "grow spec.modelRepository.size of the TritonServer",
    )


def unpack(archive: Path, dest: Path, *, space_left: int) -> int:
    """Unpack regular files and folders of a tar/zip archive into the new folder `dest`; returns bytes."""
    dest.mkdir()
    name = archive.name
    try:
        if name.lower().endswith(".zip"):
            return _unzip(archive, dest, space_left)
        return _untar(archive, dest, space_left)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise StagingError(
            ExitCode.INVALID_ARTIFACT,
            f"{name} is not a readable archive ({exc}): upload a valid .tar.gz or .zip",
        ) from None


def _untar(archive: Path, dest: Path, space_left: int) -> int:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _safe_member(member.name, archive.name)
            if not (member.isfile() or member.isdir()):
                raise StagingError(
                    ExitCode.INVALID_ARTIFACT,
                    f"{archive.name} holds {member.name!r}, which is not a regular file or folder "
                    "(links and devices are refused): rebuild the archive without it",
                )
        total = sum(m.size for m in members if m.isfile())
        if total > space_left:
            raise _too_large(f"{archive.name} unpacked", total, space_left)
        for member in members:
            target = dest / _safe_member(member.name, archive.name)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                continue
            with source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
    return total


def _unzip(archive: Path, dest: Path, space_left: int) -> int:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _safe_member(info.filename, archive.name)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise StagingError(
                    ExitCode.INVALID_ARTIFACT,
                    f"{archive.name} holds the link {info.filename!r}: rebuild the archive without links",
                )
        total = sum(i.file_size for i in infos if not i.is_dir())
        if total > space_left:
            raise _too_large(f"{archive.name} unpacked", total, space_left)
        for info in infos:
            target = dest / _safe_member(info.filename, archive.name)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
    return total


def _enter_single_folder(folder: Path) -> Path:
    """The folder itself, or its only entry when that is a non-version folder and there is no config."""
    entries = list(folder.iterdir())
    single = len(entries) == 1 and entries[0].is_dir() and not entries[0].name.isdigit()
    if single and not (folder / CONFIG_FILE).exists():
        return entries[0]
    return folder


def split_artifact(folder: Path, version: int, version_dir: Path) -> str | None:
    """Move the artifact's version content into the new folder `version_dir`; returns its config text."""
    folder = _enter_single_folder(folder)
    config_path = folder / CONFIG_FILE
    config = config_path.read_text() if config_path.is_file() else None
    versions = sorted(
        (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    if versions:
        chosen = next((p for p in versions if int(p.name) == version), None)
        if chosen is None and len(versions) == 1:
            chosen = versions[0]  # a single published version is served as spec.version
        if chosen is None:
            found = ", ".join(p.name for p in versions)
            raise StagingError(
                ExitCode.INVALID_ARTIFACT,
                f"the artifact holds versions {found} but not {version}: set spec.version to one of them",
            )
        os.rename(chosen, version_dir)
        return config
    version_dir.mkdir()
    for entry in folder.iterdir():
        if entry.name not in (CONFIG_FILE, MANIFEST_FILE):
            os.rename(entry, version_dir / entry.name)
    if not any(version_dir.iterdir()):
        raise StagingError(
            ExitCode.INVALID_ARTIFACT, "the artifact holds no model files: publish the model files too"
        )
    return config


def folder_size(folder: Path) -> int:
    """Bytes of the regular files under a folder (links not followed)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


def folder_digest(folder: Path) -> str:
    """The digest `model-builders publish` prints for a model folder (dotfiles, manifest.json aside)."""
    entries = tuple(
        FileEntry(p.relative_to(folder).as_posix(), p.stat().st_size, file_sha256(p))
        for p in model_files(folder)
    )
    return Manifest(model_name=folder.name, versions=(), files=entries).digest


def copy_folder(source: Path, dest: Path) -> None:
    """Copy a folder (dotfiles and __pycache__ skipped, links refused) into the new folder `dest`."""
    for root, dirs, _files in os.walk(source):
        for name in dirs:
            if (Path(root) / name).is_symlink():
                raise StagingError(
                    ExitCode.INVALID_ARTIFACT,
                    f"{Path(root) / name} is a link: copy the model files themselves",
                )
    dest.mkdir()
    for path in model_files(source):
        if path.is_symlink():
            raise StagingError(
                ExitCode.INVALID_ARTIFACT, f"{path} is a link: copy the model files themselves"
            )
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    for version in (p for p in source.iterdir() if p.is_dir() and p.name.isdigit()):
        (dest / version.name).mkdir(exist_ok=True)  # an empty version folder (ensembles) is still a version
