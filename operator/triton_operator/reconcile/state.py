"""What the operator keeps in memory between reconciles (rebuilt from the cluster after a restart)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from triton_operator.observe.metrics import Scrape

Key = tuple[str, str]  # (namespace, name)


def object_key(body: Mapping[str, Any]) -> Key:
    """The (namespace, name) an object is known by in the operator's memory."""
    return body["metadata"]["namespace"], body["metadata"]["name"]


@dataclass(frozen=True)
class StagedRecord:
    """A staging Job that completed: its files are in the server's repository."""

    job: str
    version: int
    digest: str | None


@dataclass(frozen=True)
class FailedLoad:
    """Triton refused to load the files of `job` on one pod (not retried for a while)."""

    job: str
    message: str
    at: float  # time.monotonic()


@dataclass
class ModelMemory:
    """What one TritonModel's reconciler remembers between passes."""

    server: Key | None = None
    # The last completed staging (also in status.stagingJob/stagedDigest, which survive a restart).
    staged: StagedRecord | None = None
    # status.stagingJob when first seen: the files a READY pod was loaded from before this process.
    baseline_job: str | None = None
    # Pod uid -> staging Job whose files the operator loaded there; a new Job means reload.
    loads: dict[str, str] = field(default_factory=dict)
    failures: dict[str, FailedLoad] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class OperatorState:
    # The latest /metrics scrape of each pod of a server, and the one before it, for rates over a window.
    scrapes: dict[Key, dict[str, Scrape]] = field(default_factory=lambda: defaultdict(dict))
    previous_scrapes: dict[Key, dict[str, Scrape]] = field(default_factory=dict)
    # When each server's children were last applied by its status loop (drift repair).
    applied_at: dict[Key, float] = field(default_factory=dict)

    # TritonModels: their memory and the events that wake their status loops (separate from the
    # servers' pokes: a model and a server may share a name).
    models: dict[Key, ModelMemory] = field(default_factory=dict)
    model_pokes: dict[Key, threading.Event] = field(default_factory=dict)

    def forget(self, key: Key) -> None:
        self.scrapes.pop(key, None)
        self.previous_scrapes.pop(key, None)
        self.applied_at.pop(key, None)

    def model(self, key: Key) -> ModelMemory:
        return self.models.setdefault(key, ModelMemory())

    def model_poke(self, key: Key) -> threading.Event:
        return self.model_pokes.setdefault(key, threading.Event())

    def poke_model(self, key: Key) -> None:
        self.model_poke(key).set()

    def poke_models_of(self, server: Key) -> None:
        """Wake every model placed on `server` (its pods or the server itself changed)."""
        for key, memory in list(self.models.items()):
            if memory.server == server:
                self.poke_model(key)

    def forget_model(self, key: Key) -> None:
        self.models.pop(key, None)
        self.model_pokes.pop(key, None)
