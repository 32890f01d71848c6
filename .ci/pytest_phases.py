"""`make test` in two phases (.ci/test.sh loads this plugin with `-p pytest_phases`):

  --phase=early   the tests that need no cluster and no build: marked unit or integration (the root conftest.py:
                  markers follow the folder), except those in a module that builds the sandbox's binaries
                  (it holds an `ensure_*binaries` function: sandbox/config.py's ensure_binaries,
                  gateway.ensure_gateway_binaries); they run while the builds run in the background;
  --phase=late    every other test, once the builds are done: e2e, chaos, and those integration tests.

The two phases split the collected tests exactly in two: each test is in one, and only one. Other options
(-m, -k, paths) select as usual within each phase.
"""

from __future__ import annotations

import types

import pytest

PHASES = ("early", "late")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--phase",
        choices=PHASES,
        default=None,
        help="make test's phases: early (unit and integration tests that need no build), late (the rest)",
    )


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
    kind = item.get_closest_marker("unit") or item.get_closest_marker("integration")
    module = getattr(item, "module", None)
    return "early" if kind is not None and not needs_builds(module) else "late"


@pytest.hookimpl(trylast=True)  # after the root conftest.py has marked the items by folder
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    phase = config.getoption("phase")
    if phase is None:
        return
    keep = [item for item in items if phase_of(item) == phase]
    if len(keep) < len(items):
        kept = {id(item) for item in keep}
        config.hook.pytest_deselected(items=[item for item in items if id(item) not in kept])
        items[:] = keep
