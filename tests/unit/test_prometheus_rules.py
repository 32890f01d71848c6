"""The Prometheus rules (charts/triton-operator/files/prometheus-rules.yaml): promtool accepts them, its unit
tests (tests/prometheus/rules-test.yaml) see every alert fire and stay quiet, every alert carries what an
SRE needs and a runbook that exists, and the two shipped copies (chart PrometheusRule, plain file) agree.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART, render_chart, set_args
from tests.support.promtool import promtool

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RULES = CHART / "files" / "prometheus-rules.yaml"
PLAIN_RULES = ROOT / "manifests" / "prometheus" / "triton-operator-rules.yaml"
RULES_TEST = ROOT / "tests" / "prometheus" / "rules-test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/tritonoperator/triton-operator/blob/main/docs/runbooks.md#"
# level:metric:operations (Prometheus's naming practice for recording rules).
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")


def groups() -> list[dict[str, Any]]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return list(loaded["groups"])


def rules(key: str) -> list[dict[str, Any]]:
    return [rule for group in groups() for rule in group["rules"] if key in rule]


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(RULES_TEST.relative_to(ROOT)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A rule file whose failure-ratio limit moved (5 % -> 50 %) fails the tests: they measure something."""
    broken = tmp_path / "prometheus-rules.yaml"
    text = RULES.read_text().replace("ratio_rate5m > 0.05", "ratio_rate5m > 0.5")
    assert text != RULES.read_text()
    broken.write_text(text)
    tests = yaml.safe_load(RULES_TEST.read_text())
    tests["rule_files"] = [str(broken)]
    (tmp_path / "rules-test.yaml").write_text(yaml.safe_dump(tests))
    done = promtool("test", "rules", "rules-test.yaml", cwd=tmp_path)
    assert done.returncode != 0
    assert "TritonModelFailureRatioHigh" in done.stdout + done.stderr


def test_recording_rules_are_named_level_metric_operations() -> None:
    names = [rule["record"] for rule in rules("record")]
    assert names and all(RECORD_NAME.match(name) for name in names), names
    assert len(names) == len(set(names))


def test_counters_are_rated_never_deltaed() -> None:
    """`delta()` is for gauges; every counter of Triton and the operator goes through rate()."""
    for rule in rules("record") + rules("alert"):
        assert "delta(" not in rule["expr"] and "irate(" not in rule["expr"], rule


@pytest.mark.parametrize("alert", [rule["alert"] for rule in rules("alert")])
def test_alert_has_what_an_sre_needs(alert: str) -> None:
    rule = next(rule for rule in rules("alert") if rule["alert"] == alert)
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert re.fullmatch(r"\d+[smh]", rule["for"]), "every alert holds for a while before it fires"
    annotations = rule["annotations"]
    assert annotations["summary"] and annotations["description"]
    # What it is about and the numbers: the measured $value, or the version and phase a rollout's labels
    # carry (operator-down has neither: its numbers are its 5 minutes).
    assert "{{ $labels." in annotations["description"] or alert == "TritonOperatorDown"
    assert annotations["runbook_url"] == RUNBOOK_BASE + alert.lower()


def test_every_runbook_exists() -> None:
    headings = {
        line.removeprefix("## ").strip().lower()
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    missing = [rule["alert"] for rule in rules("alert") if rule["alert"].lower() not in headings]
    assert not missing, f"docs/runbooks.md has no section for {missing}"


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in rules("alert")}
    assert alerts - fired == set(), "alerts never seen firing"
    assert alerts - quiet == set(), "alerts never seen quiet"


def test_the_plain_rules_file_is_the_chart_one() -> None:
    if os.environ.get("UPDATE_MANIFESTS") == "1":
        PLAIN_RULES.parent.mkdir(parents=True, exist_ok=True)
        PLAIN_RULES.write_text(RULES.read_text())
    assert PLAIN_RULES.read_text() == RULES.read_text(), (
        "manifests/prometheus/triton-operator-rules.yaml differs from the chart's "
        "files/prometheus-rules.yaml: run `UPDATE_MANIFESTS=1 pytest tests/unit/test_prometheus_rules.py`"
    )


def test_chart_ships_no_prometheus_rule_by_default() -> None:
    assert not [obj for obj in render_chart() if obj["kind"] == "PrometheusRule"]


def test_chart_prometheus_rule_carries_the_rules_and_labels() -> None:
    objects = render_chart(
        "--set", "metrics.prometheusRule.enabled=true", "--set", "metrics.prometheusRule.labels.release=prom"
    )
    (rule,) = [obj for obj in objects if obj["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"]["groups"] == groups()


def test_alert_for_overrides_each_alerts_hold_and_what_it_says(tmp_path: Path) -> None:
    """metrics.prometheusRule.alertFor: every alert can hold for another duration; its summary and
    description then name that one, never the rules' own; the rest of the rules is unchanged, and
    promtool accepts the result."""
    own = {rule["alert"]: rule for rule in rules("alert")}
    holds = {alert: f"{index + 2}m30s" for index, alert in enumerate(sorted(own))}
    values = {f"metrics.prometheusRule.alertFor.{alert}": hold for alert, hold in holds.items()}
    objects = render_chart("--set", "metrics.prometheusRule.enabled=true", *set_args(values))
    (rule,) = [obj for obj in objects if obj["kind"] == "PrometheusRule"]
    rendered = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r}
    for alert, hold in holds.items():
        assert rendered[alert]["for"] == hold
        words = f"for {own[alert]['for'].removesuffix('m')} minutes"
        said = rendered[alert]["annotations"]["summary"] + rendered[alert]["annotations"]["description"]
        assert words not in said, (alert, said)
        if words in own[alert]["annotations"]["description"]:
            assert f"for {hold}" in said, (alert, said)
        assert {**rendered[alert], "for": own[alert]["for"], "annotations": {}} == {
            **own[alert],
            "annotations": {},
        }
    assert [r for group in rule["spec"]["groups"] for r in group["rules"] if "record" in r] == rules("record")
    checked = tmp_path / "rules.yaml"
    checked.write_text(yaml.safe_dump(rule["spec"]))
    done = promtool("check", "rules", str(checked))
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_for_says_a_short_hold_in_words() -> None:
    objects = render_chart(
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.alertFor.TritonOperatorDown=1m",
        "--set",
        "metrics.prometheusRule.alertFor.TritonModelFailureRatioHigh=90s",
    )
    (rule,) = [obj for obj in objects if obj["kind"] == "PrometheusRule"]
    rendered = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r}
    assert rendered["TritonOperatorDown"]["annotations"]["summary"] == (
        "No triton-operator has been scraped for 1 minute."
    )
    assert rendered["TritonModelFailureRatioHigh"]["annotations"]["description"].endswith(
        "and more than 5 % over the last minute, for 90 seconds."
    )


def test_the_schema_knows_every_alert_by_name() -> None:
    """alertFor refuses names that are no alert (a typo would silently change nothing)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    alert_for = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]["alertFor"]
    assert alert_for["additionalProperties"] is False
    assert set(alert_for["properties"]) == {rule["alert"] for rule in rules("alert")}
