"""The Grafana dashboard of the Triton pools and models triton-operator runs (issue 20), built with Grafana's
own grafana-foundation-sdk (its models are generated from Grafana's dashboard schema).

`python -m dashboards.serving` writes charts/triton-operator/files/grafana-dashboard.json, which the chart
ships in a ConfigMap labelled `grafana_dashboard: "1"` (metrics.grafanaDashboard.enabled);
tests/unit/test_grafana_dashboard.py checks that the committed file is this module's output, and
tests/integration/test_prometheus_live.py runs every query on a real Prometheus scraping a real Triton.

Panels read the recording rules of charts/triton-operator/files/prometheus-rules.yaml wherever one exists,
not Triton's raw series: a routed model (a canary or an A/B test) is two models in Triton, its router and
`<name>~versions`, and the raw counters count each request twice and miss the failures only the router
sees (a python model's error response is a success to nv_inference_request_failure). The rules count each
request once, rate() the counters and sum numerators and denominators before dividing; a panel that did
its own math would disagree with the alerts. Raw series appear only where no rule exists: Triton's GPU
gauges and the scrape's `up` (gauges, nothing to rate or count twice), and the operator's own gauges.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "charts" / "triton-operator" / "files" / "grafana-dashboard.json"
# Stable and of its own (8-40 characters): importing or upgrading replaces this dashboard, never another.
UID = "triton-operator-serving"
TITLE = "Triton servers and models (triton-operator)"
# Every query goes to the data source the `datasource` variable picks.
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# The variables' selections: one namespace; servers and models as regexes (multi-value, All).
SERVERS = 'namespace="$namespace", tritonserver=~"$server"'
MODELS = f'{SERVERS}, model=~"$model"'
VERSION_LEGEND = "{{model}} v{{version}} ({{tritonserver}})"
WIDTH = 8  # three panels a row on Grafana's 24-column grid
HEIGHT = 8


def _query(ref: str, expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().ref_id(ref).expr(expr).legend_format(legend).range().datasource(DATASOURCE)


def _timeseries(
    panel_id: int, title: str, description: str, unit: str, queries: list[tuple[str, str]]
) -> timeseries.Panel:
    """A time series panel of (expr, legend) queries."""
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .height(HEIGHT)
        .span(WIDTH)
        .legend(
            common_builders.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST)
        )
    )
    for index, (expr, legend) in enumerate(queries):
        panel.with_target(_query(chr(ord("A") + index), expr, legend))
    return panel


def _variables() -> list[dashboard.QueryVariable | dashboard.DatasourceVariable]:
    def query_variable(name: str, label: str, expr: str, *, multi: bool) -> dashboard.QueryVariable:
        variable = (
            dashboard.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(expr)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
        )
        if multi:
            variable.multi(True).include_all(True)
        return variable

    return [
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        # From the recording rules: a server or model with none of its series recorded has nothing to show.
        query_variable(
            "namespace",
            "Namespace",
            "label_values(namespace_tritonserver:triton_requests:rate5m, namespace)",
            multi=False,
        ),
        query_variable(
            "server",
            "TritonServer",
            "label_values("
            'namespace_tritonserver:triton_requests:rate5m{namespace="$namespace"}, tritonserver)',
            multi=True,
        ),
        query_variable(
            "model",
            "Model",
            f"label_values(namespace_tritonserver_model:triton_requests:rate5m{{{SERVERS}}}, model)",
            multi=True,
        ),
    ]


def _server_panels() -> list[stat.Panel | timeseries.Panel]:
    ready = (
        stat.Panel()
        .id(2)
        .title("Replicas")
        .description(
            "Ready replicas (status.readyReplicas, from the operator's own gauges), the replicas the spec "
            "asks for, and the Triton pods Prometheus scrapes (`up`). Fewer ready than wanted for 10 "
            "minutes: TritonServerReplicasUnavailable."
        )
        .datasource(DATASOURCE)
        .height(HEIGHT)
        .span(WIDTH)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .unit("none")
        .decimals(0)
        .with_target(
            _query(
                "A",
                f"triton_operator_tritonserver_status_ready_replicas{{{SERVERS}}}",
                "{{tritonserver}} ready",
            )
        )
        .with_target(
            _query("B", f"triton_operator_tritonserver_spec_replicas{{{SERVERS}}}", "{{tritonserver}} wanted")
        )
        .with_target(
            _query("C", f"sum by (namespace, tritonserver) (up{{{SERVERS}}})", "{{tritonserver}} scraped")
        )
    )
    return [
        ready,
        _timeseries(
            3,
            "Requests per second",
            "Client requests per second, successful or failed, each counted once (a routed model's by its "
            "router).",
            "reqps",
            [(f"namespace_tritonserver:triton_requests:rate5m{{{SERVERS}}}", "{{tritonserver}}")],
        ),
        _timeseries(
            4,
            "Failed requests",
            "Failed requests per second over 5 minutes, the failures a routed model's router saw included "
            "(Triton's own counter misses a python model's error responses).",
            "reqps",
            [
                (
                    "sum by (namespace, tritonserver) "
                    f"(namespace_tritonserver_model_version:triton_request_failure:rate5m{{{SERVERS}}})",
                    "{{tritonserver}} failed/s",
                ),
            ],
        ),
        _timeseries(
            5,
            "Failure ratio",
            "Failed requests over all requests, both summed over the server's models before dividing.",
            "percentunit",
            [
                (
                    f"namespace_tritonserver:triton_request_failure:ratio_rate5m{{{SERVERS}}}",
                    "{{tritonserver}}",
                )
            ],
        ),
        _timeseries(
            6,
            "Queue time per request",
            "Mean time a request waited in Triton's queue over 5 minutes: the time summed over the server's "
            "models, divided by their requests summed.",
            "s",
            [
                (
                    f"namespace_tritonserver:triton_queue_duration_seconds:mean5m{{{SERVERS}}}",
                    "{{tritonserver}} queue time",
                )
            ],
        ),
        _timeseries(
            7,
            "Pending requests",
            "Requests waiting in Triton's queues now (a gauge: it moves before the queue time, which counts "
            "only completed requests).",
            "short",
            [(f"namespace_tritonserver:triton_pending_requests:sum{{{SERVERS}}}", "{{tritonserver}}")],
        ),
        # No rule records Triton's GPU gauges: nothing to rate or count twice, so the raw series per pod.
        _timeseries(
            8,
            "GPU utilization",
            "Triton's own nv_gpu_utilization per pod and GPU (needs Triton's GPU metrics, on by default on a "
            "GPU node).",
            "percentunit",
            [(f"nv_gpu_utilization{{{SERVERS}}}", "{{pod}} {{gpu_uuid}}")],
        ),
        _timeseries(
            9,
            "GPU memory",
            "GPU memory used and in total per pod and GPU, as Triton reports it.",
            "bytes",
            [
                (f"nv_gpu_memory_used_bytes{{{SERVERS}}}", "{{pod}} {{gpu_uuid}} used"),
                (f"nv_gpu_memory_total_bytes{{{SERVERS}}}", "{{pod}} {{gpu_uuid}} total"),
            ],
        ),
    ]


def _model_panels() -> list[timeseries.Panel]:
    return [
        _timeseries(
            11,
            "Requests per second by version",
            "Client requests per second to each model version, each counted once: a canary's or A/B test's "
            "by the version its router sent them to.",
            "reqps",
            [(f"namespace_tritonserver_model_version:triton_requests:rate5m{{{MODELS}}}", VERSION_LEGEND)],
        ),
        _timeseries(
            12,
            "Failure ratio by version",
            "Failed requests over all requests of each version over 5 minutes (the router's failures "
            "included). Over 5 % for 5 minutes: TritonModelFailureRatioHigh.",
            "percentunit",
            [
                (
                    f"namespace_tritonserver_model_version:triton_request_failure:ratio_rate5m{{{MODELS}}}",
                    VERSION_LEGEND,
                )
            ],
        ),
        _timeseries(
            13,
            "Latency p50 and p99 by version",
            "Request latency quantiles from Triton's summaries (tritonserver --metrics-config "
            "summary_latencies=true, which the operator sets), the worst pod's; quantiles do not add up "
            "across pods.",
            "s",
            [
                (
                    f"namespace_tritonserver_model_version:triton_request_duration_seconds:p50_max{{{MODELS}}}",
                    f"p50 {VERSION_LEGEND}",
                ),
                (
                    f"namespace_tritonserver_model_version:triton_request_duration_seconds:p99_max{{{MODELS}}}",
                    f"p99 {VERSION_LEGEND}",
                ),
            ],
        ),
        _timeseries(
            14,
            "Queue time per request by version",
            "Mean time a request to each version waited in Triton's queue over 5 minutes. Over 100 ms for "
            "10 minutes: TritonModelQueueTimeHigh.",
            "s",
            [
                (
                    f"namespace_tritonserver_model_version:triton_queue_duration_seconds:mean5m{{{MODELS}}}",
                    VERSION_LEGEND,
                )
            ],
        ),
        _timeseries(
            15,
            "Observed traffic share by version",
            "Each version's share of its model's requests on the server over 5 minutes: during a canary, "
            "what the router really sent each version (compare status.traffic's observed share).",
            "percentunit",
            [
                (
                    f"namespace_tritonserver_model_version:triton_requests:rate5m{{{MODELS}}}\n"
                    "/ on (namespace, tritonserver, model) group_left\n"
                    f"namespace_tritonserver_model:triton_requests:rate5m{{{MODELS}}}",
                    VERSION_LEGEND,
                )
            ],
        ),
        _timeseries(
            16,
            "Pending requests by version",
            "Requests waiting in Triton's queue for each version now.",
            "short",
            [
                (
                    f"namespace_tritonserver_model_version:triton_pending_requests:sum{{{MODELS}}}",
                    VERSION_LEGEND,
                )
            ],
        ),
    ]


def build() -> model.Dashboard:
    """The dashboard, as the SDK's model of Grafana's dashboard schema."""
    board = (
        dashboard.Dashboard(TITLE)
        .uid(UID)
        .description(
            "Triton pools (TritonServer) and models (TritonModel) run by triton-operator: the recording "
            "rules of its PrometheusRule, Triton's GPU gauges and the operator's own gauges."
        )
        .tags(["triton", "triton-operator", "inference"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .variables(list(_variables()))
        .link(
            dashboard.DashboardLink("Runbooks")
            .type(model.DashboardLinkType.LINK)
            .url("https://github.com/tritonoperator/triton-operator/blob/main/docs/runbooks.md")
            .target_blank(True)
        )
        .with_row(dashboard.Row("Servers").id(1))
    )
    for panel in _server_panels():
        board.with_panel(panel)
    board.with_row(dashboard.Row("Models and versions").id(10))
    for panel in _model_panels():
        board.with_panel(panel)
    return board.build()


def render() -> str:
    """The dashboard's JSON as committed: sorted keys, two-space indent, a final newline."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    """Write the dashboard's JSON to the chart (or `--check`: exit 1 when the committed file differs)."""
    text = render()
    if argv[1:] == ["--check"]:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is not what dashboards/serving.py generates", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(OUTPUT.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
