"""The README's quickstart is what CI runs, and what it promises exists."""

import re
from types import SimpleNamespace

import pytest

from tests.conftest import pytest_runtest_setup
from tests.kit import ASSIGNMENTS, ROOT, STRICT_ENV, requires


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [next(line for line in block.splitlines() if not line.startswith("#")) for block in blocks]


def test_the_quickstart_is_two_commands_that_set_up_then_grade_and_test():
    setup_and_grade, setup_and_test = quickstart_commands()
    assert setup_and_grade.split(" && ")[0] == setup_and_test.split(" && ")[0] == "python3 -m venv .venv"
    assert all(".venv/bin/pip install -q torch==" in command for command in (setup_and_grade, setup_and_test))
    assert re.search(r"\.venv/bin/grade (assignment\d)$", setup_and_grade).group(1) in ASSIGNMENTS
    assert setup_and_test.endswith(".venv/bin/pytest")


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == quickstart_commands()[1]


def test_ci_is_strict_and_a_missing_tool_skips_with_its_reason_elsewhere_but_fails_under_ci(monkeypatch):
    assert f"export {STRICT_ENV}=1" in (ROOT / ".ci" / "run").read_text().splitlines()
    item = SimpleNamespace(iter_markers=lambda name: [requires(False, "no chromium here").mark])
    monkeypatch.delenv(STRICT_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium here"):
        pytest_runtest_setup(item)
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=r"no chromium here .* required, not skipped"):
        pytest_runtest_setup(item)
    present = SimpleNamespace(iter_markers=lambda name: [requires(True, "no chromium here").mark])
    pytest_runtest_setup(present)  # neither skipped nor failed
