"""Fetch a model published to S3 by `model-builders publish`; every failure becomes a StagingError.

Credentials come only from the environment (the Job maps the Secret's keys to AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY). Without spec.source.s3.credentialsSecret requests are unsigned (public buckets).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_builders.errors import BuildError, PublishError
from model_builders.manifest import MANIFEST_FILE, FileEntry, Manifest, file_sha256, manifest_from_json
from model_builders.publish import fetch, s3_client
from model_builders.targets import S3Target
from triton_operator.api.tritonmodel import S3Source
from triton_operator.staging.errors import ExitCode, StagingError
from triton_operator.staging.layout import MAX_DEPTH, MAX_ENTRIES

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_NOT_FOUND = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}
_DENIED = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidToken",
}
# Bytes of manifest.json read at most: 100,000 files take about 15 MiB.
MANIFEST_LIMIT = 64 << 20


def target_of(source: S3Source) -> S3Target:
    """The model_builders target of an S3 source."""
    return S3Target(bucket=source.bucket, prefix=source.prefix)


def _signed(source: S3Source) -> bool:
    """Whether requests are signed (a credentials Secret is configured)."""
    return source.credentials_secret is not None


def _client(source: S3Source) -> S3Client:
    """A client with model_builders' timeouts and retries; unsigned when no credentials are configured."""
    if _signed(source):
        if not os.environ.get("AWS_ACCESS_KEY_ID") or not os.environ.get("AWS_SECRET_ACCESS_KEY"):
            raise StagingError(
                ExitCode.ACCESS_DENIED,
                "AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is empty: put both keys in the Secret named by "
                "spec.source.s3.credentialsSecret",
            )
        return s3_client(source.endpoint, source.region)
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(
        signature_version=UNSIGNED,
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"} if source.endpoint else None,
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=source.endpoint, region_name=source.region or "us-east-1", config=config
    )


def classify(exc: BaseException, source: S3Source) -> StagingError:
    """A boto3/botocore failure as a StagingError with the fix."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

    where = f"s3://{source.bucket}/{source.prefix}"
    endpoint = source.endpoint or "AWS"
    if isinstance(exc, StagingError):
        return exc
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StagingError(
            ExitCode.ACCESS_DENIED, "no S3 credentials in the environment: fix the credentialsSecret"
        )
    if isinstance(exc, ClientError):
        error: dict[str, Any] = dict(exc.response.get("Error", {}))
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return StagingError(
                ExitCode.SOURCE_NOT_FOUND,
                f"bucket {source.bucket!r} does not exist at {endpoint}: fix spec.source.s3.bucket/endpoint",
            )
        if code in _NOT_FOUND or status == 404:
            return StagingError(
                ExitCode.SOURCE_NOT_FOUND,
                f"{where}/{MANIFEST_FILE} not found: publish the model there with `model-builders publish` "
                "or fix spec.source.s3.prefix",
            )
        if code in _DENIED or status in (401, 403):
            return StagingError(
                ExitCode.ACCESS_DENIED,
                f"access to {where} denied ({code or status}): give the credentials in "
                "spec.source.s3.credentialsSecret read access (s3:GetObject) to the prefix",
            )
        return StagingError(
            ExitCode.SOURCE_UNAVAILABLE,
            f"S3 request for {where} failed ({code or status}); retrying may help",
        )
    if isinstance(exc, BotoCoreError):
        return StagingError(
            ExitCode.SOURCE_UNAVAILABLE,
            f"cannot reach S3 at {endpoint} ({type(exc).__name__}): "
            "check spec.source.s3.endpoint and the network",
        )
    return StagingError(ExitCode.INTERNAL, f"fetching {where} failed: {type(exc).__name__}: {exc}")


def read_manifest(source: S3Source) -> Manifest:
    """`<prefix>/manifest.json`: one small GET, for the digest and the total size before downloading."""
    try:
        client = _client(source)
        body = client.get_object(Bucket=source.bucket, Key=target_of(source).key(MANIFEST_FILE))["Body"].read(
            MANIFEST_LIMIT + 1
        )
    except Exception as exc:
        raise classify(exc, source) from None
    return parse_manifest(body, where=f"s3://{source.bucket}/{source.prefix}/{MANIFEST_FILE}")


def parse_manifest(body: bytes, *, where: str) -> Manifest:
    """manifest.json's bytes as a Manifest whose files all land inside the model folder.

    StagingError (InvalidArtifact) for anything else, before a byte of the model is downloaded.
    """

    def invalid(why: str) -> StagingError:
        return StagingError(ExitCode.INVALID_ARTIFACT, f"{where} {why}: publish the model again")

    if len(body) > MANIFEST_LIMIT:
        raise invalid(f"is larger than {MANIFEST_LIMIT} bytes")
    try:
        manifest = manifest_from_json(body.decode("utf-8"), where=where)
    except BuildError as exc:
        raise StagingError(ExitCode.INVALID_ARTIFACT, str(exc)) from None
    except UnicodeDecodeError as exc:
        raise invalid(f"is not UTF-8 text (byte {exc.start})") from None
    except (RecursionError, OverflowError) as exc:
        # JSON nested deeper than Python's stack; Infinity (or 1e400) where a size or version goes.
        raise invalid(f"is not a valid manifest ({type(exc).__name__}: {str(exc)[:100]})") from None
    check_manifest(manifest, where=where)
    return manifest


def check_manifest(manifest: Manifest, *, where: str) -> None:
    """Refuse a manifest whose files would be written outside the model folder, or do not add up.

    Each path is joined to the download folder: `..`, an absolute path or a NUL would write elsewhere
    (or fail with ValueError); a negative size would hide other files' bytes from the space check.
    """
    if len(manifest.files) > MAX_ENTRIES:
        raise StagingError(
            ExitCode.INVALID_ARTIFACT,
            f"{where} lists more than {MAX_ENTRIES} files: pack the model in fewer files",
        )
    paths: set[str] = set()
    folders: set[str] = set()
    for entry in manifest.files:
        problem = _entry_problem(entry, paths)
        if problem is not None:
            raise StagingError(ExitCode.INVALID_ARTIFACT, f"{where} {problem}: publish the model again")
        paths.add(entry.path)
        parts = entry.path.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = sorted(paths & folders)
    if clash:
        raise StagingError(
            ExitCode.INVALID_ARTIFACT,
            f"{where} lists {clash[0][:200]!r} both as a file and as a folder: publish the model again",
        )


def _entry_problem(entry: FileEntry, seen: set[str]) -> str | None:
    """What is wrong with one file of a manifest, given the paths listed before it; None if nothing."""
    parts = entry.path.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\0" in entry.path or len(parts) > MAX_DEPTH:
        return f"lists the unsafe path {entry.path[:200]!r}"
    if entry.path in seen:
        return f"lists {entry.path[:200]!r} twice"
    if entry.size < 0:
        return f"lists {entry.path[:200]!r} with the negative size {entry.size}"
    return None


def _publish_error(exc: PublishError) -> StagingError:
    """model_builders' one-line PublishError mapped to an exit code by what it says."""
    text = str(exc)
    if "does not match its manifest" in text or "not the expected" in text:
        return StagingError(ExitCode.DIGEST_MISMATCH, text)
    if "denied" in text or "credentials" in text:
        return StagingError(ExitCode.ACCESS_DENIED, text)
    if "does not exist" in text or "has no manifest" in text:
        return StagingError(ExitCode.SOURCE_NOT_FOUND, text)
    return StagingError(ExitCode.SOURCE_UNAVAILABLE, text)


def download(source: S3Source, manifest: Manifest, dest: Path) -> None:
    """Download every file of `manifest` into the new folder `dest`, verified against it."""
    check_manifest(manifest, where=f"s3://{source.bucket}/{source.prefix}/{MANIFEST_FILE}")
    try:
        if _signed(source):
            _client(source)  # checks the credentials are there before model_builders tries
            fetch(
                target_of(source),
                dest,
                endpoint_url=source.endpoint,
                region=source.region,
                expected_digest=manifest.digest,
            )
        else:
            # publish.fetch builds a signed client from boto3's default chain; public buckets need unsigned.
            _download_unsigned(_client(source), source, manifest, dest)
    except PublishError as exc:
        raise _publish_error(exc) from None
    except BuildError as exc:
        raise StagingError(ExitCode.DIGEST_MISMATCH, str(exc)) from None
    except Exception as exc:
        raise classify(exc, source) from None


def _download_unsigned(client: S3Client, source: S3Source, manifest: Manifest, dest: Path) -> None:
    """The files of `manifest` with an unsigned client, each checked for size and sha256."""
    target = target_of(source)
    dest.mkdir()
    try:
        for entry in manifest.files:
            path = dest / entry.path
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(source.bucket, target.key(entry.path), str(path))
            if path.stat().st_size != entry.size or file_sha256(path) != entry.sha256:
                raise StagingError(
                    ExitCode.DIGEST_MISMATCH,
                    f"{target}/{entry.path} does not match its manifest: it changed after publishing; "
                    "publish the model again",
                )
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
