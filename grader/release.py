"""The student bundle: `grade release <assignment> --out DIR`, a folder ready to be a student repository.

    README.md                    how to work, grade, and read the CI (grader/templates/student-README.md)
    pyproject.toml               `pip install .`: the grader copy below, the `grade` command, the kit's dependencies
    .github/workflows/grade.yml  CI: grade every push on the quick profile, the report in the job summary
    .gitignore
    <assignment>.ipynb           the starter as a notebook, for Jupyter or Colab
    grader/                      a copy of the grader package: the bundle works offline and grades with
                                 exactly the grader that was released
    assignments/                 conftest.py, pytest.ini, and <assignment>/: spec.toml, the statements
                                 (README*.md), the public tests, blanks.json
    starter/<assignment>/        the modules to fill in

Only what is listed is copied: the reference and the hidden tests never are. Without the
reference, the bundle cannot pair starter and reference to find the blanks, so their table is
computed here and shipped as blanks.json (grader/blanks.py reads it).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import grader
from grader.blanks import BLANKS_FILE, assignment_blanks, save_blanks
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


def release(spec: Spec, out: Path) -> list[Path]:
    """Write the bundle of `spec` into `out` (new or empty); return its files, relative to `out`."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not an empty folder: release into a new one")
    if not spec.reference_dir.is_dir():
        raise UserError(f"{spec.name} has no reference ({spec.reference_dir}): its blank table cannot be computed")
    blanks = assignment_blanks(spec.starter_dir, spec.reference_dir, spec.files)
    kit = _kit_project(spec.root)
    make_folder(out, f"--out {out}")

    shutil.copytree(Path(grader.__file__).resolve().parent, out / "grader", ignore=_SKIPPED)
    for name in ("conftest.py", "pytest.ini"):  # the plugin, and the tests' own pytest configuration
        _copy_new(spec.root / "assignments" / name, out / "assignments" / name)
    folder = out / "assignments" / spec.name
    public = ["spec.toml", "conftest.py", "probes.py", "architectures.py"]
    public += sorted(p.name for p in spec.folder.glob("README*.md"))
    for name in public:
        if (spec.folder / name).is_file():
            _copy_new(spec.folder / name, folder / name)
    shutil.copytree(spec.tests_dir, folder / "tests", ignore=_SKIPPED)
    save_blanks(blanks, spec.starter_dir, spec.files, folder / BLANKS_FILE)
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
        "dependencies": "\n".join(f"    {json.dumps(d)}," for d in kit.get("dependencies", [])),
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
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())


def render_template(name: str, values: dict[str, str]) -> str:
    """grader/templates/<name> with each `@@key@@` replaced by `values[key]`."""
    text = (TEMPLATES / name).read_text()
    unknown = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if unknown:
        raise KeyError(f"template {name} uses unknown placeholders: {', '.join(unknown)}")
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


def _kit_project(root: Path) -> dict:
    """The kit's [project] table: the bundle installs the same dependencies as the kit."""
    path = root / "pyproject.toml"
    if not path.is_file():
        raise UserError(f"{path} is missing: the bundle takes its dependencies from the kit's pyproject.toml")
    with path.open("rb") as f:
        return tomllib.load(f).get("project", {})
