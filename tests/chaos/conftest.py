"""The chaos tests run on the e2e sandbox with the e2e suite's fixtures.

tests/e2e/conftest.py's fixtures are visible only under tests/e2e, so this folder gets its own
instances of the same session fixtures: `sandbox` and `crds` are idempotent (up reuses a running
sandbox, down a stopped one is a no-op); `operator` is the same chart install, whose teardown
uninstalls only what is still installed (the e2e suite's own instance, set up later, reinstalls the
release and uninstalls it first)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Sandbox, crds, sandbox
from tests.e2e.incluster import ChartOperator
from tests.support.chart import helm_binary

__all__ = ["crds", "operator", "sandbox"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: seeded fault injection on the sandbox (make chaos SEED=<n> KILLS=<k>)"
    )


@pytest.fixture(scope="session")
def operator(sandbox: Sandbox, crds: None) -> Iterator[ChartOperator]:
    installed = ChartOperator(sandbox, helm_binary())
    installed.start()
    yield installed
    try:
        installed.run_helm("status", installed.release, timeout_s=30)
    except Exception:  # uninstalled already (or the sandbox is gone): nothing of ours is left
        return
    installed.uninstall()
