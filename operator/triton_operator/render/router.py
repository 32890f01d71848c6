"""The traffic router Triton loads under a model's public name for canary rollouts and A/B tests.

The router forwards each request to one variant: (target model name, version, weight). It is loaded
with no folder in the repository: Triton's load API takes `router_config(...)` as `config` and
`router_files()` as `files`. Two implementations make the same choices from the same config:
- native (the default where it is built): a Triton backend in C++ (`router_backend.cc`, built by
  .ci/build-router.sh into `libtriton_tritonoperator_router.so` beside it), sent in `files` as
  `1/libtriton_tritonoperator_router.so`; Triton looks for a model's backend library in its version
  folder first. It forwards in-process and asynchronously: measured with perf_analyzer it costs a few
  percent of a model's throughput where the python router cost a third to two thirds (README);
- python (`router_model.py`, shipped as data, never imported here): BLS from a python-backend model.
  Used where the library is not built, or with TRITON_OPERATOR_ROUTER=python.
Pure functions: no I/O besides reading the shipped files.

What cannot be routed (`unsupported_reason`): decoupled models (a decoupled router fails over HTTP and
unary gRPC), sequence models (a sequence must stay on one variant from START to END across the router
reloads that change weights, which the router does not keep yet), models with batch inputs/outputs
(the router merges requests, which changes what those compute), shape tensors, and BF16
tensors (the python backend has no numpy type for them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, NamedTuple

MODEL_SOURCE = "router_model.py"
NATIVE_BACKEND = "tritonoperator_router"
NATIVE_LIBRARY = f"libtriton_{NATIVE_BACKEND}.so"
# "python" forces the python router (to compare, or where the native one misbehaves).
ROUTER_ENV = "TRITON_OPERATOR_ROUTER"
DEFAULT_PIN_KEY = "x-triton-variant"
# Requests that wait for a batch add latency at low load; 0 still merges whatever queued while the
# router's one instance was busy, which is where batching pays.
DEFAULT_MAX_QUEUE_DELAY_US = 0
_IO_KEYS = ("name", "data_type", "dims")


class Variant(NamedTuple):
    """A share of a public model's traffic: a loaded model name and version, and an integer weight."""

    model: str
    version: int
    weight: int


def unsupported_reason(target_config: Mapping[str, Any]) -> str | None:
    """Why a model (its config as GET /v2/models/<m>/config returns it) cannot sit behind the router."""
    name = target_config.get("name", "the model")
    if (target_config.get("model_transaction_policy") or {}).get("decoupled"):
        return f"{name} is decoupled: a router forwarding its responses fails over HTTP and unary gRPC"
    if target_config.get("sequence_batching") is not None:
        return (
            f"{name} is a sequence model: a sequence must stay on one variant from START to END, "
            "across weight changes, which the router does not keep yet"
        )
    if target_config.get("batch_input") or target_config.get("batch_output"):
        return f"{name} has batch inputs/outputs: a router merging requests would change what they compute"
    for kind in ("input", "output"):
        for tensor in target_config.get(kind) or []:
            if tensor.get("is_shape_tensor"):
                return f"{name} {kind} {tensor.get('name')} is a shape tensor: BLS cannot forward it"
            if tensor.get("data_type") == "TYPE_BF16":
                return f"{name} {kind} {tensor.get('name')} is BF16: the python backend has no numpy type"
    return None


def signature_mismatch(config_a: Mapping[str, Any], config_b: Mapping[str, Any]) -> str | None:
    """What differs between two models' tensors (name, data type, dims, batching); None when none does.

    Two models can be variants of one public name only when a client cannot tell them apart by shape.
    """
    a_name, b_name = config_a.get("name", "a"), config_b.get("name", "b")
    differences: list[str] = []
    a_batches, b_batches = _max_batch(config_a) > 0, _max_batch(config_b) > 0
    if a_batches != b_batches:
        which = a_name if a_batches else b_name
        differences.append(f"only {which} has a batch dimension (max_batch_size > 0)")
    for kind in ("input", "output"):
        a_tensors, b_tensors = _tensors(config_a, kind), _tensors(config_b, kind)
        for tensor in sorted(a_tensors.keys() | b_tensors.keys()):
            if tensor not in b_tensors:
                differences.append(f"{kind} {tensor} only in {a_name}")
            elif tensor not in a_tensors:
                differences.append(f"{kind} {tensor} only in {b_name}")
            elif a_tensors[tensor] != b_tensors[tensor]:
                (a_type, a_dims), (b_type, b_dims) = a_tensors[tensor], b_tensors[tensor]
                a_sig, b_sig = f"{a_type} {list(a_dims)}", f"{b_type} {list(b_dims)}"
                differences.append(f"{kind} {tensor}: {a_sig} in {a_name}, {b_sig} in {b_name}")
    return "; ".join(differences) or None


def router_config(
    public_name: str,
    target_config: Mapping[str, Any],
    variants: Iterable[Variant | tuple[str, int, int]],
    *,
    sticky_key: str = "",
    pin_key: str = DEFAULT_PIN_KEY,
    max_batch_size: int | None = None,
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US,
    instance_count: int = 1,
    native: bool | None = None,
) -> dict[str, Any]:
    """The router's model config, as the JSON dict Triton's load API accepts in `config`.

    `target_config` gives the signature (tensors copied without reshape; the router passes through
    what clients send). Variants naming other models must match it (`signature_mismatch`), and
    `max_batch_size` must then not exceed any of theirs (default: the target's). One instance keeps
    the split exact; more instances each run their own round robin. `native`: which router (None:
    `native_router()`); pass the same to `router_files`.
    """
    reason = unsupported_reason(target_config)
    if reason is not None:
        raise ValueError(reason)
    chosen = [Variant(str(m), int(v), int(w)) for m, v, w in variants]
    _check_variants(public_name, chosen)
    if instance_count < 1:
        raise ValueError("instance_count must be >= 1")
    target_batch = _max_batch(target_config)
    batch = target_batch if max_batch_size is None else max_batch_size
    if batch < 0 or batch > target_batch or (batch == 0) != (target_batch == 0):
        raise ValueError(
            f"max_batch_size {batch} must be in 1..{target_batch} (the target's)"
            if target_batch
            else "the target does not batch (max_batch_size 0): neither can its router"
        )
    config: dict[str, Any] = {
        "name": public_name,
        "backend": NATIVE_BACKEND if (native_router() if native is None else native) else "python",
        "max_batch_size": batch,
        "input": [_io(t, optional=True) for t in target_config.get("input") or []],
        "output": [_io(t) for t in target_config.get("output") or []],
        "instance_group": [{"count": instance_count, "kind": "KIND_CPU"}],
        "parameters": {
            "variants": {"string_value": _variants_json(chosen)},
            "sticky_key": {"string_value": sticky_key},
            "pin_key": {"string_value": pin_key},
        },
    }
    if batch > 0:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": max_queue_delay_us}
    return config


ROUTER_PARAMETERS = ("variants", "sticky_key", "pin_key")


def router_matches(loaded: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether the config Triton serves a router with (its JSON form, read back through the config
    API) is the router `wanted` asks for: the same backend, variants, sticky and pin keys, batch size
    and tensors (names and types). How a restarted operator knows a pod needs no reload."""

    def parameters(config: Mapping[str, Any]) -> dict[str, Any]:
        found = config.get("parameters") or {}
        # Protobuf's JSON leaves an empty string out: {} is "".
        return {key: (found.get(key) or {}).get("string_value") or "" for key in ROUTER_PARAMETERS}

    def tensors(config: Mapping[str, Any], key: str) -> list[tuple[Any, Any]]:
        return [(t.get("name"), t.get("data_type")) for t in config.get(key) or []]

    return (
        loaded.get("backend") == wanted.get("backend")
        and parameters(loaded) == parameters(wanted)
        and int(loaded.get("max_batch_size") or 0) == int(wanted.get("max_batch_size") or 0)
        and tensors(loaded, "input") == tensors(wanted, "input")
        and tensors(loaded, "output") == tensors(wanted, "output")
    )


def is_router(config: Mapping[str, Any]) -> bool:
    """Whether a config read back through the config API is a router's (it names its variants)."""
    return "variants" in (config.get("parameters") or {})


def native_router() -> bool:
    """Whether routers are the native backend: its library is built and TRITON_OPERATOR_ROUTER is not
    "python". `router_config` and `router_files` agree on it."""
    if os.environ.get(ROUTER_ENV, "").strip().lower() == "python":
        return False
    return resources.files("triton_operator.render").joinpath(NATIVE_LIBRARY).is_file()


def router_files(native: bool | None = None) -> dict[str, bytes]:
    """The router's version folder for the load API's `files` override: the native backend's library
    ({"file:1/libtriton_tritonoperator_router.so": ...}), else the python model ({"file:1/model.py": ...})."""
    package = resources.files("triton_operator.render")
    if native_router() if native is None else native:
        return {f"file:1/{NATIVE_LIBRARY}": package.joinpath(NATIVE_LIBRARY).read_bytes()}
    return {"file:1/model.py": package.joinpath(MODEL_SOURCE).read_bytes()}


def router_variants(config: Mapping[str, Any]) -> list[Variant] | None:
    """The variants a loaded router's config (GET /v2/models/<m>/config) carries; None if not a router."""
    raw = ((config.get("parameters") or {}).get("variants") or {}).get("string_value")
    if not raw:
        return None
    return [Variant(str(i["model"]), int(i["version"]), int(i["weight"])) for i in json.loads(raw)]


def _check_variants(public_name: str, variants: Sequence[Variant]) -> None:
    if not variants:
        raise ValueError("a router needs at least one variant")
    if any(v.weight < 0 for v in variants) or sum(v.weight for v in variants) <= 0:
        raise ValueError("variant weights must be >= 0 with a positive total")
    if any(v.version < 1 for v in variants):
        raise ValueError("variant versions must be >= 1")
    if any(v.model == public_name for v in variants):
        raise ValueError(f"a variant cannot be the router itself ({public_name})")
    if len({(v.model, v.version) for v in variants}) != len(variants):
        raise ValueError("a variant (model, version) is listed twice")


def _variants_json(variants: Sequence[Variant]) -> str:
    # Numbers as strings, like every other Triton model-config parameter.
    return json.dumps(
        [{"model": v.model, "version": str(v.version), "weight": str(v.weight)} for v in variants],
        separators=(",", ":"),
    )


def _io(tensor: Mapping[str, Any], *, optional: bool = False) -> dict[str, Any]:
    copied: dict[str, Any] = {k: tensor[k] for k in _IO_KEYS if k in tensor}
    copied["dims"] = [int(d) for d in tensor.get("dims", [])]
    if optional and tensor.get("optional"):
        copied["optional"] = True
    return copied


def _tensors(config: Mapping[str, Any], kind: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {
        str(t["name"]): (str(t.get("data_type")), tuple(int(d) for d in t.get("dims", [])))
        for t in config.get(kind) or []
    }


def _max_batch(config: Mapping[str, Any]) -> int:
    return int(config.get("max_batch_size") or 0)
