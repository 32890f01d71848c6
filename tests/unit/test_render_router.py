"""The router: its model config, signature checks, what cannot be routed, and its choice logic.

The router's model source is loaded by file path (the operator never imports it) with a small fake of
`triton_python_backend_utils`, so its execute path (grouping, one call per variant, slicing, errors)
runs here too; tests/integration/test_router.py runs it on the real tritonserver.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import numpy as np
import pytest
from triton_operator.render import router
from triton_operator.render.router import (
    Variant,
    router_config,
    router_files,
    router_matches,
    router_variants,
    signature_mismatch,
    unsupported_reason,
)

pytestmark = pytest.mark.unit

SOURCE = Path(router.__file__).with_name(router.MODEL_SOURCE)


# --- a fake python backend: just what router_model.py touches ---------------------------------------
class FakeTensor:
    def __init__(self, name: str, array: Any) -> None:
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> Any:
        return self._array


class FakeError:
    def __init__(self, message: str) -> None:
        self._message = message

    def message(self) -> str:
        return self._message


class FakeResponse:
    def __init__(
        self, output_tensors: list[FakeTensor] | None = None, error: FakeError | None = None
    ) -> None:
        self.output_tensors, self.error_ = output_tensors or [], error

    def has_error(self) -> bool:
        return self.error_ is not None

    def error(self) -> FakeError | None:
        return self.error_


Target = Callable[[str, int, dict[str, Any]], dict[str, Any]]


class FakeBackend(types.ModuleType):
    """`triton_python_backend_utils` with a BLS whose target is a Python function; records each call."""

    TRITONSERVER_MEMORY_CPU = 0

    def __init__(self) -> None:
        super().__init__("triton_python_backend_utils")
        self.calls: list[tuple[str, int, dict[str, Any]]] = []
        self.target: Target = lambda model, version, inputs: {"OUTPUT0": inputs["INPUT0"] + version}
        self.Tensor, self.TritonError, self.InferenceResponse = FakeTensor, FakeError, FakeResponse
        backend = self

        class InferenceRequest:
            def __init__(
                self, model_name: str, model_version: int, inputs: list[FakeTensor], **_: Any
            ) -> None:
                self.model, self.version = model_name, model_version
                self.inputs = {t.name(): t.as_numpy() for t in inputs}

            def exec(self) -> FakeResponse:
                backend.calls.append((self.model, self.version, self.inputs))
                try:
                    outputs = backend.target(self.model, self.version, self.inputs)
                except ValueError as exc:
                    return FakeResponse(
                        error=FakeError(f"{exc}\n\nAt:\n  /srv/models/m/2/model.py(7): execute\n")
                    )
                return FakeResponse([FakeTensor(n, a) for n, a in outputs.items()])

        self.InferenceRequest = InferenceRequest

    class MetricFamily:
        """Triton's custom metrics: counters by labels, kept on the class so a test can read them."""

        COUNTER = "counter"
        counts: ClassVar[dict[tuple[tuple[str, str], ...], float]] = {}

        def __init__(self, name: str, description: str, kind: str) -> None:
            self.name = name

        def Metric(self, labels: dict[str, str]) -> Any:
            counts, key = self.counts, tuple(sorted(labels.items()))

            class Metric:
                def increment(self, value: float) -> None:
                    counts[key] = counts.get(key, 0.0) + value

            return Metric()

    @staticmethod
    def PreferredMemory(kind: int, device: int) -> tuple[int, int]:
        return (kind, device)

    @staticmethod
    def get_output_tensor_by_name(response: FakeResponse, name: str) -> FakeTensor | None:
        return next((t for t in response.output_tensors if t.name() == name), None)


class FakeRequest:
    def __init__(self, value: float, rows: int = 1, params: dict[str, Any] | None = None) -> None:
        self._inputs = [FakeTensor("INPUT0", np.full((rows, 1), value, dtype=np.float32))]
        self._params = json.dumps(params or {})

    def inputs(self) -> list[FakeTensor]:
        return self._inputs

    def parameters(self) -> str:
        return self._params

    def requested_output_names(self) -> list[str]:
        return ["OUTPUT0"]


@pytest.fixture(scope="module")
def model_module() -> types.ModuleType:
    backend = FakeBackend()
    spec = importlib.util.spec_from_file_location("router_model_under_test", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {"triton_python_backend_utils": backend}):
        spec.loader.exec_module(module)
    return module


@pytest.fixture
def backend(model_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    fake = FakeBackend()
    monkeypatch.setattr(model_module, "pb_utils", fake)
    return fake


TARGET: dict[str, Any] = {
    "name": "scorer",
    "backend": "python",
    "max_batch_size": 16,
    "version_policy": {"specific": {"versions": [1, 2]}},
    "input": [
        {"name": "INPUT0", "data_type": "TYPE_FP32", "format": "FORMAT_NONE", "dims": [1], "optional": False,
         "is_shape_tensor": False, "allow_ragged_batch": False, "reshape": {"shape": []}},
    ],
    "output": [
        {"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [1], "label_filename": "",
         "is_shape_tensor": False},
    ],
    "batch_input": [],
    "batch_output": [],
    "dynamic_batching": {"max_queue_delay_microseconds": 1000},
    "parameters": {},
}  # fmt: skip
SPLIT = [Variant("scorer", 1, 90), Variant("scorer", 2, 10)]


@pytest.fixture(autouse=True)
def python_router(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests run the python router's source (the native one is tested on the real server)."""
    monkeypatch.setenv(router.ROUTER_ENV, "python")


def loaded_model(module: types.ModuleType, config: dict[str, Any]) -> Any:
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_version": "1"})
    return model


# --- router_config / router_files -------------------------------------------------------------------
def test_router_config_copies_the_signature_and_carries_the_weights_as_strings() -> None:
    config = router_config("public", TARGET, SPLIT, sticky_key="x-user-id", max_queue_delay_us=100)
    assert config == {
        "name": "public",
        "backend": "python",
        "max_batch_size": 16,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [1]}],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "dynamic_batching": {"max_queue_delay_microseconds": 100},
        "parameters": {
            "variants": {
                "string_value": '[{"model":"scorer","version":"1","weight":"90"},'
                '{"model":"scorer","version":"2","weight":"10"}]'
            },
            "sticky_key": {"string_value": "x-user-id"},
            "pin_key": {"string_value": "x-triton-variant"},
        },
    }
    json.dumps(config)  # the load API takes it as JSON
    assert router_variants(config) == SPLIT
    assert router_variants(TARGET) is None


def test_router_config_of_a_model_without_batching_has_no_batcher() -> None:
    target = {**TARGET, "max_batch_size": 0, "dynamic_batching": None}
    config = router_config("public", target, [("scorer", 1, 1)], max_batch_size=0, instance_count=2)
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["instance_group"] == [{"count": 2, "kind": "KIND_CPU"}]


def test_router_config_keeps_optional_inputs_and_accepts_other_model_names() -> None:
    target = {**TARGET, "input": [*TARGET["input"], {"name": "MASK", "data_type": "TYPE_BOOL", "dims": [-1],
                                                     "optional": True}]}  # fmt: skip
    config = router_config(
        "public", target, [("scorer", 1, 50), ("scorer_distilled", 3, 50)], max_batch_size=8
    )
    assert config["input"][1] == {"name": "MASK", "data_type": "TYPE_BOOL", "dims": [-1], "optional": True}
    assert config["max_batch_size"] == 8
    assert router_variants(config) == [Variant("scorer", 1, 50), Variant("scorer_distilled", 3, 50)]


@pytest.mark.parametrize(
    ("variants", "kwargs", "message"),
    [
        ([], {}, "at least one variant"),
        ([("scorer", 1, 0), ("scorer", 2, 0)], {}, "positive total"),
        ([("scorer", 1, -1), ("scorer", 2, 5)], {}, ">= 0"),
        ([("scorer", 0, 1)], {}, "versions must be >= 1"),
        ([("public", 1, 1)], {}, "cannot be the router itself"),
        ([("scorer", 1, 1), ("scorer", 1, 2)], {}, "listed twice"),
        (SPLIT, {"max_batch_size": 32}, "must be in 1..16"),
        (SPLIT, {"max_batch_size": 0}, "must be in 1..16"),
        (SPLIT, {"instance_count": 0}, "instance_count"),
    ],
)
def test_router_config_rejects(
    variants: list[tuple[str, int, int]], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        router_config("public", TARGET, variants, **kwargs)


def test_router_config_refuses_what_cannot_be_routed() -> None:
    with pytest.raises(ValueError, match="sequence model"):
        router_config("public", {**TARGET, "sequence_batching": {}}, SPLIT)


def _read_back(config: dict[str, Any]) -> dict[str, Any]:
    """The config as Triton's config API returns it: protobuf JSON (int64 as strings, no empty strings)."""
    out: dict[str, Any] = json.loads(json.dumps(config))
    for tensor in [*out["input"], *out["output"]]:
        tensor["dims"] = [str(d) for d in tensor["dims"]]
    out["parameters"] = {
        key: {"string_value": value["string_value"]} if value.get("string_value") else {}
        for key, value in out["parameters"].items()
    }
    return out


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({}, True),
        ({"variants": [("scorer", 1, 50), ("scorer", 2, 50)]}, False),
        ({"sticky_key": "x-user"}, False),
        ({"native": True}, False),
        ({"max_batch_size": 4}, False),
    ],
)
def test_a_router_read_back_from_triton_matches_only_the_same_router(
    change: dict[str, Any], same: bool
) -> None:
    """How a restarted operator knows a pod serves the router it wants already (no reload)."""
    wanted = router_config("public", TARGET, SPLIT, native=False)
    args: dict[str, Any] = {"sticky_key": "", "native": False, **change}
    variants = args.pop("variants", SPLIT)
    loaded = _read_back(router_config("public", TARGET, variants, **args))
    assert router_matches(loaded, wanted) is same
    # Another tensor (a new version's signature) is another router too.
    renamed = _read_back(wanted)
    renamed["input"][0]["name"] = "OTHER"
    assert not router_matches(renamed, wanted)


def test_router_files_carry_the_model_source_without_importing_it() -> None:
    files = router_files()
    assert list(files) == ["file:1/model.py"]
    assert files["file:1/model.py"] == SOURCE.read_bytes()
    assert b"class TritonPythonModel" in files["file:1/model.py"]
    assert "triton_operator.render.router_model" not in sys.modules


@pytest.mark.parametrize(
    ("env", "built", "backend", "file"),
    [
        ("", True, "tritonoperator_router", "libtriton_tritonoperator_router.so"),
        ("", False, "python", "model.py"),
        ("python", True, "python", "model.py"),
        (" Python ", True, "python", "model.py"),
        ("native", True, "tritonoperator_router", "libtriton_tritonoperator_router.so"),
    ],
)
def test_the_native_router_is_used_where_it_is_built_unless_python_is_asked_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: str, built: bool, backend: str, file: str
) -> None:
    package = tmp_path / "render"
    package.mkdir()
    (package / router.MODEL_SOURCE).write_bytes(b"class TritonPythonModel: ...")
    if built:
        (package / router.NATIVE_LIBRARY).write_bytes(b"\x7fELF library")
    monkeypatch.setattr("triton_operator.render.router.resources.files", lambda _: package)
    monkeypatch.setenv(router.ROUTER_ENV, env)
    assert router_config("public", TARGET, SPLIT)["backend"] == backend
    files = router_files()
    assert list(files) == [f"file:1/{file}"]
    shipped = router.NATIVE_LIBRARY if file != "model.py" else router.MODEL_SOURCE
    assert files[f"file:1/{file}"] == (package / shipped).read_bytes()


# --- signature_mismatch / unsupported_reason ---------------------------------------------------------
def test_same_signature_matches_whatever_else_differs() -> None:
    other = {**TARGET, "name": "scorer_distilled", "max_batch_size": 4, "backend": "onnxruntime"}
    assert signature_mismatch(TARGET, other) is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"max_batch_size": 0}, "only scorer has a batch dimension (max_batch_size > 0)"),
        (
            {"input": [{"name": "INPUT0", "data_type": "TYPE_FP16", "dims": [1]}]},
            "input INPUT0: TYPE_FP32 [1] in scorer, TYPE_FP16 [1] in other",
        ),
        (
            {"output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1, 4]}]},
            "output OUTPUT0: TYPE_FP32 [1] in scorer, TYPE_FP32 [-1, 4] in other",
        ),
        (
            {"output": [{"name": "LOGITS", "data_type": "TYPE_FP32", "dims": [1]}]},
            "output LOGITS only in other; output OUTPUT0 only in scorer",
        ),
    ],
)
def test_signature_mismatch_names_the_tensors(change: dict[str, Any], expected: str) -> None:
    assert signature_mismatch(TARGET, {**TARGET, "name": "other", **change}) == expected


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"model_transaction_policy": {"decoupled": True}}, "decoupled"),
        ({"sequence_batching": {"max_sequence_idle_microseconds": 1000}}, "sequence model"),
        ({"batch_input": [{"kind": "BATCH_ELEMENT_COUNT"}]}, "batch inputs/outputs"),
        ({"input": [{"name": "SHAPE", "data_type": "TYPE_INT32", "dims": [2], "is_shape_tensor": True}]},
         "input SHAPE is a shape tensor"),
        ({"output": [{"name": "EMB", "data_type": "TYPE_BF16", "dims": [8]}]}, "output EMB is BF16"),
    ],
)  # fmt: skip
def test_unsupported_reasons(change: dict[str, Any], words: str) -> None:
    reason = unsupported_reason({**TARGET, **change})
    assert reason is not None and words in reason and reason.startswith("scorer")


def test_a_plain_batching_model_is_supported() -> None:
    assert unsupported_reason(TARGET) is None
    assert unsupported_reason({**TARGET, "model_transaction_policy": {"decoupled": False}}) is None


# --- the choice logic ---------------------------------------------------------------------------------
@pytest.mark.parametrize("weights", [(90, 10), (80, 20), (70, 20, 10), (1, 0, 3)])
def test_smooth_weighted_round_robin_is_exact_at_every_count(
    model_module: types.ModuleType, weights: tuple[int, ...]
) -> None:
    wrr = model_module.SmoothWeightedRoundRobin(weights)
    counts, total = [0] * len(weights), sum(weights)
    for n in range(1, 2001):
        counts[wrr.pick()] += 1
        assert all(abs(c - n * w / total) < 1 for c, w in zip(counts, weights, strict=True)), (n, counts)
    assert counts == [2000 * w // total for w in weights]


def test_round_robin_interleaves_instead_of_bursting(model_module: types.ModuleType) -> None:
    wrr = model_module.SmoothWeightedRoundRobin([90, 10])
    picks = [wrr.pick() for _ in range(100)]
    positions = [i for i, p in enumerate(picks) if p == 1]
    assert len(positions) == 10 and all(b - a == 10 for a, b in itertools.pairwise(positions))


def test_stable_hash_is_fixed_across_processes(model_module: types.ModuleType) -> None:
    # A fixed number: Python's salted hash() would differ per process, blake2b does not.
    assert model_module.stable_unit("user-42", "scorer:2") == 0.634237213261789


def test_sticky_keys_stay_put_and_follow_the_weights(model_module: types.ModuleType) -> None:
    variants = [model_module.Variant("scorer", 1, 90), model_module.Variant("scorer", 2, 10)]
    first = model_module.Router(variants, sticky_key="x-user-id")
    again = model_module.Router(variants, sticky_key="x-user-id")
    users = [f"user-{i}" for i in range(10_000)]
    chosen = [first.choose({"x-user-id": u}) for u in users]
    assert chosen == [again.choose({"X-User-Id": u}) for u in users]  # header names in any case
    assert chosen == [first.choose({"x-user-id": u}) for u in users]  # and again: no state
    assert abs(chosen.count(1) / len(users) - 0.10) < 0.01
    # Growing the canary's weight only moves users onto it, never off it.
    grown = model_module.Router([variants[0], variants[1]._replace(weight=30)], sticky_key="x-user-id")
    moved = Counter((a, grown.choose({"x-user-id": u})) for u, a in zip(users, chosen, strict=True))
    assert moved[(1, 0)] == 0 and moved[(0, 1)] > 0
    assert abs((moved[(1, 1)] + moved[(0, 1)]) / len(users) - 0.25) < 0.015


def test_sticky_and_pinned_requests_leave_the_round_robin_exact(model_module: types.ModuleType) -> None:
    r = model_module.Router(
        [model_module.Variant("scorer", 1, 90), model_module.Variant("scorer", 2, 10)],
        sticky_key="x-user-id",
        pin_key="x-triton-variant",
    )
    plain = []
    for i in range(1000):
        r.choose({"x-user-id": f"u{i}"})
        r.choose({"x-triton-variant": "2"})
        plain.append(r.choose({"other": "x"}))
    assert plain.count(1) == 100


def test_a_pin_wins_over_the_sticky_key_and_may_name_a_dark_variant(model_module: types.ModuleType) -> None:
    variants = [
        model_module.Variant("scorer", 1, 100),
        model_module.Variant("scorer", 2, 0),
        model_module.Variant("scorer_distilled", 1, 0),
    ]
    r = model_module.Router(variants, sticky_key="x-user-id", pin_key="x-triton-variant")
    for user in ("a", "b", "c"):
        assert r.choose({"x-user-id": user}) == 0  # weight 0 is never chosen by hash or round robin
        assert r.choose({"x-user-id": user, "x-triton-variant": "2"}) == 1
        assert r.choose({"x-user-id": user, "X-Triton-Variant": " scorer:2 "}) == 1
        assert r.choose({"x-user-id": user, "x-triton-variant": "scorer_distilled"}) == 2
        assert r.choose({"x-user-id": user, "x-triton-variant": "scorer_distilled:1"}) == 2
        assert r.choose({"x-user-id": user, "x-triton-variant": "7"}) == 0  # names none: ignored
        assert r.choose({"x-user-id": user, "x-triton-variant": ""}) == 0
    assert r.pinned("1") == 0  # a bare version names the first variant with it


def test_variants_parameter_is_validated(model_module: types.ModuleType) -> None:
    parse = model_module.parse_variants
    assert parse('[{"model":"m","version":"2","weight":"10"}]') == [model_module.Variant("m", 2, 10)]
    for bad in ("[]", "{}", '[{"model":"m","version":"1","weight":"0"}]'):
        with pytest.raises(ValueError):
            parse(bad)


def test_error_messages_lose_tracebacks_and_server_paths(model_module: types.ModuleType) -> None:
    clean = model_module.clean_message
    raw = (
        "Failed for 'scorer_0_0', message: ValueError: bad\n\nAt:\n  /tmp/r/scorer/2/model.py(13): execute\n"
    )
    assert clean(raw) == "Failed for 'scorer_0_0', message: ValueError: bad"
    assert clean("cannot open /var/lib/models/scorer/2/weights.bin: no such file") == (
        "cannot open weights.bin: no such file"
    )


# --- execute, with the fake backend -----------------------------------------------------------------
def test_one_call_per_variant_per_batch_and_outputs_sliced_back(
    model_module: types.ModuleType, backend: FakeBackend
) -> None:
    model = loaded_model(
        model_module, router_config("public", TARGET, [("scorer", 1, 50), ("scorer", 2, 50)])
    )
    requests = [FakeRequest(float(i), rows=1 + i % 3) for i in range(10)]
    responses = model.execute(requests)
    assert sorted((m, v, len(x["INPUT0"])) for m, v, x in backend.calls) == [
        ("scorer", 1, 10),
        ("scorer", 2, 9),
    ]
    versions = []
    for i, (request, response) in enumerate(zip(requests, responses, strict=True)):
        assert not response.has_error()
        out = response.output_tensors[0].as_numpy()
        assert out.shape == request.inputs()[0].as_numpy().shape
        versions.append(int(out[0][0]) - i)
        assert (out == i + versions[-1]).all()
    assert versions == [1, 2] * 5  # smooth round robin at 50/50 alternates


def test_a_failed_call_fails_its_requests_once_with_the_targets_message_and_is_counted(
    model_module: types.ModuleType, backend: FakeBackend
) -> None:
    def target(model: str, version: int, inputs: dict[str, Any]) -> dict[str, Any]:
        if version == 2 and (inputs["INPUT0"] < 0).any():
            raise ValueError(f"negative input rejected by version {version}")
        return {"OUTPUT0": inputs["INPUT0"] + version}

    backend.target = target
    backend.MetricFamily.counts.clear()
    model = loaded_model(model_module, router_config("public", TARGET, [("scorer", 1, 1), ("scorer", 2, 1)]))
    responses = model.execute([FakeRequest(1.0), FakeRequest(-1.0), FakeRequest(3.0), FakeRequest(4.0)])
    model.finalize()  # publishes the counts it keeps in memory
    # 50/50 alternates: requests 0 and 2 to version 1, 1 and 3 to version 2 (one call, which fails).
    assert [r.has_error() for r in responses] == [False, True, False, True]
    assert responses[1].error().message() == "negative input rejected by version 2"
    assert sorted(len(x["INPUT0"]) for _, _, x in backend.calls) == [2, 2]  # no request ran twice

    def count(version: str, outcome: str) -> float:
        labels = {"router": "public", "model": "scorer", "version": version, "outcome": outcome}
        return backend.MetricFamily.counts.get(tuple(sorted(labels.items())), 0.0)

    assert (count("1", "success"), count("2", "failure"), count("2", "success")) == (2, 2, 0)


def test_requests_of_different_shapes_are_not_concatenated(
    model_module: types.ModuleType, backend: FakeBackend
) -> None:
    target = {**TARGET, "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
              "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}]}  # fmt: skip
    model = loaded_model(model_module, router_config("public", target, [("scorer", 1, 1)]))
    a, b = FakeRequest(1.0), FakeRequest(1.0)
    b._inputs = [FakeTensor("INPUT0", np.ones((1, 3), dtype=np.float32))]
    responses = model.execute([a, b, FakeRequest(2.0)])
    assert [r.output_tensors[0].as_numpy().shape for r in responses] == [(1, 1), (1, 3), (1, 1)]
    assert sorted(x["INPUT0"].shape for _, _, x in backend.calls) == [(1, 3), (2, 1)]


def test_a_target_returning_the_wrong_batch_fails_the_requests(
    model_module: types.ModuleType, backend: FakeBackend
) -> None:
    backend.target = lambda model, version, inputs: {"OUTPUT0": inputs["INPUT0"][:1]}
    model = loaded_model(model_module, router_config("public", TARGET, [("scorer", 1, 1)]))
    responses = model.execute([FakeRequest(1.0), FakeRequest(2.0)])
    assert all(r.has_error() for r in responses)
    assert "scorer:1 returned OUTPUT0 for a batch other than 2" in responses[0].error().message()


def test_a_router_without_batching_forwards_each_request_as_is(
    model_module: types.ModuleType, backend: FakeBackend
) -> None:
    target = {**TARGET, "max_batch_size": 0}
    model = loaded_model(model_module, router_config("public", target, [("scorer", 1, 1)], max_batch_size=0))
    responses = model.execute([FakeRequest(1.0), FakeRequest(1.0)])
    assert len(backend.calls) == 2
    assert [float(r.output_tensors[0].as_numpy()[0][0]) for r in responses] == [2.0, 2.0]
