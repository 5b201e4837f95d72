"""Grading a whole class: `grade batch <assignment> <submissions> --out DIR`.

One submission per entry of the folder: a folder, a `.zip`, a `.py` or a `.ipynb`. Every entry is
read once, before any student code runs, into a snapshot (DIR/.batch/snapshots/<id>/), so that
no submission can change another's files before they are graded. Each snapshot is then graded in
its own pytest child (grader.runner), from a fresh temporary copy, on a worker of the executor
(grader.executor): a sandbox user, a temporary folder and a share of the cores of its own. The
sandboxes see neither the submissions folder nor DIR. The scores are computed here, in the parent,
against the tests collected before any grading: a test that never reported is failed.

Resuming: DIR/students/<id>/grading.json is written last, after the student's report, with the
key of what was graded (the grader's code, the assignment's spec, tests and starter, the options
that change scores, and the snapshot's bytes). Running the same command again grades only the
students whose key changed, or who have none; a grader error is graded again too.

Outputs: DIR/grades.csv (one row per student), DIR/junit.xml (one suite per student),
DIR/summary.md, and per student DIR/students/<id>/report.json (the full report), feedback.md
(hidden tests' details hidden unless asked) and results.json (Gradescope).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import shutil
import statistics
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import as_completed
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from tabulate import tabulate

import grader
from grader import render
from grader.errors import GraderError, UserError, make_folder
from grader.executor import Executor, LocalExecutor, Slot, default_workers
from grader.report import Report, build_report
from grader.runner import Run, collect, run_tests, selection
from grader.sandbox import HIDE_ENV, LIMITS_ENV, can_hide_files, isolation_user
from grader.spec import Limits, Spec
from grader.submission import SubmissionProblem, materialize

SUBMISSION_SUFFIXES = (".zip", ".py", ".ipynb")
STATE = ".batch"  # DIR/.batch: the lock and the snapshots
DONE = "grading.json"  # written last in a student's folder: what was graded, and how it ended
_PRESENTATION = {"cli.py", "render.py", "release.py", "calibrate.py"}  # reports are re-rendered at each run


class BrokenRun(GraderError):
    """The grading child itself failed (not the student's code, which never runs in it)."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class Options:
    """How a batch grades: everything here but `show_hidden` changes the grades."""

    profile: str = "auto"
    select_expr: str | None = None  # a pytest -k expression
    marks: str | None = None  # a pytest -m expression
    data_dir: str | None = None
    limits: dict[str, float] = field(default_factory=dict)  # overrides of the spec's [limits]
    show_hidden: bool = False  # in feedback.md and junit.xml


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


@dataclass
class Outcome:
    """One student's line of the gradebook. `status`: graded, unreadable, or error (the grader's)."""

    id: str
    report: Report
    status: str
    key: str
    resumed: bool = False

    @property
    def limits(self) -> list[str]:
        return sorted({t.limit for t in self.report.tests if t.limit})


@dataclass
class BatchResult:
    out: Path
    outcomes: list[Outcome]

    @property
    def graded_now(self) -> int:
        return sum(not o.resumed for o in self.outcomes)

    @property
    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "error"]


def find_entries(folder: Path) -> list[Entry]:
    """The submissions in `folder`, by name; hidden files and macOS's __MACOSX are not ones."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of submissions")
    paths = sorted(p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX")))
    stems = Counter(_stem(p) for p in paths)
    return [Entry(_stem(p) if stems[_stem(p)] == 1 else p.name, p) for p in paths]


def _stem(path: Path) -> str:
    return path.stem if path.suffix.lower() in SUBMISSION_SUFFIXES and not path.is_dir() else path.name


def typed_limits(overrides: dict[str, float]) -> dict[str, float]:
    """Overrides of the spec's [limits], each of its field's type (a UserError names an unknown one)."""
    known = {f.name: f.type for f in fields(Limits)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise UserError(f"unknown limit {', '.join(unknown)} (known: {', '.join(known)})")
    return {k: int(v) if known[k] == "int" else float(v) for k, v in overrides.items()}


def grader_key(spec: Spec, options: Options) -> str:
    """What the grades depend on besides the submission: a change means grading again.

    That is the grader's version and code (but the modules that only present or start things),
    the assignment's spec, tests, hidden tests, starter (blanks) and reference, and the options.
    """
    digest = hashlib.sha256(grader.__version__.encode())
    package = [p for p in Path(grader.__file__).parent.glob("*.py") if p.name not in _PRESENTATION]
    kit = [
        spec.root / "assignments" / "conftest.py",
        spec.root / "assignments" / "pytest.ini",
        spec.folder / "spec.toml",
    ]
    for folder in (spec.tests_dir, spec.hidden_dir, spec.starter_dir, spec.reference_dir):
        kit += [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts] if folder.is_dir() else []
    named = [(f"grader/{p.name}", p) for p in package] + [(str(p.relative_to(spec.root)), p) for p in kit]
    for name, path in sorted(named):
        if path.is_file():
            digest.update(f"\0{name}\0".encode() + path.read_bytes())
    settings = {k: getattr(options, k) for k in ("profile", "select_expr", "marks", "data_dir", "limits")}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def take_snapshot(entry: Entry, spec: Spec, dest: Path) -> Snapshot:
    """Read a submission's files into `dest` (or say why it cannot be read); a notebook is split into modules."""
    shutil.rmtree(dest, ignore_errors=True)
    try:
        if entry.path.is_symlink():
            raise SubmissionProblem(f"{entry.path.name} is a symbolic link: hand in the files themselves")
        copy = materialize(entry.path, spec.files, dest, spec.starter_dir)
    except (SubmissionProblem, OSError, ValueError) as problem:  # ValueError: undecodable text or JSON
        text = str(problem) if isinstance(problem, SubmissionProblem) else f"cannot be read: {problem}"
        return Snapshot(entry, None, text, hashlib.sha256(text.encode()).hexdigest())
    digest = hashlib.sha256()
    for path in sorted(copy.folder.iterdir()):
        digest.update(f"\0{path.name}\0".encode() + path.read_bytes())
    return Snapshot(entry, copy.folder, "", digest.hexdigest())


def run_batch(
    spec: Spec,
    submissions: Path,
    out: Path,
    options: Options | None = None,
    workers: int | None = None,
    executor: Executor | None = None,
    console: Console | None = None,
) -> BatchResult:
    """Grade every submission in `submissions` that `out` does not hold already; write the gradebook.

    Interrupting it (KeyboardInterrupt) stops the running gradings at once: what they did is lost,
    what was finished before is kept.
    """
    options = options or Options()
    options = replace(options, limits=typed_limits(options.limits))
    console = console or Console(stderr=True)
    entries = find_entries(submissions)
    if not entries:
        raise UserError(f"{submissions} holds no submission")
    spec = replace(spec, limits=replace(spec.limits, **options.limits))
    make_folder(out, f"--out {out}")
    with _exclusive(out / STATE):
        collected = _collect(spec, options)
        key = grader_key(spec, options)
        snapshots = [take_snapshot(e, spec, out / STATE / "snapshots" / e.id) for e in entries]
        outcomes: dict[str, Outcome] = {}
        pending = []
        for snap in snapshots:
            student_key = hashlib.sha256(f"{key}:{snap.digest}".encode()).hexdigest()
            previous = _previous(out / "students" / snap.entry.id, snap.entry.id, student_key)
            if previous is not None:
                outcomes[snap.entry.id] = previous
            elif snap.problem:
                report = _zero_report(spec, collected, snap.entry, snap.problem, options)
                outcomes[snap.entry.id] = Outcome(snap.entry.id, report, "unreadable", student_key)
                _save_student(out, outcomes[snap.entry.id], options.show_hidden)
            else:
                pending.append((snap, student_key))
        _warn_about_isolation(console)
        if pending:
            owned = executor is None
            executor = executor or LocalExecutor(
                workers or default_workers(spec.limits.memory_mb), gpu=_uses_gpu(spec, options)
            )
            hide = (str(submissions.resolve()), str(out.resolve()))
            try:
                _grade_all(spec, pending, collected, options, hide, executor, outcomes, out, console)
            finally:
                if owned:
                    executor.shutdown()
        ordered = [outcomes[e.id] for e in entries]
        for outcome in ordered:  # from memory: whatever a student's code wrote meanwhile is overwritten
            _save_student(out, outcome, options.show_hidden)
        write_gradebook(out, ordered, options.show_hidden)
        shutil.rmtree(out / STATE / "snapshots", ignore_errors=True)
    return BatchResult(out, ordered)


def _grade_all(
    spec: Spec,
    pending: list[tuple[Snapshot, str]],
    collected: list[dict[str, Any]],
    options: Options,
    hide: tuple[str, ...],
    executor: Executor,
    outcomes: dict[str, Outcome],
    out: Path,
    console: Console,
) -> None:
    """Grade the pending snapshots on the executor, saving each student as soon as it is done."""
    cancel = threading.Event()
    counts = {"running": 0, "failed": sum(o.status != "graded" for o in outcomes.values())}
    lock = threading.Lock()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[running]} running · {task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("· left"),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task(spec.name, total=len(outcomes) + len(pending), completed=len(outcomes), **counts)

    def count(key: str, step: int) -> None:
        with lock:
            counts[key] += step
            progress.update(task, **counts)

    with progress:
        futures = {
            executor.submit(partial(_grade_one, spec, snap, collected, options, hide, cancel, count)): (snap, key)
            for snap, key in pending
        }
        try:
            for future in as_completed(futures):
                snap, key = futures[future]
                log = ""
                try:
                    report, status = future.result(), "graded"
                except Exception as broken:  # the grader's fault, not the student's: graded again next time
                    problem = f"grader error: {broken}".strip()
                    report, status = _zero_report(spec, collected, snap.entry, problem, options), "error"
                    log = broken.log if isinstance(broken, BrokenRun) else ""
                outcome = Outcome(snap.entry.id, report, status, key)
                outcomes[outcome.id] = outcome
                _save_student(out, outcome, options.show_hidden)
                run_log = out / "students" / outcome.id / "run.log"  # the instructor's: it may quote hidden tests
                if log:
                    _write(run_log, log)
                else:
                    run_log.unlink(missing_ok=True)
                if status != "graded":
                    count("failed", 1)
                progress.advance(task)
                progress.console.print(_line(outcome), markup=False, highlight=False, soft_wrap=True)
        except KeyboardInterrupt:
            cancel.set()
            executor.shutdown(cancel=True)
            progress.console.print("interrupted: run the same command again to grade the rest")
            raise


def _grade_one(
    spec: Spec,
    snapshot: Snapshot,
    collected: list[dict[str, Any]],
    options: Options,
    hide: tuple[str, ...],
    cancel: threading.Event,
    count: Callable[[str, int], None],
    slot: Slot,
) -> Report:
    """On a worker: grade a fresh copy of one snapshot in a pytest child; score it here."""
    if cancel.is_set():
        raise GraderError("cancelled")
    count("running", 1)
    try:
        with tempfile.TemporaryDirectory(dir=slot.tmp, prefix="submission-") as scratch:
            copy = materialize(snapshot.folder, spec.files, Path(scratch) / "submission", spec.starter_dir)
            env = {**slot.env, LIMITS_ENV: json.dumps(options.limits), HIDE_ENV: os.pathsep.join(hide)}
            run = run_tests(
                spec, copy.folder, options.profile, options.data_dir, options.select_expr, options.marks, env, cancel
            )
    finally:
        count("running", -1)
    if cancel.is_set():
        raise GraderError("cancelled")
    if run.collected is None or run.collect_errors:
        detail = run.collect_errors[0]["text"] if run.collect_errors else ""
        raise BrokenRun(f"the tests did not start (exit code {run.exit_code}); see run.log", detail + run.log_tail)
    if not run.timed_out and run.exit_code not in (0, 1):  # pytest: 0 all passed, 1 some failed
        raise BrokenRun(f"the test run ended early (exit code {run.exit_code}); see run.log", run.log_tail)
    run.collected = collected  # the tests that count are those known before any student code ran
    return build_report(spec, run, str(snapshot.entry.path))


def _collect(spec: Spec, options: Options) -> list[dict[str, Any]]:
    run = collect(spec.root, [spec], args=tuple(selection(options.select_expr, options.marks)))
    if run.collected is None or run.collect_errors:
        detail = run.collect_errors[0]["text"] if run.collect_errors else run.log_tail
        raise GraderError(f"the tests of {spec.name} could not be collected:\n{detail}")
    if not run.collected:
        raise UserError(f"no test of {spec.name} is selected")
    return run.collected


def _zero_report(spec: Spec, collected: list[dict[str, Any]], entry: Entry, problem: str, options: Options) -> Report:
    session = {"profile": options.profile, "device": "-", "dataset": "-", "isolation": "not run"}
    run = Run(session=session, collected=collected)
    return build_report(spec, run, str(entry.path), problem=problem)


def _previous(folder: Path, student: str, key: str) -> Outcome | None:
    """A student's earlier outcome, if it was graded with the same key (and without a grader error)."""
    try:
        state = json.loads((folder / DONE).read_text())
        if state["key"] != key or state["status"] not in ("graded", "unreadable"):
            return None
        report = Report.from_json(json.loads((folder / "report.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Outcome(student, report, state["status"], key, resumed=True)


def _save_student(out: Path, outcome: Outcome, show_hidden: bool) -> None:
    folder = out / "students" / outcome.id
    folder.mkdir(parents=True, exist_ok=True)
    report = outcome.report
    _write(folder / "report.json", json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    _write(folder / "feedback.md", render.markdown(report, show_hidden))
    _write(folder / "results.json", json.dumps(render.gradescope(report), indent=2, ensure_ascii=False) + "\n")
    state = {"key": outcome.key, "status": outcome.status, "submission": report.submission}
    _write(folder / DONE, json.dumps(state, indent=1) + "\n")  # last: the student is done


def _write(path: Path, text: str) -> None:
    """Write whole or not at all: a batch may be killed at any moment."""
    partial_path = path.with_name(f".{path.name}.partial")
    partial_path.write_text(text)
    os.replace(partial_path, path)


@contextlib.contextmanager
def _exclusive(state: Path) -> Iterator[None]:
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another `grade batch` is writing to {state.parent}") from None
        yield


def _uses_gpu(spec: Spec, options: Options) -> bool:
    name = "full" if options.profile == "auto" else options.profile
    if not spec.profile(name).device.startswith("cuda"):
        return False
    import torch

    return torch.cuda.is_available()


def _warn_about_isolation(console: Console) -> None:
    if isolation_user() is None:
        console.print(
            "[yellow]warning:[/] student code runs as your own user (not root, or GRADER_ISOLATION=same-user): "
            "it can reach your files and the other workers; grade untrusted submissions as root."
        )
    elif not can_hide_files():
        console.print(
            "[yellow]warning:[/] no CAP_SYS_ADMIN: the sandboxes can read the reference, the hidden tests and "
            "the other submissions (their output is still cleared of hidden test lines)."
        )


def _line(outcome: Outcome) -> str:
    report = outcome.report
    limits = f" · limits: {', '.join(outcome.limits)}" if outcome.limits else ""
    problem = f" · {report.problem}" if report.problem else ""
    return f"{outcome.id}: {report.score:g} / {report.max_score:g} ({report.duration_s:.0f} s){limits}{problem}"


# --- the gradebook ---------------------------------------------------------------------------


def gradebook_rows(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """One row per student: totals, status, time, the limits tripped, then each test's points."""
    return [
        {"id": o.id, "status": o.status, "limits": " ".join(o.limits), **render.csv_row(o.report)} for o in outcomes
    ]


def write_gradebook(out: Path, outcomes: list[Outcome], show_hidden: bool = False) -> None:
    """grades.csv, junit.xml and summary.md, from the students' reports."""
    rows = gradebook_rows(outcomes)
    first = ["id", "score", "max_score", "percent", "status", "duration_s", "limits", "problem", "profile"]
    columns = first + [k for k in dict.fromkeys(k for row in rows for k in row) if k not in first]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    _write(out / "grades.csv", text.getvalue())
    suites = ET.Element("testsuites", name=outcomes[0].report.assignment if outcomes else "")
    for outcome in outcomes:
        suite = ET.fromstring(render.junit(outcome.report, show_hidden))
        suite.set("name", outcome.id)
        suites.append(suite)
    _write(out / "junit.xml", ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n")
    _write(out / "summary.md", summary_markdown(outcomes))


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    """Class statistics: scores, their distribution, and each test's pass rate and commonest reason."""
    percents = [o.report.percent for o in outcomes]
    bins = Counter(min(int(p // 10), 9) for p in percents)
    tests: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        for test in outcome.report.tests:
            entry = tests.setdefault(
                test.nodeid, {"name": test.name, "max_score": test.max_score, "passed": 0, "points": [], "reasons": []}
            )
            entry["passed"] += test.status == "passed"
            entry["points"].append(test.score)
            if test.status != "passed":
                entry["reasons"].append(test.reason.splitlines()[0] if test.reason else "")
    per_test = []
    for entry in tests.values():
        reasons = Counter(entry["reasons"]).most_common(1)
        per_test.append(
            {
                "name": entry["name"],
                "max_score": entry["max_score"],
                "pass_rate": entry["passed"] / len(outcomes),
                "mean": statistics.fmean(entry["points"]),
                "common_reason": f"{reasons[0][0]} ({reasons[0][1]})" if reasons else "",
            }
        )
    return {
        "students": len(outcomes),
        "status": dict(Counter(o.status for o in outcomes)),
        "mean": statistics.fmean(percents) if percents else 0.0,
        "median": statistics.median(percents) if percents else 0.0,
        "distribution": [(f"{10 * b}-{10 * b + 9 if b < 9 else 100}%", bins.get(b, 0)) for b in range(10)],
        "tests": sorted(per_test, key=lambda t: t["pass_rate"]),
    }


def summary_markdown(outcomes: list[Outcome]) -> str:
    stats = summarize(outcomes)
    status = ", ".join(f"{n} {s}" for s, n in sorted(stats["status"].items()))
    lines = [
        f"### {outcomes[0].report.assignment if outcomes else ''}: {stats['students']} submissions ({status})",
        "",
        f"mean {stats['mean']:.1f}% · median {stats['median']:.1f}%",
        "",
        tabulate(
            [(band, n, "█" * n) for band, n in stats["distribution"]],
            headers=("score", "students", ""),
            tablefmt="github",
        ),
        "",
        "Tests, the most failed first:",
        "",
        tabulate(
            [
                (t["name"], f"{t['max_score']:g}", f"{t['pass_rate']:.0%}", f"{t['mean']:.2g}", t["common_reason"])
                for t in stats["tests"]
            ],
            headers=("test", "points", "passed", "mean points", "commonest reason of failure"),
            tablefmt="github",
        ),
    ]
    return "\n".join(lines) + "\n"


def print_summary(result: BatchResult, console: Console) -> None:
    """The end of a batch on the terminal: totals, distribution, the most failed tests."""
    stats = summarize(result.outcomes)
    status = ", ".join(f"{n} {s}" for s, n in sorted(stats["status"].items()))
    console.print(
        f"[bold]{stats['students']} submissions[/] ({status}; {result.graded_now} graded now) · "
        f"mean {stats['mean']:.1f}% · median {stats['median']:.1f}%"
    )
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("test", "points", "passed", "commonest reason of failure"):
        table.add_column(column, overflow="fold")
    for test in stats["tests"]:
        table.add_row(test["name"], f"{test['max_score']:g}", f"{test['pass_rate']:.0%}", test["common_reason"])
    console.print(table)
    console.print(" · ".join(f"{band}: {n}" for band, n in stats["distribution"] if n))
    console.print(f"gradebook: {result.out / 'grades.csv'} · reports: {result.out / 'students'}/<id>/")


def command(
    assignment: str,
    submissions: Path,
    out: Path,
    workers: int | None,
    timeout: float | None,
    limits: tuple[str, ...],
    profile: str,
    select: str | None,
    marks: str | None,
    data_dir: str | None,
    show_hidden: bool,
) -> int:
    """`grade batch`: see grader/cli.py for its options."""
    from grader.sandbox import make_undumpable
    from grader.spec import load_spec

    overrides: dict[str, float] = {}
    for item in limits:
        name, _, value = item.partition("=")
        try:
            overrides[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"--limit {item}: expected NAME=NUMBER, e.g. test_timeout_s=30") from None
    if timeout is not None:
        overrides["total_timeout_s"] = timeout
    spec = load_spec(assignment)
    make_undumpable()  # the sandboxes may run as our user: keep them out of this process
    options = Options(profile, select, marks, data_dir, overrides, show_hidden)
    console = Console()
    result = run_batch(spec, submissions, out, options, workers, console=console)
    print_summary(result, console)
    if result.errors:
        names = ", ".join(o.id for o in result.errors)
        raise GraderError(f"{len(result.errors)} submissions could not be graded ({names}): run again to retry them")
    return 0
