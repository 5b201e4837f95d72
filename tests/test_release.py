"""The student bundle: what it holds and never holds, that it grades on its own, and its CI workflow."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import yaml

from grader.blanks import BLANKS_FILE, assignment_blanks
from grader.cli import main
from grader.errors import UserError
from grader.notebook import build_notebook
from grader.release import WORKFLOW, release
from grader.spec import load_spec
from tests.kit import ASSIGNMENTS, ROOT

NAME = "assignment2"
MARKER = "LEAK-CHECK-7f3a91"  # planted in the reference and in a hidden test: must reach no bundle file
GRADE = f'{shlex.quote(sys.executable)} -c "from grader.cli import run; run()"'  # `grade`, from the current folder


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the kit with assignment2 only, a marker in its reference, and a hidden test."""
    root = tmp_path_factory.mktemp("kit")
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "assignments").mkdir()
    for name in ("conftest.py", "pytest.ini"):
        shutil.copy2(ROOT / "assignments" / name, root / "assignments" / name)
    shutil.copytree(ROOT / "assignments" / NAME, root / "assignments" / NAME, ignore=skip)
    for folder in ("starter", "reference"):
        shutil.copytree(ROOT / folder / NAME, root / folder / NAME, ignore=skip)
    for module in (root / "reference" / NAME).glob("*.py"):
        module.write_text(module.read_text() + f"\n# {MARKER}: the solution\n")
    hidden = root / "assignments" / NAME / "hidden"
    hidden.mkdir(exist_ok=True)
    (hidden / f"test_{MARKER.lower().replace('-', '_')}.py").write_text(f'"""{MARKER}"""\n')
    return root


@pytest.fixture(scope="module")
def bundle(kit: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release") / "bundle"
    release(load_spec(NAME, kit), out)
    return out


def bundle_files(bundle: Path) -> list[Path]:
    return sorted(p for p in bundle.rglob("*") if p.is_file())


def test_the_bundle_holds_the_starter_the_public_tests_the_grader_and_the_blank_table(kit, bundle):
    files = {str(p.relative_to(bundle)) for p in bundle_files(bundle)}
    spec = load_spec(NAME, kit)
    expected = {
        "README.md",
        "pyproject.toml",
        ".gitignore",
        WORKFLOW,
        f"{NAME}.ipynb",
        "assignments/conftest.py",
        "assignments/pytest.ini",
        f"assignments/{NAME}/spec.toml",
        f"assignments/{NAME}/probes.py",
        f"assignments/{NAME}/architectures.py",  # the grader's own LeNet: public, like the tests
        f"assignments/{NAME}/{BLANKS_FILE}",
        *(f"assignments/{NAME}/{p.name}" for p in spec.folder.glob("README*.md")),
        *(f"assignments/{NAME}/tests/{p.relative_to(spec.tests_dir)}" for p in spec.tests_dir.rglob("*.py")),
        *(f"starter/{NAME}/{file}" for file in spec.files),
        "grader/cli.py",
        "grader/templates/grade-workflow.yml",
    }
    assert expected <= files, sorted(expected - files)
    assert all(f.startswith("grader/") or f in expected for f in files), sorted(files - expected)
    saved = json.loads((bundle / "assignments" / NAME / BLANKS_FILE).read_text())
    assert saved["blanks"] == [b.__dict__ for b in assignment_blanks(spec.starter_dir, spec.reference_dir, spec.files)]
    assert saved["starters"] == {file: (spec.starter_dir / file).read_text() for file in spec.files}
    notebook = nbformat.read(str(bundle / f"{NAME}.ipynb"), as_version=4)
    assert nbformat.writes(notebook) == nbformat.writes(build_notebook(spec))


def test_the_bundle_finds_the_blanks_its_students_left_in_the_starter_they_edit(kit, bundle, tmp_path):
    """Students fill the bundle's starter in place: what they filled is no blank any more."""
    copy = shutil.copytree(bundle, tmp_path / "bundle")
    spec = load_spec(NAME, copy)
    released = assignment_blanks(spec.starter_dir, spec.reference_dir, spec.files)
    lenet = spec.starter_dir / "lenet.py"
    first = next(b for b in released if b.file == "lenet.py")
    lines = lenet.read_text().splitlines(keepends=True)
    lines[first.line - 1] = lines[first.line - 1].replace("None", "6", 1)
    lenet.write_text("# my notes\n" + "".join(lines))
    (spec.starter_dir / "training.py").write_text("def broken(:\n")  # being edited: no blank found, no crash
    now = assignment_blanks(spec.starter_dir, spec.reference_dir, spec.files)
    expected = [b for b in released if b.file == "lenet.py" and b != first]
    assert [(b.line, b.col, b.task) for b in now] == [
        (b.line + 1, b.col - (b.line == first.line) * 3, b.task) for b in expected
    ]


def test_no_reference_and_no_hidden_test_reaches_the_bundle(bundle):
    assert not (bundle / "reference").exists() and not (bundle / "assignments" / NAME / "hidden").exists()
    leaks = [p for p in bundle_files(bundle) if MARKER.encode() in p.read_bytes() or MARKER.lower() in str(p).lower()]
    assert leaks == []


def test_release_refuses_a_folder_in_use_and_a_kit_without_reference(kit, bundle, tmp_path):
    with pytest.raises(UserError, match="not an empty folder"):
        release(load_spec(NAME, kit), bundle)
    with pytest.raises(UserError, match="has no reference"):
        release(load_spec(NAME, bundle), tmp_path / "again")
    assert main(["release", NAME, "--out", str(bundle)]) == 2
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UserError, match="cannot create"):
        release(load_spec(NAME, kit), tmp_path / "a-file" / "bundle")


def workflow_steps(bundle: Path) -> tuple[dict, list[dict]]:
    document = yaml.safe_load((bundle / WORKFLOW).read_text())
    triggers = document.get("on", document.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    (job,) = document["jobs"].values()
    return document["env"], job["steps"]


def test_the_workflow_installs_cpu_torch_then_the_bundle(bundle):
    _, steps = workflow_steps(bundle)
    actions = [step["uses"].split("@")[0] for step in steps if "uses" in step]
    assert actions[:2] == ["actions/checkout", "actions/setup-python"]
    install = next(step["run"] for step in steps if "pip install" in step.get("run", ""))
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in install
    assert install.strip().splitlines()[-1] == "pip install ."
    pyproject = (bundle / "pyproject.toml").read_text()
    assert 'grade = "grader.cli:run"' in pyproject and 'packages = ["grader"]' in pyproject


def test_the_workflow_grades_the_bundle_starter_to_zero_and_reports_from_inside_the_bundle(bundle, tmp_path):
    """Run the workflow's own steps after the install, in the bundle, with `grade` from its grader copy."""
    env, steps = workflow_steps(bundle)
    bundle = shutil.copytree(bundle, tmp_path / "bundle")  # the reports it writes stay out of the others' way
    defaults = {key: re.sub(r"\$\{\{ vars\.\w+ \|\| '([^']*)' \}\}", r"\1", str(value)) for key, value in env.items()}
    assert defaults["FAIL_UNDER"] == "0" and defaults["SUBMISSION"] == f"starter/{NAME}"
    summary = tmp_path / "summary.md"
    shell_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADER_ROOT")}
    shell_env.update(defaults, GITHUB_STEP_SUMMARY=str(summary))
    grade_step, summary_step = (s for s in steps if "run" in s and "pip install" not in s["run"])
    assert "always()" in summary_step["if"] and "$GITHUB_STEP_SUMMARY" in summary_step["run"]
    for step in (grade_step, summary_step):
        script = re.sub(r"^(\s*)grade ", rf"\1{GRADE} ", step["run"], flags=re.M)
        result = subprocess.run(
            ["bash", "-e", "-c", script], cwd=bundle, env=shell_env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr
    report = json.loads((bundle / "grade-report.json").read_text())
    assert report["score"] == 0 and report["max_score"] > 0 and report["profile"] == "quick"
    for test in report["tests"]:
        assert test["output"].startswith("not filled in yet: "), f"{test['name']}: {test['output']}"
    assert summary.read_text().startswith(f"### {NAME}")
    (upload,) = (s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert "always()" in upload["if"]
    for path in upload["with"]["path"].split():
        assert (bundle / path).is_file(), path
    imported = subprocess.run(
        [sys.executable, "-c", "import grader; print(grader.__file__)"],
        cwd=bundle,
        env=shell_env,
        capture_output=True,
        text=True,
    )
    assert Path(imported.stdout.strip()).is_relative_to(bundle)  # the bundle's own grader, not the kit's


def test_the_bundle_builds_a_package_with_the_grader_and_its_templates(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob(f"{NAME}_student-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "grader/cli.py" in names and "grader/templates/grade-workflow.yml" in names
    assert not [n for n in names if n.startswith(("assignments/", "starter/"))]


@pytest.fixture(scope="module")
def every_bundle_graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """Each assignment's bundle, released from the kit, grading its own starter from inside (two at a time)."""

    def release_and_grade(name: str) -> tuple[Path, dict]:
        bundle = tmp_path_factory.mktemp("release") / name
        release(load_spec(name, ROOT), bundle)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADER_ROOT")}
        env.update(GRADER_THREADS="1", OMP_NUM_THREADS="1")
        command = f"{GRADE} {name} --profile quick --json report.json"
        done = subprocess.run(command, shell=True, cwd=bundle, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return bundle, json.loads((bundle / "report.json").read_text())

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(ASSIGNMENTS, pool.map(release_and_grade, ASSIGNMENTS), strict=True))


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_every_bundle_grades_its_starter_to_zero_from_inside_and_holds_no_solution(every_bundle_graded, name):
    bundle, report = every_bundle_graded[name]
    assert report["score"] == 0 and report["max_score"] > 0
    for test in report["tests"]:
        assert test["output"].startswith("not filled in yet: "), f"{test['name']}: {test['output']}"
    assert not (bundle / "reference").exists() and not (bundle / "assignments" / name / "hidden").exists()
    solutions = {p.read_bytes() for p in load_spec(name, ROOT).reference_dir.rglob("*.py")}
    assert not [p for p in bundle_files(bundle) if p.read_bytes() in solutions]
