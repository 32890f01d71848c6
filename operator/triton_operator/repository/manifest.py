"""What a model repository holds, file by file, and what a replica must do to hold the same.

A repository is `<root>/<model>/...`, as staging writes it (staging/place.py): `config.pbtxt`, version
folders `<n>/` with the files and a marker `<n>/.staged.json` (its "digest" is the staged source digest).
Anything whose path has a component starting with "." is staging's own (temp folders, trash, the lock)
or the sync agent's, and is never listed, except the markers: they say which digest a replica holds.
Links are never followed nor listed (staging refuses them).

`ModelContent.hash` is `sha256:` + the sha256 of the lines `"<sha256> <size> <path>\\n"` (one per file,
sorted by path, the format of `model-builders publish`'s digest) followed by `"<n>/\\n"` per version
folder (so an empty version folder counts too): equal hashes mean equal content.
`RepositoryContent.generation` is `sha256:` + the sha256 of the lines `"<model> <hash>\\n"`, sorted.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

MARKER = ".staged.json"  # staging/place.py's MARKER (not imported: this package stands alone)
_CHUNK = 1 << 20
# A hash is remembered only for a file last modified this long before its hash was taken: a write in the
# same timestamp tick as the mtime seen would otherwise go unnoticed (git's "racy" rule).
RACY_NS = 2_000_000_000
SCAN_ATTEMPTS = 5
MAX_MARKER_BYTES = 1 << 16  # staging's markers take a few hundred bytes


class ScanUnstable(Exception):
    """The tree kept changing under the scan (files renamed or rewritten while read)."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a model: POSIX path relative to the model folder, size in bytes, hex sha256."""

    path: str
    size: int
    sha256: str


def _sha256_lines(lines: list[str]) -> str:
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class ModelContent:
    """A model folder's files and its version folders (version -> digest of its marker, None without)."""

    name: str
    files: tuple[FileEntry, ...]
    versions: dict[int, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(sorted(self.files, key=lambda f: f.path)))

    @property
    def hash(self) -> str:
        """`sha256:<hex>` over every file's sha256, size and path, then the version folders."""
        lines = [f"{f.sha256} {f.size} {f.path}\n" for f in self.files]
        lines += [f"{v}/\n" for v in sorted(self.versions)]
        return _sha256_lines(lines)

    def to_wire(self, *, with_files: bool = True) -> dict[str, Any]:
        """The model's object in `/v1/content` (and, without files, in `/v1/held`)."""
        data: dict[str, Any] = {
            "hash": self.hash,
            "versions": {str(v): d for v, d in sorted(self.versions.items())},
        }
        if with_files:
            data["files"] = [[f.path, f.size, f.sha256] for f in self.files]
        return data


@dataclass(frozen=True)
class RepositoryContent:
    """Every model of a repository."""

    models: dict[str, ModelContent]

    @property
    def generation(self) -> str:
        """`sha256:<hex>` over every model's name and hash."""
        return _sha256_lines([f"{name} {self.models[name].hash}\n" for name in sorted(self.models)])

    def to_wire(self, *, with_files: bool = True) -> dict[str, Any]:
        """The `/v1/content` object."""
        return {
            "generation": self.generation,
            "models": {n: self.models[n].to_wire(with_files=with_files) for n in sorted(self.models)},
        }

    def to_json(self) -> str:
        """The `/v1/content` body."""
        return json.dumps(self.to_wire(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> RepositoryContent:
        """Parse a `/v1/content` body; ValueError when it is malformed, names an unsafe path or a model
        or generation hash does not add up (a sync agent writes these paths: it trusts none blindly)."""
        try:
            data = json.loads(text)
            models: dict[str, ModelContent] = {}
            for name, item in data["models"].items():
                if not is_model_name(name):
                    raise ValueError(f"unsafe model name {name[:100]!r}")
                files = tuple(FileEntry(str(p), int(s), str(h)) for p, s, h in item["files"])
                for entry in files:
                    if not is_listed_path(entry.path) or entry.size < 0 or not _is_hex64(entry.sha256):
                        raise ValueError(f"model {name}: unsafe or malformed entry {entry.path[:200]!r}")
                versions: dict[int, str | None] = {}
                for key, digest in item["versions"].items():
                    if not is_version_name(key):
                        raise ValueError(f"model {name}: version {key[:50]!r} is not a number")
                    versions[int(key)] = None if digest is None else str(digest)
                model = ModelContent(name, files, versions)
                if model.hash != item["hash"]:
                    raise ValueError(f"model {name}: hash {item['hash']!r} does not match its files")
                models[name] = model
            content = cls(models)
            if content.generation != data["generation"]:
                raise ValueError("the generation does not match the models")
            return content
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed content ({type(exc).__name__}: {exc})") from None


def _is_hex64(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def is_version_name(name: str) -> bool:
    """A version folder's name: ASCII decimal digits as Python writes the number ("7", not "07")."""
    return name.isascii() and name.isdigit() and str(int(name)) == name


def is_model_name(name: str) -> bool:
    """A model folder's name as listed: one path component, not a dotfile."""
    return bool(name) and "/" not in name and "\\" not in name and "\0" not in name and name[0] != "."


def is_listed_path(path: str) -> bool:
    """Whether a path relative to a model folder may be listed (and so served and mirrored).

    Relative, POSIX, no empty, "." or ".." component, no component starting with "." except a version
    folder's marker `<n>/.staged.json`.
    """
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        return False
    parts = path.split("/")
    if any(not p for p in parts):
        return False
    if len(parts) == 2 and parts[1] == MARKER and is_version_name(parts[0]):
        return True
    return not any(p.startswith(".") for p in parts)


def read_marker_digest(data: bytes) -> str | None:
    """The "digest" of a marker's bytes, or None when they are not a marker."""
    try:
        digest = json.loads(data).get("digest")
    except (ValueError, AttributeError):
        return None
    return digest if isinstance(digest, str) else None


# --- scanning ------------------------------------------------------------------------------------------


CacheKey = tuple[str, int, int, int]  # path, size, mtime_ns, inode


def _key(path: str, st: os.stat_result) -> CacheKey:
    return (path, st.st_size, st.st_mtime_ns, st.st_ino)


class HashCache:
    """sha256 of files by (path, size, mtime_ns, inode), so a rescan of an unchanged tree hashes nothing.

    Only what the last scan saw is kept (`prune`), so the cache stays the size of the tree.
    """

    def __init__(self) -> None:
        self._known: dict[CacheKey, str] = {}
        self._seen: set[CacheKey] = set()
        self.hashed = 0  # files hashed (read whole) so far

    def get(self, path: str, st: os.stat_result) -> str | None:
        """The remembered sha256 of the file as `st` describes it."""
        key = _key(path, st)
        self._seen.add(key)
        return self._known.get(key)

    def put(self, path: str, st: os.stat_result, sha256: str, *, trusted: bool = False) -> None:
        """Remember a hash taken of the file `st` describes; skipped while its mtime is too recent to
        rule out an unseen write in the same tick, unless `trusted` (the caller wrote the file itself)."""
        if trusted or time.time_ns() - st.st_mtime_ns > RACY_NS:
            key = _key(path, st)
            self._known[key] = sha256
            self._seen.add(key)

    def start(self) -> None:
        """A scan begins."""
        self._seen = set()

    def prune(self) -> None:
        """A scan ended: forget what it did not see."""
        self._known = {k: v for k, v in self._known.items() if k in self._seen}


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_dev, a.st_size, a.st_mtime_ns) == (b.st_ino, b.st_dev, b.st_size, b.st_mtime_ns)


def hash_file(path: Path | str, cache: HashCache) -> tuple[int, str]:
    """(size, sha256) of a regular file, not following a link; ScanUnstable when it changed while read,
    FileNotFoundError when it vanished, OSError when it is not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise OSError(f"{path} is not a regular file")
        known = cache.get(str(path), before)
        if known is not None:
            return before.st_size, known
        digest = hashlib.sha256()
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
        cache.hashed += 1
        after = os.fstat(fd)
    if not _same_file(before, after):
        raise ScanUnstable(f"{path} changed while it was read")
    sha = digest.hexdigest()
    cache.put(str(path), after, sha)
    return after.st_size, sha


def _dir_state(path: str) -> tuple[int, int]:
    st = os.stat(path, follow_symlinks=False)
    return st.st_ino, st.st_mtime_ns


def _walk(
    model_dir: str, rel: str, out: list[tuple[str, str]], dirs: list[tuple[str, tuple[int, int]]]
) -> None:
    """Collect (relative path, absolute path) of the listed regular files under `model_dir/rel`."""
    folder = os.path.join(model_dir, rel) if rel else model_dir
    dirs.append((folder, _dir_state(folder)))
    with os.scandir(folder) as entries:
        children = sorted(entries, key=lambda e: e.name)
    for entry in children:
        child = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_dir(follow_symlinks=False):
            if not entry.name.startswith("."):
                _walk(model_dir, child, out, dirs)
        elif entry.is_file(follow_symlinks=False) and is_listed_path(child):
            out.append((child, entry.path))


def scan_model(model_dir: Path, cache: HashCache) -> ModelContent:
    """One model folder's content; ScanUnstable (or FileNotFoundError) when it changed during the scan."""
    base = str(model_dir)
    found: list[tuple[str, str]] = []
    dirs: list[tuple[str, tuple[int, int]]] = []
    _walk(base, "", found, dirs)
    files: list[FileEntry] = []
    versions: dict[int, str | None] = {}
    with os.scandir(base) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and is_version_name(entry.name):
                versions[int(entry.name)] = None
    for rel, path in found:
        parts = rel.split("/")
        if len(parts) == 2 and parts[1] == MARKER:
            # Small: read whole, every scan; the digest read and the bytes hashed are the same bytes.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                data = handle.read(MAX_MARKER_BYTES + 1)
            if len(data) <= MAX_MARKER_BYTES:
                versions[int(parts[0])] = read_marker_digest(data)
                files.append(FileEntry(rel, len(data), hashlib.sha256(data).hexdigest()))
                continue  # (a larger one is no marker staging wrote: listed as a file, no digest)
        size, sha = hash_file(path, cache)
        files.append(FileEntry(rel, size, sha))
    for folder, state in dirs:
        if _dir_state(folder) != state:  # an entry was renamed in or out while we read
            raise ScanUnstable(f"{folder} changed during the scan")
    return ModelContent(model_dir.name, tuple(files), versions)


def scan(root: Path, cache: HashCache, *, attempts: int = SCAN_ATTEMPTS) -> RepositoryContent:
    """Every model folder under `root`; a model met mid-rename is scanned again (at most `attempts`
    times, then ScanUnstable). Only files that changed since the last scan are hashed."""
    cache.start()
    models: dict[str, ModelContent] = {}
    with os.scandir(root) as entries:
        names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False) and is_model_name(e.name))
    for name in names:
        for attempt in range(attempts):
            try:
                models[name] = scan_model(root / name, cache)
                break
            except FileNotFoundError:
                if not os.path.isdir(root / name):  # the whole model went away: it is not there
                    break
                problem: Exception | None = None
            except ScanUnstable as exc:
                problem = exc
            if attempt == attempts - 1:
                raise ScanUnstable(f"model {name} kept changing during {attempts} scans ({problem})")
            time.sleep(0.02 * (attempt + 1))
    cache.prune()
    return RepositoryContent(models)


# --- planning --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reuse:
    """A wanted file a replica already holds (same sha256 and size): linked from `model`/`path`."""

    entry: FileEntry
    model: str
    path: str


@dataclass(frozen=True)
class ModelBuild:
    """One model to build anew: the content wanted, what is linked from held files, what is downloaded,
    and the folders whose content does not change (they keep the held folders' times, see plan_sync)."""

    name: str
    wanted: ModelContent
    reuse: tuple[Reuse, ...]
    download: tuple[FileEntry, ...]
    keep_times: tuple[str, ...] = ()


@dataclass(frozen=True)
class SyncPlan:
    """What makes `held` equal `wanted`: models to build (new or changed) and models to remove."""

    build: tuple[ModelBuild, ...]
    remove: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """Nothing to do: the replica holds what is wanted."""
        return not self.build and not self.remove


def plan_sync(wanted: RepositoryContent, held: RepositoryContent) -> SyncPlan:
    """Models whose hash differs or that are missing are built; held models not wanted are removed.

    A wanted file is reused when the held copy has it at the same path with the same sha256 and size, or
    else anywhere in the held repository with the same sha256 and size (a new version that repeats an
    old one's files); every other file is downloaded.
    """
    by_digest: dict[tuple[str, int], tuple[str, str]] = {}
    for name in sorted(held.models):
        for f in held.models[name].files:
            by_digest.setdefault((f.sha256, f.size), (name, f.path))
    builds: list[ModelBuild] = []
    for name in sorted(wanted.models):
        model = wanted.models[name]
        had = held.models.get(name)
        if had is not None and had.hash == model.hash:
            continue
        same_place = {(f.path, f.sha256, f.size) for f in had.files} if had else set()
        reuse: list[Reuse] = []
        download: list[FileEntry] = []
        for f in model.files:
            if (f.path, f.sha256, f.size) in same_place:
                reuse.append(Reuse(f, name, f.path))
            elif (f.sha256, f.size) in by_digest:
                source_model, source_path = by_digest[(f.sha256, f.size)]
                reuse.append(Reuse(f, source_model, source_path))
            else:
                download.append(f)
        keep = unchanged_folders(model, had) if had is not None else ()
        builds.append(ModelBuild(name, model, tuple(reuse), tuple(download), keep))
    remove = tuple(sorted(set(held.models) - set(wanted.models)))
    return SyncPlan(tuple(builds), remove)


def _folders(model: ModelContent) -> set[str]:
    """Every folder of a model (relative paths), version folders included even when empty."""
    found = {str(v) for v in model.versions}
    for f in model.files:
        parts = f.path.split("/")[:-1]
        found.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return found


def _under(model: ModelContent, folder: str) -> set[tuple[str, int, str]]:
    return {(f.path, f.size, f.sha256) for f in model.files if f.path.startswith(folder + "/")}


def unchanged_folders(wanted: ModelContent, held: ModelContent) -> tuple[str, ...]:
    """Folders held and wanted with the same files beneath them, deepest first.

    Triton decides which versions of a loaded model to reload from modification times: a version whose
    folder or files are newer than at its last load is reloaded, the others are kept. A rebuilt model's
    folders are new, so the agent gives these folders their held times back (files are linked, so they
    keep theirs): adding version 2 must not reload version 1.
    """
    both = _folders(wanted) & _folders(held)
    same = [d for d in both if _under(wanted, d) == _under(held, d)]
    return tuple(sorted(same, key=lambda d: (-d.count("/"), d)))


def safe_join(root: Path, model: str, path: str) -> Path:
    """`root/model/path` for a listed model and path (ValueError otherwise: never outside root)."""
    if not is_model_name(model) or not is_listed_path(path):
        raise ValueError(f"unsafe path {model[:100]!r}/{path[:200]!r}")
    return root.joinpath(model, *PurePosixPath(path).parts)
