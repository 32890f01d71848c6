"""The sandbox tests that need a running sandbox use the e2e tests' shared one (started on first use, kept
while any pytest process uses it; E2E_SANDBOX names it, SANDBOX_KEEP=1 keeps it: tests/e2e/conftest.py)."""

from tests.e2e.conftest import sandbox  # noqa: F401  # a fixture, found here by pytest
