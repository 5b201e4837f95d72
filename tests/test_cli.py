"""The `grade` command: reports, exit codes, and one clear line for every mistake."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.kit import ROOT

GRADE = [sys.executable, "-c", "from grader.cli import run; run()"]


def grade(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*GRADE, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def test_grading_the_starter_gives_zero_a_reason_per_test_and_exit_0(tmp_path):
    result = grade(
        "assignment2",
        "--json",
        str(tmp_path / "r.json"),
        "--junit",
        str(tmp_path / "r.xml"),
        "--markdown",
        str(tmp_path / "r.md"),
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["score"] == 0 and report["max_score"] > 0
    assert all(t["status"] == "failed" and t["output"] for t in report["tests"])
    assert "not filled in yet" in result.stdout
    assert (tmp_path / "r.xml").read_text().startswith("<?xml")
    assert "### assignment2" in (tmp_path / "r.md").read_text()


def test_fail_under_sets_the_exit_code():
    result = grade("assignment2", "--fail-under", "50")
    assert result.returncode == 1
    assert "below --fail-under 50%" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["zzz"], "error: unknown assignment 'zzz' (known: assignment1, "),
        (["asignment2"], "error: unknown assignment 'asignment2': did you mean assignment2? (known: "),
        (["lsit"], "error: unknown assignment 'lsit': did you mean list? (known: "),
        (["notebook", "asignment2"], "error: unknown assignment 'asignment2': did you mean assignment2? (known: "),
        (["assignment2", "--json", "-", "--junit", "-"], "error: --json and --junit both ask for standard output"),
        (["assignment2", "--submission", "no/such/folder"], "error: submission not found: no/such/folder"),
        (["assignment2", "--profile", "fastest"], "error: Invalid value for '--profile'"),
        (["assignment2", "--bogus"], "error: No such option '--bogus'"),
        (["assignment2", "--fail-under", "150"], "error: Invalid value for '--fail-under'"),
        (["assignment2", "--json", "no/such/folder/r.json"], "error: --json no/such/folder/r.json: the folder no/such"),
        (["assignment2", "--junit", "tests"], "error: --junit tests: is a folder, give a file name"),
        (["assignment2", "--marks", "not acuracy"], "error: the marker expression 'not acuracy' names acuracy,"),
        (["assignment2", "--marks", "not (accuracy"], "error: Wrong expression passed to '-m'"),
    ],
    ids=[
        "unknown assignment",
        "mistyped assignment",
        "mistyped command",
        "mistyped assignment of a command",
        "two reports on stdout",
        "missing submission",
        "bad profile",
        "unknown flag",
        "bad percentage",
        "report in a missing folder",
        "report onto a folder",
        "mistyped marker",
        "broken marker expression",
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(args, message):
    result = grade(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_outside_the_kit_it_says_where_to_run(tmp_path):
    result = grade("list", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert result.stderr.startswith("error: no assignments/ folder here or above")


def test_list_shows_each_assignment_with_its_points():
    result = grade("list")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("assignment2"))
    assert "LeNet and train_ch6" in line and "lenet.py, training.py" in line


def test_a_broken_grader_is_exit_3(tmp_path):
    kit = tmp_path / "kit"
    shutil.copytree(ROOT / "assignments", kit / "assignments", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("starter", "reference"):
        shutil.copytree(ROOT / folder / "assignment2", kit / folder / "assignment2")
    (kit / "assignments" / "assignment2" / "tests" / "test_lenet.py").write_text("def broken(:\n")
    result = grade("assignment2", cwd=kit)
    assert result.returncode == 3
    assert result.stderr.startswith("grader error: the tests of assignment2 did not start")


def test_a_partial_grading_of_a_one_file_hand_in_says_what_it_left_out_and_what_is_missing(tmp_path):
    """`--json -` is the report alone on stdout (the table goes to stderr); the report says which
    tests the options left out, which file is missing, and each reason is the test's own message."""
    hand_in = tmp_path / "lenet.py"
    hand_in.write_text(
        (ROOT / "reference/assignment2/lenet.py").read_text().replace("(6, 16, kernel_size=5)", "(6, 16, 3)")
    )
    result = grade("assignment2", "--submission", str(hand_in), "--marks", "not accuracy", "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "assignment2 · LeNet and train_ch6" in result.stderr
    selection = report["selection"]
    assert selection["marks"] == "not accuracy" and selection["left_out_points"] > 0 and selection["left_out"]
    total = report["max_score"] + selection["left_out_points"]
    said = f"points (of {total:g}: {selection['left_out_points']:g} points of tests left out by --marks 'not accuracy')"
    assert said in report["output"] and said in " ".join(result.stderr.split())
    reasons = {t["name"]: t["reason"] for t in report["tests"] if not t["hidden"]}
    assert (
        reasons["net: each layer's type and output shape"]
        == "conv2 output is [1, 16, 12, 12], expected [1, 16, 10, 10]"
    )
    for test in report["tests"]:  # the test's own message, none of pytest's explanation of it
        assert not re.search(r"^(assert |AssertionError)|Use -v", test["output"], re.M), test["output"]
    training = [reason for name, reason in reasons.items() if name.startswith(("train_ch6", "evaluate_accuracy_gpu"))]
    assert training and all(reason == "training.py is missing from the submission" for reason in training)
    assert "training.py is missing from the submission" in report["notes"]
    assert report["blanks"] == {"total": 26, "open": [], "missing": 16}


def venv_reaching(folder: Path, *sites: Path) -> Path:
    """The python of a new virtual environment whose packages lie in `sites`, each named by a line of
    a .pth file (a site directory outside the interpreter's own: conda, --system-site-packages, a
    module system); the kit is importable through one of them."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    own_site = next(folder.glob("lib/python*/site-packages"))
    (own_site / "elsewhere.pth").write_text("".join(f"{site}\n" for site in sites))
    return folder / "bin" / "python"


KIT_SITE = Path(sysconfig.get_paths()["purelib"])  # the kit venv's site-packages: torch, numpy, pytest ...


def test_a_venv_that_reaches_torch_through_a_pth_line_grades_in_the_sandbox(tmp_path):
    python = venv_reaching(tmp_path / "venv", ROOT, KIT_SITE)
    args = ["assignment1", "--submission", "reference/assignment1", "--select", "relu", "--json", "-"]
    done = subprocess.run([python, "-m", "grader", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["score"] == report["max_score"] > 0


@pytest.mark.parametrize(
    "command",
    [["assignment1", "--submission", "starter/assignment1"], ["batch", "assignment1", "SUBMISSIONS", "--workers", "1"]],
    ids=["grade", "grade batch"],
)
def test_a_sandbox_that_cannot_import_torch_says_which_folder_once_and_grades_nothing(tmp_path, command):
    """torch reachable only through a .pth line naming the data folder, which never enters a sandbox's
    view: one line, exit 3, before any hand-in (no "Broken pipe" per student), no gradebook."""
    data = tmp_path / "data"
    data.mkdir()
    for entry in KIT_SITE.iterdir():
        (data / entry.name).symlink_to(entry)
    python = venv_reaching(tmp_path / "venv", ROOT, data)
    for student in ("ann", "bob"):
        shutil.copytree(ROOT / "starter" / "assignment1", tmp_path / "submissions" / student)
    args = [str(tmp_path / "submissions") if arg == "SUBMISSIONS" else arg for arg in command]
    args += ["--out", str(tmp_path / "out")] if command[0] == "batch" else []
    env = {**os.environ, "GRADER_DATA_DIR": str(data)}
    done = subprocess.run(
        [python, "-m", "grader", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    why = f"grader error: the sandbox cannot import torch: {data} is not in its view (a .pth site directory?)"
    assert done.returncode == 3 and done.stderr.strip().splitlines()[-1] == why, done.stderr
    assert "Traceback" not in done.stderr and "Broken pipe" not in done.stdout + done.stderr
    assert not (tmp_path / "out" / "grades.csv").exists()
