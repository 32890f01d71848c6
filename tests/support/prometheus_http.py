"""Prometheus's HTTP API as the live tests ask it: an instant query, a range query (what a Grafana panel
sends), and a label's values (what a Grafana `label_values()` variable sends)."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import Any


def api(prometheus: str, path: str, params: list[tuple[str, str]]) -> Any:
    """GET `path` of Prometheus's API; asserts status success and returns `data`."""
    url = f"{prometheus}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        answer = json.load(resp)
    assert answer["status"] == "success", answer
    return answer["data"]


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result (a vector's samples)."""
    result: list[dict[str, Any]] = api(prometheus, "/api/v1/query", [("query", expr)])["result"]
    return result


def query_range(prometheus: str, expr: str, seconds: float, step: str = "5s") -> list[dict[str, Any]]:
    """A range query over the last `seconds` (a matrix's series)."""
    end = time.time()
    params = [("query", expr), ("start", f"{end - seconds:.3f}"), ("end", f"{end:.3f}"), ("step", step)]
    result: list[dict[str, Any]] = api(prometheus, "/api/v1/query_range", params)["result"]
    return result


def label_values(prometheus: str, label: str, selector: str | None, seconds: float) -> list[str]:
    """The values `label` takes over the last `seconds`, among the series `selector` matches."""
    end = time.time()
    params = [("start", f"{end - seconds:.3f}"), ("end", f"{end:.3f}")]
    if selector is not None:
        params.append(("match[]", selector))
    values: list[str] = api(prometheus, f"/api/v1/label/{urllib.parse.quote(label)}/values", params)
    return values
