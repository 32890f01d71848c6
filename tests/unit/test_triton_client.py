"""The Triton client facade without a server: endpoint addressing, reading failed models from an index,
and, with tritonclient's gRPC client replaced by a fake, what each call sends and how errors map."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from triton_operator.triton import client
from triton_operator.triton.client import (
    CONNECT_TIMEOUT_S,
    Health,
    ModelState,
    TritonEndpoint,
    TritonError,
    TritonLoadError,
    TritonTimeout,
    TritonUnreachable,
    failed_models,
)
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.unit


def test_endpoint_urls_use_the_standard_ports() -> None:
    ep = TritonEndpoint("10.1.2.3")
    assert (ep.http_url, ep.grpc_url, ep.metrics_url) == (
        "10.1.2.3:8000",
        "10.1.2.3:8001",
        "http://10.1.2.3:8002/metrics",
    )


def test_endpoint_brackets_ipv6_pod_ips() -> None:
    ep = TritonEndpoint("fd00::7", http_port=9000, metrics_port=9002)
    assert ep.http_url == "[fd00::7]:9000"
    assert ep.metrics_url == "http://[fd00::7]:9002/metrics"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"host": ""}, "host"),
        ({"host": "http://10.0.0.1"}, "host"),
        ({"host": "10.0.0.1", "http_port": 0}, "http_port"),
        ({"host": "10.0.0.1", "metrics_port": 70000}, "metrics_port"),
    ],
)
def test_endpoint_rejects_bad_input_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"TritonEndpoint.{field}"):
        TritonEndpoint(**kwargs)


def test_failed_models_skips_ready_unloaded_and_never_loaded_models() -> None:
    index = [
        ModelState("ready", "1", "READY", None),
        ModelState("gone", "1", "UNAVAILABLE", "unloaded"),
        ModelState("on-disk-only", None, None, None),
        ModelState("broken", "1", "UNAVAILABLE", "unable to find backend library for backend 'x'"),
    ]
    assert [m.name for m in failed_models(index)] == ["broken"]


class FakeGrpcClient:
    """Stands in for tritonclient.grpc.InferenceServerClient: records calls, raises what it is told."""

    instances: ClassVar[list[FakeGrpcClient]] = []
    answers: ClassVar[dict[str, Any]] = {}  # method -> what it returns
    next_error: ClassVar[InferenceServerException | None] = None  # raised by every method if set

    def __init__(self, url: str, *, channel_args: list[tuple[str, int]] | None = None) -> None:
        self.url = url
        self.channel_args = dict(channel_args or [])
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.closed = False
        FakeGrpcClient.instances.append(self)

    def close(self) -> None:
        self.closed = True

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, kwargs))
            if FakeGrpcClient.next_error is not None:
                raise FakeGrpcClient.next_error
            return FakeGrpcClient.answers.get(method)

        return call


@pytest.fixture
def fake_grpc(monkeypatch: pytest.MonkeyPatch) -> type[FakeGrpcClient]:
    FakeGrpcClient.instances = []
    FakeGrpcClient.next_error = None
    FakeGrpcClient.answers = {
        "is_server_live": True,
        "is_server_ready": True,
        "get_server_metadata": {"name": "triton", "version": "2.51.0"},
        "is_model_ready": True,
        "get_model_repository_index": {
            "models": [{"name": "a", "version": "1", "state": "READY"}, {"name": "on-disk"}]
        },
        "get_model_config": {"config": {"name": "a", "max_batch_size": 16}},
    }
    monkeypatch.setattr("tritonclient.grpc.InferenceServerClient", FakeGrpcClient)
    return FakeGrpcClient


EP = TritonEndpoint("10.1.2.3")
EVERY_CALL: list[Callable[..., object]] = [
    lambda **kw: client.server_health(EP, **kw),
    lambda **kw: client.repository_index(EP, **kw),
    lambda **kw: client.load_model(EP, "a", **kw),
    lambda **kw: client.unload_model(EP, "a", **kw),
    lambda **kw: client.model_ready(EP, "a", **kw),
    lambda **kw: client.model_config(EP, "a", **kw),
]
CALL_IDS = ["server_health", "repository_index", "load_model", "unload_model", "model_ready", "model_config"]


@pytest.mark.parametrize("call", EVERY_CALL, ids=CALL_IDS)
def test_every_call_goes_over_grpc_with_its_timeout_and_closes_the_client(
    fake_grpc: type[FakeGrpcClient], call: Callable[..., object]
) -> None:
    call(timeout_s=3.5)
    assert fake_grpc.instances, "no gRPC client was opened"
    for opened in fake_grpc.instances:
        assert opened.url == "10.1.2.3:8001"
        assert opened.closed
        assert opened.calls and all(kw.get("client_timeout") == 3.5 for _, kw in opened.calls)
        # The connection attempt is bounded by CONNECT_TIMEOUT_S, or by the call's timeout if shorter.
        assert opened.channel_args["grpc.min_reconnect_backoff_ms"] == CONNECT_TIMEOUT_S * 1000
    call(timeout_s=0.5)
    assert fake_grpc.instances[-1].channel_args["grpc.min_reconnect_backoff_ms"] == 500


def test_answers_are_read_from_tritons_json(fake_grpc: type[FakeGrpcClient]) -> None:
    assert client.server_health(EP) == Health(live=True, ready=True, version="2.51.0", error=None)
    assert client.repository_index(EP) == [
        ModelState("a", "1", "READY", None),
        ModelState("on-disk", None, None, None),
    ]
    assert client.model_ready(EP, "a", 2)
    assert fake_grpc.instances[-1].calls == [("is_model_ready", {"client_timeout": client.PROBE_TIMEOUT_S})]
    assert client.model_config(EP, "a", 1) == {"name": "a", "max_batch_size": 16}


def test_load_model_passes_config_and_files(fake_grpc: type[FakeGrpcClient]) -> None:
    client.load_model(EP, "a", config_json='{"backend": "python"}', files={"file:1/model.py": b"x = 1"})
    assert fake_grpc.instances[-1].calls == [
        (
            "load_model",
            {
                "config": '{"backend": "python"}',
                "files": {"file:1/model.py": b"x = 1"},
                "client_timeout": client.LOAD_TIMEOUT_S,
            },
        )
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"files": {"file:1/model.py": b""}}, "needs config_json"),
        ({"config_json": "{}", "files": {"1/model.py": b""}}, "file:<path"),
        ({"timeout_s": 0}, "timeout_s must be positive"),
    ],
)
def test_load_model_rejects_bad_arguments_before_calling_triton(
    fake_grpc: type[FakeGrpcClient], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        client.load_model(EP, "a", **kwargs)
    assert not fake_grpc.instances


def grpc_error(status: str, message: str) -> InferenceServerException:
    return InferenceServerException(msg=message, status=status)


@pytest.mark.parametrize(
    ("error", "expected", "status", "message"),
    [
        (
            grpc_error("StatusCode.UNAVAILABLE", "failed to connect to all addresses; Connection refused"),
            TritonUnreachable,
            None,
            "cannot reach Triton at 10.1.2.3:8001: failed to connect to all addresses; Connection refused",
        ),
        (
            grpc_error("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded"),
            TritonTimeout,
            None,
            "Triton at 10.1.2.3:8001 did not answer within 5 s",
        ),
        (
            grpc_error("StatusCode.NOT_FOUND", "Request for unknown model: 'a' is not found\n"),
            TritonError,
            5,
            "Request for unknown model: 'a' is not found",
        ),
        (
            grpc_error(None, "model version must be a string"),
            TritonError,
            None,
            "model version must be a string",
        ),
    ],
    ids=["unavailable", "deadline", "not-found", "client-side"],
)
@pytest.mark.parametrize("call", EVERY_CALL[1:], ids=CALL_IDS[1:])
def test_grpc_errors_map_to_the_modules_exceptions(
    fake_grpc: type[FakeGrpcClient],
    call: Callable[..., object],
    error: InferenceServerException,
    expected: type[TritonError],
    status: int | None,
    message: str,
) -> None:
    fake_grpc.next_error = error
    with pytest.raises(TritonError) as caught:
        call(timeout_s=5.0)
    if expected is TritonError and call is EVERY_CALL[2]:
        expected = TritonLoadError  # Triton's answer to a load is a load error
    assert type(caught.value) is expected
    assert (caught.value.message, caught.value.status, caught.value.endpoint) == (
        message,
        status,
        "10.1.2.3:8001",
    )
    assert fake_grpc.instances[-1].closed


def test_a_triton_load_failure_keeps_tritons_reason(fake_grpc: type[FakeGrpcClient]) -> None:
    fake_grpc.next_error = grpc_error(
        "StatusCode.INVALID_ARGUMENT",
        "load failed for model 'a': version 1 is at UNAVAILABLE state: Invalid argument: no backend;\n",
    )
    with pytest.raises(TritonLoadError) as caught:
        client.load_model(EP, "a")
    assert caught.value.message == (
        "load failed for model 'a': version 1 is at UNAVAILABLE state: Invalid argument: no backend"
    )
    assert caught.value.status == 3


def test_a_connection_attempt_that_ran_out_its_time_is_a_timeout(
    fake_grpc: type[FakeGrpcClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # gRPC reports a connection attempt that exceeded its bound as UNAVAILABLE; the pod did not
    # refuse, it did not answer: a timeout. A refusal arrives at once and stays "unreachable".
    clock = iter([100.0, 100.0 + CONNECT_TIMEOUT_S])
    monkeypatch.setattr("triton_operator.triton.client.time", SimpleNamespace(monotonic=lambda: next(clock)))
    fake_grpc.next_error = grpc_error(
        "StatusCode.UNAVAILABLE",
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.1.2.3:8001: "
        "connection attempt timed out before receiving SETTINGS frame",
    )
    with pytest.raises(TritonTimeout, match="did not complete a connection within 2 s"):
        client.repository_index(EP)


# --- regressions found by tests/unit/test_fuzz_parsers.py (issue 12: hostile input) --------------


@pytest.mark.parametrize(
    "answer",
    [
        None,
        [],
        {"models": {"name": "a"}},
        {"models": [{"version": "1"}]},
        {"models": ["a"]},
        {"models": [{"name": "a", "state": ["READY"]}]},
    ],
    ids=["none", "list", "models-not-a-list", "row-without-name", "row-not-a-mapping", "state-not-a-string"],
)
def test_a_repository_index_of_another_shape_is_a_triton_error(
    fake_grpc: type[FakeGrpcClient], answer: object
) -> None:
    # KeyError, TypeError and AttributeError escaped the reconcile, which handles TritonError.
    fake_grpc.answers["get_model_repository_index"] = answer
    with pytest.raises(TritonError, match="unexpected repository index") as caught:
        client.repository_index(EP)
    assert caught.value.endpoint == "10.1.2.3:8001" and len(caught.value.message) < 300


def test_server_metadata_that_is_not_a_mapping_has_no_version(fake_grpc: type[FakeGrpcClient]) -> None:
    fake_grpc.answers["get_server_metadata"] = ["2.51.0"]  # metadata["version"] raised TypeError
    assert client.server_health(EP).version is None


def test_a_model_config_answer_without_a_config_is_a_triton_error(fake_grpc: type[FakeGrpcClient]) -> None:
    fake_grpc.answers["get_model_config"] = {"name": "a"}  # answer["config"] raised KeyError
    with pytest.raises(TritonError, match="unexpected model config"):
        client.model_config(EP, "a")
