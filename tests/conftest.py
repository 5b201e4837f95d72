"""The kit's own tests: tools a test requires (skipped where missing, failed under .ci/run), and shared
gradings that end with the session."""

import os

import pytest

from tests.kit import GRADINGS, STRICT_ENV


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires(available, reason): a tool the test needs (tests.kit.requires)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires"):
        if not mark.kwargs["available"]:
            if os.environ.get(STRICT_ENV) == "1":
                pytest.fail(f"{mark.kwargs['reason']} (${STRICT_ENV}=1: required, not skipped)", pytrace=False)
            pytest.skip(mark.kwargs["reason"])


def pytest_sessionfinish() -> None:
    GRADINGS.shutdown()
