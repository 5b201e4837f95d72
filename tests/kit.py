"""Shared helpers for the kit's own tests: the kit root, graded reports, known-wrong variants."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from grader.pipeline import grade
from grader.report import Report
from grader.spec import Spec, assignment_names, load_spec

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = assignment_names(ROOT)
_REPORTS: dict[tuple, Report] = {}


def spec_of(name: str) -> Spec:
    return load_spec(name, ROOT)


def graded(name: str, which: str) -> Report:
    """The quick-profile report of an assignment's reference or starter, graded once per session."""
    key = (name, which)
    if key not in _REPORTS:
        spec = spec_of(name)
        folder = spec.reference_dir if which == "reference" else spec.starter_dir
        _REPORTS[key] = grade(spec, folder, profile="quick")
    return _REPORTS[key]


def variants() -> list:
    """Every known-wrong variant of every assignment: tests/<assignment>/variants.toml."""
    cases = []
    for name in ASSIGNMENTS:
        path = ROOT / "tests" / name / "variants.toml"
        if path.is_file():
            for variant in tomllib.loads(path.read_text())["variant"]:
                cases.append(pytest.param(name, variant, id=f"{name}-{variant['name']}"))
    return cases


def make_variant(spec: Spec, variant: dict, folder: Path) -> Path:
    """The reference with the variant's edits: each `replace` pair must match exactly once."""
    shutil.copytree(spec.reference_dir, folder)
    for file, old, new in variant["replace"]:
        path = folder / file
        text = path.read_text()
        assert text.count(old) == 1, f"{variant['name']}: {old!r} occurs {text.count(old)} times in {file}"
        path.write_text(text.replace(old, new))
    return folder
