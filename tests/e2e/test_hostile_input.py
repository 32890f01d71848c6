"""Hostile input (issue 12): property-based TritonServer and TritonModel manifests on the real apiserver.

Hypothesis draws mostly-valid specs mutated in one to three places (wrong types, huge and negative
numbers, empty and huge strings, unicode with RTL marks, emoji and control characters, unknown fields,
missing required fields, deep nesting, references to servers, secrets and claims that do not exist),
fully random JSON objects as spec, and a few hostile metadata.name values. Each one is created with the
python client under `fieldValidation=Strict` (kubectl's default), then:

- a refusal (400/422) must name the field that was mutated (or one the violated rule ties to it);
- a body over the apiserver's 3 MiB request limit must be refused with its 413 (Kubernetes' own limit,
  before any schema: it names no field), and nothing created;
- an admitted object must get a status for its generation whose Ready condition explains it (a CamelCase
  reason and a message), while the operator stays the same process (no restart, no Traceback, no
  exception repeating in its log).

The run prints (and writes to $HOSTILE_REPORT, when set) how many were generated, refused by field,
admitted, and the reason histogram of how the admitted ones ended.

SAFETY: the machine runs every scheduled pod as real processes. Whatever a mutation did, every
TritonServer gets, after generation, a nodeSelector label no node has and a model repository of a
StorageClass that does not exist: its PVC stays Pending and its pods (and any staging Job's, which
mount that PVC) are never scheduled. TritonModels reference only servers of these namespaces (all made
unschedulable so) or servers that do not exist. The test checks at the end that no pod got a node.

Size: HOSTILE_EXAMPLES (default 1000 objects; the test itself takes 1 to 2.5 minutes here, most of it
namespace deletion), HOSTILE_WAIT_S (default 180 s for every admitted object's status), HOSTILE_SEED
(a seed instead of the derandomized default; printed). A longer local run: HOSTILE_EXAMPLES=10000.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e import kube
from tests.e2e.conftest import Sandbox
from tests.e2e.incluster import ChartOperator

# alone: it asserts the operator's log since its start holds no Traceback and no repeating warning (other
# tests' failure cases would write some) and the operator process never changed.
pytestmark = [pytest.mark.e2e, pytest.mark.alone]

GROUP, VERSION = "tritonoperator.dev", "v1alpha1"
PLURALS = {"TritonServer": "tritonservers", "TritonModel": "tritonmodels"}
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "1000"))
WAIT_S = float(os.environ.get("HOSTILE_WAIT_S", "180"))
SEED = os.environ.get("HOSTILE_SEED")
NAMESPACES = 4
CREATE_THREADS = 4
# What keeps every admitted TritonServer from ever running a pod (see the module docstring).
NO_NODE_LABEL = "hostile.tritonoperator.dev/no-such-node"
NO_SUCH_CLASS = "hostile-no-such-class"
SERVER_PLACEHOLDER = "@server"  # replaced by a server of the same namespace (or a missing one)
MISSING_SERVER = "no-such-server"
# A model's Ready is final once its grace for a missing server (observe.model.SERVER_GRACE_S) is over.
SETTLE_S = 20.0
DELETE_WAIT_S = 180.0
# The same exception line for the same object this often in the log is a loop, not a retry.
REPEAT_LIMIT = 3
CAMEL_CASE = re.compile(r"^[A-Z][A-Za-z0-9]*$")

# --- valid bases -----------------------------------------------------------------------------------

S3 = {
    "s3": {
        "bucket": "models",
        "prefix": "mnist/1",
        "endpoint": "http://127.0.0.1:9/",
        "region": "us-east-1",
        "credentialsSecret": {"name": "no-such-s3-secret"},
    }
}
SHA = "0" * 64
SERVER_BASES: list[dict[str, Any]] = [
    {},
    {
        "replicas": 1,
        "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
        "imagePullPolicy": "IfNotPresent",
        "imagePullSecrets": [{"name": "no-such-pull-secret"}],
        "resources": {
            "gpus": 1,
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": "2", "memory": "4Gi"},
        },
        "gpuProduct": "NVIDIA-A100-SXM4-80GB",
        "nodeSelector": {"example.com/pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "modelRepository": {"size": "5Gi", "accessModes": ["ReadWriteOnce"], "retainOnDelete": False},
        "triton": {
            "modelControlMode": "explicit",
            "strictReadiness": False,
            "logVerbose": 1,
            "exitTimeoutSeconds": 30,
            "extraArgs": ["--pinned-memory-pool-byte-size=268435456"],
            "metrics": {"enabled": True, "summaryLatencies": True, "gpuMetrics": False, "intervalMs": 1000},
        },
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "no-such-secret", "key": "token"}}},
        ],
        "envFrom": [
            {"secretRef": {"name": "no-such-secret"}},
            {"configMapRef": {"name": "no-such-config", "optional": True}, "prefix": "CFG_"},
        ],
        "sharedMemorySize": "2Gi",
        "startup": {"budgetSeconds": 900},
        "service": {"type": "ClusterIP", "annotations": {"example.com/owner": "ml"}},
        "podLabels": {"team": "ml"},
        "podAnnotations": {"example.com/note": "hostile"},
        "serviceAccountName": "no-such-account",
    },
    {
        "replicas": 0,
        "modelRepository": {"existingClaim": "no-such-claim"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}
                            ]
                        }
                    ]
                }
            }
        },
    },
    {
        "replicas": 1,
        "service": {"type": "NodePort"},
        "gateway": {
            "parentRefs": [{"name": "no-such-gateway", "sectionName": "http", "port": 80}],
            "hostnames": ["triton.example.com"],
        },
    },
]
SERVER_REF = {"name": SERVER_PLACEHOLDER}
MODEL_BASES: list[dict[str, Any]] = [
    {"serverRef": SERVER_REF, "version": 1, "source": S3},
    {
        "serverRef": SERVER_REF,
        "modelName": "adder",
        "version": 3,
        "source": {
            "http": {"url": "https://example.invalid/adder.tar.gz", "sha256": SHA},
            "digest": "sha256:" + SHA,
        },
        "keepFilesOnDelete": False,
        "config": {
            "backend": "python",
            "maxBatchSize": 8,
            "inputs": [{"name": "INPUT0", "dataType": "FP32", "dims": [1]}],
            "outputs": [{"name": "OUTPUT0", "dataType": "FP32", "dims": [-1]}],
            "dynamicBatching": {"preferredBatchSizes": [4, 8], "maxQueueDelayMicroseconds": 100},
            "instanceGroups": [{"kind": "CPU", "count": 2}],
            "parameters": {"EXECUTION_ENV_PATH": "/tmp/env.tar.gz"},
        },
    },
    {"serverRef": SERVER_REF, "source": {"pvc": {"claimName": "no-such-claim", "path": "models/mnist"}}},
    {
        "serverRef": SERVER_REF,
        "version": 2,
        "source": S3,
        "rollout": {
            "strategy": "Canary",
            "steps": [{"weight": 10, "pauseSeconds": 30}, {"weight": 100}],
            "analysis": {
                "intervalSeconds": 10,
                "minRequests": 100,
                "maxFailureRatio": 0.01,
                "maxLatencyRatio": 2.0,
                "maxQueueRatio": 3,
                "latencyFloorMs": 1,
            },
            "stickyKey": "x-user-id",
        },
    },
    {
        "serverRef": SERVER_REF,
        "version": 1,
        "source": S3,
        "experiment": {
            "stickyKey": "x-user-id",
            "variants": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10, "source": S3}],
        },
    },
    {
        "serverRef": SERVER_REF,
        "source": S3,
        "gateway": {"parentRefs": [{"name": "no-such-gateway"}], "hostnames": ["models.example.com"]},
        "experiment": {
            "servers": [
                {"name": SERVER_PLACEHOLDER, "weight": 50},
                {"name": MISSING_SERVER + "-b", "weight": 50},
            ]
        },
    },
]
KNOWN_KEYS = sorted(
    {key for base in SERVER_BASES + MODEL_BASES for key in base}
    | {"modelRepository", "storageClassName", "existingClaim", "name", "weight", "s3", "http", "pvc"}
)

# --- hostile values ----------------------------------------------------------------------------------

SPECIAL_STRINGS = [
    "",
    " ",
    "\u202eevil\u202c",  # right-to-left override
    "\u0645\u0631\u062d\u0628\u0627",  # Arabic (RTL)
    "\U0001f680\U0001f525\U0001f4a5",  # emoji
    "\u200b",  # zero-width space
    "e\u0301",  # combining accent
    "\t\n\r",
    "\x01\x02\x1b[31m\x7f",  # control characters (no NUL)
    "\u540d\u524d",
    "nvidia.com/gpu",
    "../../etc/passwd",
    "--model-repository=/tmp",
    "${HOME}",
    "'; DROP TABLE models; --",
    "null",
    "true",
    "1e309",
    "-1",
    "0x10",
    "\u221e",
    "Canary",
    "10Gi",
    "-5Gi",
    "1e999",  # matches the quantity pattern; too big for a resource.Quantity
    "99999999999999999999Ei",
    "0.0000000001m",
]
BIG_NUMBERS = [2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 10**30]
ODD_FLOATS = [0.5, -0.0, 1e-300, 1.7976931348623157e308, -1e308, 99.999999]
UNKNOWN_KEYS = [
    "Replicas",
    "replica",
    "spec",
    "status",
    "apiVersion",
    "x-kubernetes-preserve-unknown-fields",
    "$ref",
    "__proto__",
    "\U0001f680",
    "\u043a\u043b\u044e\u0447",
    "a.b",
    "a/b",
    " ",
    "",
]

no_nul = st.characters(codec="utf-8", exclude_characters="\x00")
texts = st.one_of(
    st.sampled_from(SPECIAL_STRINGS),
    st.text(alphabet=no_nul, max_size=30),
    st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x1F), min_size=1, max_size=8),
)


@st.composite
def huge_strings(draw: st.DrawFn) -> str:
    """Strings around and far beyond the schema's limits (built, not drawn character by character)."""
    size = draw(st.sampled_from([63, 64, 65, 200, 254, 1025, 4097, 32769, 40_000]))
    unit = draw(st.sampled_from(["a", "-", "\u00e9", "\U0001f680", "ab.", "x y"]))
    return (unit * size)[:size]


numbers = st.one_of(
    st.integers(-10, 100),
    st.sampled_from(BIG_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(ODD_FLOATS),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts, huge_strings(), st.sampled_from([[], {}]))
keys = st.one_of(
    st.sampled_from(KNOWN_KEYS), st.sampled_from(UNKNOWN_KEYS), st.from_regex(r"\A[a-z][a-zA-Z0-9]{0,12}\Z")
)


def nested(depth: int) -> Any:
    """A dict/list chain `depth` levels deep."""
    node: Any = "bottom"
    for level in range(depth):
        node = {"a": node} if level % 2 else [node]
    return node


json_values = st.recursive(
    scalars,
    # min_size=1: empty containers come from scalars (Hypothesis takes an extension that yields
    # something from nothing for one that does not recurse).
    lambda inner: (
        st.lists(inner, min_size=1, max_size=4) | st.dictionaries(keys, inner, min_size=1, max_size=4)
    ),
    max_leaves=8,
)
hostile_values = st.one_of(json_values, st.integers(5, 120).map(nested))
random_specs = st.dictionaries(keys, hostile_values, max_size=6)

# --- mutations ---------------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def field_path(root: str, path: Path_) -> str:
    """How the apiserver writes a path: spec.env[0].name."""
    return root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def node_paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every node of a JSON tree, containers included."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from node_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from node_paths(value, (*prefix, index))


def fresh(node: Any) -> Any:
    """A deep copy that shares nothing (copy.deepcopy keeps the bases' shared S3 dict shared)."""
    return json.loads(json.dumps(node))


def get_at(node: Any, path: Path_) -> Any:
    for part in path:
        node = node[part]
    return node


@st.composite
def mutate(draw: st.DrawFn, spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """spec changed in one to three places, and the field paths changed. Every value put in is a fresh
    copy: Hypothesis may hand out one object twice, and putting it inside itself made a cycle."""
    spec = fresh(spec)
    changed = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(node_paths(spec))))
        node = get_at(spec, path)
        action = draw(st.sampled_from(["replace", "replace", "delete", "extra", "grow"]))
        if not path and action in ("replace", "delete"):
            action = "extra"
        parent = get_at(spec, path[:-1]) if path else None
        if action == "delete" and path:
            assert parent is not None
            del parent[path[-1]]
        elif action == "extra" and isinstance(node, dict):
            key = draw(keys)
            node[key] = fresh(draw(hostile_values))
            path = (*path, key)
        elif action == "grow" and isinstance(node, list):
            element = node[0] if node else draw(scalars)
            node.extend(copy.deepcopy(element) for _ in range(draw(st.sampled_from([1, 16, 65, 200]))))
        elif action == "grow" and isinstance(node, dict):
            for index in range(draw(st.sampled_from([17, 33, 65, 129]))):
                node[f"k{index}.example.com/key-{index}"] = "v"
        elif action == "grow" and isinstance(node, str):
            node = draw(huge_strings())
            assert parent is not None
            parent[path[-1]] = node
        elif path:
            assert parent is not None
            parent[path[-1]] = fresh(draw(hostile_values))
        else:
            spec[draw(keys)] = fresh(draw(hostile_values))
        changed.append(field_path("spec", path))
    return spec, changed


@dataclass
class Case:
    """One generated manifest and what was made hostile in it."""

    kind: str
    spec: Any
    changed: list[str]  # field paths; empty for an unmutated base
    style: str  # base, mutated, random, name
    name_suffix: str = ""  # appended to the object's name (a hostile name)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["TritonServer", "TritonModel"]))
    bases = SERVER_BASES if kind == "TritonServer" else MODEL_BASES
    base = draw(st.sampled_from(bases))
    roll = draw(st.integers(0, 99))
    if roll < 10:
        return Case(kind, fresh(base), [], "base")
    if roll < 80:
        spec, changed = draw(mutate(base))
        return Case(kind, spec, changed, "mutated")
    if roll < 95:
        return Case(kind, draw(random_specs), ["spec"], "random")
    # Names the CRD refuses: too long for a Service (server) or a Triton model name (model), or not DNS.
    suffix = draw(
        st.one_of(
            st.sampled_from(
                ["-" + "a" * 60, "-" + "b" * 199, "-" + "c" * 240, "-UPPER", "-\u00e9", "-a_b", "."]
            )
        )
    )
    return Case(kind, fresh(base), ["metadata.name"], "name", suffix)


# --- what is sent --------------------------------------------------------------------------------


def replace_placeholder(node: Any, server: str) -> Any:
    if node == SERVER_PLACEHOLDER:
        return server
    if isinstance(node, dict):
        return {k: replace_placeholder(v, server) for k, v in node.items()}
    if isinstance(node, list):
        return [replace_placeholder(v, server) for v in node]
    return node


def make_unschedulable(spec: Any, real_classes: set[str]) -> Any:
    """The SAFETY overlay of a TritonServer spec (see the module docstring); a non-object spec is refused."""
    if spec is None:
        spec = {}  # a null spec is pruned and defaulted: it would run with every default
    if not isinstance(spec, dict):
        return spec
    selector = spec.get("nodeSelector")
    if selector is None:  # unset or null (pruned, then defaulted to {})
        selector = spec["nodeSelector"] = {}
    if isinstance(selector, dict):
        selector[NO_NODE_LABEL] = "true"
    repo = spec.get("modelRepository")
    if repo is None:
        repo = spec["modelRepository"] = {}
    if isinstance(repo, dict) and (
        repo.get("storageClassName") is None or repo["storageClassName"] in real_classes
    ):
        repo["storageClassName"] = NO_SUCH_CLASS
    replicas = spec.get("replicas")
    if type(replicas) is int and 0 <= replicas <= 64:
        spec["replicas"] = replicas % 2  # at most one Pending pod per server: the cluster is small
    return spec


@dataclass
class Sent:
    case: Case
    namespace: str
    name: str
    body: dict[str, Any]
    status: int = 0  # 201 admitted, else the HTTP status of the refusal
    message: str = ""
    transport_failures: list[str] = field(default_factory=list)  # attempts the client's connection lost


def prepare(cases_: list[Case], namespaces: list[str], real_classes: set[str]) -> list[Sent]:
    """Name, place and make safe every case; a model's server is one of its namespace's (or missing)."""
    servers: dict[str, list[str]] = {ns: [] for ns in namespaces}
    out = []
    for index, case in enumerate(cases_):
        namespace = namespaces[index % len(namespaces)]
        prefix = "s" if case.kind == "TritonServer" else "m"
        name = f"{prefix}-{index:05d}{case.name_suffix}"
        spec = case.spec
        if case.kind == "TritonServer":
            spec = make_unschedulable(spec, real_classes)
            if not case.name_suffix:  # a hostile name is refused: no model should count on it
                servers[namespace].append(name)
        else:
            pick = random.Random(index)  # deterministic per index, like the derandomized draws
            choices = [*servers[namespace][-8:], MISSING_SERVER]
            spec = replace_placeholder(spec, pick.choice(choices))
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": case.kind,
            "metadata": {"name": name},
            "spec": spec,
        }
        if spec is None and case.kind == "TritonModel":
            del body["spec"]
        out.append(Sent(case, namespace, name, body))
    return out


# kube-apiserver's limit on a request body (its MaxRequestBodyBytes, 3 MiB): it answers a longer one
# 413 "Request entity too large" before any schema sees it, and closes the connection without reading the
# rest, so a client still sending gets the connection cut instead of the answer (Python's ssl: EOF).
APISERVER_BODY_LIMIT = 3 * 1024 * 1024
TOO_LARGE = f"Request entity too large: limit is {APISERVER_BODY_LIMIT}"


def over_body_limit(sent: Sent) -> bool:
    return len(json.dumps(sent.body).encode()) > APISERVER_BODY_LIMIT  # as the client serializes it


def create(api: client.CustomObjectsApi, sent: Sent) -> Sent:
    """POST it as kubectl would (strict field validation); 429/5xx are retried, a refusal is recorded.

    A connection the client lost before any answer (a reset, urllib3's SSLEOFError) is no verdict on the
    manifest: it is retried on a new connection and reported (Report.transport). Only a body over the
    apiserver's size limit is expected to lose it: that refusal is recorded as the 413 it is, once a GET
    shows nothing was created.
    """
    for attempt in range(5):
        try:
            api.create_namespaced_custom_object(
                GROUP,
                VERSION,
                sent.namespace,
                PLURALS[sent.case.kind],
                sent.body,
                field_validation="Strict",
                _request_timeout=60,
            )
        except ApiException as exc:
            if exc.status == 409 and sent.transport_failures:
                break  # names are unique to the run: the attempt whose answer was lost created it
            if exc.status in (429, 500, 503, 504) and attempt < 4:
                time.sleep(1 + attempt)
                continue
            sent.status = int(exc.status or 0)
            try:
                sent.message = str(json.loads(exc.body or "{}").get("message") or exc.body)
            except ValueError:
                sent.message = str(exc.body or exc.reason)
            return sent
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if over_body_limit(sent) and not exists(api, sent):
                sent.status, sent.message = 413, f"{TOO_LARGE} (the connection was cut while sending)"
                return sent
            sent.transport_failures.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {exc}"[:300])
            if attempt < 4:
                time.sleep(1 + attempt)
                continue
            raise
        break
    sent.status = 201
    return sent


def exists(api: client.CustomObjectsApi, sent: Sent) -> bool:
    try:
        api.get_namespaced_custom_object(GROUP, VERSION, sent.namespace, PLURALS[sent.case.kind], sent.name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


# --- judging refusals ---------------------------------------------------------------------------

PATH_IN_MESSAGE = re.compile(r"\b(?:spec|metadata)(?:\.[^\s:\[\]\",()]+|\[\d+\])*(?![A-Za-z0-9_])")
# Rules that tie two fields together name one of them, whichever was mutated: (mutated under, named).
COUPLED = [
    ("spec.experiment", "spec.version"),
    ("spec.experiment", "spec.serverRef"),
    ("spec.experiment", "spec.gateway"),
    ("spec.experiment", "spec.rollout"),
    ("spec.version", "spec.experiment"),
    ("spec.serverRef", "spec.experiment"),
    ("spec.gateway", "spec.experiment"),
    ("spec.rollout", "spec.experiment"),
    ("spec.source.http.sha256", "spec.source.digest"),
    ("spec.resources.limits", "spec.resources.requests"),
    ("spec.config.maxBatchSize", "spec.config.dynamicBatching"),
    ("spec.rollout.strategy", "spec.rollout"),
    ("spec.modelName", "metadata.name"),
]


def _related(named: str, changed: str) -> bool:
    """The apiserver named the changed field, a field inside it, or the object whose rule it broke."""
    if named == changed or named.startswith((changed + ".", changed + "[")):
        return True
    if changed.startswith((named + ".", named + "[")) and named != "spec":
        return True
    return any(changed.startswith(a) and named.startswith(b) for a, b in COUPLED)


def names_the_field(sent: Sent) -> bool:
    """Whether a refusal's message names a field the case made hostile."""
    for path in sent.case.changed:
        if path != "spec" and re.search(re.escape(path) + r"(?![A-Za-z0-9_])", sent.message):
            return True
    named = PATH_IN_MESSAGE.findall(sent.message)
    return any(_related(n, c) for n in named for c in sent.case.changed)


def refused_field(sent: Sent) -> str:
    """The first field the refusal names (for the report's histogram)."""
    named = [n for n in PATH_IN_MESSAGE.findall(sent.message) if n not in ("spec", "metadata")]
    field_ = re.sub(r"\[\d+\]", "[]", named[0]) if named else "(none)"
    if "unknown field" in sent.message:  # the unknown key itself is random: count by where it was
        return f"unknown field in {field_.rsplit('.', 1)[0]}"
    return field_


# --- judging admitted objects ---------------------------------------------------------------------


def unexplained(obj: dict[str, Any]) -> str | None:
    """Why the object's status does not (yet) explain it; None when it does."""
    st_ = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    if st_.get("observedGeneration") != generation:
        return f"observedGeneration {st_.get('observedGeneration')} != generation {generation}"
    ready = next((c for c in st_.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None:
        return "no Ready condition"
    if ready.get("observedGeneration") != generation:
        return f"Ready is about generation {ready.get('observedGeneration')}"
    if not CAMEL_CASE.match(str(ready.get("reason") or "")):
        return f"Ready reason {ready.get('reason')!r} is not CamelCase"
    if not str(ready.get("message") or "").strip():
        return f"Ready {ready.get('reason')} has no message"
    return None


def ready_of(obj: dict[str, Any]) -> dict[str, Any]:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {}
    )


def list_all(
    api: client.CustomObjectsApi, namespaces: list[str]
) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for ns in namespaces:
        for kind, plural in PLURALS.items():
            for obj in api.list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]:
                out[(kind, ns, obj["metadata"]["name"])] = obj
    return out


# --- the operator's health ----------------------------------------------------------------------

TIMESTAMP = re.compile(r"^\[?[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9:.,]+\]?\s*")
EXCEPTION_LINE = re.compile(r"\[(WARNING|ERROR|CRITICAL) *\]|Traceback|Exception")
# kopf posts the Events of a deleted object's last handlers into its namespace, which is terminating
# when the namespace itself is deleted: kopf retries each refused POST (at most 9 attempts) and logs
# every attempt. Bounded and kopf's own, so not counted as a loop (reported by the test instead).
# Events of objects whose namespace is being deleted, or already gone: kopf says so once per Event (the
# line names the Event, not its object, so objects of one namespace that said the same repeat it).
EVENTS_INTO_TERMINATING = re.compile(
    r"/events -> APIForbiddenError.*being terminated"
    r"|Failed to post an event.*Code: 404.*namespaces .* not found"
)
# urllib3 warns when more threads talk to the apiserver at once than the client's pool holds (10): a
# connection is closed and opened again, no request fails. Reported, not counted as a loop.
POOL_FULL = re.compile(r"Connection pool is full, discarding connection")


def repeated_exception_lines(log: str) -> list[tuple[str, int]]:
    """Warning and error lines that repeat (timestamps stripped): one object failing over and over."""
    counts = Counter(
        TIMESTAMP.sub("", line).strip()
        for line in log.splitlines()
        if EXCEPTION_LINE.search(line)
        and not EVENTS_INTO_TERMINATING.search(line)
        and not POOL_FULL.search(line)
    )
    return [(line, n) for line, n in counts.most_common() if n >= REPEAT_LIMIT]


def check_log(log: str) -> None:
    """No Traceback and no warning or error line repeating in the operator's log."""
    if "Traceback" in log:
        at = log.index("Traceback")
        raise AssertionError(f"Traceback in the operator's log:\n{log[max(0, at - 2000) : at + 3000]}")
    repeats = repeated_exception_lines(log)
    assert not repeats, f"exception lines repeating in the operator's log: {repeats[:10]}"


def leftovers(sb: Sandbox, namespaces: list[str]) -> list[str]:
    """What is left in the namespaces, with its finalizers (what a stuck namespace deletion waits for)."""
    kinds = "tritonmodels,tritonservers,jobs,pods,persistentvolumeclaims"
    out = []
    for ns in namespaces:
        listed = sb.kubectl("get", kinds, "-n", ns, "-o", "json", check=False).stdout
        try:
            items = json.loads(listed).get("items", [])
        except ValueError:
            continue
        out += [
            f"{ns}/{i['kind']}/{i['metadata']['name']} {i['metadata'].get('finalizers')}" for i in items[:20]
        ]
    return out


def operator_restarts(sb: Sandbox, op: ChartOperator) -> dict[str, int]:
    core = client.CoreV1Api(sb.api)
    pods = core.list_namespaced_pod(op.namespace, label_selector=op.selector).items
    return {p.metadata.name: sum(c.restart_count for c in p.status.container_statuses or []) for p in pods}


# --- the test ----------------------------------------------------------------------------------------


def generate(count: int) -> list[Case]:
    """`count` cases from Hypothesis: derandomized (the same every run) unless HOSTILE_SEED is set."""
    drawn: list[Case] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=SEED is None,
        deadline=None,
        phases=[Phase.generate],  # no shrinking: the cases are judged afterwards, against the cluster
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases())
    def draw(case: Case) -> None:
        drawn.append(case)

    if SEED is not None:
        draw = seed(int(SEED))(draw)
    draw()
    return drawn


@dataclass
class Report:
    generated: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_style: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    refused_by_status: Counter[int] = field(default_factory=Counter)
    refused_by_field: Counter[str] = field(default_factory=Counter)
    admitted: Counter[str] = field(default_factory=Counter)
    ended: Counter[str] = field(default_factory=Counter)  # "Kind Ready=Status Reason"
    ended_examples: dict[str, str] = field(default_factory=dict)  # one message of each
    warnings_in_log: Counter[str] = field(default_factory=Counter)  # by level, kopf's event retries apart
    warning_examples: list[str] = field(default_factory=list)  # the first few of the other ones
    operator_made: int = 0  # objects the operator created (a gateway model's copies)
    unnamed_refusals: list[dict[str, Any]] = field(default_factory=list)
    invalid_spec: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    transport: list[str] = field(default_factory=list)  # POSTs whose connection was lost, then retried

    def text(self) -> str:
        data = {k: (dict(v.most_common()) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}
        return json.dumps(data, indent=1, ensure_ascii=False, default=str)


@pytest.fixture
def hostile_namespaces(sandbox: Sandbox, operator: ChartOperator) -> Iterator[list[str]]:
    core = client.CoreV1Api(sandbox.api)
    run = uuid.uuid4().hex[:5]
    names = [f"hostile-{run}-{i}" for i in range(NAMESPACES)]
    for name in names:
        core.create_namespace({"metadata": {"name": name, "labels": {"e2e": "true"}}})
    yield names
    for name in names:  # the test waits for this itself; here only what a failed test left behind
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def test_hostile_manifests_are_refused_naming_the_field_or_handled_with_a_condition(
    sandbox: Sandbox, operator: ChartOperator, hostile_namespaces: list[str]
) -> None:
    report = Report()
    try:
        run_hostile(sandbox, operator, hostile_namespaces, report)
    finally:
        text = report.text()
        print(f"\nhostile input ({EXAMPLES} examples, seed {SEED or 'derandomized'}):\n{text}")
        if os.environ.get("HOSTILE_REPORT"):
            Path(os.environ["HOSTILE_REPORT"]).write_text(text)


def run_hostile(sb: Sandbox, operator: ChartOperator, namespaces: list[str], report: Report) -> None:
    api = client.CustomObjectsApi(sb.api)
    core = client.CoreV1Api(sb.api)
    started = time.monotonic()
    real_classes = {sc.metadata.name for sc in client.StorageV1Api(sb.api).list_storage_class().items}
    assert NO_SUCH_CLASS not in real_classes
    assert not [n for n in core.list_node().items if NO_NODE_LABEL in (n.metadata.labels or {})]
    pids_before, restarts_before = operator.pids(), operator_restarts(sb, operator)
    assert pids_before, "no operator process"
    log_offset = len(operator.log())

    sents = prepare(generate(EXAMPLES), namespaces, real_classes)
    report.seconds["generate"] = round(time.monotonic() - started, 1)
    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        done = list(pool.map(lambda s: create(api, s), sents))
    last_created = time.monotonic()
    report.seconds["create"] = round(last_created - started - report.seconds["generate"], 1)
    admitted = [s for s in done if s.status == 201]
    refused = [s for s in done if s.status != 201]
    report.generated = len(done)
    report.transport = [f"{s.name}: {failure}" for s in done for failure in s.transport_failures]
    report.by_kind = Counter(s.case.kind for s in done)
    report.by_style = Counter(s.case.style for s in done)
    report.refused = len(refused)
    report.refused_by_status = Counter(s.status for s in refused)
    report.refused_by_field = Counter(refused_field(s) for s in refused)
    report.admitted = Counter(s.case.kind for s in admitted)
    report.unnamed_refusals = [
        {"kind": s.case.kind, "changed": s.case.changed, "status": s.status, "message": s.message[:600]}
        for s in refused
        if s.status not in (400, 422) or not names_the_field(s)
        if not (s.status == 413 and over_body_limit(s))  # Kubernetes' own limit: no schema saw it
    ]

    # Every admitted object (and whatever the operator made of them) gets a status that explains it.
    wanted = {(s.case.kind, s.namespace, s.name) for s in admitted}
    last: dict[tuple[str, str, str], str] = {}

    def all_explained() -> bool:
        objs = list_all(api, namespaces)
        last.clear()
        last.update({key: "gone" for key in wanted - objs.keys()})
        last.update({key: why for key, obj in objs.items() if (why := unexplained(obj))})
        return not last

    deadline = time.monotonic() + WAIT_S
    while not all_explained() and time.monotonic() < deadline:
        time.sleep(3)
    report.seconds["explained"] = round(time.monotonic() - last_created, 1)
    sample = dict(list(last.items())[:20])
    assert not last, (
        f"{len(last)} admitted objects lack a status that explains them after {WAIT_S:.0f}s: {sample}"
    )

    time.sleep(max(0.0, SETTLE_S - (time.monotonic() - last_created)))  # missing servers are NotFound now
    objs = list_all(api, namespaces)
    report.operator_made = len(objs.keys() - wanted)
    for (kind, _, name), obj in sorted(objs.items()):
        cond = ready_of(obj)
        ended = f"{kind} Ready={cond.get('status')} {cond.get('reason')}"
        report.ended[ended] += 1
        report.ended_examples.setdefault(ended, str(cond.get("message", ""))[:300])
        if cond.get("reason") == "InvalidSpec":  # admitted by the CRD, refused by the operator's models
            report.invalid_spec.append({"kind": kind, "name": name, "message": cond.get("message", "")[:400]})
    final = {key: why for key, obj in objs.items() if (why := unexplained(obj))}
    assert not final, f"statuses went stale after being explained: {dict(list(final.items())[:20])}"
    # A pass applies a server's spec before it observes it: still Reconciling after passes means the
    # apply failed and the status hides why (it must say ApplyFailed with the apiserver's message).
    hiding = {
        key: ready_of(obj).get("message")
        for key, obj in objs.items()
        if key[0] == "TritonServer" and ready_of(obj).get("reason") == "Reconciling"
    }
    assert not hiding, f"servers still Reconciling after {SETTLE_S:.0f}s: {dict(list(hiding.items())[:10])}"

    # The operator is the same process, never restarted, and did not loop on an exception.
    assert operator.running()
    assert operator.pids() == pids_before, f"operator process changed: {pids_before} -> {operator.pids()}"
    assert operator_restarts(sb, operator) == restarts_before
    check_log(operator.log()[log_offset:])

    # SAFETY held: no pod of these namespaces was ever given a node.
    scheduled = [
        f"{p.metadata.namespace}/{p.metadata.name} on {p.spec.node_name}"
        for ns in namespaces
        for p in core.list_namespaced_pod(ns).items
        if p.spec.node_name
    ]
    assert not scheduled, f"pods were scheduled: {scheduled[:10]}"

    # Deleting the namespaces deletes everything: no finalizer of ours holds them.
    deleting = time.monotonic()
    for ns in namespaces:
        core.delete_namespace(ns)

    def namespaces_gone() -> bool:
        present = {n.metadata.name for n in core.list_namespace().items}
        return not present & set(namespaces)

    # The operator's finalizers go within a minute here; the rest is Kubernetes' pace (the PVC protection
    # controller, on a busy machine up to two minutes). What holds a namespace is listed on a timeout.
    try:
        kube.wait_for(namespaces_gone, DELETE_WAIT_S, f"namespaces {namespaces} deleted", interval_s=2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still there: {leftovers(sb, namespaces)}") from None
    report.seconds["delete"] = round(time.monotonic() - deleting, 1)
    log = operator.log()[log_offset:]
    for line in log.splitlines():
        if level := EXCEPTION_LINE.search(line):
            known = [
                (EVENTS_INTO_TERMINATING, "kopf: events into a terminating namespace"),
                (POOL_FULL, "urllib3: connection pool full"),
            ]
            what = next((text for pattern, text in known if pattern.search(line)), None)
            report.warnings_in_log[what or level.group(1) or level.group(0)] += 1
            if what is None and len(report.warning_examples) < 10:
                report.warning_examples.append(TIMESTAMP.sub("", line)[:300])
    check_log(log)  # deleting them (finalizers) went without exceptions too
    assert operator.pids() == pids_before
    report.seconds["total"] = round(time.monotonic() - started, 1)
    assert not report.unnamed_refusals, (
        f"{len(report.unnamed_refusals)} refusals do not name the field: {report.unnamed_refusals[:10]}"
    )
