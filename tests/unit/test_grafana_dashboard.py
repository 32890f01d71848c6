"""The Grafana dashboard (issue 20): the committed JSON is what dashboards/serving.py generates with Grafana's
grafana-foundation-sdk, Grafana's schema (the SDK's models of it) knows every field, it has a uid of its own
and a datasource variable, its panels read the recording rules, and the chart ships it in a ConfigMap
for kube-prometheus-stack's sidecar only when asked. Its queries return data on a real Prometheus in
tests/integration/test_prometheus_live.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard as model
from triton_operator.opmetrics_objects import GAUGES

from dashboards import serving
from tests.support.chart import CHART, NAMESPACE, ROOT, render_chart, set_args
from tests.support.dashboard import (
    DASHBOARD,
    label_values_call,
    load_dashboard,
    panel_queries,
    panels,
    substitute,
    variable_queries,
)

pytestmark = pytest.mark.unit

RULES = CHART / "files" / "prometheus-rules.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Series a panel may read raw, because no rule records them: Triton's GPU gauges, the scrape's `up`, and
# the operator's own per-object gauges. Everything of Triton's request counters goes through the rules.
RAW_SERIES = {"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes", "up", *GAUGES}
# What issue 20 asks of the dashboard: per server, and per model and version.
SERVER_PANELS = {
    "Replicas",
    "Requests per second",
    "Failed requests",
    "Failure ratio",
    "Queue time per request",
    "GPU utilization",
    "GPU memory",
}
MODEL_PANELS = {
    "Requests per second by version",
    "Failure ratio by version",
    "Latency p50 and p99 by version",
    "Queue time per request by version",
    "Observed traffic share by version",
}
# PromQL identifiers that are not series: functions, aggregations, keywords.
PROMQL_WORDS = {"sum", "by", "on", "group_left", "label_values", "max", "rate", "without", "ignoring"}
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return load_dashboard()


def series_names(expr: str) -> set[str]:
    """The series names a query reads (matchers, ranges, label lists of `by`/`on`, numbers left out)."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", re.sub(r'"[^"]*"', "", expr))  # matchers, ranges
    bare = re.sub(r"\b(by|on|without|ignoring)\s*\([^)]*\)|\b\d[\w.]*", "", bare)  # label lists, numbers
    return {word for word in IDENTIFIER.findall(bare) if word not in PROMQL_WORDS}


def test_the_committed_json_is_the_generators_output() -> None:
    assert DASHBOARD.read_text() == serving.render(), (
        "charts/triton-operator/files/grafana-dashboard.json is stale: run `python -m dashboards.serving`"
    )


def subset(small: Any, big: Any, path: str = "") -> list[str]:
    """Where `small` has something `big` does not (a key, a different value)."""
    if isinstance(small, dict) and isinstance(big, dict):
        return [
            p for key, value in small.items() for p in subset(value, big.get(key, KeyError), f"{path}/{key}")
        ]
    if isinstance(small, list) and isinstance(big, list) and len(small) == len(big):
        return [
            p for i, (a, b) in enumerate(zip(small, big, strict=True)) for p in subset(a, b, f"{path}[{i}]")
        ]
    return [] if small == big else [path]


def test_grafanas_schema_knows_every_field(board: dict[str, Any]) -> None:
    """Decoded by the SDK's models of Grafana's dashboard schema and encoded again, nothing is lost: a
    field the schema does not have would be dropped (the encoding adds the schema's defaults)."""
    register_default_plugins()
    again = json.loads(json.dumps(model.Dashboard.from_json(board), cls=JSONEncoder))
    assert subset(board, again) == []
    # Values the decoding does not check: the variables' kinds and settings, panel and query kinds.
    for variable in board["templating"]["list"]:
        model.VariableType(variable["type"])
        if variable["type"] == "query":
            model.VariableRefresh(variable["refresh"])
            model.VariableSort(variable["sort"])
    known_panels = set(runtime.Runtime().panelcfg_variants)
    for panel in panels(board):
        assert panel["type"] in known_panels, panel["type"]
        for target in panel["targets"]:
            assert target["datasource"]["type"] in runtime.Runtime().dataquery_variants


def test_the_schema_check_can_fail(board: dict[str, Any]) -> None:
    register_default_plugins()
    broken = json.loads(json.dumps(board))
    broken["panels"][1]["legendFormat"] = "{{pod}}"  # a target's field, put on the panel
    again = json.loads(json.dumps(model.Dashboard.from_json(broken), cls=JSONEncoder))
    assert subset(broken, again) == ["/panels[1]/legendFormat"]


def test_it_has_a_stable_uid_of_its_own(board: dict[str, Any]) -> None:
    assert board["uid"] == serving.UID == "triton-operator-serving"
    assert 8 <= len(board["uid"]) <= 40 and re.fullmatch(r"[a-z0-9-]+", board["uid"])
    assert board["title"] and "id" not in board  # Grafana numbers it on import


def test_every_query_uses_the_datasource_variable(board: dict[str, Any]) -> None:
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    for panel in panels(board):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert [target["datasource"] for target in panel["targets"]] == [DATASOURCE] * len(panel["targets"])


def test_namespace_server_and_model_variables(board: dict[str, Any]) -> None:
    queries = variable_queries(board)
    assert list(queries) == ["namespace", "server", "model"]  # each narrows the next
    assert label_values_call(queries["namespace"])[1] == "namespace"
    assert label_values_call(queries["server"]) == (
        'namespace_tritonserver:triton_requests:rate5m{namespace="$namespace"}',
        "tritonserver",
    )
    assert label_values_call(queries["model"])[1] == "model"
    for query in panel_queries(board):
        assert 'namespace="$namespace"' in query.expr and 'tritonserver=~"$server"' in query.expr, query
        if query.panel in MODEL_PANELS:
            assert 'model=~"$model"' in query.expr, query


def test_the_issues_panels_are_there(board: dict[str, Any]) -> None:
    titles = [panel["title"] for panel in panels(board)]
    assert len(titles) == len(set(titles))
    assert set(titles) >= SERVER_PANELS | MODEL_PANELS
    p50_p99 = {
        q.expr.split("{")[0] for q in panel_queries(board) if q.panel == "Latency p50 and p99 by version"
    }
    assert p50_p99 == {
        "namespace_tritonserver_model_version:triton_request_duration_seconds:p50_max",
        "namespace_tritonserver_model_version:triton_request_duration_seconds:p99_max",
    }


def test_panels_read_the_recording_rules(board: dict[str, Any]) -> None:
    """A routed model is counted once only by the rules; raw Triton request series would count it twice."""
    recorded = {
        rule["record"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    for query in panel_queries(board):
        names = series_names(query.expr)
        assert names, query
        assert names <= recorded | RAW_SERIES, (query, names - recorded - RAW_SERIES)
        assert "delta(" not in query.expr and "irate(" not in query.expr
        assert not [name for name in names if name.startswith("nv_inference_")], query
    for variable_query in variable_queries(board).values():
        selector, _ = label_values_call(variable_query)
        assert selector is not None and series_names(selector) <= recorded


def test_series_names_sees_through_promql() -> None:
    expr = (
        'a:b:c{model=~"$model"}\n/ on (namespace, tritonserver, model) group_left\n'
        'sum by (namespace) (up{job="x"}) + rate(nv_inference_count{x="y"}[5m]) / 1e6'
    )
    assert series_names(expr) == {"a:b:c", "up", "nv_inference_count"}


def test_the_layout_fits_grafanas_grid(board: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_the_runbooks_name_panels_that_exist(board: dict[str, Any]) -> None:
    text = RUNBOOKS.read_text()
    cited = re.findall(r"\*\*([^*]+)\*\*\s+\(panel (\d+)\)", text)
    assert len(cited) >= 5
    titles = {panel["id"]: panel["title"] for panel in panels(board)}
    assert [(title, titles.get(int(panel_id))) for title, panel_id in cited] == [
        (title, title) for title, _ in cited
    ]
    assert f"/d/{serving.UID}?viewPanel=" in text


def test_substitute_replaces_every_form_of_variable() -> None:
    values = {"namespace": "serving", "server": "pool", "__rate_interval": "1m"}
    assert (
        substitute(
            'rate(x{namespace="$namespace", s=~"${server}", t="${server:regex}"}[$__rate_interval])', values
        )
        == 'rate(x{namespace="serving", s=~"pool", t="pool"}[1m])'
    )
    with pytest.raises(KeyError):
        substitute('x{model=~"$model"}', values)
    with pytest.raises(ValueError, match="label_values"):
        label_values_call("query_result(up)")
    assert label_values_call("label_values(namespace)") == (None, "namespace")


def test_the_chart_ships_no_dashboard_by_default() -> None:
    assert not [obj for obj in render_chart() if obj["kind"] == "ConfigMap"]


def test_the_chart_ships_the_dashboard_for_grafanas_sidecar() -> None:
    values = {
        "metrics.grafanaDashboard.enabled": "true",
        "metrics.grafanaDashboard.labels.team": "ml-platform",
        "metrics.grafanaDashboard.annotations.grafana_folder": "Triton",
    }
    (config_map,) = [obj for obj in render_chart(*set_args(values)) if obj["kind"] == "ConfigMap"]
    meta = config_map["metadata"]
    assert meta["name"] == "triton-operator-dashboard" and meta["namespace"] == NAMESPACE
    assert meta["labels"]["grafana_dashboard"] == "1"
    assert meta["labels"]["team"] == "ml-platform"
    assert meta["annotations"] == {"grafana_folder": "Triton"}
    (text,) = config_map["data"].values()
    assert json.loads(text) == load_dashboard()


def test_the_dashboard_can_go_to_grafanas_namespace_and_label() -> None:
    values = {
        "metrics.grafanaDashboard.enabled": "true",
        "metrics.grafanaDashboard.namespace": "monitoring",
        "metrics.grafanaDashboard.labels.grafana_dashboard": "triton",
    }
    (config_map,) = [obj for obj in render_chart(*set_args(values)) if obj["kind"] == "ConfigMap"]
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "triton"
