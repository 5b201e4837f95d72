"""spec.toml read and checked: every mistake in it is one line naming the file and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grader.cli import main
from grader.errors import UserError
from grader.spec import load_spec

SPEC = """title = "T"
files = ["a.py"]
[limits]
memory_mb = 2048
[profiles.quick]
device = "cpu"
min_accuracy = 0.9
[profiles.full]
device = "cuda"
"""


def write(tmp_path, text: str):
    folder = tmp_path / "assignments" / "x"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.toml").write_text(text)
    return folder / "spec.toml"


def test_a_correct_spec_reads_with_its_limits_and_profiles(tmp_path):
    write(tmp_path, SPEC)
    spec = load_spec("x", tmp_path)
    assert spec.limits.memory_mb == 2048 and spec.profile("quick").min_accuracy == 0.9
    assert spec.profile("full").device == "cuda" and spec.questions == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SPEC.replace('title = "T"', 'tittle = "T"'), "spec.toml: unknown key 'tittle': did you mean title?"),
        (SPEC.replace('title = "T"\n', ""), "spec.toml: title is missing or not a string"),
        (SPEC.replace('files = ["a.py"]', 'files = "a.py"'), "spec.toml: files is missing or not a list"),
        (
            SPEC.replace("memory_mb", "memory_gb"),
            "spec.toml [limits]: unknown key 'memory_gb': did you mean memory_mb?",
        ),
        (SPEC.replace("2048", '"2 GB"'), "spec.toml [limits]: memory_mb = '2 GB' is not a number"),
        (SPEC.replace("min_accuracy = 0.9", "min_acc = 0.9"), "spec.toml [profiles.quick]: unknown key 'min_acc'"),
        (SPEC.replace('device = "cuda"', 'dataset = "mnist"'), "spec.toml [profiles.full]: device is missing"),
        (SPEC + "calibrated = 1\n", "spec.toml [profiles.full]: calibrated = 1 is not true or false"),
        (SPEC.replace("[profiles.full]\ndevice", "[profiles.fast]\ndevice"), "spec.toml defines no profile full"),
        (SPEC + "[[questions]]\nid = 'q1'\npoints = 'two'\ntitle = 'Q'\n", "[[questions]] #1: points = 'two'"),
        ('title = "T"\nfiles = [', "spec.toml: cannot be read"),
    ],
)
def test_each_mistake_is_one_line_naming_the_file_and_the_key(tmp_path, text, message):
    write(tmp_path, text)
    with pytest.raises(UserError) as mistake:
        load_spec("x", tmp_path)
    assert message in str(mistake.value) and "\n" not in str(mistake.value), str(mistake.value)


def test_the_command_line_says_it_in_one_line_without_a_traceback(tmp_path, monkeypatch, capsys):
    write(tmp_path, SPEC.replace("memory_mb", "memory"))
    monkeypatch.setenv("GRADER_ROOT", str(tmp_path))
    assert main(["list"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "[limits]: unknown key 'memory'" in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_the_example_of_assignments_readme_is_a_spec_the_kit_reads(tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "assignments" / "README.md").read_text()
    example = re.search(r"## spec\.toml\n\n```toml\n(.*?)```", readme, re.S)
    assert example, "assignments/README.md: no spec.toml example"
    write(tmp_path, example.group(1))
    spec = load_spec("x", tmp_path)
    assert spec.files == ("lenet.py", "training.py") and spec.late is not None and spec.written_max == 4
