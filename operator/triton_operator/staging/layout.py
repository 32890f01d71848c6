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

import lzma
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Any

from model_builders.manifest import FileEntry, Manifest, file_sha256, model_files
from triton_operator.staging.errors import ExitCode, StagingError

CONFIG_FILE = "config.pbtxt"
MANIFEST_FILE = "manifest.json"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
# Bounds on what an archive may hold, so a hostile one is refused before it exhausts inodes or memory.
MAX_ENTRIES = 100_000
MAX_DEPTH = 128  # folders in a member path (Path.mkdir recurses once per missing folder)
MAX_HEADER_BYTES = 1 << 20  # one PAX or GNU long-name header (tarfile reads it whole into memory)
# Zip methods whose decompressor reads with a bound on its output; zipfile inflates bzip2 and lzma
# members without one, so a few hundred compressed bytes can take gigabytes of memory.
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}


def is_archive(name: str) -> bool:
    """Whether a file name is an archive staging unpacks."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def is_version_name(name: str) -> bool:
    """Whether a folder name is a version number: ASCII digits only.

    str.isdigit() alone also accepts digits such as '²', which int() refuses.
    """
    return name.isascii() and name.isdigit()


def _safe_member(name: str, archive: str) -> PurePosixPath:
    """A member path that stays inside the destination."""
    path = PurePosixPath(name)
    # A NUL cannot be in a file name (open() raises ValueError); tar keeps one from a PAX path. An empty
    # name is no file either (and zipfile's ZipInfo.is_dir() raises IndexError on it).
    if not name or path.is_absolute() or ".." in path.parts or name.startswith("\\") or "\0" in name:
        raise StagingError(
            ExitCode.INVALID_ARTIFACT,
            f"{archive} holds the unsafe path {name[:200]!r}: rebuild it with relative paths",
        )
    if len(path.parts) > MAX_DEPTH:
        raise StagingError(
            ExitCode.INVALID_ARTIFACT,
            f"{archive} holds a path {len(path.parts)} folders deep (at most {MAX_DEPTH}): "
            "rebuild it with a flatter layout",
        )
    return path


def _too_many(archive: str) -> StagingError:
    return StagingError(
        ExitCode.INVALID_ARTIFACT,
        f"{archive} holds more than {MAX_ENTRIES} entries: pack the model in fewer files",
    )


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
    except (
        tarfile.TarError,
        zipfile.BadZipFile,
        EOFError,
        OSError,
        # A corrupt compressed stream (zlib, xz), a header field that is not a number or a zip name
        # that is not UTF-8 (ValueError, UnicodeDecodeError), headers chained past Python's stack, a zip
        # needing a newer version to extract (NotImplementedError).
        zlib.error,
        lzma.LZMAError,
        ValueError,
        RecursionError,
        NotImplementedError,
    ) as exc:
        why = "headers chained too deep" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise StagingError(
            ExitCode.INVALID_ARTIFACT,
            f"{name} is not a readable archive ({why}): upload a valid .tar.gz or .zip",
        ) from None


class _Replay:
    """Reads `head` (bytes already read from `fileobj`) again, then goes on reading `fileobj`."""

    def __init__(self, head: bytes, fileobj: IO[bytes]) -> None:
        self.head = head
        self.fileobj = fileobj

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            data, self.head = self.head + self.fileobj.read(), b""
            return data
        data, self.head = self.head[:size], self.head[size:]
        return data + self.fileobj.read(size - len(data)) if len(data) < size else data

    def tell(self) -> int:
        return self.fileobj.tell() - len(self.head)


_PAX_LENGTH = re.compile(rb"[0-9]{1,20} ")
# tarfile before Python 3.11.10 searches PAX headers with regular expressions that take time
# quadratic in a run of digits (CVE-2024-6232): a 64 KiB header of digits holds it for seconds.
_LONG_DIGITS = re.compile(rb"[0-9]{65}")


def _check_pax_header(buf: bytes, archive: str) -> None:
    """A PAX header must be records `<length> <keyword>=<value>` and a newline (walked by length: linear)."""

    def malformed(why: str) -> StagingError:
        return StagingError(
            ExitCode.INVALID_ARTIFACT,
            f"{archive} holds a malformed PAX header ({why}): rebuild the archive with tar",
        )

    pos = 0
    while pos < len(buf) and buf[pos] != 0:  # NULs pad the last block
        match = _PAX_LENGTH.match(buf, pos)
        if match is None:
            raise malformed(f"no record length at byte {pos}")
        end = pos + int(match.group()[:-1])
        if end <= match.end() or end > len(buf) or buf[end - 1] != 0x0A or b"=" not in buf[match.end() : end]:
            raise malformed(f"the record at byte {pos} is cut or has no keyword")
        if buf[match.end() : end].startswith(b"GNU.sparse."):
            raise _sparse(archive)
        pos = end
    if _LONG_DIGITS.search(buf):
        raise malformed("a run of more than 64 digits")


_PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_EXTENSION_TYPES = (*_PAX_TYPES, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


class _CheckedTarInfo(tarfile.TarInfo):
    """Refuses, while tarfile reads each header, what would make it loop, hang or read without bound.

    `_proc_member` is the hook tarfile offers subclasses (see its source); it runs once per header,
    before tarfile acts on the header's size.
    """

    def _proc_member(self, tar: Any) -> Any:
        archive = os.path.basename(str(tar.name or "the archive"))
        # A negative size (base-256 in the header, or PAX `size`) sends tarfile back to an earlier header:
        # it lists the same members forever, and a negative size would offset others in the space check.
        if self.size < 0:
            raise _negative_size(archive, self.name, self.size)
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _sparse(archive)
        if self.type in _EXTENSION_TYPES and self.size > MAX_HEADER_BYTES:
            raise StagingError(
                ExitCode.INVALID_ARTIFACT,
                f"{archive} holds a {self.size}-byte PAX or long-name header (at most {MAX_HEADER_BYTES}): "
                "rebuild the archive",
            )
        if self.type not in _PAX_TYPES:
            member = super()._proc_member(tar)  # type: ignore[misc]
        else:
            fileobj = tar.fileobj
            buf = fileobj.read(-(-self.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE)  # whole blocks
            _check_pax_header(buf[: self.size], archive)
            tar.fileobj = _Replay(buf, fileobj)  # tarfile then reads the header itself
            try:
                member = super()._proc_member(tar)  # type: ignore[misc]
            finally:
                tar.fileobj = fileobj
        if member.size < 0:  # a PAX `size` record, applied by tarfile after the checks above
            raise _negative_size(archive, member.name, member.size)
        return member


def _negative_size(archive: str, name: str, size: int) -> StagingError:
    return StagingError(
        ExitCode.INVALID_ARTIFACT,
        f"{archive} holds {name[:200]!r} with the negative size {size}: rebuild the archive",
    )


def _sparse(archive: str) -> StagingError:
    return StagingError(
        ExitCode.INVALID_ARTIFACT,
        f"{archive} holds a sparse file (refused): rebuild the archive without --sparse",
    )


def _untar(archive: Path, dest: Path, space_left: int) -> int:
    with tarfile.open(archive, "r:*", tarinfo=_CheckedTarInfo) as tar:
        # Read the headers one by one (not getmembers()): a bomb is refused at the first member that
        # crosses a bound, before tarfile has listed (and decompressed) the rest.
        members: list[tarfile.TarInfo] = []
        total = 0
        for member in tar:
            members.append(member)
            if len(members) > MAX_ENTRIES:
                raise _too_many(archive.name)
            _safe_member(member.name, archive.name)
            if not (member.isfile() or member.isdir()):
                raise StagingError(
                    ExitCode.INVALID_ARTIFACT,
                    f"{archive.name} holds {member.name[:200]!r}, which is not a regular file or folder "
                    "(links and devices are refused): rebuild the archive without it",
                )
            total += member.size if member.isfile() else 0
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
        if len(infos) > MAX_ENTRIES:
            raise _too_many(archive.name)
        for info in infos:
            _safe_member(info.filename, archive.name)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise StagingError(
                    ExitCode.INVALID_ARTIFACT,
                    f"{archive.name} holds the link {info.filename[:200]!r}: "
                    "rebuild the archive without links",
                )
            if info.flag_bits & 0x1:  # zipfile would raise RuntimeError asking for a password
                raise StagingError(
                    ExitCode.INVALID_ARTIFACT,
                    f"{archive.name} holds the encrypted {info.filename[:200]!r}: "
                    "upload an archive without a password",
                )
            if info.compress_type not in _ZIP_METHODS and not info.is_dir():
                raise StagingError(
                    ExitCode.INVALID_ARTIFACT,
                    f"{archive.name} compresses {info.filename[:200]!r} with method {info.compress_type} "
                    f"(only {' and '.join(_ZIP_METHODS.values())} are unpacked): rebuild it with zip",
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
    single = len(entries) == 1 and entries[0].is_dir() and not is_version_name(entries[0].name)
    if single and not (folder / CONFIG_FILE).exists():
        return entries[0]
    return folder


def split_artifact(folder: Path, version: int, version_dir: Path) -> str | None:
    """Move the artifact's version content into the new folder `version_dir`; returns its config text."""
    folder = _enter_single_folder(folder)
    config_path = folder / CONFIG_FILE
    config = _read_config(config_path) if config_path.is_file() else None
    versions = sorted(
        (p for p in folder.iterdir() if p.is_dir() and is_version_name(p.name)), key=lambda p: int(p.name)
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


def _read_config(path: Path) -> str:
    """The artifact's config.pbtxt as text; protobuf text is UTF-8, anything else is refused."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StagingError(
            ExitCode.CONFIG_REJECTED,
            f"the artifact's config.pbtxt is not UTF-8 text (byte {exc.start}): "
            "fix it and publish again, or declare spec.config",
        ) from None


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
    for version in (p for p in source.iterdir() if p.is_dir() and is_version_name(p.name)):
        (dest / version.name).mkdir(exist_ok=True)  # an empty version folder (ensembles) is still a version
