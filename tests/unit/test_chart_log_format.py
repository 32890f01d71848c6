"""The chart's `logFormat` value (issue 25): JSON lines for log collectors, text by default; a format the
operator does not write is refused by `helm lint`, naming the key."""

from __future__ import annotations

from typing import Any

from tests.support.chart import CHART, NAMESPACE, helm, render_chart, set_args


def args(objects: list[dict[str, Any]]) -> list[str]:
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def test_text_by_default_json_when_asked() -> None:
    assert not [a for a in args(render_chart()) if a.startswith("--log-format")]
    assert "--log-format=json" in args(render_chart(*set_args({"logFormat": "json"})))


def test_another_format_is_refused_naming_the_key_and_the_choices() -> None:
    done = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *set_args({"logFormat": "yaml"}))
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "logFormat" in said and "text" in said and "json" in said, said
