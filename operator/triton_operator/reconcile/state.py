"""What the operator keeps in memory between reconciles (rebuilt from the cluster after a restart)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from triton_operator.observe.metrics import Scrape
from triton_operator.observe.rollout import WindowStart
from triton_operator.observe.server import ApplyFailure
from triton_operator.observe.staging import StagedRecord
from triton_operator.reconcile.cache import SharedReads
from triton_operator.reconcile.watched import WatchedStaging
from triton_operator.render.router import Variant as RouterVariant
from triton_operator.triton import client as triton
from triton_operator.triton.client import ModelState

DEFAULT_READ_TTL_S = 10.0

Key = tuple[str, str]  # (namespace, name)


def pod_index_key(pod: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """Where a pod's repository index is cached: (namespace, pod, uid); a replaced pod is another key."""
    meta = pod["metadata"]
    return meta["namespace"], meta["name"], meta.get("uid")


def owner_name(body: Mapping[str, Any], kind: str) -> str | None:
    """The name of the object's owner of `kind` (its owner reference says it in full, a label may not)."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("name"):
            return str(ref["name"])
    return None


def object_key(body: Mapping[str, Any]) -> Key:
    """The (namespace, name) an object is known by in the operator's memory."""
    return body["metadata"]["namespace"], body["metadata"]["name"]


@dataclass(frozen=True)
class FailedLoad:
    """Triton refused to load the files of `job` on one pod (not retried for a while)."""

    job: str
    message: str
    at: float  # time.monotonic()


@dataclass(frozen=True)
class RouteProblem:
    """Applying an object's routes failed: the Routed condition's reason and message."""

    reason: str
    message: str


@dataclass
class RoutingMemory:
    """What one routed model's passes remember (rebuilt after a restart: routers are loaded again)."""

    # Pod uid -> the router config (variants, sticky key) loaded there.
    routers: dict[str, tuple[tuple[RouterVariant, ...], str]] = field(default_factory=dict)
    # Where the current window of traffic (a canary step, an experiment's weights) starts.
    window: WindowStart | None = None
    # When the current weights were in place on every replica (time.monotonic()); None while applying.
    applied_at: float | None = None
    # Pod uids where a router of this model is loaded, whatever its weights: clients reach it there (a
    # reload with new weights swaps it in place; a versions reload leaves it loaded).
    serving: set[str] = field(default_factory=set)
    # Whether every ready replica has one (the model is not Ready before; RouterLoading).
    on_every_pod: bool = False
    # (pod uid, staging Job) where a version no longer served was found loaded and a reload was asked
    # (once: a reload that keeps it means its files are still there, and the next retire removes them).
    stale_reloads: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class ModelMemory:
    """What one TritonModel's reconciler remembers between passes."""

    server: Key | None = None
    # The Triton names its spec loads on `server` (the server's pass looks for leftovers beyond them).
    wants: frozenset[str] = frozenset()
    # The last completed staging (also in status.stagingJob/stagedDigest, which survive a restart).
    staged: StagedRecord | None = None
    # status.stagingJob when first seen: the files a READY pod was loaded from before this process.
    baseline_job: str | None = None
    # The staging Jobs whose predecessors this process has already deleted (once per new spec).
    cleaned_for: frozenset[str] | None = None
    # An experiment's other versions, staged by Jobs of their own (by version).
    variants_staged: dict[int, StagedRecord] = field(default_factory=dict)
    # Pod uid -> staging Job whose files the operator loaded there; a new Job means reload.
    loads: dict[str, str] = field(default_factory=dict)
    # Pod uid -> its Triton's restart count when this model was last loaded (or refused) there: the
    # pod's models-loaded gate waits for every model of the server (see gates.py).
    settled: dict[str, int] = field(default_factory=dict)
    # A pass settled a pod it had not settled before (the server's pass may open that pod's gate).
    settled_news: bool = False
    failures: dict[str, FailedLoad] = field(default_factory=dict)
    # Routed models (canary rollouts): the router on each pod, the step's window.
    routing: RoutingMemory = field(default_factory=RoutingMemory)
    # The old version whose files a promotion removed (so a restart does not wait for it again).
    retired: int | None = None
    # The removal Job deleting a version's folder now: no load starts meanwhile. Triton reads every
    # version folder when it loads; one removed mid-load hung that load for good (Triton 2.51's python
    # backend: a stub that cannot find its model.py leaves the load waiting).
    removing: str | None = None
    # A model served through a Gateway: its routes as last applied (JSON), and why applying failed.
    routes_applied: str | None = None
    route_problem: RouteProblem | None = None
    # ... and the servers holding its copies (their pods' events wake it too).
    pools: frozenset[Key] = frozenset()
    lock: threading.Lock = field(default_factory=threading.Lock)

    def has_staged(self, job: str) -> bool:
        """Whether the last completed staging is `job`'s."""
        return self.staged is not None and self.staged.job == job


@dataclass(frozen=True)
class AppliedSpec:
    uid: str
    generation: int
    at: float  # time.monotonic()


@dataclass
class OperatorState:
    # The latest /metrics scrape of each pod of a server, and the one before it, for rates over a window.
    scrapes: dict[Key, dict[str, Scrape]] = field(default_factory=lambda: defaultdict(dict))
    previous_scrapes: dict[Key, dict[str, Scrape]] = field(default_factory=dict)
    # Which spec of each server was last applied, and when (a new spec or the drift period re-applies).
    applied: dict[Key, AppliedSpec] = field(default_factory=dict)
    # Why the routes of a server (spec.gateway) could not be applied, from its last apply; None: applied.
    route_problems: dict[Key, RouteProblem | None] = field(default_factory=dict)
    # Why applying a server's spec failed, until an apply succeeds (its status keeps saying so).
    apply_failures: dict[Key, ApplyFailure] = field(default_factory=dict)
    # Whether Triton pods get the models-loaded readiness gate (off: its RBAC is not granted).
    models_gate: bool = True
    # (server, pod uid) -> the Triton restart count when this process opened the pod's gate.
    gates_opened: dict[tuple[Key, str], int] = field(default_factory=dict)

    # When each server's pass last listed the TritonModels to look for leftovers (reconcile/leftovers.py).
    leftovers_listed: dict[Key, float] = field(default_factory=dict)
    # TritonModels: what each one's passes remember.
    models: dict[Key, ModelMemory] = field(default_factory=dict)

    # Reads every model of a server shares (see cache.py); watch events invalidate them.
    read_ttl_s: float = DEFAULT_READ_TTL_S
    servers: SharedReads[dict[str, Any] | None] = field(init=False)
    server_pods: SharedReads[list[dict[str, Any]]] = field(init=False)
    # Keyed by (namespace, pod name, pod uid): a restarted container keeps the uid, so pod events
    # (restartCount, readiness) invalidate it too.
    indexes: SharedReads[list[ModelState]] = field(init=False)
    # Staging Jobs and their pods, fed by the watch.
    staging: WatchedStaging = field(default_factory=WatchedStaging)

    def __post_init__(self) -> None:
        self.servers = SharedReads(self.read_ttl_s)
        self.server_pods = SharedReads(self.read_ttl_s)
        self.indexes = SharedReads(self.read_ttl_s)

    def forget(self, key: Key) -> None:
        """A TritonServer is gone."""
        self.scrapes.pop(key, None)
        self.previous_scrapes.pop(key, None)
        self.applied.pop(key, None)
        self.route_problems.pop(key, None)
        self.apply_failures.pop(key, None)
        self.leftovers_listed.pop(key, None)
        for opened in [k for k in self.gates_opened if k[0] == key]:
            del self.gates_opened[opened]
        self.servers.invalidate(key)
        self.server_pods.invalidate(key)

    def model(self, key: Key) -> ModelMemory:
        return self.models.setdefault(key, ModelMemory())

    def pod_index(self, pod: Mapping[str, Any], *, fresh: bool = False) -> list[ModelState]:
        """The running pod's repository index, read once per period for all its models and its server.

        A pod held as hung raises its timeout at once instead of queueing every reader behind the one
        call that asks it again (triton/client.py): each would hold a worker for that call's timeout.
        """
        endpoint = triton.TritonEndpoint(pod["status"]["podIP"])
        triton.raise_if_held(endpoint, triton.INDEX)
        read = partial(triton.repository_index, endpoint)
        return self.indexes.get(pod_index_key(pod), read, fresh=fresh)

    def models_on(self, server: Key) -> list[Key]:
        """The models placed on `server` (to wake when its pods or the server itself change)."""
        return [
            key
            for key, memory in list(self.models.items())
            if memory.server == server or server in memory.pools
        ]

    def forget_model(self, key: Key) -> None:
        self.models.pop(key, None)
