"""Exit codes of `triton-operator stage` and the error that carries them.

| code | reason            | meaning                                         | on failure |
|------|-------------------|-------------------------------------------------|------------|
| 0    | -                 | staged, or already staged                       | -          |
| 1    | InternalError     | unexpected failure (a bug, an I/O error)        | retried    |
| 2    | InvalidArguments  | bad command line or --spec (a bad Job)          | FailJob    |
| 10   | SourceUnavailable | unreachable, timeout, 5xx, repository busy      | retried    |
| 11   | SourceNotFound    | bucket, object, manifest, URL or folder missing | FailJob    |
| 12   | AccessDenied      | credentials rejected or missing (401/403)       | FailJob    |
| 13   | DigestMismatch    | digest, sha256 or manifest check failed         | FailJob    |
| 14   | ConfigRejected    | config.pbtxt missing, unparsable or invalid     | FailJob    |
| 15   | TooLarge          | the artifact does not fit in the repository     | FailJob    |
| 16   | InvalidArtifact   | bad archive, unsafe paths, ambiguous versions   | FailJob    |

The reason is the first word of the one-line message written to stderr and the termination log, so the
operator can copy it into a condition's reason (`Reason: message`).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Exit status of the staging program."""

    OK = 0
    INTERNAL = 1
    INVALID_ARGUMENTS = 2
    SOURCE_UNAVAILABLE = 10
    SOURCE_NOT_FOUND = 11
    ACCESS_DENIED = 12
    DIGEST_MISMATCH = 13
    CONFIG_REJECTED = 14
    TOO_LARGE = 15
    INVALID_ARTIFACT = 16


REASONS: dict[ExitCode, str] = {
    ExitCode.INTERNAL: "InternalError",
    ExitCode.INVALID_ARGUMENTS: "InvalidArguments",
    ExitCode.SOURCE_UNAVAILABLE: "SourceUnavailable",
    ExitCode.SOURCE_NOT_FOUND: "SourceNotFound",
    ExitCode.ACCESS_DENIED: "AccessDenied",
    ExitCode.DIGEST_MISMATCH: "DigestMismatch",
    ExitCode.CONFIG_REJECTED: "ConfigRejected",
    ExitCode.TOO_LARGE: "TooLarge",
    ExitCode.INVALID_ARTIFACT: "InvalidArtifact",
}

#: Exit codes a retry cannot fix: the Job's podFailurePolicy fails the Job at once on these.
PERMANENT_EXIT_CODES: tuple[int, ...] = tuple(
    sorted(
        int(code)
        for code in (
            ExitCode.INVALID_ARGUMENTS,
            ExitCode.SOURCE_NOT_FOUND,
            ExitCode.ACCESS_DENIED,
            ExitCode.DIGEST_MISMATCH,
            ExitCode.CONFIG_REJECTED,
            ExitCode.TOO_LARGE,
            ExitCode.INVALID_ARTIFACT,
        )
    )
)


def reason_for_exit_code(code: int) -> str:
    """The CamelCase reason of an exit code (InternalError for unknown ones), for conditions and Events."""
    try:
        return REASONS.get(ExitCode(code), "InternalError")
    except ValueError:
        return "InternalError"


class StagingError(Exception):
    """A failure the user can act on: `str()` is one line naming the problem and the fix."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(" ".join(message.split()))
        self.code = code

    @property
    def reason(self) -> str:
        """CamelCase reason of the exit code."""
        return REASONS.get(self.code, "InternalError")

    def line(self) -> str:
        """`Reason: message`, the text written to stderr and the termination log."""
        return f"{self.reason}: {self}"
