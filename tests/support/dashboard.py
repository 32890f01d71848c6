"""The chart's Grafana dashboard as tests read it: its queries (panels' and variables'), and those queries
with Grafana's variables replaced by values, ready for Prometheus's HTTP API (Grafana cannot run here)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "triton-operator" / "files" / "grafana-dashboard.json"
# `$name`, `${name}` and `${name:format}` (Grafana's variable syntaxes, `[[name]]` is deprecated).
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
# What a Prometheus query variable's `label_values(selector, label)` (or `label_values(label)`) asks.
LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$", re.DOTALL)


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel."""

    panel: str
    ref: str
    expr: str


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, a collapsed row's panels included."""
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(board: Mapping[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(panel["title"], target["refId"], target["expr"])
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


def variable_queries(board: Mapping[str, Any]) -> dict[str, str]:
    """name -> query of each query variable."""
    return {
        variable["name"]: variable["query"]
        for variable in board.get("templating", {}).get("list", [])
        if variable.get("type") == "query"
    }


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with every variable replaced by its value, as Grafana sends it; KeyError for one not given."""

    def value(match: re.Match[str]) -> str:
        return values[match.group(1) or match.group(2)]

    return VARIABLE.sub(value, expr)


def label_values_call(query: str) -> tuple[str | None, str]:
    """(selector or None, label) of a `label_values(...)` variable query; ValueError for another form."""
    match = LABEL_VALUES.match(query.strip())
    if match is None:
        raise ValueError(f"not a label_values() query: {query}")
    return match.group("selector"), match.group("label")
