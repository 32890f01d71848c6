"""Publish a model folder to S3 or a local folder, and fetch it back, verified by its manifest.

S3 strategy: every data file is uploaded first (multipart above the TransferConfig threshold, each
object carrying its sha256 in metadata `sha256`), and `<prefix>/manifest.json` is written LAST.
The manifest marks a complete publish: a prefix without one is incomplete and `fetch` refuses it.
On any failure the objects this run uploaded are deleted and its unfinished multipart uploads
aborted, so the bucket holds nothing half-written. With `force`, an existing different manifest is
deleted first (readers never see a manifest that does not match the data), and keys the new
manifest does not list are removed after it is written.

Folder strategy: the copy is built in a temp folder beside the target and renamed into place.
Credentials come only from boto3's standard chain (AWS_* env vars, config files); never printed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_builders.errors import PublishError
from model_builders.manifest import MANIFEST_FILE, Manifest, file_sha256, manifest_from_json, publish_view
from model_builders.repository import replace_dir
from model_builders.targets import FolderTarget, S3Target, Target

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

MiB = 1 << 20


def default_transfer_config() -> TransferConfig:
    """Multipart above 64 MiB in 16 MiB parts, 4 parts in flight."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=16 * MiB, max_concurrency=4)


def s3_client(endpoint_url: str | None = None, region: str | None = None) -> S3Client:
    """A boto3 S3 client with bounded timeouts and retries; path-style addressing for custom endpoints."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        # Self-hosted S3 (MinIO, moto, Ceph) is usually addressed by host:port, not bucket subdomains.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


# --- publish -------------------------------------------------------------------------------------


def publish(
    model_dir: Path,
    target: Target,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    force: bool = False,
    transfer: TransferConfig | None = None,
    version: int | None = None,
) -> Manifest:
    """Publish `model_dir` (REPO/NAME) to `target`; returns the manifest written there.

    With `version` the target gets the top-level files and one version folder, `<version>/` (the folder
    of that name in `model_dir`, or its only version folder, renamed); without, the folder as it is.
    """
    view = publish_view(model_dir, version=version)
    manifest = view.manifest
    if isinstance(target, S3Target):
        with _s3_errors(target, endpoint_url):
            client = s3_client(endpoint_url, region)
            _publish_s3(client, view.sources, manifest, target, force, transfer or default_transfer_config())
    else:
        _publish_folder(view.sources, manifest, target, force)
    return manifest


def _publish_s3(
    client: S3Client,
    sources: Mapping[str, Path],
    manifest: Manifest,
    target: S3Target,
    force: bool,
    transfer: TransferConfig,
) -> None:
    existing = set(_list_keys(client, target))
    manifest_key = target.key(MANIFEST_FILE)
    if manifest_key in existing:
        current = _read_s3_manifest(client, target)
        if current.digest == manifest.digest:
            return  # already published, byte for byte
        if not force:
            raise PublishError(
                f"{target} already holds a different model ({current.digest}): publish to a new prefix "
                "(e.g. one per version) or pass --force to replace it"
            )
        client.delete_object(Bucket=target.bucket, Key=manifest_key)
    elif existing and not force:
        raise PublishError(
            f"{target} already holds {len(existing)} objects but no manifest (an incomplete publish?): "
            "publish to a new prefix or pass --force to replace them"
        )
    uploaded: list[str] = []
    try:
        for entry in manifest.files:
            key = target.key(entry.path)
            uploaded.append(key)  # before the call: a failed multipart upload may leave parts behind
            client.upload_file(
                str(sources[entry.path]),
                target.bucket,
                key,
                ExtraArgs={"Metadata": {"sha256": entry.sha256}},
                Config=transfer,
            )
        body = manifest.to_json().encode()
        uploaded.append(manifest_key)
        client.put_object(
            Bucket=target.bucket,
            Key=manifest_key,
            Body=body,
            ContentType="application/json",
            Metadata={"digest": manifest.digest},
        )
    except BaseException:
        remove_s3_objects(client, target, uploaded)
        raise
    stale = existing - {target.key(f.path) for f in manifest.files} - {manifest_key}
    if stale:
        remove_s3_objects(client, target, sorted(stale))


def remove_s3_objects(client: S3Client, target: S3Target, keys: list[str]) -> None:
    """Delete `keys` and abort unfinished multipart uploads to them (best effort, for rollback)."""
    wanted = set(keys)
    try:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch: list[ObjectIdentifierTypeDef] = [{"Key": k} for k in keys[start : start + 1000]]
            client.delete_objects(Bucket=target.bucket, Delete={"Objects": batch, "Quiet": True})
        paginator = client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=target.bucket, Prefix=target.prefix + "/"):
            for upload in page.get("Uploads", []):
                if upload.get("Key") in wanted:
                    client.abort_multipart_upload(
                        Bucket=target.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
    except Exception:
        pass


def _list_keys(client: S3Client, target: S3Target) -> Iterator[str]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=target.bucket, Prefix=target.prefix + "/"):
        for obj in page.get("Contents", []):
            yield obj["Key"]


def _read_s3_manifest(client: S3Client, target: S3Target) -> Manifest:
    from botocore.exceptions import ClientError

    try:
        body = client.get_object(Bucket=target.bucket, Key=target.key(MANIFEST_FILE))["Body"].read()
    except ClientError as exc:
        if _error_code(exc) in ("NoSuchKey", "404"):
            raise PublishError(
                f"{target} has no {MANIFEST_FILE}: it was never published completely; publish it first"
            ) from None
        raise
    return manifest_from_json(body.decode(), where=str(target) + "/" + MANIFEST_FILE)


def _publish_folder(
    sources: Mapping[str, Path], manifest: Manifest, target: FolderTarget, force: bool
) -> None:
    dest = target.path
    if (dest / MANIFEST_FILE).is_file():
        current = manifest_from_json((dest / MANIFEST_FILE).read_text(), where=str(dest / MANIFEST_FILE))
        if current.digest == manifest.digest:
            return
    if dest.exists() and any(dest.iterdir()) and not force:
        raise PublishError(f"{dest} is not empty: publish to a new folder or pass --force to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700; Triton may run as another user
    try:
        for version in manifest.versions:
            (staging / str(version)).mkdir()
        for entry in manifest.files:
            (staging / entry.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sources[entry.path], staging / entry.path)
        (staging / MANIFEST_FILE).write_text(manifest.to_json())
        replace_dir(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# --- fetch ---------------------------------------------------------------------------------------


def fetch(
    source: Target,
    dest: Path,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    expected_digest: str | None = None,
) -> Manifest:
    """Copy a published model into `dest` (the model folder), verifying every file against the manifest.

    `dest` is replaced atomically (temp folder beside it, then rename); on error it is untouched.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700; Triton may run as another user
    try:
        if isinstance(source, S3Target):
            with _s3_errors(source, endpoint_url):
                client = s3_client(endpoint_url, region)
                manifest = _read_s3_manifest(client, source)
                _check_expected(manifest, expected_digest, source)
                for entry in manifest.files:
                    (staging / entry.path).parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(source.bucket, source.key(entry.path), str(staging / entry.path))
        else:
            manifest_path = source.path / MANIFEST_FILE
            if not manifest_path.is_file():
                raise PublishError(f"{source} has no {MANIFEST_FILE}: publish the model there first")
            manifest = manifest_from_json(manifest_path.read_text(), where=str(manifest_path))
            _check_expected(manifest, expected_digest, source)
            for entry in manifest.files:
                (staging / entry.path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source.path / entry.path, staging / entry.path)
        _verify_files(staging, manifest, source)
        for version in manifest.versions:
            (staging / str(version)).mkdir(exist_ok=True)
        (staging / MANIFEST_FILE).write_text(manifest.to_json())
        replace_dir(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _check_expected(manifest: Manifest, expected: str | None, source: Target) -> None:
    if expected is not None and manifest.digest != expected:
        raise PublishError(
            f"{source} holds digest {manifest.digest}, not the expected {expected}: "
            "point at the prefix that was published with that digest, or update the expected digest"
        )


def _verify_files(staging: Path, manifest: Manifest, source: Target) -> None:
    for entry in manifest.files:
        path = staging / entry.path
        if path.stat().st_size != entry.size or file_sha256(path) != entry.sha256:
            raise PublishError(
                f"{source}/{entry.path} does not match its manifest (size or sha256): it changed after "
                "publishing; publish the model again"
            )


# --- errors --------------------------------------------------------------------------------------


class _s3_errors:
    """Turn botocore/boto3 failures into one-line PublishErrors that name the fix."""

    def __init__(self, target: S3Target, endpoint_url: str | None) -> None:
        self.target = target
        self.endpoint = endpoint_url or "the default AWS endpoint"

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, PublishError) or not isinstance(exc, Exception):
            return
        mapped = _map_s3_error(exc, self.target, self.endpoint)
        if mapped is not None:
            raise mapped from None


def _map_s3_error(exc: Exception, target: S3Target, endpoint: str) -> PublishError | None:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(
        exc, EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError | ReadTimeoutError
    ):
        return PublishError(
            f"cannot reach S3 endpoint {endpoint}: check --endpoint-url and that the server is up"
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PublishError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        )
    code = _error_code(exc) if isinstance(exc, ClientError) else ""
    text = str(exc)
    if code == "NoSuchBucket" or "NoSuchBucket" in text:
        return PublishError(
            f"bucket {target.bucket!r} does not exist at {endpoint}: create it first or fix --to"
        )
    if (
        code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch")
        or "AccessDenied" in text
    ):
        return PublishError(
            f"access to {target} was denied ({code or 'AccessDenied'}): "
            "use credentials allowed to read and write there"
        )
    if isinstance(exc, ClientError | S3UploadFailedError):
        first_line = text.splitlines()[0] if text else type(exc).__name__
        return PublishError(
            f"S3 request to {target} failed ({first_line}): check the bucket, prefix and endpoint"
        )
    return None


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
