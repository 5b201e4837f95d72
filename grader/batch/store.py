"""A batch's files: the submissions read once into snapshots, what each was graded with, and the
ledger that says which stored reports the batch wrote itself.

DIR/.batch/snapshots/<id>/  each submission's files, read before any student code runs
DIR/.batch/ledger.json      per student: the resume key and the SHA-256 of the report the batch wrote
DIR/students/<id>/          report.json (the source of the rest), feedback.md, feedback.html, results.json

Resuming trusts only what the batch wrote: a stored report counts only if its bytes still have the
digest in the ledger, and a snapshot is checked against the digest it was taken with before it is
graded. The sandboxes see none of these folders; the ledger makes tampering visible even where
the code ran unisolated.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grader
from grader import render, render_html
from grader.errors import SubmissionProblem, UserError
from grader.i18n import using
from grader.options import GradingOptions
from grader.report import Report
from grader.spec import Spec
from grader.submission import folder_digest, materialize
from grader.text import clean

SUBMISSION_SUFFIXES = (".zip", ".py", ".ipynb")
TIMES_FILE = "submissions.csv"  # beside the submissions: when each was handed in (id,time), not one of them
STATE = ".batch"  # DIR/.batch: the lock, the ledger and the snapshots
ID_CHARS = 120
# Modules that present or start things but decide no score: a change to them re-renders, not regrades.
_PRESENTATION = {"cli.py", "render.py", "progress.py", "release.py", "calibrate.py", "similarity.py", "gradescope.py"}
_PRESENTATION |= {"gradebook.py", "late.py", "render_html.py", "figures.py"}  # a figure never changes a score
_PRESENTATION |= {"layouts.py", "unpack.py"}  # which files a student handed in: the snapshot's digest holds them
_PRESENTATION |= {"manual.py", "course.py", "review.py", "review_page.py", "review_server.py"}  # applied after grading


@dataclass(frozen=True)
class Entry:
    """One student's submission: `id` is its name without the suffix."""

    id: str
    path: Path


@dataclass(frozen=True)
class Snapshot:
    """A submission as read at the start: its files, or why they cannot be read."""

    entry: Entry
    folder: Path | None
    problem: str
    digest: str

    def intact(self) -> bool:
        """Whether the snapshot's files are still those it was taken with."""
        return self.folder is None or folder_digest(self.folder) == self.digest


def find_entries(folder: Path) -> list[Entry]:
    """The submissions in `folder`, by name: its folders and its .zip, .py and .ipynb files that are
    not hidden (what else is there is `left_aside`)."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of submissions")
    paths = sorted(p for p in folder.iterdir() if _hand_in(p))
    stems = Counter(_stem(p) for p in paths)
    names = {p: _stem(p) if stems[_stem(p)] == 1 else p.name for p in paths}
    ids = {p: clean(name, ID_CHARS) for p, name in names.items()}
    # A name is the hand-in's text, cleaned (grader.text); where cleaning alone made two ids one
    # (`bob` and `bob` in colour), the changed one takes its digest: no one takes another's place.
    taken = Counter(ids.values())
    for path, name in names.items():
        if taken[ids[path]] > 1 and ids[path] != name:
            ids[path] += "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    return [Entry(ids[p], p) for p in paths]


def left_aside(folder: Path) -> list[str]:
    """The names in `folder` that are no hand-in (notes.txt, .DS_Store, macOS's __MACOSX; not the hand-in
    times, submissions.csv), cleaned for a terminal."""
    return sorted(clean(p.name, ID_CHARS) for p in folder.iterdir() if not _hand_in(p) and p.name != TIMES_FILE)


def _hand_in(path: Path) -> bool:
    if path.name.startswith((".", "__MACOSX")):
        return False
    return path.is_dir() or path.suffix.lower() in SUBMISSION_SUFFIXES


def _stem(path: Path) -> str:
    return path.stem if path.suffix.lower() in SUBMISSION_SUFFIXES and not path.is_dir() else path.name


def grader_key(spec: Spec, options: GradingOptions) -> str:
    """What the grades depend on besides the submission: a change means grading again.

    That is the grader's version and code (but the modules that only present or start things),
    the assignment's spec, probes, tests, hidden tests, starter (blanks) and reference, and the
    options that change scores.
    """
    digest = hashlib.sha256(grader.__version__.encode())
    package = Path(grader.__file__).parent
    code = [p for p in package.rglob("*.py") if p.name not in _PRESENTATION and "__pycache__" not in p.parts]
    code += sorted(package.glob("locale/*/LC_MESSAGES/*.po"))  # the texts a report holds, in its language
    kit = [spec.root / "assignments" / "conftest.py", spec.root / "assignments" / "pytest.ini"]
    for folder in (spec.folder, spec.starter_dir, spec.reference_dir):
        kit += [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts] if folder.is_dir() else []
    named = [(f"grader/{p.relative_to(package)}", p) for p in code] + [(str(p.relative_to(spec.root)), p) for p in kit]
    for name, path in sorted(named):
        if path.is_file():
            digest.update(f"\0{name}\0".encode() + path.read_bytes())
    digest.update(json.dumps(options.scoring(), sort_keys=True).encode())
    return digest.hexdigest()


def take_snapshot(entry: Entry, spec: Spec, dest: Path) -> Snapshot:
    """Read a submission's files into `dest` (or say why it cannot be read); a notebook is split into modules."""
    try:
        folder = _read(entry, spec, dest)
    except SubmissionProblem as problem:
        said = str(problem)
        with using("en"):  # the digest of what is wrong, not of the language saying it: the same resume key
            try:
                _read(entry, spec, dest)
            except SubmissionProblem as in_english:
                said = str(in_english)
        return Snapshot(entry, None, str(problem), hashlib.sha256(said.encode()).hexdigest())
    return Snapshot(entry, folder, "", folder_digest(folder))


def _read(entry: Entry, spec: Spec, dest: Path) -> Path:
    """The folder of a submission's modules, read into `dest`; a SubmissionProblem says why it cannot be read."""
    shutil.rmtree(dest, ignore_errors=True)
    try:
        if entry.path.is_symlink():
            raise SubmissionProblem(f"{entry.path.name} is a symbolic link: hand in the files themselves")
        return materialize(entry.path, spec.files, dest, spec.starter_dir).folder
    except (OSError, ValueError) as problem:  # ValueError: undecodable text or JSON
        raise SubmissionProblem(f"cannot be read: {problem}") from None


@dataclass(frozen=True)
class Stored:
    """What the batch wrote of a student last time: `status` is graded, unreadable or error (the grader's)."""

    report: Report
    status: str
    key: str  # what the grades depended on: a different key means grading again

    def current(self, key: str) -> bool:
        """Whether this still stands for a grading with `key` (a grader error never does: graded again)."""
        return self.key == key and self.status in ("graded", "unreadable")


class Store:
    """DIR: the students' reports and the ledger of what this batch wrote."""

    def __init__(self, out: Path):
        self.out = out
        self.ledger_path = out / STATE / "ledger.json"
        try:
            self.ledger: dict[str, dict[str, str]] = json.loads(self.ledger_path.read_text())
        except (OSError, ValueError):
            self.ledger = {}

    def folder(self, student: str) -> Path:
        return self.out / "students" / student

    def stored(self, student: str) -> Stored | None:
        """A student's last report, its status and resume key, if the batch wrote it and it is unchanged since."""
        entry = self.ledger.get(student)
        if not entry:
            return None
        try:
            data = (self.folder(student) / "report.json").read_bytes()
            if hashlib.sha256(data).hexdigest() != entry.get("report"):
                return None  # changed since the batch wrote it: graded again
            return Stored(Report.from_json(json.loads(data)), entry["status"], entry["key"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, student: str, report: Report, status: str, key: str, show_hidden: bool) -> list[str]:
        """The student's report, the files rendered from it, then their line in the ledger (last: the
        student is done). A rendered file that cannot be written leaves the others written: what failed."""
        folder = self.folder(student)
        folder.mkdir(parents=True, exist_ok=True)
        document = json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"
        write_whole(folder / "report.json", document)
        unwritten = write_each(
            folder,
            {
                "feedback.md": lambda: render.markdown(report, show_hidden),
                "feedback.html": lambda: render_html.report_page(report, show_hidden),
                "results.json": lambda: (
                    json.dumps(render.gradescope(report, show_hidden), indent=2, ensure_ascii=False) + "\n"
                ),
            },
        )
        self.ledger[student] = {"key": key, "status": status, "report": hashlib.sha256(document.encode()).hexdigest()}
        write_whole(self.ledger_path, json.dumps(self.ledger, indent=1, sort_keys=True) + "\n")
        return [f"{student}: {line}" for line in unwritten]


def write_whole(path: Path, text: str) -> None:
    """Write whole or not at all: a batch may be killed at any moment."""
    partial_path = path.with_name(f".{path.name}.partial")
    partial_path.write_text(text)
    os.replace(partial_path, path)


def write_each(folder: Path, files: dict[str, Callable[[], str]]) -> list[str]:
    """Render and write each of `files` (name -> its renderer) whole, apart from the others: one that
    fails (a writer's bug, a hand-in's text it chokes on, a full disk) stops none of the rest.
    A line for each that failed, naming its path."""
    unwritten = []
    for name, rendered in files.items():
        try:
            write_whole(folder / name, rendered())
        except Exception as failure:  # whatever it is, the other files are still written
            unwritten.append(f"{folder / name} could not be written ({type(failure).__name__}: {failure})")
    return unwritten


@contextlib.contextmanager
def exclusive(state: Path) -> Iterator[None]:
    """One batch at a time writes to a gradebook folder."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `grade batch` is writing to {state.parent}") from None
        yield
