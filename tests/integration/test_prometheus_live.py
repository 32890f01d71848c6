"""The recording rules on a real Prometheus 3.16 scraping a real tritonserver 2.51 (issue 20): a routed model
(its python router `ranker` sending 90/10 to versions 1 and 2 of `ranker~versions`) is counted once, by
the version it went to, with Triton's real metric names; and every query of the chart's Grafana dashboard
(panels and variables, Grafana's variables replaced by this model's values) returns data. Loopback only;
Prometheus is built from its Go module by .ci/build-prometheus.sh (cached)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from triton_operator.opmetrics_objects import SERVER, ObjectGauges
from triton_operator.render.router import ROUTER_ENV, Variant, router_config, router_files

from sandbox.tritonserver import RunningTriton, run_tritonserver
from tests.support.dashboard import (
    label_values_call,
    load_dashboard,
    panel_queries,
    substitute,
    variable_queries,
)
from tests.support.models import write_versioned
from tests.support.prometheus_http import label_values, query, query_range

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "triton-operator" / "files" / "prometheus-rules.yaml"
BUILD_PROMETHEUS = ROOT / ".ci" / "build-prometheus.sh"
TRITON = "127.31.0.7"
PROMETHEUS = "127.31.0.8:9090"
OPERATOR_METRICS = ("127.31.0.9", 8081)
PUBLIC, VERSIONS = "ranker", "ranker~versions"
# What a PodMonitor made by the operator puts on every series (namespace and pod by the Prometheus
# Operator, tritonserver by the operator's relabeling).
TARGET_LABELS = {"namespace": "serving", "pod": "pool-0", "tritonserver": "pool"}
# The dashboard's variables set to the serving model (Grafana substitutes them before it queries).
DASHBOARD_VALUES = {"namespace": "serving", "server": "pool", "model": PUBLIC, "datasource": "prometheus"}
# Grafana's own interval variables, as it would set them for a 1 s scrape.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "5s", "__range": "5m"}


def prometheus_binary() -> str:
    done = subprocess.run(
        ["bash", str(BUILD_PROMETHEUS)], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        pytest.fail(f".ci/build-prometheus.sh could not provide prometheus:\n{done.stderr}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTriton]:
    saved = os.environ.get(ROUTER_ENV)
    os.environ[ROUTER_ENV] = "python"  # the router that needs no native build
    repo = tmp_path_factory.mktemp("live") / "repo"
    write_versioned(repo, VERSIONS, [1, 2])
    try:
        # As the operator runs Triton (render/server.py): the latency summaries the p50/p99 rules read.
        with run_tritonserver(
            repo, TRITON, extra_args=["--metrics-config=summary_latencies=true"]
        ) as running:
            with triton_grpc.InferenceServerClient(running.grpc_url) as client:
                client.load_model(VERSIONS)
                with triton_http.InferenceServerClient(running.http_url) as http:
                    target = http.get_model_config(VERSIONS)
                config = router_config(PUBLIC, target, [Variant(VERSIONS, 1, 90), Variant(VERSIONS, 2, 10)])
                client.load_model(PUBLIC, config=json.dumps(config), files=router_files())
            yield running
    finally:
        if saved is None:
            os.environ.pop(ROUTER_ENV, None)
        else:
            os.environ[ROUTER_ENV] = saved


@pytest.fixture(scope="module")
def operator_metrics() -> Iterator[str]:
    """The operator's per-object gauges (its own exporter code, on a registry of this test) for the
    TritonServer the PodMonitor labels name, as the operator sets them from its status: one replica, ready.
    No cluster here, so the object is written out rather than read from an API server."""
    registry = CollectorRegistry()
    gauges = ObjectGauges(registry)
    gauges.observe(
        SERVER,
        {
            "metadata": {"namespace": TARGET_LABELS["namespace"], "name": TARGET_LABELS["tritonserver"]},
            "spec": {"replicas": 1},
            "status": {"readyReplicas": 1},
        },
    )
    gauges.passed(SERVER, TARGET_LABELS["namespace"], TARGET_LABELS["tritonserver"])
    address, port = OPERATOR_METRICS
    server, thread = start_http_server(port, addr=address, registry=registry)
    try:
        yield f"{address}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def prometheus(
    triton: RunningTriton, operator_metrics: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    work = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "triton",
                "static_configs": [
                    {"targets": [f"{triton.address}:{triton.metrics_port}"], "labels": TARGET_LABELS}
                ],
            },
            # As the chart's ServiceMonitor (honorLabels): the gauges keep their objects' namespace.
            {
                "job_name": "triton-operator",
                "honor_labels": True,
                "static_configs": [
                    {"targets": [operator_metrics], "labels": {"namespace": "triton-operator"}}
                ],
            },
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (work / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address={PROMETHEUS}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{PROMETHEUS}/-/ready", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"prometheus never became ready:\n{(work / 'prometheus.log').read_text()[-3000:]}")
        yield f"http://{PROMETHEUS}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def by_version(samples: list[dict[str, Any]]) -> dict[str, float]:
    return {s["metric"].get("version", ""): float(s["value"][1]) for s in samples}


@pytest.fixture(scope="module")
def traffic(triton: RunningTriton, prometheus: str) -> int:
    """Steady load on the routed model, once for the module's tests; the requests sent."""
    sent = 0
    with triton_grpc.InferenceServerClient(triton.grpc_url) as client:
        tensor = triton_grpc.InferInput("INPUT0", [1, 1], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
        # The router publishes its counts every second, so its series appears only after its first
        # request, while Triton's own counter exists from the load: a series that appears midway is
        # extrapolated from its first sample. One request first, and the measured traffic starts once
        # Prometheus has scraped the router's series (and once more), so both rates start from a sample
        # taken before it.
        client.infer(PUBLIC, [tensor])
        sent += 1
        deadline = time.monotonic() + 30
        while not query(prometheus, "tritonoperator_router_requests_total") and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        end = time.monotonic() + 25  # a steady 40 requests a second, for 25 scrapes
        while time.monotonic() < end:
            client.infer(PUBLIC, [tensor])
            sent += 1
            time.sleep(0.025)
    time.sleep(3)  # the router publishes its counts every second; one more scrape and evaluation
    return sent


def test_a_routed_model_is_counted_once_by_version(prometheus: str, traffic: int) -> None:
    sent = traffic
    up = query(prometheus, 'up{job="triton"}')
    assert [float(s["value"][1]) for s in up] == [1.0]

    model = query(prometheus, f'namespace_tritonserver_model:triton_requests:rate5m{{model="{PUBLIC}"}}')
    assert len(model) == 1 and model[0]["metric"]["tritonserver"] == "pool"
    # Counted once: the rule agrees with the router's own request count at the same instant (Triton counts
    # each request twice: at the router and again at `ranker~versions`).
    once = float(model[0]["value"][1])
    router_rate = float(
        query(prometheus, f'sum(rate(nv_inference_request_success{{model="{PUBLIC}"}}[5m]))')[0]["value"][1]
    )
    both_rate = float(query(prometheus, "sum(rate(nv_inference_request_success[5m]))")[0]["value"][1])
    assert once == pytest.approx(router_rate, rel=0.05), (once, router_rate, sent)
    assert both_rate == pytest.approx(2 * once, rel=0.05)

    versions = by_version(
        query(prometheus, f'namespace_tritonserver_model_version:triton_requests:rate5m{{model="{PUBLIC}"}}')
    )
    assert set(versions) == {"1", "2"}
    assert versions["2"] / (versions["1"] + versions["2"]) == pytest.approx(0.10, abs=0.02)
    failures = by_version(
        query(
            prometheus,
            f'namespace_tritonserver_model_version:triton_request_failure:ratio_rate5m{{model="{PUBLIC}"}}',
        )
    )
    assert failures == {"1": 0.0, "2": 0.0}
    # The work by version, under the public name: queue time per request and pending requests recorded.
    queue = by_version(
        query(
            prometheus,
            f'namespace_tritonserver_model_version:triton_queue_duration_seconds:mean5m{{model="{PUBLIC}"}}',
        )
    )
    assert set(queue) == {"1", "2"} and all(0 <= q < 1 for q in queue.values())
    assert query(prometheus, 'namespace_tritonserver:triton_pending_requests:sum{tritonserver="pool"}')
    assert query(prometheus, 'ALERTS{alertname="TritonModelFailureRatioHigh"}') == []


def finite(series: list[dict[str, Any]]) -> bool:
    """Whether a range query's result has a series with a finite value (NaN: no data to draw)."""
    return any(math.isfinite(float(value)) for one in series for _, value in one["values"])


def test_every_dashboard_query_returns_data(prometheus: str, traffic: int) -> None:
    """Each panel's query, and each variable's, as Grafana would send them with the serving model picked."""
    board = load_dashboard()
    values = {**DASHBOARD_VALUES, **GRAFANA_BUILTINS}
    variables = variable_queries(board)
    assert set(variables) == {"namespace", "server", "model"}
    for name, variable_query in variables.items():
        selector, label = label_values_call(substitute(variable_query, values))
        offered = label_values(prometheus, label, selector, seconds=300)
        assert DASHBOARD_VALUES[name] in offered, (name, variable_query, offered)

    queries = panel_queries(board)
    assert len(queries) >= 15
    empty = []
    for panel in queries:
        series = query_range(prometheus, substitute(panel.expr, values), seconds=60)  # status success
        if "nv_gpu_" in panel.expr:
            # Triton exports its nv_gpu_* gauges only for GPUs it sees; this machine, like CI's and every
            # developer's here, has none, so no such series exists and none is made up for the test: the
            # query is only checked to be one Prometheus accepts (status success, above). On a GPU node
            # it returns a series per pod and GPU.
            continue
        if not finite(series):
            empty.append(f"{panel.panel} ({panel.ref}): {panel.expr}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
