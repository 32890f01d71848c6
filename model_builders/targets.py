"""Where a model folder is published: `s3://bucket/prefix`, `file:///path` or a plain folder path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from model_builders.errors import BuildError


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
