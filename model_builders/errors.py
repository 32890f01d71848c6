"""Errors a user can fix: each message is one line naming the problem and the fix."""

from __future__ import annotations


class BuildError(Exception):
    """A problem with the user's model, options or target; `str()` is one line with the fix."""

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints it as is and tests/grep rely on that.
        super().__init__(" ".join(message.split()))


class ConfigError(BuildError):
    """A model configuration Triton would reject."""


class ModelFileError(BuildError):
    """A model file that cannot be read (corrupt, wrong format, unsupported tensor types)."""


class PublishError(BuildError):
    """Publishing or fetching a model entry failed; nothing half-written was left behind."""
