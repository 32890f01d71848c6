"""`triton-operator stage`: stage one TritonModel version into the model repository (runs in the Job).

With --remove it takes that version out of the repository instead (see triton_operator.staging.remove).

Exit codes and reasons: see triton_operator.staging.errors. On failure one line `Reason: problem; fix`
goes to stderr and to the termination log; on success one JSON line goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from model_builders.manifest import Manifest
from triton_operator.api.tritonmodel import PvcSource, StagedSpec
from triton_operator.staging import http, s3
from triton_operator.staging.configs import base_config_text, final_config_text, text_sha256
from triton_operator.staging.errors import ExitCode, StagingError
from triton_operator.staging.layout import (
    CONFIG_FILE,
    copy_folder,
    folder_digest,
    folder_size,
    is_archive,
    split_artifact,
    unpack,
)
from triton_operator.staging.place import (
    MARKER,
    Marker,
    check_fits,
    make_temp,
    place_version,
    read_marker,
    remove_leftovers,
    replace_file,
    repository_lock,
    space_left,
    versions_on_disk,
)
from triton_operator.staging.remove import RemoveResult, remove

DEFAULT_REPOSITORY = Path("/models")
DEFAULT_SOURCE_ROOT = Path("/source")
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
# Kubernetes keeps at most 4096 bytes of a termination message.
_TERMINATION_LIMIT = 4096


@dataclass(frozen=True)
class StageOptions:
    """Where to stage and the limits that apply."""

    repository: Path = DEFAULT_REPOSITORY
    source_root: Path = DEFAULT_SOURCE_ROOT
    capacity_bytes: int | None = None
    lock_timeout_s: float = 300.0
    http_attempts: int = http.ATTEMPTS


@dataclass(frozen=True)
class StageResult:
    """What a run did; printed as one JSON line."""

    model: str
    version: int
    digest: str
    bytes: int
    skipped: bool
    config_updated: bool
    source: dict[str, Any]

    def to_json(self) -> str:
        """The one-line JSON result."""
        return json.dumps(
            {
                "model": self.model,
                "version": self.version,
                "digest": self.digest,
                "bytes": self.bytes,
                "skipped": self.skipped,
                "configUpdated": self.config_updated,
                "source": self.source,
            },
            sort_keys=True,
        )


def describe_source(spec: StagedSpec) -> dict[str, Any]:
    """The source without anything secret (URL user info and query stripped)."""
    data: dict[str, Any] = spec.source.model_dump(mode="json", exclude_none=True)
    if "http" in data:
        data["http"]["url"] = http.redact(data["http"]["url"])
    return data


def _pvc_folder(root: Path, source: PvcSource) -> Path:
    """The source folder inside the mounted claim; it must exist and stay inside it."""
    folder = (root / source.path).resolve() if source.path else root.resolve()
    where = f"{source.path or '/'} in PVC {source.claim_name}"
    if not folder.is_relative_to(root.resolve()):
        raise StagingError(
            ExitCode.INVALID_ARTIFACT, f"{where} leads outside the claim: fix spec.source.pvc.path"
        )
    try:
        if not folder.is_dir():
            raise StagingError(
                ExitCode.SOURCE_NOT_FOUND, f"{where} is not a folder: fix spec.source.pvc.path"
            )
        next(folder.iterdir(), None)
    except PermissionError:
        raise StagingError(
            ExitCode.ACCESS_DENIED, f"{where} is not readable by uid {os.getuid()}: make it world-readable"
        ) from None
    return folder


def _check_digest(actual: str, expected: str | None, what: str) -> None:
    if expected is not None and actual != expected:
        raise StagingError(
            ExitCode.DIGEST_MISMATCH,
            f"{what} has digest {actual}, not the expected {expected}: point the source at what was "
            "published with that digest, or update spec.source.digest",
        )


def _refresh_config(spec: StagedSpec, model_dir: Path, marker: Marker, temp: Path) -> StageResult:
    """The files are staged already: only make config.pbtxt and the marker match the spec."""
    base = base_config_text(spec.model_name, spec.config, marker.artifact_config)
    final = final_config_text(base, versions_on_disk(model_dir))
    config_path = model_dir / CONFIG_FILE
    current = config_path.read_text() if config_path.is_file() else None
    changed = current != final
    if changed:
        replace_file(config_path, final, temp)
    wanted = Marker(
        marker.digest, describe_source(spec), text_sha256(base), marker.artifact_config, marker.bytes
    )
    if wanted != marker:
        replace_file(model_dir / str(spec.version) / MARKER, wanted.to_json(), temp)
    return StageResult(
        spec.model_name, spec.version, marker.digest, marker.bytes, True, changed, describe_source(spec)
    )


def _known_digest(spec: StagedSpec, options: StageOptions) -> tuple[str | None, Manifest | None]:
    """The source's digest if it is cheap to learn (spec, one manifest GET, hashing a local folder)."""
    source = spec.source
    if source.expected_digest() is not None:
        return source.expected_digest(), None
    if source.s3 is not None:
        manifest = s3.read_manifest(source.s3)
        return manifest.digest, manifest
    if source.pvc is not None:
        return folder_digest(_pvc_folder(options.source_root, source.pvc)), None
    return None, None


def _fetch(
    spec: StagedSpec, options: StageOptions, manifest: Manifest | None, fetched: Path
) -> tuple[str, int]:
    """Fetch the artifact into the new folder `fetched`; returns (digest, bytes)."""
    source, repository, capacity = spec.source, options.repository, options.capacity_bytes
    if source.s3 is not None:
        manifest = manifest or s3.read_manifest(source.s3)
        _check_digest(manifest.digest, source.digest, f"s3://{source.s3.bucket}/{source.s3.prefix}")
        total = sum(f.size for f in manifest.files)
        check_fits(f"s3://{source.s3.bucket}/{source.s3.prefix}", total, repository, capacity)
        s3.download(source.s3, manifest, fetched)
        return manifest.digest, total
    if source.http is not None:
        left = space_left(repository, capacity)
        name = http.file_name(source.http.url)
        downloads = fetched.with_name("download")
        downloads.mkdir()
        size = http.download(source.http, downloads / name, space_left=left, attempts=options.http_attempts)
        if is_archive(name):
            size = unpack(downloads / name, fetched, space_left=left - size)
        else:
            fetched.mkdir()
            os.rename(downloads / name, fetched / name)
        return "sha256:" + source.http.sha256, size
    assert source.pvc is not None  # ModelSource guarantees exactly one
    folder = _pvc_folder(options.source_root, source.pvc)
    size = folder_size(folder)
    check_fits(f"{source.pvc.path or '/'} in PVC {source.pvc.claim_name}", size, repository, capacity)
    copy_folder(folder, fetched)
    digest = folder_digest(fetched)
    _check_digest(digest, source.digest, f"{source.pvc.path or '/'} in PVC {source.pvc.claim_name}")
    return digest, size


def _stage_locked(spec: StagedSpec, options: StageOptions, temp: Path) -> StageResult:
    model_dir = options.repository / spec.model_name
    if spec.config is not None:
        base_config_text(spec.model_name, spec.config, None)  # a bad declared config fails before downloading
    marker = read_marker(model_dir / str(spec.version))
    manifest = None
    if marker is not None:
        digest, manifest = _known_digest(spec, options)
        if digest == marker.digest:
            return _refresh_config(spec, model_dir, marker, temp)
    digest, size = _fetch(spec, options, manifest, temp / "fetched")
    new_version = temp / "version"
    artifact_config = split_artifact(temp / "fetched", spec.version, new_version)
    base = base_config_text(spec.model_name, spec.config, artifact_config)
    final = final_config_text(base, [*versions_on_disk(model_dir), spec.version])
    marker = Marker(digest, describe_source(spec), text_sha256(base), artifact_config, size)
    (new_version / MARKER).write_text(marker.to_json())
    place_version(model_dir, spec.version, new_version, final, temp)
    return StageResult(spec.model_name, spec.version, digest, size, False, True, describe_source(spec))


def stage(spec: StagedSpec, options: StageOptions) -> StageResult:
    """Stage `spec` into `options.repository`; StagingError on failure (the repository is then unchanged)."""
    repository = options.repository
    if not repository.is_dir():
        raise StagingError(
            ExitCode.INVALID_ARGUMENTS,
            f"model repository {repository} is not a folder: mount the server's PVC there",
        )
    with repository_lock(repository, options.lock_timeout_s) as locked:
        if locked:
            remove_leftovers(repository)
        temp = make_temp(repository, spec.model_name)
        try:
            return _stage_locked(spec, options, temp)
        finally:
            shutil.rmtree(temp, ignore_errors=True)


# --- command line --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `triton-operator stage`."""
    parser.add_argument(
        "--spec",
        required=True,
        help="JSON of what to stage: {modelName, version, source, config} (camelCase, as in the TritonModel)",
    )
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository folder")
    parser.add_argument(
        "--source-root", type=Path, default=DEFAULT_SOURCE_ROOT, help="where a pvc source's claim is mounted"
    )
    parser.add_argument(
        "--capacity-bytes",
        type=int,
        default=None,
        help="size of the repository volume (refuse what exceeds it)",
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=DEFAULT_TERMINATION_LOG,
        help="file that receives the one-line failure reason (written only if its folder exists)",
    )
    parser.add_argument(
        "--remove",
        action="store_true",
        help="remove the spec's version from the repository instead of staging it (idempotent)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for another staging run on the repository",
    )


def write_termination_log(line: str, termination_log: Path) -> None:
    """One line in the termination log, if its folder exists (outside a pod it usually does not)."""
    if termination_log.parent.is_dir():
        # stderr/stdout have it anyway; FallbackToLogsOnError shows the log when the file cannot be written.
        with contextlib.suppress(OSError):
            termination_log.write_text(line[:_TERMINATION_LIMIT] + "\n")


def report_failure(error: StagingError, termination_log: Path) -> None:
    """One line on stderr and in the termination log."""
    line = error.line()
    print(line, file=sys.stderr, flush=True)
    write_termination_log(line, termination_log)


def run(args: argparse.Namespace) -> int:
    """Run `stage` from parsed arguments; returns the exit code."""
    try:
        try:
            spec = StagedSpec.model_validate_json(args.spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "spec"
            raise StagingError(
                ExitCode.INVALID_ARGUMENTS, f"--spec {where}: {first['msg']}; the operator rendered a bad Job"
            ) from None
        if args.capacity_bytes is not None and args.capacity_bytes < 0:
            raise StagingError(ExitCode.INVALID_ARGUMENTS, "--capacity-bytes must be >= 0")
        result: StageResult | RemoveResult
        if args.remove:
            result = remove(spec.model_name, spec.version, args.repository, args.lock_timeout)
        else:
            options = StageOptions(
                repository=args.repository,
                source_root=args.source_root,
                capacity_bytes=args.capacity_bytes,
                lock_timeout_s=args.lock_timeout,
            )
            result = stage(spec, options)
    except StagingError as exc:
        report_failure(exc, args.termination_log)
        return int(exc.code)
    except Exception as exc:  # a bug or an I/O error: retried by the Job
        report_failure(StagingError(ExitCode.INTERNAL, f"{type(exc).__name__}: {exc}"), args.termination_log)
        return int(ExitCode.INTERNAL)
    print(result.to_json(), flush=True)
    # The operator reads the result (the staged digest) from the termination message (no log access needed).
    write_termination_log(result.to_json(), args.termination_log)
    return int(ExitCode.OK)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m triton_operator.staging.main ...` (the same as `triton-operator stage ...`)."""
    parser = argparse.ArgumentParser(prog="triton-operator stage", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
