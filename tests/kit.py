"""Shared helpers for the kit's own tests: the kit root, graded reports, known-wrong variants."""

from __future__ import annotations

import shutil
import sys
from concurrent.futures import Future
from html.parser import HTMLParser
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from grader.batch.executors import LocalExecutor, Slot, cpu_count, warm_for
from grader.options import GradingOptions
from grader.report import Report
from grader.spec import Spec, assignment_names, load_spec

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = assignment_names(ROOT)
ANOTHER_SEED = 20250314  # not a hand-in's own seed (those are 62-bit hashes)
STRICT_ENV = "KIT_TESTS_STRICT"  # "1" (.ci/run): a test whose tool is missing fails instead of skipping


def requires(available: bool, reason: str) -> pytest.MarkDecorator:
    """Mark a test that needs a tool (bubblewrap, Chromium, Ray): skipped with `reason` where
    `available` is false, and failed instead under $KIT_TESTS_STRICT=1 (tests/conftest.py), so that CI
    cannot be green without the checks it claims."""
    return pytest.mark.requires(available=available, reason=reason)


class Gradings:
    """The kit's tests' gradings (quick profile), each done once per session on a pool of warm
    workers with one torch thread each, as `grade batch` runs them: those submitted ahead run side by side."""

    def __init__(self) -> None:
        self._executor: LocalExecutor | None = None
        self._futures: dict[tuple, Future[Report]] = {}

    def __contains__(self, key: tuple) -> bool:
        return key in self._futures

    def submit(
        self, key: tuple, spec: Spec | None = None, folder: Path | None = None, **options: str | int | None
    ) -> Future[Report]:
        """The grading of `key`: started now with these options (GradingOptions') unless it already was."""
        if key not in self._futures:
            if self._executor is None:
                specs = [spec_of(name) for name in ASSIGNMENTS]
                warm = warm_for(specs, GradingOptions(profile="quick"))
                self._executor = LocalExecutor(max(2, cpu_count()), threads=1, warm=warm)

            def job(slot: Slot) -> Report:
                return slot.grade(spec, folder, GradingOptions(profile="quick", **options))

            self._futures[key] = self._executor.submit(job)
        return self._futures[key]

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel=True)


GRADINGS = Gradings()


def spec_of(name: str) -> Spec:
    return load_spec(name, ROOT)


def submit_graded(name: str, which: str, again: bool = False) -> Future[Report]:
    """The grading of an assignment's reference or starter (`again`: a second, separate one, with
    another seed than the hand-in's own)."""
    spec = spec_of(name)
    folder = spec.reference_dir if which == "reference" else spec.starter_dir
    return GRADINGS.submit((name, which, again), spec, folder, seed=ANOTHER_SEED if again else None)


def graded(name: str, which: str) -> Report:
    """The quick-profile report of an assignment's reference or starter, graded once per session."""
    return submit_graded(name, which).result()


def variants(kind: str = "variant") -> list:
    """Every known-wrong variant of every assignment (tests/<assignment>/variants.toml), or with
    kind="alternative", every correct alternative to the reference that must keep full marks."""
    cases = []
    for name in ASSIGNMENTS:
        path = ROOT / "tests" / name / "variants.toml"
        if path.is_file():
            for variant in tomllib.loads(path.read_text()).get(kind, []):
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


class TableRows(HTMLParser):
    """The text of each table row of a page, a list of cells each."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.in_cell = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag: str) -> None:
        self.in_cell = self.in_cell and tag not in ("td", "th")

    def handle_data(self, data: str) -> None:
        if self.in_cell:
            self.rows[-1][-1] += data
