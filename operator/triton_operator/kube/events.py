"""Posting Events the way client-go's event recorder does, as `triton-operator` (not kopf).

core/v1 Events, with `count`, `firstTimestamp` and `lastTimestamp`, as client-go's tools/record recorder
(the one controller-runtime and most controllers use) writes them, rather than events.k8s.io/v1 with a
`series`: `kubectl describe` and `kubectl get events` read both and show a repeat as "(x3 over 2m)", but
core/v1 needs no heartbeat loop to keep a series alive, is the same RBAC rule (core `events`) the chart
grants already, and every tool that lists an object's Events by `involvedObject` keeps finding ours.

Identical Events (same object, type, reason and message) are one object whose count goes up, as
client-go's correlator does: a repeat PATCHes the one posted before (a new one when it expired). An
Event for an object whose namespace is being deleted, or is gone, is dropped and said at DEBUG once:
nothing for anyone to do. Posting never fails its caller: an Event is a courtesy, the status is the truth.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from triton_operator.kube.rest import Kube

log = logging.getLogger(__name__)

COMPONENT = "triton-operator"
NORMAL, WARNING = "Normal", "Warning"
# How many distinct Events are remembered for aggregation (client-go's LRU holds 4,096).
CACHE_SIZE = 4096
# events.k8s.io/v1 caps a note at 1 kB; core/v1 does not, but a screen does.
MESSAGE_MAX_BYTES = 1024
# Namespaces whose deletion was logged once (bounded: a cluster creates namespaces without end).
_QUIET_NAMESPACES_MAX = 1024


@dataclass(frozen=True)
class Event:
    """What to tell: Normal or Warning, a CamelCase reason, a sentence with the numbers."""

    type: str
    reason: str
    message: str

    def __post_init__(self) -> None:
        if self.type not in (NORMAL, WARNING):
            raise ValueError(f"an Event's type is Normal or Warning, not {self.type!r}")


def fit(message: str, limit: int = MESSAGE_MAX_BYTES) -> str:
    raw = message.encode()
    if len(raw) <= limit:
        return message
    return raw[: limit - 3].decode(errors="ignore") + "..."


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reporting_instance() -> str:
    """The pod's name (the chart passes it as POD_NAME; a pod's host name is its name too)."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def object_ref(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The involvedObject of an Event about `obj`."""
    meta = obj.get("metadata") or {}
    ref = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    return {k: v for k, v in ref.items() if v}


def describe(obj: Mapping[str, Any]) -> str:
    """`Kind namespace/name`, how every log line names an object."""
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', 'object')} {meta.get('namespace')}/{meta.get('name')}"


def expected_refusal(exc: ApiException) -> bool:
    """A refusal that needs no one: the namespace is being deleted (403) or is gone (404)."""
    return (exc.status == 403 and "being terminated" in str(exc.body)) or exc.status == 404


@dataclass
class _Posted:
    name: str
    count: int
    first: str


class EventRecorder:
    """Posts Events about objects, aggregating identical ones into one with a count."""

    def __init__(
        self,
        kube: Kube,
        component: str = COMPONENT,
        instance: str | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        cache_size: int = CACHE_SIZE,
    ):
        self.kube = kube
        self.component = component
        self.instance = instance or reporting_instance()
        self.clock = clock
        self.cache_size = cache_size
        self._posted: OrderedDict[tuple[str, ...], _Posted] = OrderedDict()
        self._quiet: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, obj: Mapping[str, Any], event: Event) -> None:
        """Post `event` about `obj`, or count it once more on the identical one posted before."""
        ref = object_ref(obj)
        namespace = str(ref.get("namespace") or "default")
        message = fit(event.message)
        key = (
            str(ref.get("uid") or ""),
            str(ref.get("kind")),
            namespace,
            str(ref.get("name")),
            event.type,
            event.reason,
            message,
        )
        now = rfc3339(self.clock())
        try:
            with self._lock:
                posted = self._posted.get(key)
            if posted is not None and self._count_again(namespace, posted, message, now):
                with self._lock:
                    self._posted.move_to_end(key)
                return
            name = self._create(namespace, ref, event, message, now)
            with self._lock:
                self._posted[key] = _Posted(name, 1, now)
                while len(self._posted) > self.cache_size:
                    self._posted.popitem(last=False)
        except ApiException as exc:
            if expected_refusal(exc):
                self._say_once(namespace, f"{describe(obj)}: not posting Event {event.reason}: {exc.reason}")
                return
            log.warning(
                "%s: could not post Event %s (%s %s); it is only in this log: %s",
                describe(obj),
                event.reason,
                exc.status,
                exc.reason,
                message,
            )
        except Exception as exc:  # an Event never fails the pass that posts it
            log.warning("%s: could not post Event %s (%s): %s", describe(obj), event.reason, exc, message)

    def _count_again(self, namespace: str, posted: _Posted, message: str, now: str) -> bool:
        """PATCH the Event posted before with its new count; False when it is gone (expired)."""
        try:
            self.kube.merge_patch(
                "Event",
                namespace,
                posted.name,
                {"count": posted.count + 1, "lastTimestamp": now, "message": message},
            )
        except ApiException as exc:
            if exc.status == 404 and "being terminated" not in str(exc.body):
                return False
            raise
        posted.count += 1
        return True

    def _create(self, namespace: str, ref: Mapping[str, Any], event: Event, message: str, now: str) -> str:
        when = self.clock()
        # client-go's name: the object's name and the time in hex nanoseconds, unique enough per object.
        name = f"{ref.get('name')}.{int(when.timestamp() * 1e9):x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": dict(ref),
            "type": event.type,
            "reason": event.reason,
            "message": message,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "action": event.reason,
        }
        created = self.kube.create("Event", namespace, body)
        return str((created or {}).get("metadata", {}).get("name") or name)

    def _say_once(self, namespace: str, line: str) -> None:
        with self._lock:
            if namespace in self._quiet:
                return
            self._quiet[namespace] = None
            while len(self._quiet) > _QUIET_NAMESPACES_MAX:
                self._quiet.popitem(last=False)
        log.debug("%s (its namespace is being deleted or gone: nothing to do)", line)


_RECORDERS: weakref.WeakKeyDictionary[Kube, EventRecorder] = weakref.WeakKeyDictionary()
_RECORDERS_LOCK = threading.Lock()


def recorder_for(kube: Kube) -> EventRecorder:
    """The one recorder of a client (so repeats aggregate whichever pass posts them)."""
    with _RECORDERS_LOCK:
        recorder = _RECORDERS.get(kube)
        if recorder is None:
            recorder = _RECORDERS[kube] = EventRecorder(kube)
        return recorder
