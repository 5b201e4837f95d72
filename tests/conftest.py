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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """test_assignments.py's gradings start with the session, behind the other tests (_grade_ahead):
    its tests go last, when most of them are done."""
    items.sort(key=lambda item: item.path.name == "test_assignments.py")


@pytest.fixture(scope="session", autouse=True)
def _grade_ahead(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    for module in {item.module for item in request.session.items if item.path.name == "test_assignments.py"}:
        module.grade_ahead(request.session.items, tmp_path_factory)


def pytest_sessionfinish() -> None:
    GRADINGS.shutdown()
