"""`make test` in phases (.ci/test.sh loads this plugin with `-p pytest_phases`):

  --phase=early     the tests that need no cluster and no build: marked unit or integration (the root
                    conftest.py: markers follow the folder), except those in a module that builds the
                    sandbox's binaries (it holds an `ensure_*binaries` function: sandbox/config.py's
                    ensure_binaries, gateway.ensure_gateway_binaries); they run while the builds run in the
                    background;
  --phase=late      every other test, once the builds are done: e2e, chaos, and those integration tests.
                    make test runs them in two parts:
  --phase=together  the late tests not marked `alone`: several pytest-xdist workers run them at once, a test
                    module to a worker (`--dist loadfile`: a module's fixtures and its in-order tests stay
                    together), all on one sandbox (tests/e2e/conftest.py shares it, and its operator);
  --phase=alone     the late tests marked `alone`, one at a time with nothing else on the sandbox: they stop,
                    kill or reinstall the shared operator, inject faults, take every GPU, or hold a bound on
                    throughput, latency or log contents that the other tests' load would break.

The phases split the collected tests exactly: early and late, and late into together and alone; each test is
in one, and only one, of each split. Other options (-m, -k, paths) select as usual within each phase.

`--sandbox-lanes=N` (with pytest-xdist's `--dist loadfile`): at most N workers run test modules that use the
shared sandbox (tests/e2e, tests/chaos), one module at a time each: its 2 nodes' 8 GPUs hold about two
modules' servers at once (a module's pool takes up to 3 or 4 while it rolls). Workers beyond N run the
other modules: those that start a sandbox of their own (OWN_SANDBOX) and the integration tests on the
built binaries. The scheduler decides, so no test waits for a lane inside its own time limit.

`--timeline=FILE` writes each test's start and end (epoch seconds; setup to teardown) and where it ran, one
tab-separated line a test, for .ci/report.py's wall-clock column: under xdist the controller writes it.
"""

from __future__ import annotations

import types
from typing import Any

import pytest

PHASES = ("early", "late", "together", "alone")
# e2e modules that start a sandbox of their own and use nothing of the shared one (its GPUs included).
OWN_SANDBOX = frozenset({"tests/e2e/test_bench.py"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--phase",
        choices=PHASES,
        default=None,
        help="make test's phases: early (unit and integration tests that need no build), late (the rest), "
        "late split in two: together (run at once by xdist workers) and alone (those marked alone)",
    )
    parser.addoption(
        "--sandbox-lanes",
        type=int,
        default=None,
        metavar="N",
        help="with xdist's --dist loadfile: at most N workers run modules on the shared sandbox at once",
    )
    parser.addoption(
        "--timeline",
        default=None,
        metavar="FILE",
        help="write each test's start, end and worker to FILE (tab-separated) for .ci/report.py",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "alone: an e2e test that must have the sandbox to itself; make test runs these after the others",
    )
    path = config.getoption("timeline", None)
    if path and not hasattr(config, "workerinput"):  # under xdist the controller sees every report
        config.pluginmanager.register(Timeline(path), "pytest_phases_timeline")


def needs_builds(module: types.ModuleType | None) -> bool:
    """A test module that calls a build entry point (`ensure_binaries`, `ensure_gateway_binaries`, ...)."""
    if module is None:
        return False
    return any(
        isinstance(value, types.FunctionType)
        and value.__name__.startswith("ensure_")
        and value.__name__.endswith("binaries")
        for value in vars(module).values()
    )


def phase_of(item: pytest.Item) -> str:
    """early or late (see the module's docstring)."""
    kind = item.get_closest_marker("unit") or item.get_closest_marker("integration")
    module = getattr(item, "module", None)
    return "early" if kind is not None and not needs_builds(module) else "late"


def in_phase(item: pytest.Item, phase: str) -> bool:
    first = phase_of(item)
    if phase in ("early", "late"):
        return first == phase
    alone = item.get_closest_marker("alone") is not None
    return first == "late" and alone == (phase == "alone")


class Timeline:
    """Each test's first start and last end over its setup, call and teardown reports, and its worker."""

    def __init__(self, path: str):
        self.path = path
        self.spans: dict[str, list[float]] = {}
        self.where: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        start, stop = getattr(report, "start", None), getattr(report, "stop", None)
        if start is None or stop is None:
            return
        span = self.spans.setdefault(report.nodeid, [start, stop])
        span[0], span[1] = min(span[0], start), max(span[1], stop)
        self.where[report.nodeid] = str(getattr(report, "worker_id", "main"))  # xdist: gw0, gw1, ...

    def pytest_sessionfinish(self) -> None:
        with open(self.path, "w") as out:
            for nodeid, (start, stop) in self.spans.items():
                out.write(f"{nodeid}\t{self.where[nodeid]}\t{start:.3f}\t{stop:.3f}\n")


@pytest.hookimpl(trylast=True)  # after the root conftest.py has marked the items by folder
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    phase = config.getoption("phase")
    if phase is None:
        return
    keep = [item for item in items if in_phase(item, phase)]
    if len(keep) < len(items):
        kept = {id(item) for item in keep}
        config.hook.pytest_deselected(items=[item for item in items if id(item) not in kept])
        items[:] = keep


def uses_shared_sandbox(module_path: str) -> bool:
    """A test module (its path from the rootdir) that runs on the session's shared sandbox."""
    return module_path.startswith(("tests/e2e/", "tests/chaos/")) and module_path not in OWN_SANDBOX


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: not there when xdist is not
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    lanes = config.getoption("sandbox_lanes", None)
    if lanes is None or config.getvalue("dist") != "loadfile":
        return None  # xdist's own
    if lanes < 1:
        raise pytest.UsageError(f"--sandbox-lanes must be 1 or more, not {lanes}")
    return sandbox_lanes_scheduler(config, log, lanes)


def sandbox_lanes_scheduler(config: pytest.Config, log: Any, lanes: int) -> Any:
    """xdist's loadfile scheduling, where the first `lanes` workers take the modules on the shared sandbox
    and the others take the rest; with no other worker (left), any worker takes anything."""
    from xdist.scheduler import LoadFileScheduling  # type: ignore[import-untyped]  # only under xdist

    class SandboxLanes(LoadFileScheduling):  # type: ignore[misc]
        def _lane_nodes(self) -> list[Any]:
            return sorted(self.nodes, key=lambda n: str(n.gateway.id))[:lanes]

        def _may_take(self, node: Any, scope: str) -> bool:
            lane_nodes = self._lane_nodes()
            if len(self.nodes) <= len(lane_nodes):
                return True
            return (node in lane_nodes) == uses_shared_sandbox(scope)

        def _assign_work_unit(self, node: Any) -> None:
            scope = next((s for s in self.workqueue if self._may_take(node, s)), None)
            if scope is None:
                return
            work_unit = self.workqueue.pop(scope)
            self.assigned_work.setdefault(node, {})[scope] = work_unit
            collection = self.registered_collections[node]
            node.send_runtest_some([collection.index(n) for n, done in work_unit.items() if not done])

        def _reschedule(self, node: Any) -> None:
            if node.shutting_down:
                return
            if not any(self._may_take(node, s) for s in self.workqueue):
                node.shutdown()  # it finishes what it has, then leaves (and its role to the others)
                return
            if self._pending_of(self.assigned_work[node]) > 2:  # xdist's low-water mark
                return
            self._assign_work_unit(node)

    return SandboxLanes(config, log)
