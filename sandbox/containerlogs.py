"""Container logs as a kubelet keeps them, so `kubectl logs` works in the sandbox.

A container's processes write their output (stdout and stderr together) straight to the raw log
`<pod dir>/<container>.log`, appended across restarts: the runner is not in their way, and tests read
that file. Each tick of the pod's life, the runner copies what is new there, line by line, into CRI
log files (the format a kubelet's runtime writes: `<RFC 3339 time> stdout F|P <line>`):
`<pod dir>/logs/<container>/current.log` for the container's running (or last) instance and
`previous.log` for the one before it.

kwok's kubelet server (`kwok --server-address`, on every node's InternalIP) serves the
apiserver's `containerLogs` calls from files named by kwok `Logs` objects (kwok.x-k8s.io/v1alpha1),
whose paths are literal: the runner creates one per pod (same name and namespace, owned by the pod,
so the garbage collector deletes it with the pod) naming each container's two files. So
`kubectl logs [-c C] [--tail N] [-f] [--previous] [--timestamps]` reads them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

KWOK_GROUP, KWOK_VERSION, LOGS_PLURAL = "kwok.x-k8s.io", "v1alpha1", "logs"
# A kubelet's runtime splits longer lines into partial (P) records of this size.
MAX_RECORD = 16 * 1024
# A line still without its end this long after it began is written as a partial record (a prompt).
PARTIAL_AFTER_S = 1.0
# Bytes copied per pump at most (the rest the next tick): a chatty container cannot stall its pod.
PUMP_LIMIT = 4 << 20


def cri_timestamp(t: float) -> bytes:
    """RFC 3339 with nanoseconds, as CRI log files carry it (`2006-01-02T15:04:05.000000000Z`)."""
    seconds = int(t)
    nanos = round((t - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z").encode()


def cri_records(line: bytes, full: bool, stamp: bytes) -> bytes:
    """`line` (without its newline) as CRI records: partial ones of MAX_RECORD bytes, then the last one
    full (F) if the line ended, else partial (P)."""
    chunks = [line[i : i + MAX_RECORD] for i in range(0, len(line), MAX_RECORD)] or [b""]
    out = []
    for i, chunk in enumerate(chunks):
        tag = b"F" if full and i == len(chunks) - 1 else b"P"
        out.append(b"%s stdout %s %s\n" % (stamp, tag, chunk))
    return b"".join(out)


class ContainerLog:
    """One container's CRI log files, fed from its raw log. Used from the pod's own thread only."""

    def __init__(self, pod_dir: Path, container: str):
        self.raw = pod_dir / f"{container}.log"
        self.dir = pod_dir / "logs" / container
        self.current = self.dir / "current.log"
        self.previous = self.dir / "previous.log"
        self.offset = 0  # where in the raw log the current instance's output begins (or was read to)
        self.pending = b""  # the start of a line not yet ended
        self.pending_since = 0.0
        self.started = False

    def prepare(self) -> None:
        """An empty current log before the container first starts (`kubectl logs` shows nothing yet)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.current.touch()

    def begin(self) -> None:
        """Just before a new instance of the container starts: the last one's output is copied in full,
        its file becomes the previous log, and the new one's starts at the raw log's end."""
        if self.started:
            self.pump(final=True)
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.current, self.previous)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.current.write_bytes(b"")
        try:
            self.offset = self.raw.stat().st_size
        except FileNotFoundError:
            self.offset = 0
        self.pending, self.pending_since, self.started = b"", 0.0, True

    def pump(self, final: bool = False, now: float | None = None) -> None:
        """Copy what the container wrote since the last pump; `final` once it has ended (its last line
        is written even without a newline)."""
        if not self.started:
            return
        now = time.time() if now is None else now
        try:
            with open(self.raw, "rb") as f:
                f.seek(self.offset)
                data = f.read(PUMP_LIMIT)
        except FileNotFoundError:
            return
        self.offset += len(data)
        if not data and not (self.pending and (final or now - self.pending_since >= PARTIAL_AFTER_S)):
            return
        lines = (self.pending + data).split(b"\n")
        rest = lines.pop()
        if rest and (lines or not self.pending):
            self.pending_since = now  # the unended line began in this read
        stamp = cri_timestamp(now)
        out = [cri_records(line, True, stamp) for line in lines]
        if rest and (final or len(rest) >= MAX_RECORD or now - self.pending_since >= PARTIAL_AFTER_S):
            out.append(cri_records(rest, final, stamp))
            rest = b""
        self.pending = rest
        if out:
            with open(self.current, "ab") as f:
                f.write(b"".join(out))


def logs_object(pod: dict[str, Any], logs: Sequence[tuple[str, ContainerLog]]) -> dict[str, Any]:
    """The kwok `Logs` object that points kwok's kubelet server at a pod's CRI log files."""
    meta = pod["metadata"]
    return {
        "apiVersion": f"{KWOK_GROUP}/{KWOK_VERSION}",
        "kind": "Logs",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": "sandbox-podrunner"},
            # Deleted with the pod by the garbage collector.
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}
            ],
        },
        "spec": {
            "logs": [
                {
                    "containers": [name],
                    "logsFile": str(log.current),
                    "previousLogsFile": str(log.previous),
                }
                for name, log in logs
            ]
        },
    }


def publish_logs_object(api: client.ApiClient, body: dict[str, Any]) -> None:
    """Create the pod's Logs object, or take over one left by an earlier pod of the same name."""
    custom = client.CustomObjectsApi(api)
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        custom.create_namespaced_custom_object(KWOK_GROUP, KWOK_VERSION, ns, LOGS_PLURAL, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        old = custom.get_namespaced_custom_object(KWOK_GROUP, KWOK_VERSION, ns, LOGS_PLURAL, name)
        metadata = {**body["metadata"], "resourceVersion": old["metadata"]["resourceVersion"]}
        body = {**body, "metadata": metadata}
        custom.replace_namespaced_custom_object(KWOK_GROUP, KWOK_VERSION, ns, LOGS_PLURAL, name, body)
