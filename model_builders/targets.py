"""Where a model folder is published: `s3://bucket/prefix`, `file:///path` or a plain folder path."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from model_builders.errors import BuildError
from model_builders.repository import check_version


@dataclass(frozen=True)
class S3Target:
    """An S3 prefix that holds the model folder's content (`<prefix>/config.pbtxt`, ...)."""

    bucket: str
    prefix: str

    def key(self, rel: str) -> str:
        """The object key of a path relative to the model folder."""
        return f"{self.prefix}/{rel}"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class FolderTarget:
    """A local folder that holds the model folder's content."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


Target = S3Target | FolderTarget


def parse_target(text: str, *, default_prefix: str = "") -> Target:
    """`s3://bucket/prefix`, `file:///abs/path` or a path -> a Target; BuildError for anything else."""
    if text.startswith("s3://"):
        parsed = urlparse(text)
        prefix = parsed.path.strip("/") or default_prefix
        if not parsed.netloc or not prefix:
            raise BuildError(f"--to {text!r}: expected s3://BUCKET/PREFIX, e.g. s3://models/mnist_mlp")
        return S3Target(bucket=parsed.netloc, prefix=prefix)
    if text.startswith("file://"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise BuildError(f"--to {text!r}: file URLs name a local path: use file:///abs/path")
        return FolderTarget(Path(unquote(parsed.path)).resolve())
    if "://" in text:
        raise BuildError(
            f"--to {text!r}: unsupported scheme: use s3://BUCKET/PREFIX, file:///PATH or a folder path"
        )
    return FolderTarget(Path(text).resolve())


def last_segment(target: Target) -> str:
    """The last path segment of a target: `2` for s3://models/mnist/2 and for /srv/models/mnist/2."""
    if isinstance(target, S3Target):
        return target.prefix.rsplit("/", 1)[-1]
    return target.path.name


def version_in_target(target: Target) -> int | None:
    """The version a target names by a numeric last segment (`.../mnist/2` -> 2), else None."""
    segment = last_segment(target)
    return int(segment) if re.fullmatch(r"[0-9]+", segment) else None


def resolve_version(version: int | None, target: Target, *, to: str) -> int | None:
    """The version to publish as: `--version`, else the target's numeric last segment, else None.

    None means the model folder is published as it is (its highest version folder is the one served;
    1 for a model built without --version). `to` is the --to text, for messages; an s3:// target without
    a prefix (the model name is used) names no version.
    """
    named = version_in_target(target)
    if to.startswith("s3://") and not urlparse(to).path.strip("/"):
        named = None
    if version is not None:
        check_version(version)
        if named is not None and named != version:
            raise BuildError(
                f"--version {version} conflicts with --to {to}, whose last segment says version {named}: "
                f"drop --version, or publish to a target ending in /{version}"
            )
        return version
    if named is not None:
        check_version(named, flag=f"--to {to}: version")
    return named
