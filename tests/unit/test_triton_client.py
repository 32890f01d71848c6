"""Pure parts of the Triton client facade: endpoint addressing and reading failed models from an index."""

from __future__ import annotations

import pytest
from triton_operator.triton.client import ModelState, TritonEndpoint, failed_models

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
