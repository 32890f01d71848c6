"""make test's late tests in two parts (.ci/pytest_phases.py): `together` (run at once by xdist workers) and
`alone` (marked alone), splitting the late phase exactly; each test's span in a timeline; and .ci/report.py's
wall-clock time per group from the timelines, where tests that ran at once count once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".ci"))
import report  # noqa: E402  (.ci/report.py)

TREE = {
    "unit/test_pure.py": "def test_a(): pass\n",
    "integration/test_on_binaries.py": "def ensure_binaries(): pass\ndef test_d(): pass\n",
    "e2e/test_cluster.py": ("import pytest\ndef test_f(): pass\n@pytest.mark.alone\ndef test_h(): pass\n"),
    "e2e/test_faults.py": "import pytest\npytestmark = pytest.mark.alone\ndef test_g(): pass\n",
}


def write_tree(root: Path) -> None:
    (root / "tests").mkdir()
    shutil.copy(ROOT / "conftest.py", root / "conftest.py")  # markers follow the folder
    for rel, text in TREE.items():
        path = root / "tests" / rel
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    (root / "pytest.ini").write_text(
        "[pytest]\naddopts = --strict-markers\nmarkers =\n  unit\n  integration\n  e2e\n"
    )


PLUGIN = ("-p", "pytest_phases")


def pytest_in(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PLUGIN, "tests", *args],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(ROOT / ".ci"), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def collected(root: Path, *args: str) -> list[str]:
    done = pytest_in(root, "--collect-only", *args)
    assert done.returncode in (0, 5), done.stdout + done.stderr
    return sorted(line.split("::")[-1] for line in done.stdout.splitlines() if "::" in line)


def test_together_and_alone_split_the_late_phase_exactly(tmp_path: Path) -> None:
    write_tree(tmp_path)
    late = collected(tmp_path, "--phase=late")
    together = collected(tmp_path, "--phase=together")
    alone = collected(tmp_path, "--phase=alone")
    assert late == ["test_d", "test_f", "test_g", "test_h"]
    assert together == ["test_d", "test_f"]
    assert alone == ["test_g", "test_h"]  # by the module's pytestmark and by the test's own marker
    assert sorted(together + alone) == late
    assert collected(tmp_path, "--phase=early") == ["test_a"]  # never alone: no cluster
    assert collected(tmp_path, "--phase=alone", "-k", "test_h") == ["test_h"]


def test_the_timeline_has_each_test_once_with_its_span(tmp_path: Path) -> None:
    write_tree(tmp_path)
    out = tmp_path / "timeline.tsv"
    done = pytest_in(tmp_path, "--phase=late", f"--timeline={out}")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert sorted(r[0].split("::")[-1] for r in rows) == ["test_d", "test_f", "test_g", "test_h"]
    for nodeid, worker, start, end in rows:
        assert nodeid.startswith("tests/") and worker == "main"
        assert 0 <= float(end) - float(start) < 60


@pytest.mark.parametrize(
    ("spans", "seconds"),
    [
        ([], 0.0),
        ([(0, 10)], 10.0),
        ([(0, 10), (20, 25)], 15.0),  # a gap is not counted
        ([(0, 10), (5, 15)], 15.0),  # an overlap is counted once
        ([(0, 30), (5, 10), (12, 20)], 30.0),  # inside another
        ([(5, 15), (0, 10), (14, 16)], 16.0),  # any order
    ],
)
def test_covered_counts_overlapping_spans_once(spans: list[tuple[float, float]], seconds: float) -> None:
    assert report.covered(spans) == pytest.approx(seconds)


def test_the_report_gives_each_groups_wall_clock_time_beside_the_sum(tmp_path: Path) -> None:
    (tmp_path / "steps.tsv").write_text("make test\t0\t100.0\n")
    (tmp_path / "junit-together.xml").write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.e2e.test_x" name="test_a" time="60.0"/>'
        '<testcase classname="tests.e2e.test_y" name="test_b" time="50.0"/>'
        '<testcase classname="tests.chaos.test_chaos" name="test_c" time="30.0"/>'
        "</testsuite></testsuites>"
    )
    (tmp_path / "timeline-together.tsv").write_text(
        "tests/e2e/test_x.py::test_a\tgw0\t1000.0\t1060.0\ntests/e2e/test_y.py::test_b\tgw1\t1010.0\t1060.0\n"
    )
    (tmp_path / "timeline-alone.tsv").write_text("tests/chaos/test_chaos.py::test_c\tmain\t1100.0\t1130.0\n")
    text = report.render(tmp_path)
    assert re.search(r"  e2e +2 tests +110\.0 s", text), text  # the sum of the tests' own times
    wall = text[text.index("by the wall clock") :].splitlines()[1:3]
    assert [line.split() for line in wall] == [["e2e", "60.0", "s"], ["chaos", "30.0", "s"]]


def test_the_report_without_timelines_has_no_wall_clock_part(tmp_path: Path) -> None:
    (tmp_path / "junit-late.xml").write_text(
        '<testsuites><testsuite name="pytest"><testcase classname="tests.e2e.test_x" name="test_a" time="1"/>'
        "</testsuite></testsuites>"
    )
    assert "wall clock" not in report.render(tmp_path)


SPAN_TEST = (
    "import os, time\n"
    "def record():\n"
    "    start = time.time()\n"
    "    time.sleep(0.6)\n"
    "    with open(os.path.join(os.environ['SPANS'], str(os.getpid())), 'a') as out:\n"
    "        out.write(f'{__name__} {start} {time.time()}\\n')\n"
    "def test_one(): record()\n"
    "def test_two(): record()\n"
)


def test_the_scheduler_keeps_shared_sandbox_modules_to_their_lanes(tmp_path: Path) -> None:
    """3 workers, 2 lanes: never more than 2 workers in modules on the shared sandbox at once, and the
    module with a sandbox of its own (the bench's) on the third."""
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    e2e = tmp_path / "tests" / "e2e"
    e2e.mkdir()
    for name in ("test_a", "test_b", "test_c", "test_d", "test_bench"):
        (e2e / f"{name}.py").write_text(SPAN_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n  unit\n  integration\n  e2e\n")
    spans = tmp_path / "spans"
    spans.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "xdist.plugin", *PLUGIN,
         "--phase=together", "-n", "3", "--dist", "loadfile", "--sandbox-lanes=2", "tests"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / ".ci"), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
             "SPANS": str(spans)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    runs = [(pid.name, *line.split()) for pid in spans.iterdir() for line in pid.read_text().splitlines()]
    assert len(runs) == 10
    shared = [(pid, float(start), float(end)) for pid, module, start, end in runs if module != "test_bench"]
    bench_workers = {pid for pid, module, _, _ in runs if module == "test_bench"}
    assert len({pid for pid, _, _ in shared}) == 2, "both lanes used"
    assert not bench_workers & {pid for pid, _, _ in shared}, "the bench ran beside the lanes"
    most = max(sum(1 for _, s, e in shared if s <= start < e) for _, start, _ in shared)
    assert most <= 2, f"{most} shared-sandbox tests at once"
