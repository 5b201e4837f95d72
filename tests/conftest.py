"""The kit's own tests: shared gradings end with the session."""

from tests.kit import GRADINGS


def pytest_sessionfinish() -> None:
    GRADINGS.shutdown()
