"""Hostile input for the parsers (issue 12): Triton's /metrics text, its repository index and config
answers, config.pbtxt, S3 manifests, HTTP URLs and headers, and archives.

Each parser returns a well-formed value or raises its own clear error (TritonError, StagingError with
its exit code), never another exception; none hangs (inputs are bounded in size, every example runs
under a 5 s deadline and every test under pytest-timeout); unpacking never writes outside its
destination (the folder around it is compared before and after) and never more than the space left.

Profiles (HYPOTHESIS_PROFILE): `ci`, the default, derandomized and without an example database, so
`make test` runs the same examples every time in about half a minute; `long` runs 50 times as many
examples from random seeds (HYPOTHESIS_PROFILE=long pytest tests/unit/test_fuzz_parsers.py).
A failure prints its falsifying example. Under `ci` running the test again replays it (the same
examples every run); under `long` paste the `@reproduce_failure(...)` decorator Hypothesis prints above
the test (or pass `--hypothesis-seed=N` with the seed it names) to replay it, then fix the module and
add a plain regression test named after the fault beside the module's other tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import math
import os
import stat
import struct
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import pytest
from hypothesis import HealthCheck, assume, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from triton_operator.api.tritonmodel import HttpSource, S3Source
from triton_operator.observe.metrics import Scrape, pod_summary, total_summary
from triton_operator.staging import http as staging_http
from triton_operator.staging import s3
from triton_operator.staging.configs import base_config_text, final_config_text
from triton_operator.staging.errors import ExitCode, StagingError
from triton_operator.staging.layout import split_artifact, unpack
from triton_operator.triton import client
from triton_operator.triton.client import ModelState, TritonEndpoint, TritonError, failed_models
from triton_operator.triton.metrics import MetricsSnapshot, parse_metrics, rates
from tritonclient.grpc import model_config_pb2 as mc

from model_builders.config import parse_config
from model_builders.manifest import FileEntry, Manifest
from tests.support.fakes import FakeResponse

_COMMON = {
    "database": None,
    # Generous: CI shares two cores; the deadline catches hangs and quadratic blow-ups, not jitter.
    "deadline": timedelta(seconds=5),
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}
settings.register_profile("fuzz-ci", derandomize=True, **_COMMON)
settings.register_profile("fuzz-long", derandomize=False, **_COMMON)
_PROFILE = "fuzz-long" if os.environ.get("HYPOTHESIS_PROFILE") == "long" else "fuzz-ci"
_SCALE = 50 if _PROFILE == "fuzz-long" else 1
# A hang fails the test instead of the CI job; the long profile takes minutes per test.
pytestmark = [pytest.mark.unit, pytest.mark.timeout(300 if _SCALE == 1 else 3600)]


def fuzz(examples: int) -> settings:
    """The profile's settings with `examples` examples (times 50 under `long`)."""
    return settings(settings.get_profile(_PROFILE), max_examples=examples * _SCALE)


def note(outcome: str) -> None:
    """Count an outcome in the statistics (pytest --hypothesis-show-statistics shows the shares)."""
    if currently_in_test_context():
        event(outcome)


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and len(text) < 1000, text[:2000]
    return text


# --- Triton's /metrics -----------------------------------------------------------------------------

METRIC_NAMES = [
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_request_summary_us",
    "nv_inference_queue_summary_us",
    "nv_gpu_utilization",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_memory_total_bytes",
    "nv_cpu_utilization",
    "nv_cpu_memory_used_bytes",
    "nv_cpu_memory_total_bytes",
    "tritonoperator_router_requests_total",
    "tritonoperator_router_requests",
    "nv_inference_request_success_total",
    "nv_other_series",
]
LABEL_NAMES = ["model", "version", "gpu_uuid", "quantile", "router", "outcome", "reason", "le"]
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["NaN", "Nan", "+Inf", "-Inf", "inf", "1e400", "-1e400", "1.8e19", "1.8e308", "-0"]),
)
NOT_NUMBERS = st.sampled_from(["", "0x10", "1_0", "\u0661", "²", "one", "1,5"])


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


LABEL_VALUES = st.one_of(
    st.sampled_from(["m", "1", "0.5", "0.99", "success", "failure", "GPU-aaaa", "r", ""]),
    st.text(max_size=30),
)


@st.composite
def metric_lines(draw: st.DrawFn, hostile: bool) -> str:
    """One line of exposition text: valid (any numbers, any label values) or, if `hostile`, maybe not."""
    names = st.sampled_from(METRIC_NAMES)
    if hostile:
        names |= st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,15}", fullmatch=True)
    name = draw(names)
    kind = draw(st.integers(0, 9))
    if kind == 0:
        kinds = ["counter", "gauge", "summary", "untyped"] + (["histogram", "?"] if hostile else [])
        return f"# TYPE {name} {draw(st.sampled_from(kinds))}"
    if kind == 1:
        return f"# HELP {name} {draw(st.text(max_size=20)).replace(chr(10), ' ')}"
    labels = draw(st.dictionaries(st.sampled_from(LABEL_NAMES), LABEL_VALUES, max_size=5))
    body = ",".join(f'{key}="{_escaped(value)}"' for key, value in labels.items())
    if hostile and draw(st.integers(0, 9)) == 0:  # a label set that is not escaped (or not closed)
        body = draw(st.text(max_size=20))
    text = f"{name}{{{body}}} {draw(NUMBERS | NOT_NUMBERS if hostile else NUMBERS)}"
    if draw(st.booleans()) and kind == 2:
        text += f" {draw(st.integers(-(2**64), 2**64))}"  # a timestamp
    return text


VALID_METRICS_TEXTS = st.lists(metric_lines(hostile=False), max_size=30).map(lambda ls: "\n".join(ls) + "\n")
METRICS_TEXTS = st.one_of(
    VALID_METRICS_TEXTS,
    st.lists(metric_lines(hostile=True), max_size=30).map(lambda lines: "\n".join(lines) + "\n"),
    st.lists(metric_lines(hostile=True), max_size=30).map("\n".join),  # no final newline
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda raw: raw.decode("utf-8", errors="replace")),  # what fetch_metrics does
)


def _count(value: object) -> None:
    assert isinstance(value, int) and value >= 0, value


def _finite(value: object, *, integer: bool = False) -> None:
    if value is None:
        return
    assert isinstance(value, int if integer else (int, float)) and math.isfinite(value) and value >= 0, value


def assert_well_formed(snapshot: MetricsSnapshot) -> None:
    """Counts are non-negative ints; quantiles and GPU/CPU figures are None or finite, non-negative."""
    for key, counters in snapshot.models.items():
        assert key == (counters.model, counters.version) and all(isinstance(k, str) for k in key)
        for name in ("success_count", "failure_count", "inference_count", "execution_count"):
            _count(getattr(counters, name))
        _count(counters.request_duration_us)
        _count(counters.queue_duration_us)
        for name in ("request_p50_us", "request_p99_us", "queue_p50_us", "queue_p99_us"):
            _finite(getattr(counters, name))
    for uuid, gpu in snapshot.gpus.items():
        assert gpu.uuid == uuid
        _finite(gpu.utilization)
        _finite(gpu.memory_used_bytes, integer=True)
        _finite(gpu.memory_total_bytes, integer=True)
    if snapshot.cpu is not None:
        _finite(snapshot.cpu.utilization)
        _finite(snapshot.cpu.memory_used_bytes, integer=True)
    for routed in snapshot.routed.values():
        _count(routed.success)
        _count(routed.failure)


def parsed_or_refused(text: str) -> MetricsSnapshot | None:
    try:
        snapshot = parse_metrics(text)
    except TritonError as exc:
        assert exc.message.startswith("Triton's /metrics answer is not Prometheus text")
        one_line(exc)
        note("metrics: not Prometheus text")
        return None
    assert_well_formed(snapshot)
    note(f"metrics: parsed, {'with' if snapshot.models else 'no'} models")
    return snapshot


@fuzz(300)
@given(METRICS_TEXTS)
def test_metrics_text_parses_to_well_formed_counters_or_a_triton_error(text: str) -> None:
    parsed_or_refused(text)


@fuzz(150)
@given(VALID_METRICS_TEXTS | METRICS_TEXTS, VALID_METRICS_TEXTS, st.floats(1e-6, 1e6))
def test_rates_and_status_summaries_of_any_two_scrapes_are_finite_json(
    first: str, second: str, elapsed_s: float
) -> None:
    before, after = parsed_or_refused(first), parsed_or_refused(second)
    assume(before is not None and after is not None)
    assert before is not None and after is not None
    for window in rates(before, after, elapsed_s).values():
        for figure in (window.request_rate, window.failure_rate):
            assert math.isfinite(figure) and figure >= 0
        assert window.request_count >= 0 and window.failure_count >= 0
    summary = pod_summary(Scrape(before, 100.0), Scrape(after, 100.0 + elapsed_s))
    pool = total_summary([{"pod": "a", **summary}, {"pod": "b", **pod_summary(None, Scrape(before, 1.0))}])
    # status is JSON: NaN or Infinity there would be refused by the API server.
    json.dumps({"summary": summary, "pool": pool}, allow_nan=False)
    assert all(value >= 0 for value in [*summary.values(), *pool.values()])


def test_a_one_megabyte_metrics_line_parses_and_an_error_quoting_it_stays_short() -> None:
    huge = "x" * (1 << 20)
    snapshot = parse_metrics(f'nv_inference_count{{model="{huge}",version="1"}} 5\n')
    assert snapshot.models[(huge, "1")].inference_count == 5
    with pytest.raises(TritonError) as caught:
        parse_metrics(huge + "\n")
    assert len(caught.value.message) < 300  # the parser quotes the line; the error does not


# --- Triton's repository index, server metadata and model config answers ----------------------------

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=10)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
INDEX_ROWS = st.dictionaries(
    st.sampled_from(["name", "version", "state", "reason", "other"]),
    st.one_of(st.sampled_from(["m", "1", "READY", "UNAVAILABLE", "unloaded", ""]), JSON_VALUES),
    max_size=5,
)
TRITON_ROWS = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=20)},
    optional={
        key: st.sampled_from(values) | st.text(max_size=10)
        for key, values in (
            ("version", ["1", ""]),
            ("state", ["READY", "UNAVAILABLE"]),
            ("reason", ["unloaded"]),
        )
    },
)
INDEX_ANSWERS = st.one_of(
    st.fixed_dictionaries({"models": st.lists(TRITON_ROWS, max_size=20)}),  # Triton's shape
    st.fixed_dictionaries({"models": st.lists(TRITON_ROWS | INDEX_ROWS, max_size=20)}),
    st.fixed_dictionaries({"models": st.lists(INDEX_ROWS | JSON_VALUES, max_size=20)}),
    st.fixed_dictionaries({"models": JSON_VALUES}),
    JSON_VALUES,
)


@fuzz(300)
@given(INDEX_ANSWERS)
def test_a_repository_index_answer_reads_as_model_states_or_a_triton_error(answer: Any) -> None:
    try:
        states = client.parse_repository_index(answer, endpoint="10.0.0.1:8001")
    except TritonError as exc:
        assert exc.endpoint == "10.0.0.1:8001"
        one_line(exc)
        note("index: refused")
        return
    note(f"index: {min(len(states), 2)} or more rows")
    for state in states:
        assert isinstance(state, ModelState) and isinstance(state.name, str) and state.name
        for value in (state.version, state.state, state.reason):
            assert value is None or (isinstance(value, str) and value)
    failed_models(states)


def test_a_huge_repository_index_reads_in_linear_time() -> None:
    answer = {"models": [{"name": f"m{i}", "version": "1", "state": "READY"} for i in range(100_000)]}
    assert len(client.parse_repository_index(answer)) == 100_000


def test_a_repository_index_nested_past_the_stack_is_a_triton_error() -> None:
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(TritonError, match="unexpected repository index row"):
        client.parse_repository_index({"models": nested})


class _AnsweringClient:
    """tritonclient's gRPC client, answering each call with what the test drew for that method."""

    answers: ClassVar[dict[str, Any]] = {}  # set per example

    def __init__(self, url: str, **_: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, method: str) -> Callable[..., Any]:
        return lambda *args, **kwargs: _AnsweringClient.answers.get(method)


@fuzz(150)
@given(
    st.booleans(),
    st.booleans(),
    JSON_VALUES,
    INDEX_ANSWERS,
    JSON_VALUES | st.fixed_dictionaries({"config": JSON_VALUES}),
)
def test_triton_answers_of_any_shape_give_typed_values_or_a_triton_error(
    live: bool, ready: bool, metadata: Any, index: Any, config: Any
) -> None:
    ep = TritonEndpoint("10.0.0.1")
    _AnsweringClient.answers = {
        "is_server_live": live,
        "is_server_ready": ready,
        "get_server_metadata": metadata,
        "get_model_repository_index": index,
        "get_model_config": config,
    }
    with mock.patch("tritonclient.grpc.InferenceServerClient", _AnsweringClient):
        health = client.server_health(ep)  # a malformed index only loses the reasons of a not-ready pod
        assert health.version is None or isinstance(health.version, str)
        assert (health.error is None) == ready
        try:
            assert isinstance(client.model_config(ep, "m"), dict)
        except TritonError as exc:
            one_line(exc)


# --- config.pbtxt ------------------------------------------------------------------------------------


def _field_names(descriptor: Any, seen: set[str]) -> None:
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    for field in descriptor.fields:
        FIELD_NAMES.add(field.name)
        if field.enum_type is not None:
            ENUM_NAMES.update(v.name for v in field.enum_type.values)
        if field.message_type is not None:
            _field_names(field.message_type, seen)


FIELD_NAMES: set[str] = set()
ENUM_NAMES: set[str] = set()
_field_names(mc.ModelConfig.DESCRIPTOR, set())

PBTXT_SCALARS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(sorted(ENUM_NAMES)),
    st.sampled_from(["true", "false", "inf", "-nan", "0x7fffffffffffffff", "1e400", "'unterminated", "\\"]),
    st.text(max_size=15).map(lambda t: json.dumps(t)),  # a quoted string with escapes
    st.binary(max_size=8).map(
        lambda b: '"' + "".join(f"\\{c:03o}" for c in b) + '"'
    ),  # octal, maybe not UTF-8
)


def _pbtxt(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    names = st.sampled_from(sorted(FIELD_NAMES)) | st.from_regex(r"[a-z_]{1,8}", fullmatch=True)
    return st.one_of(
        st.builds(lambda n, v: f"{n}: {v}", names, PBTXT_SCALARS),
        st.builds(lambda n, body: f"{n} {{ {body} }}", names, children),
        st.builds(
            lambda n, body: f"{n}: [ {body} ]", names, st.lists(PBTXT_SCALARS, max_size=4).map(", ".join)
        ),
        st.builds(
            lambda n, k, v: f'{n} {{ key: "{k}" value {{ string_value: {v} }} }}',
            names,
            st.text(max_size=5).map(_escaped),
            PBTXT_SCALARS,
        ),
    )


PBTXT_FIELDS = st.recursive(
    st.builds(lambda n, v: f"{n}: {v}", st.sampled_from(sorted(FIELD_NAMES)), PBTXT_SCALARS),
    lambda inner: st.lists(_pbtxt(inner), max_size=4).map(" ".join),
    max_leaves=30,
)
SKELETONS = st.builds(
    lambda backend, mbs, dtype, dims, extra: (
        f'name: "built" backend: {backend} max_batch_size: {mbs} '
        f'input {{ name: "x" data_type: {dtype} dims: [{dims}] }} '
        f'output {{ name: "y" data_type: TYPE_FP32 dims: [1] }} {extra}'
    ),
    st.sampled_from(['"python"', '"onnxruntime"', '""', "python"]),
    st.sampled_from(["0", "8", "-1", "2147483648", "1e3"]),
    st.sampled_from(["TYPE_FP32", "TYPE_STRING", "TYPE_INVALID", "TYPE_NOPE", "7", "-1"]),
    st.lists(st.integers(-3, 2**63), max_size=4).map(lambda dims: ", ".join(map(str, dims))),
    st.sampled_from(
        [
            "",
            "dynamic_batching { preferred_batch_size: [4] }",
            "dynamic_batching { max_queue_delay_microseconds: -1 }",
            "instance_group { kind: KIND_GPU count: 0 }",
            "version_policy { specific { versions: [1, 2] } }",
            'parameters { key: "k" value { string_value: "v" } }',
            "sequence_batching { }",
            'platform: "ensemble"',
        ]
    )
    | PBTXT_FIELDS,
)
PBTXT_TEXTS = st.one_of(
    SKELETONS,
    PBTXT_FIELDS,
    st.builds(
        lambda prefix, body: prefix + body,
        st.just('name: "m" backend: "python" max_batch_size: 0 '),
        PBTXT_FIELDS,
    ),
    st.text(max_size=300),
)


def _check_config_result(text: str) -> None:
    try:
        base = base_config_text("m", None, text)
    except StagingError as exc:
        assert exc.code == ExitCode.CONFIG_REJECTED
        one_line(exc)
        note("config: rejected")
        return
    note("config: accepted")
    cfg = parse_config(base)
    assert cfg.name == "m" and not cfg.HasField("version_policy")
    final = parse_config(final_config_text(base, [3, 1]))
    assert list(final.version_policy.specific.versions) == [1, 3]


@fuzz(300)
@given(PBTXT_TEXTS)
def test_an_artifact_config_is_accepted_as_a_named_config_or_rejected(text: str) -> None:
    _check_config_result(text)


@pytest.mark.parametrize(
    "text",
    [
        "{ " * 100_000,
        "ensemble_scheduling { " * 10_000,
        "parameters { key: 'k' value { " * 5_000,
        'name: "' + "x" * (1 << 20) + '"',
        "input { dims: [" + ", ".join(["1"] * 100_000) + "] }",
        "\ud800",  # a lone surrogate (a JSON marker may carry one back from disk)
        "name: '\\xff\\xfe'",
    ],
    ids=["braces", "deep-ensemble", "deep-parameters", "1MB-string", "100k-dims", "surrogate", "not-utf8"],
)
def test_hostile_config_pbtxt_is_rejected_or_accepted_never_a_crash(text: str) -> None:
    _check_config_result(text)


# --- S3 manifests ------------------------------------------------------------------------------------

HOSTILE_PATHS = st.one_of(
    st.sampled_from(
        [
            "config.pbtxt",
            "1/model.onnx",
            "1",
            "../escaped",
            "../../../escaped",
            "1/../../escaped",
            "/etc/passwd",
            "//x",
            "",
            ".",
            "./x",
            "a//b",
            "a/",
            "a\x00b",
            "manifest.json",
            "\\x",
            "a/" * 200 + "f",
        ]
    ),
    st.text(max_size=20),
)
MANIFEST_SIZES: st.SearchStrategy[Any] = st.one_of(
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["12", "x", True, None, [], {}]),
)


@st.composite
def manifest_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return json.dumps(draw(JSON_VALUES)).encode()
    files = draw(
        st.lists(
            st.fixed_dictionaries(
                {"path": HOSTILE_PATHS, "size": MANIFEST_SIZES, "sha256": st.sampled_from(["0" * 64, "x"])}
            ),
            max_size=8,
        )
    )
    data: dict[str, Any] = {
        "model": draw(st.sampled_from(["m", ""]) | JSON_VALUES),
        "versions": draw(st.lists(st.integers(-5, 5), max_size=3) | st.lists(MANIFEST_SIZES, max_size=2)),
        "files": files,
    }
    try:  # the digest the files add up to, when they are well-typed: the parser checks it first
        entries = tuple(FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in files)
        data["digest"] = Manifest("m", (), entries).digest
    except (ValueError, TypeError, OverflowError):
        data["digest"] = "sha256:" + "0" * 64
    if draw(st.integers(0, 4)) == 0:
        data["digest"] = draw(JSON_VALUES)
    text = json.dumps(data)  # writes NaN and Infinity, as a hostile writer might
    return text.encode() if draw(st.integers(0, 9)) else text.encode("utf-16")


def _lands_inside(path: str) -> bool:
    joined = os.path.normpath(os.path.join("/dest", path))
    return joined.startswith("/dest/") and "\x00" not in path and joined != "/dest"


@fuzz(300)
@given(manifest_bodies())
def test_an_s3_manifest_parses_to_files_inside_the_model_folder_or_is_refused(body: bytes) -> None:
    try:
        manifest = s3.parse_manifest(body, where="s3://bucket/m/manifest.json")
    except StagingError as exc:
        assert exc.code == ExitCode.INVALID_ARTIFACT
        one_line(exc)
        note(f"manifest: refused ({' '.join(str(exc).split()[1:3])[:30]})")
        return
    note("manifest: parsed")
    paths = [entry.path for entry in manifest.files]
    assert len(set(paths)) == len(paths)
    for entry in manifest.files:
        assert _lands_inside(entry.path), entry.path
        assert isinstance(entry.size, int) and entry.size >= 0


@fuzz(100)
@given(
    st.lists(
        st.builds(FileEntry, HOSTILE_PATHS, st.integers(-(2**40), 2**40), st.just("0" * 64)),
        min_size=1,
        max_size=6,
    )
)
def test_downloading_a_hostile_manifest_is_refused_before_any_request(files: list[FileEntry]) -> None:
    manifest = Manifest("m", (1,), tuple(files))
    assume(
        any(not _lands_inside(f.path) or f.size < 0 for f in files)
        or len({f.path for f in files}) < len(files)
    )
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(s3, "_client") as make_client:
        with pytest.raises(StagingError) as caught:
            s3.download(S3Source(bucket="bucket", prefix="m"), manifest, Path(tmp) / "dest")
        assert caught.value.code == ExitCode.INVALID_ARTIFACT
        assert not make_client.called and not (Path(tmp) / "dest").exists()


# --- HTTP URLs and answers ---------------------------------------------------------------------------

SECRET = "s3cr3t"
URLS = st.one_of(
    # What the API accepts (TritonModel spec.source.http.url's pattern).
    st.from_regex(r"https?://[^\s/]{1,20}(/\S{0,30})?", fullmatch=True),
    st.builds(
        lambda host, port, path: f"https://user:{SECRET}@{host}{port}/{path}?X-Amz-Signature={SECRET}",
        st.sampled_from(["h.example", "[fd00::1]", "[fd00::1", "h:1:2", ""]),
        st.sampled_from(["", ":443", ":abc", ":99999", ":-1", ":\uff11"]),
        st.text(st.characters(blacklist_characters="?#" + SECRET), max_size=20),
    ),
    st.text(max_size=40),
)


@fuzz(300)
@given(URLS)
def test_a_url_gives_a_redacted_form_and_a_file_name_or_a_staging_error(url: str) -> None:
    shown = staging_http.redact(url)
    assert SECRET not in shown, shown
    try:
        name = staging_http.file_name(url)
    except StagingError as exc:
        assert exc.code in (ExitCode.INVALID_ARTIFACT, ExitCode.SOURCE_NOT_FOUND)
        assert SECRET not in str(exc)
        one_line(exc)
        return
    assert name not in ("", ".", "..") and "/" not in name and "\x00" not in name
    assert len(name.encode()) <= 255


@fuzz(200)
@given(st.text(max_size=25) | st.none())
def test_a_content_length_header_is_a_byte_count_or_ignored(value: str | None) -> None:
    length = staging_http.declared_length(value)
    assert length is None or (isinstance(length, int) and length >= 0)


FAILURES = st.sampled_from(
    [
        None,
        http.client.IncompleteRead(b"partial"),
        ValueError("invalid literal for int() with base 16: 'zz'"),  # a chunk size that is not hex
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        http.client.BadStatusLine("garbage"),
    ]
)


@fuzz(200)
@given(
    st.lists(st.binary(max_size=3000), max_size=5),
    st.one_of(st.none(), st.sampled_from(["0", "10", "²", " 12 ", "-1", "1e3", "99999999999999999999"])),
    FAILURES,
    st.integers(0, 20_000),
    st.booleans(),
)
def test_an_http_download_is_bounded_and_fails_only_with_a_staging_error(
    chunks: list[bytes], length: str | None, failure: BaseException | None, space_left: int, right_sha: bool
) -> None:
    body = b"".join(chunks)
    sha = hashlib.sha256(body).hexdigest() if right_sha else "0" * 64
    source = HttpSource(url="https://h.example/m/model.onnx", sha256=sha)
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "model.onnx"
        headers = {"Content-Length": length} if length is not None else {}

        class Bounded(FakeResponse):
            def read(self, size: int) -> bytes:
                # What was written so far never exceeds the space left.
                assert not dest.exists() or dest.stat().st_size <= space_left
                return super().read(size)

        with mock.patch("urllib.request.urlopen", lambda *_, **__: Bounded(headers, list(chunks), failure)):
            try:
                got = staging_http.download(source, dest, space_left=space_left, sleep=lambda _: None)
            except StagingError as exc:
                one_line(exc)
                assert not dest.exists()  # a failed download leaves nothing behind
            else:
                assert got == len(body) <= space_left and dest.read_bytes() == body


# --- archives ----------------------------------------------------------------------------------------

# The destination is 5 folders below the sandbox root: names climbing up to 5 levels, and absolute
# names under {ROOT}, stay inside the sandbox, where the test sees anything that escaped.
ROOT = "{ROOT}"
DEST_PARTS = ("a", "b", "c", "d", "dest")


@dataclass(frozen=True)
class Member:
    name: str
    kind: str  # file, dir, symlink, hardlink, chardev, fifo
    data: bytes
    link: str
    declared: int | None  # a lie about the size: PAX `size` in a tar, the central directory's in a zip
    encrypted: bool  # zip only: the flag that asks for a password


MEMBER_NAMES = st.one_of(
    st.sampled_from(
        [
            "m/config.pbtxt",
            "m/1/model.onnx",
            "m/2/model.onnx",
            "m/1",
            "m",
            "config.pbtxt",
            "1/model.py",
            "m/²/model.onnx",
            "m/\u0661/model.onnx",
            ".",
            "",
            "./m/x",
            "m//x",
            "\\evil",
            "a\\..\\b",
            "a/" * 200 + "f",
            "m/" + "x" * 300,
        ]
    ),
    st.builds(
        lambda n, tail: "../" * n + tail, st.integers(1, 5), st.sampled_from(["escaped", "sentinel", "m/x"])
    ),
    st.builds(lambda tail: f"{ROOT}/{tail}", st.sampled_from(["escaped", "sentinel"])),
    st.builds(lambda tail: f"m/1/../../../{tail}", st.sampled_from(["escaped", "sentinel"])),
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12
    ),
)
LINK_TARGETS = st.sampled_from(
    ["/etc/passwd", f"{ROOT}/sentinel", "../../../../../sentinel", "../x", "m/1/model.onnx", ".", ""]
)
MEMBERS = st.builds(
    Member,
    name=MEMBER_NAMES,
    kind=st.sampled_from(["file"] * 6 + ["dir"] * 2 + ["symlink", "hardlink", "chardev", "fifo"]),
    data=st.one_of(st.binary(max_size=300), st.integers(0, 300_000).map(bytes)),  # zeros: a bomb's filling
    link=LINK_TARGETS,
    declared=st.one_of(st.none(), st.none(), st.integers(-3000, 10**7)),
    encrypted=st.integers(0, 15).map(lambda n: n == 0),
)


def _tar_bytes(members: list[Member], root: str, compression: str, fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=f"w:{compression}", format=fmt) as tar:  # type: ignore[call-overload]
        for member in members:
            info = tarfile.TarInfo(member.name.replace(ROOT, root))
            data = None
            if member.kind == "file":
                info.size, data = len(member.data), io.BytesIO(member.data)
            else:
                info.type = {
                    "dir": tarfile.DIRTYPE,
                    "symlink": tarfile.SYMTYPE,
                    "hardlink": tarfile.LNKTYPE,
                    "chardev": tarfile.CHRTYPE,
                    "fifo": tarfile.FIFOTYPE,
                }[member.kind]
                info.linkname = member.link.replace(ROOT, root)
            if member.declared is not None and fmt == tarfile.PAX_FORMAT:
                info.pax_headers = {"size": str(member.declared)}
            with contextlib.suppress(ValueError, UnicodeError):  # e.g. a name too long for ustar
                tar.addfile(info, data)
    return out.getvalue()


_ZIP_MODES = {
    "file": stat.S_IFREG | 0o644,
    "dir": stat.S_IFDIR | 0o755,
    "symlink": stat.S_IFLNK | 0o777,
    "hardlink": stat.S_IFREG | 0o644,
    "chardev": stat.S_IFCHR | 0o666,
    "fifo": stat.S_IFIFO | 0o644,
}


def _zip_bytes(members: list[Member], root: str, method: int) -> bytes:
    out = io.BytesIO()
    written: list[Member] = []
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as zf:
        warnings.simplefilter("ignore")  # duplicate names are the point
        for member in members:
            name = member.name.replace(ROOT, root)
            if member.kind == "dir" and not name.endswith("/"):
                name += "/"
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            info.external_attr = _ZIP_MODES[member.kind] << 16
            data = member.link.replace(ROOT, root).encode() if member.kind == "symlink" else member.data
            try:
                zf.writestr(info, b"" if member.kind == "dir" else data)
            except (ValueError, UnicodeError, OSError):
                continue
            written.append(member)
    raw = bytearray(out.getvalue())
    # Lie in the central directory (what zipfile trusts): the declared size, the encryption flag.
    at = raw.find(b"PK\x01\x02")
    for member in written:
        if at < 0:
            break
        if member.declared is not None and 0 <= member.declared < 2**32:
            raw[at + 24 : at + 28] = struct.pack("<I", member.declared)
        if member.encrypted:
            raw[at + 8] |= 0x1
        name_len, extra_len, comment_len = struct.unpack("<HHH", raw[at + 28 : at + 34])
        at = raw.find(b"PK\x01\x02", at + 46 + name_len + extra_len + comment_len)
    return bytes(raw)


@dataclass(frozen=True)
class Archive:
    members: list[Member]
    container: str  # tar or zip
    compression: str  # "", gz, bz2, xz for a tar
    fmt: int  # the tar format, or the zip compression method
    mutations: list[tuple[float, int]]  # (position as a fraction of the size, new byte)
    truncate: float | None  # keep this fraction of the bytes

    @property
    def suffix(self) -> str:
        return ".zip" if self.container == "zip" else ".tar.gz" if self.compression == "gz" else ".tar"

    def build(self, root: Path) -> bytes:
        if self.container == "zip":
            raw = bytearray(_zip_bytes(self.members, str(root), self.fmt))
        else:
            raw = bytearray(_tar_bytes(self.members, str(root), self.compression, self.fmt))
        for where, byte in self.mutations:
            if raw:
                raw[int(where * (len(raw) - 1))] = byte
        if self.truncate is not None:
            raw = raw[: int(self.truncate * len(raw))]
        return bytes(raw)


SAFE_MEMBERS = st.builds(
    Member,
    name=st.sampled_from(["m/config.pbtxt", "m/1/model.onnx", "m/1/a/b.py", "m/2/model.onnx", "m/1", "m"]),
    kind=st.sampled_from(["file", "file", "dir"]),
    data=st.one_of(st.binary(max_size=300), st.integers(0, 300_000).map(bytes)),
    link=st.just(""),
    declared=st.none(),
    encrypted=st.just(False),
)
MEMBER_LISTS = st.one_of(
    st.lists(SAFE_MEMBERS, max_size=6),
    st.builds(
        lambda safe, hostile: safe + hostile,
        st.lists(SAFE_MEMBERS, max_size=4),
        st.lists(MEMBERS, max_size=2),
    ),
    st.lists(MEMBERS, max_size=8),
)
MUTATIONS: st.SearchStrategy[list[tuple[float, int]]] = st.one_of(
    st.just([]), st.just([]), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=3)
)
TRUNCATE = st.one_of(st.none(), st.none(), st.none(), st.floats(0, 1))
ARCHIVES = st.one_of(
    st.builds(
        Archive,
        members=MEMBER_LISTS,
        container=st.just("tar"),
        compression=st.sampled_from(["", "gz", "bz2", "xz"]),
        fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]),
        mutations=MUTATIONS,
        truncate=TRUNCATE,
    ),
    st.builds(
        Archive,
        members=MEMBER_LISTS,
        container=st.just("zip"),
        compression=st.just(""),
        fmt=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]),
        mutations=MUTATIONS,
        truncate=TRUNCATE,
    ),
)
SPACE_LEFT = st.one_of(st.integers(0, 400_000), st.just(10**12))


def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under `root` outside `skip`: (file type, size, sha256 of a file's content)."""
    found: dict[str, tuple[int, int, str]] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d != skip]
        for name in [*dirs, *files]:
            path = here / name
            st_ = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st_.st_mode) else ""
            found[str(path.relative_to(root))] = (stat.S_IFMT(st_.st_mode), st_.st_size, digest)
    return found


def _written(dest: Path) -> int:
    """Bytes of the regular files under `dest`; asserts nothing else was created there."""
    total = 0
    for folder, dirs, files in os.walk(dest):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            mode = path.lstat().st_mode
            assert stat.S_ISDIR(mode) or stat.S_ISREG(mode), f"{path} is neither a file nor a folder"
            assert Path(os.path.realpath(path)).is_relative_to(dest.resolve()), path
            total += path.lstat().st_size if stat.S_ISREG(mode) else 0
    return total


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "sentinel").write_text("keep")
        (root / Path(*DEST_PARTS)).parent.mkdir(parents=True)
        yield root


def unpack_and_check(build: Callable[[Path], bytes], suffix: str, space_left: int) -> None:
    """Unpack the archive `build(root)` makes, in a sandbox at `root`; check the outcome, everything
    around the destination (unchanged) and the bytes written (within `space_left`)."""
    with sandbox() as root:
        archive = root / "in" / f"model{suffix}"
        archive.parent.mkdir()
        archive.write_bytes(build(root))
        dest = root / Path(*DEST_PARTS)
        before = _tree(root, skip=dest)
        code = None
        try:
            count = unpack(archive, dest, space_left=space_left)
        except StagingError as exc:
            assert exc.code in (ExitCode.INVALID_ARTIFACT, ExitCode.TOO_LARGE), exc
            one_line(exc)
            count, code = -1, exc.code
            note(f"refused: {exc.reason}: {' '.join(str(exc).split()[1:3])[:30]}")
        else:
            note("unpacked")
        assert _tree(root, skip=dest) == before, "unpack changed something outside its destination"
        written = _written(dest)
        assert written <= space_left, f"wrote {written} bytes with {space_left} left"
        if code == ExitCode.TOO_LARGE:
            assert written == 0, "refused as too large only after writing"
        if code is not None:
            return
        assert written <= count <= space_left
        # What the unpacked artifact becomes next: a version folder and a config, or a StagingError.
        try:
            config = split_artifact(dest, 1, root / "version")
        except StagingError as exc:
            one_line(exc)
        else:
            assert (root / "version").is_dir() and (config is None or isinstance(config, str))


@fuzz(250)
@given(ARCHIVES, SPACE_LEFT)
def test_an_archive_unpacks_inside_its_destination_within_the_space_left_or_is_refused(
    archive: Archive, space_left: int
) -> None:
    unpack_and_check(archive.build, archive.suffix, space_left)


@fuzz(100)
@given(st.binary(max_size=2000), st.sampled_from([".tar", ".tar.gz", ".zip", ".tgz"]), SPACE_LEFT)
def test_random_bytes_are_never_an_archive_that_escapes(raw: bytes, suffix: str, space_left: int) -> None:
    unpack_and_check(lambda _: raw, suffix, space_left)


def _root_relative_escape_archive(root: Path, kind: str) -> bytes:
    """An archive whose every trick points into the sandbox root (for the fixed cases below)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("m/link")
        info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
        info.linkname = str(root / "sentinel")
        tar.addfile(info)
        through = tarfile.TarInfo("m/link")
        through.size = 4
        tar.addfile(through, io.BytesIO(b"evil"))  # written through the link if it existed
    return out.getvalue()


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_a_link_to_a_file_outside_and_a_file_written_through_it_change_nothing(kind: str) -> None:
    with sandbox() as root:
        raw = _root_relative_escape_archive(root, kind)
        archive = root / "in.tar"
        archive.write_bytes(raw)
        with pytest.raises(StagingError, match="not a regular file or folder"):
            unpack(archive, root / Path(*DEST_PARTS), space_left=100)
        assert (root / "sentinel").read_text() == "keep"
