"""Every log line about an object names it (`Kind namespace/name`), wherever in a pass it is written.

An object's pass runs with `about(kind, namespace, name)` set (handlers/loops.py); ObjectNames, a
filter on the operator's log handler, puts the object on each line that does not name it already: as a
`Kind namespace/name: ` prefix in text, as kopf's `object` reference in JSON lines (the message stays
as written, for log parsers). kopf's own per-object lines carry their reference already and get the
same prefix.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

Ref = tuple[str, str, str]  # kind, namespace, name

_CURRENT: contextvars.ContextVar[Ref | None] = contextvars.ContextVar("triton_operator_object", default=None)


@contextlib.contextmanager
def about(kind: str, namespace: str, name: str) -> Iterator[None]:
    """Log lines written inside are about this object."""
    token = _CURRENT.set((kind, namespace, name))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def named(ref: Ref) -> str:
    kind, namespace, name = ref
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _ref_of(record: logging.LogRecord) -> Ref | None:
    kopf_ref = getattr(record, "k8s_ref", None)  # kopf's per-object logger
    if isinstance(kopf_ref, dict) and kopf_ref.get("name"):
        return (str(kopf_ref.get("kind") or "object"), str(kopf_ref.get("namespace") or ""), kopf_ref["name"])
    return _CURRENT.get()


class ObjectNames(logging.Filter):
    """Names the object a line is about (see the module's doc); `json`: as a field, not a prefix."""

    def __init__(self, json: bool = False):
        super().__init__()
        self.json = json

    def filter(self, record: logging.LogRecord) -> bool:
        ref = _ref_of(record)
        if ref is None:
            return True
        if self.json:
            if not hasattr(record, "k8s_ref"):
                record.k8s_ref = {"kind": ref[0], "namespace": ref[1], "name": ref[2]}
            return True
        message = record.getMessage()
        if named(ref) in message:  # said already (or named by another handler's filter)
            return True
        # The whole message, formatted: a prefix must not meet the line's own %-arguments.
        record.msg = f"{named(ref)}: {message}"
        record.args = None
        return True
