"""The table at the end of .ci/run: where the time went, pass or fail.

Reads what the steps left in CI_REPORT_DIR: steps.tsv (name, exit status, seconds: .ci/run's steps and
.ci/test.sh's phases), builds.tsv (name, cached|built|failed, seconds: .ci/builds.sh), the JUnit XML of
each pytest run (junit-*.xml): each test group's time and the 15 slowest tests; and each run's timeline
(timeline-*.tsv: node id, worker, start, end; .ci/pytest_phases.py): each group's wall-clock time, which is
less than the sum of its tests' times where tests ran at once.

usage: python3 .ci/report.py CI_REPORT_DIR
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

SLOWEST = 15
OUTER = ("prerequisites", "venv", "make ")  # .ci/run's own steps; the others are make test's parts


@dataclass(frozen=True)
class Case:
    test_id: str
    group: str
    seconds: float
    outcome: str  # passed, failed, skipped


def read_tsv(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


def test_id(classname: str, name: str) -> str:
    """tests.unit.test_x.TestY + test_z -> tests/unit/test_x.py::TestY::test_z"""
    parts = classname.split(".")
    for i, part in enumerate(parts):
        if part.startswith("test_"):
            return "::".join(["/".join(parts[: i + 1]) + ".py", *parts[i + 1 :], name])
    return f"{classname}::{name}"


def read_junit(path: Path) -> list[Case]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return []
    cases = []
    for case in root.iter("testcase"):
        classname = case.get("classname", "")
        parts = classname.split(".")
        group = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        seconds = float(case.get("time") or 0)
        cases.append(Case(test_id(classname, case.get("name", "")), group, seconds, outcome))
    return cases


def group_of(nodeid: str) -> str:
    """tests/e2e/test_x.py::test_y -> e2e (as read_junit groups a classname)."""
    parts = nodeid.split("::")[0].split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"


def read_timelines(report_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Each group's tests' (start, end) spans, from every timeline-*.tsv."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for path in sorted(report_dir.glob("timeline-*.tsv")):
        for fields in read_tsv(path):
            if len(fields) != 4:
                continue
            try:
                start, end = float(fields[2]), float(fields[3])
            except ValueError:
                continue
            spans.setdefault(group_of(fields[0]), []).append((start, end))
    return spans


def covered(spans: list[tuple[float, float]]) -> float:
    """Seconds during which at least one span was open (overlaps counted once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def status(code: str) -> str:
    return {"0": "ok", "5": "no tests"}.get(code, f"FAILED ({code})")


def render(report_dir: Path) -> str:
    steps = read_tsv(report_dir / "steps.tsv")
    builds = read_tsv(report_dir / "builds.tsv")
    cases = [c for p in sorted(report_dir.glob("junit-*.xml")) for c in read_junit(p)]
    width = 62
    out = ["", "=" * 30 + " .ci/run: where the time went " + "=" * 30]
    out.append(f"{'step':<{width}} {'result':<12} {'seconds':>9}")

    def row(name: str, result: str, seconds: str) -> None:
        out.append(f"{name:<{width}} {result:<12} {float(seconds):>9.1f}")

    def test_parts(indent: str) -> None:  # make test's builds (in the background) and phases
        for name, state, seconds in builds:
            row(
                f"{indent}build {name} ({state}; in the background)",
                "FAILED" if state == "failed" else "ok",
                seconds,
            )
        for name, code, seconds in inner:
            row(f"{indent}{name}", status(code), seconds)

    inner = [s for s in steps if not s[0].startswith(OUTER)]
    for name, code, seconds in (s for s in steps if s[0].startswith(OUTER)):
        row(name, status(code), seconds)
        if name == "make test":
            test_parts("  ")
    if not any(s[0] == "make test" for s in steps):  # cut short before make test ended
        test_parts("")
    if cases:
        out.append("")
        out.append("test groups (the sum of their tests' own times, setup and teardown included):")
        groups: dict[str, list[Case]] = {}
        for c in cases:
            groups.setdefault(c.group, []).append(c)
        for group, members in sorted(groups.items(), key=lambda kv: -sum(c.seconds for c in kv[1])):
            failed = sum(c.outcome == "failed" for c in members)
            skipped = sum(c.outcome == "skipped" for c in members)
            note = ", ".join([f"{failed} failed"] * bool(failed) + [f"{skipped} skipped"] * bool(skipped))
            total = sum(c.seconds for c in members)
            tests = "test " if len(members) == 1 else "tests"
            out.append(f"  {group:<14} {len(members):>5} {tests} {total:>9.1f} s  {note}".rstrip())
        timelines = read_timelines(report_dir)
        if timelines:
            out.append("")
            out.append("test groups by the wall clock (while any of their tests ran; tests ran at once):")
            for group, spans in sorted(timelines.items(), key=lambda kv: -covered(kv[1])):
                out.append(f"  {group:<14} {covered(spans):>21.1f} s")
        out.append("")
        out.append(f"the {min(SLOWEST, len(cases))} slowest tests:")
        for c in sorted(cases, key=lambda c: -c.seconds)[:SLOWEST]:
            mark = "" if c.outcome == "passed" else f"  ({c.outcome})"
            out.append(f"  {c.seconds:>8.1f} s  {c.test_id}{mark}")
    out.append(f"(steps, build logs, JUnit XML: {report_dir})")
    out.append("=" * 90)
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(render(Path(argv[1])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
