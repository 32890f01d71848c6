"""Triton python-backend model that routes each request to one variant (model, version) by BLS.

A data file: the operator ships it to Triton as the router's `1/model.py` (render/router.py reads its
bytes) and never imports it. Loaded under a model's public name during canary rollouts and A/B tests
where the native router (router_backend.cc, which makes the same choices in C++) is not built, or
with TRITON_OPERATOR_ROUTER=python. Its pure parts (Router and below) are the reference both follow.

Per request, in this order:
- pin: the request parameter named by `pin_key` (e.g. "x-triton-variant: 2") forces the variant it
  names ("2", "model:2" or "model"; see `Router.pinned`), weight 0 included (to try a dark variant);
- sticky: the parameter named by `sticky_key` (e.g. "x-user-id") is hashed stably (blake2b, not
  Python's salted `hash`) onto the weights by weighted rendezvous hashing, so a key always lands on the
  same variant while the weights stay the same, and moves only to a variant whose weight grew;
- otherwise smooth weighted round robin: the split is exact at every count within one instance.
Headers reach `request.parameters()` when tritonserver runs with `--http-header-forward-pattern` /
`--grpc-header-forward-pattern` matching them; keys are compared case-insensitively.

The router has its own dynamic batcher; each `execute` makes ONE BLS call per chosen variant and input
shape (inputs concatenated along the batch dimension, outputs sliced back per request). When that call
fails, every request it carried fails with its error (none is run twice). Each request's outcome is
counted by variant in the `tritonoperator_router_requests_total` metric family of Triton's /metrics.
Not forwarded: request parameters, per-request timeouts, sequence flags (sequence and decoupled
models cannot be routed this way; see render/router.py `unsupported_reason`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

# Absolute paths in error messages (python tracebacks name the server's model folders): keep the
# file's name only.
METRIC_FAMILY = "tritonoperator_router_requests_total"
# Seconds between publishes of the router's counts to Triton's metrics (see `TritonPythonModel`).
FLUSH_S = 1.0
_PATH = re.compile(r"(?:/[\w.+@-]+)+/([\w.+@-]+)")
# The python backend appends the traceback of a model's exception ("\n\nAt:\n  /path/model.py(13): ...")
# to BLS errors, not to the errors a client calling the model directly gets.
_TRACEBACK = re.compile(r"\s*\n\s*At:\s*\n")


class Variant(NamedTuple):
    """Where a share of the traffic goes: a model name and version, and its integer weight."""

    model: str
    version: int
    weight: int

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"


def parse_variants(raw: str) -> list[Variant]:
    """The `variants` parameter: a JSON list of {"model", "version", "weight"} (numbers may be strings)."""
    items = json.loads(raw)
    if not isinstance(items, list) or not items:
        raise ValueError("router: parameter 'variants' must be a non-empty JSON list")
    variants = [Variant(str(i["model"]), int(i["version"]), int(i["weight"])) for i in items]
    if any(v.weight < 0 for v in variants) or sum(v.weight for v in variants) <= 0:
        raise ValueError("router: weights must be >= 0 with a positive total")
    if len({v.label for v in variants}) != len(variants):
        raise ValueError("router: a variant is listed twice")
    return variants


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round robin: after n picks each variant has n*w/W of them, rounded."""

    def __init__(self, weights: Sequence[int]) -> None:
        self.weights = list(weights)
        self.total = sum(weights)
        self.current = [0] * len(self.weights)

    def pick(self) -> int:
        best = -1
        for i, weight in enumerate(self.weights):
            if weight <= 0:
                continue
            self.current[i] += weight
            if best < 0 or self.current[i] > self.current[best]:
                best = i
        self.current[best] -= self.total
        return best


def stable_unit(key: str, salt: str) -> float:
    """A hash of (key, salt) as a number in (0, 1), the same in every process and on every machine."""
    digest = hashlib.blake2b(f"{salt}\0{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


def sticky_choice(key: str, variants: Sequence[Variant]) -> int:
    """Weighted rendezvous hashing: the variant with the highest w / -ln(h(key, variant))."""
    best, best_score = -1, -1.0
    for i, variant in enumerate(variants):
        if variant.weight <= 0:
            continue
        score = variant.weight / -math.log(stable_unit(key, variant.label))
        if score > best_score:
            best, best_score = i, score
    return best


def parameter(params: Mapping[str, Any], name: str) -> str | None:
    """A request parameter by case-insensitive name, as a string; None when absent or empty."""
    if not name:
        return None
    wanted = name.lower()
    for key, value in params.items():
        if key.lower() == wanted and value is not None and str(value) != "":
            return str(value).strip()
    return None


class Router:
    """The choice of a variant for each request (pure: no Triton objects)."""

    def __init__(self, variants: Sequence[Variant], sticky_key: str = "", pin_key: str = "") -> None:
        self.variants = list(variants)
        self.sticky_key = sticky_key
        self.pin_key = pin_key
        self.wrr = SmoothWeightedRoundRobin([v.weight for v in self.variants])

    def pinned(self, value: str) -> int | None:
        """The variant a pin names: "model:version", or a version, or a model name; first match."""
        for i, variant in enumerate(self.variants):
            if value in (variant.label, str(variant.version), variant.model):
                return i
        return None

    def choose(self, params: Mapping[str, Any]) -> int:
        pin = parameter(params, self.pin_key)
        if pin is not None:
            chosen = self.pinned(pin)
            if chosen is not None:
                return chosen
        key = parameter(params, self.sticky_key)
        if key is not None:
            return sticky_choice(key, self.variants)
        return self.wrr.pick()


def clean_message(message: str) -> str:
    """An error message as a direct call would give it: no python traceback, no server file paths."""
    return _PATH.sub(r"\1", _TRACEBACK.split(message, maxsplit=1)[0]).strip()


def request_parameters(request: Any) -> dict[str, Any]:
    raw = request.parameters()
    if not raw:
        return {}
    params = json.loads(raw) if isinstance(raw, str) else raw
    return params if isinstance(params, dict) else {}


def _config_string(config: Mapping[str, Any], key: str, default: str = "") -> str:
    value = config.get("parameters", {}).get(key, {})
    return str(value.get("string_value", default)) if isinstance(value, dict) else default


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.outputs = [str(o["name"]) for o in config.get("output", [])]
        self.router = Router(
            parse_variants(_config_string(config, "variants")),
            sticky_key=_config_string(config, "sticky_key"),
            pin_key=_config_string(config, "pin_key"),
        )
        self.cpu = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
        # Requests by variant and outcome, in Triton's own /metrics: a model answering with an error
        # response is not a failure to Triton's nv_inference_request_failure, so the router counts.
        self.public = str(args.get("model_name", config.get("name", "")))
        self.family = pb_utils.MetricFamily(
            name=METRIC_FAMILY,
            description="Requests a traffic router forwarded, by variant (model, version) and outcome.",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.metrics: dict[tuple[int, bool], Any] = {}
        # Counted in memory, published every FLUSH_S by a thread: each pb_utils Metric increment is a
        # synchronous round trip to the server, which per request cost more than the BLS call itself
        # at high load. The analysis reads cumulative counters every few seconds; a second's delay
        # changes no verdict.
        self.counted: dict[tuple[int, bool], int] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.publisher = threading.Thread(target=self._publish_every, name="router-metrics", daemon=True)
        self.publisher.start()

    def finalize(self) -> None:
        """Publishes what is left: Triton unloads the router only once every request has its response."""
        self.stopping.set()
        self.publisher.join(timeout=2 * FLUSH_S)
        self._publish()

    def _count(self, chosen: int, failed: bool) -> None:
        with self.lock:
            self.counted[(chosen, failed)] = self.counted.get((chosen, failed), 0) + 1

    def _publish_every(self) -> None:
        while not self.stopping.wait(FLUSH_S):
            # An error here means the server is shutting down: finalize publishes what is left.
            with contextlib.suppress(Exception):
                self._publish()

    def _publish(self) -> None:
        with self.lock:
            counted, self.counted = self.counted, {}
        for (chosen, failed), n in sorted(counted.items()):
            metric = self.metrics.get((chosen, failed))
            if metric is None:
                variant = self.router.variants[chosen]
                labels = {
                    "router": self.public,
                    "model": variant.model,
                    "version": str(variant.version),
                    "outcome": "failure" if failed else "success",
                }
                metric = self.metrics[(chosen, failed)] = self.family.Metric(labels=labels)
            metric.increment(n)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[tuple[int, dict[str, Any]]]] = {}
        for i, request in enumerate(requests):
            try:
                chosen = self.router.choose(request_parameters(request))
                inputs = {t.name(): t.as_numpy() for t in request.inputs()}
            except Exception as exc:
                responses[i] = _error(f"router: {exc}")
                continue
            # Only requests with the same variant, input names, dtypes and per-item shapes share a call.
            shape: tuple[Any, ...] = tuple(
                sorted((n, a.dtype.str, a.shape[1:] if self.batching else i) for n, a in inputs.items())
            )
            groups.setdefault((chosen, shape), []).append((i, inputs))
        for (chosen, _), members in groups.items():
            variant = self.router.variants[chosen]
            try:
                forwarded = self._forward(variant, requests, members)
            except Exception as exc:
                forwarded = [(i, _error(f"router: {variant.label}: {exc}")) for i, _ in members]
            for i, response in forwarded:
                responses[i] = response
                self._count(chosen, bool(response.has_error()))
        return responses

    def _forward(
        self, variant: Variant, requests: list[Any], members: list[tuple[int, dict[str, Any]]]
    ) -> list[tuple[int, Any]]:
        wanted = {n for i, _ in members for n in requests[i].requested_output_names()}
        names = [n for n in self.outputs if n in wanted] or self.outputs
        if len(members) == 1:
            inputs = members[0][1]
        else:
            inputs = {n: np.concatenate([m[1][n] for m in members]) for n in members[0][1]}
        outputs, error = self._call(variant, inputs, names)
        if error is not None:
            # Every request of the call fails with it: retrying them one by one would run them twice
            # (and hide a canary's failures from its analysis).
            return [(i, _error(error)) for i, _ in members]
        sizes = [_batch_size(m[1]) if self.batching else 1 for m in members]
        short = [n for n, out in outputs.items() if self.batching and len(out) != sum(sizes)]
        if short:
            message = f"router: {variant.label} returned {short[0]} for a batch other than {sum(sizes)}"
            return [(i, _error(message)) for i, _ in members]
        results: list[tuple[int, Any]] = []
        offset = 0
        for (i, _), n in zip(members, sizes, strict=True):
            asked = set(requests[i].requested_output_names()) or set(names)
            tensors = [
                pb_utils.Tensor(name, out[offset : offset + n] if self.batching else out)
                for name, out in outputs.items()
                if name in asked
            ]
            results.append((i, pb_utils.InferenceResponse(output_tensors=tensors)))
            offset += n
        return results

    def _call(
        self, variant: Variant, inputs: dict[str, Any], names: list[str]
    ) -> tuple[dict[str, Any], str | None]:
        try:
            response = pb_utils.InferenceRequest(
                model_name=variant.model,
                model_version=variant.version,
                requested_output_names=names,
                inputs=[pb_utils.Tensor(n, a) for n, a in inputs.items()],
                preferred_memory=self.cpu,
            ).exec()
        except Exception as exc:
            return {}, f"{variant.label}: {exc}"
        if response.has_error():
            return {}, str(response.error().message())
        outputs: dict[str, Any] = {}
        for name in names:
            tensor = pb_utils.get_output_tensor_by_name(response, name)
            if tensor is not None:
                outputs[name] = tensor.as_numpy()
        return outputs, None


def _batch_size(inputs: Mapping[str, Any]) -> int:
    return int(next(iter(inputs.values())).shape[0]) if inputs else 1


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(clean_message(message)))
