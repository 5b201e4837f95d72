"""The README's quickstart is what CI runs, and what it promises exists."""

import re

from tests.kit import ASSIGNMENTS, ROOT


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [next(line for line in block.splitlines() if not line.startswith("#")) for block in blocks]


def test_the_quickstart_is_two_commands_that_set_up_then_grade_and_test():
    setup_and_grade, setup_and_test = quickstart_commands()
    assert setup_and_grade.split(" && ")[:2] == setup_and_test.split(" && ")[:2]
    assert re.search(r"\.venv/bin/grade (assignment\d)$", setup_and_grade).group(1) in ASSIGNMENTS
    assert setup_and_test.endswith(".venv/bin/pytest")


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == quickstart_commands()[1]
