"""Stand-ins for what the staging code talks to (an HTTP response from urlopen), shared by the staging
unit tests and the parser fuzz tests."""

from __future__ import annotations


class FakeResponse:
    """What urlopen returns: headers and a body read in chunks; may fail part way as a server can."""

    def __init__(
        self, headers: dict[str, str], chunks: list[bytes], failure: BaseException | None = None
    ) -> None:
        self.headers, self.chunks, self.failure = headers, chunks, failure

    def __enter__(self) -> FakeResponse:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def read(self, _size: int) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        if self.failure is not None:
            raise self.failure
        return b""
