"""Grading a whole class: `grade batch <assignment> <submissions> --out DIR`.

One submission per entry of the folder: a folder, a `.zip`, a `.py` or a `.ipynb`; or an LMS's
download, the folder or its .zip, read into an entry per student (grader.batch.layouts). Every entry is
read once, before any student code runs, into a snapshot (grader.batch.store), and the run decides
who is graded now (grader.batch.plan). Each snapshot is then graded by THE grading path
(grader.grading.grade) on a worker of the executor (grader.batch.executors, chosen by
grader.batch.where), with a temporary folder and a share of the cores of its own; its student code
runs only in sandboxes that see neither the submissions, nor DIR, nor another worker. A grading
stopped by the wall-clock backstop (a machine too busy, not the student's code) is graded once
more, at the end, before it is scored. The screen follows it (grader.batch.progress); each student
ends as an Outcome (grader.batch.outcomes), saved at once, and the gradebook is written from them all.

Running the same command again grades only the students whose submission, tests, spec, grader or
scoring options changed, and those whose last grading hit a grader error (grader.batch.store).
A regrade picks its students instead: `--only ID` and `--failed` (a grader error or a busy
machine last time) grade those again and keep the others as stored; `--force` grades everyone.
`--deadline` sets each report's late penalty (grader.batch.late) without grading again; the next
runs apply it again until given another, or `--no-deadline`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rich.console import Console

from grader.batch.executors import Executor, Slot
from grader.batch.gradebook import write_gradebook
from grader.batch.late import Deadline, hand_in_times, keep_deadline, last_deadline
from grader.batch.layouts import DOWNLOAD, read_hand_ins, writes
from grader.batch.outcomes import BatchResult, Outcome
from grader.batch.plan import check_ids, plan
from grader.batch.progress import BatchProgress, outcome_line
from grader.batch.store import STATE, Entry, Snapshot, Store, exclusive, grader_key
from grader.batch.where import executor_for
from grader.errors import GraderError, UserError, make_folder
from grader.grading import BrokenRun, collected_tests
from grader.i18n import N_
from grader.manual import apply_marks, by_student, read_marks, unmatched
from grader.options import GradingOptions
from grader.plugin.records import CollectedTest
from grader.plugin.session import resolve_profile
from grader.report import Report, build_report
from grader.runner import Run, collect, selection
from grader.sandbox import platform
from grader.seeding import seeded
from grader.spec import Spec


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs, beside how each hand-in is graded (GradingOptions).

    `only` (ids) and `failed` (those whose last grading the grader or a busy machine failed) grade
    those students again, whatever is stored, and keep the others as they are; `force` grades every
    student again. `deadline` sets each report's late penalty; without it, the last run's deadline
    applies again (said in one line) unless `no_deadline` drops it. `where` the gradings run when no
    `executor` is given: "local" (`workers` of this machine's, default: as its cores and memory
    hold) or "ray" (the Ray cluster at `address`, whose nodes each check their own sandbox). The
    submissions are read as `layout` (grader.batch.layouts: auto, folders, canvas, moodle,
    classroom, gradescope); `canvas_assignment` is canvas.csv's column; `console` (default: standard
    error) shows the run.
    """

    workers: int | None = None
    executor: Executor | None = None
    where: str = "local"
    address: str | None = None
    layout: str = "auto"
    only: tuple[str, ...] = ()
    failed: bool = False
    force: bool = False
    deadline: Deadline | None = None
    no_deadline: bool = False
    canvas_assignment: str | None = None
    console: Console | None = None


def run_batch(
    spec: Spec,
    submissions: Path,
    out: Path,
    options: GradingOptions | None = None,
    batch: BatchOptions | None = None,
) -> BatchResult:
    """Grade every submission in `submissions` that `out` does not hold already, with `options`, run as
    `batch` says (BatchOptions); write the gradebook.

    Interrupting it (KeyboardInterrupt) stops the running gradings at once: what they did is lost,
    what was finished before is kept. `submissions` is a folder or the .zip an LMS gave; what it
    unpacks or puts together goes in DIR/.batch/download/. DIR is made, and locked for this batch
    alone (store.exclusive), before the hand-ins are read where reading writes there, else after the
    checks that need no DIR: a mistake in the command leaves no folder behind.
    """
    options = options or GradingOptions(allow_unisolated=False)
    batch = batch or BatchOptions()
    console = batch.console or Console(stderr=True)
    with contextlib.ExitStack() as held:
        early = writes(submissions, batch.layout)
        if early:  # a zip unpacked, an LMS's files put together: in DIR, under its lock
            _hold(out, held)
        download = read_hand_ins(submissions, batch.layout, out / STATE / DOWNLOAD)
        entries = download.entries
        if not entries:
            raise UserError(f"{submissions} holds no submission")
        for line in download.lines():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        check_ids(batch.only, entries, submissions)
        deadline = batch.deadline or _last_deadline(out / STATE, batch.no_deadline, console)
        # its mistakes before any grading
        handed_in = hand_in_times(entries, download.beside, download.handed_in) if deadline else {}
        if batch.where == "local" and not options.allow_unisolated and platform.mechanism() == platform.NONE:
            raise UserError(
                "no sandbox on this machine (bubblewrap is missing or refused: apt-get install bubblewrap): "
                "student code would run as you; pass --allow-unisolated to grade anyway"
            )
        if not early:
            _hold(out, held)

        keep_deadline(out / STATE, deadline)
        profile = resolve_profile(spec, options.profile, options.data_dir, options.device).name  # what "auto" is here
        key = grader_key(spec, options)
        store = Store(out)
        unwritten: dict[str, list[str]] = {}  # per student, the files of their last save that failed
        marks = read_marks(out)  # the TAs' (grade review), read once before any grading: a mistake costs none
        marked = by_student(marks)
        planned = plan(spec, entries, store, out / STATE / "snapshots", key, batch.only, batch.failed, batch.force)
        workers = held.enter_context(contextlib.ExitStack())  # closed once the gradings are done
        executor = batch.executor
        if planned.pending and executor is None:  # started now: its workers warm up while the tests are collected
            executor = executor_for(spec, options, batch.workers, batch.where, batch.address)
            workers.callback(executor.shutdown)
        collected = _collect(spec, options)
        titles = {test["nodeid"]: test["name"] for test in collected}  # in this run's language
        outcomes: dict[str, Outcome] = dict(planned.kept)  # by id: the kept now, the others as they end

        def record(outcome: Outcome) -> None:
            """Keep a student's outcome, with the late penalty, the TAs' marks and the language of this run, and
            save their files."""
            outcome.report.late = deadline.late(handed_in[outcome.id]) if deadline else {}
            speak(outcome.report, spec, titles)
            apply_marks(outcome.report, spec, marked.get(outcome.id, {}))
            outcomes[outcome.id] = outcome
            unwritten[outcome.id] = store.save(
                outcome.id, outcome.report, outcome.status, outcome.key, options.show_hidden
            )

        for snap, student_key, resumed in planned.unreadable:
            report = _zero_report(spec, collected, snap.entry, snap.problem, profile)
            record(outcome := Outcome(snap.entry.id, report, "unreadable", student_key, resumed=resumed))
            if not resumed:
                console.print(outcome_line(outcome), markup=False, highlight=False, soft_wrap=True)
        if planned.pending and executor is not None:
            executor.ready()  # a sandbox that cannot start says why once, before the first hand-in
            _grade_all(spec, planned.pending, collected, profile, options, executor, outcomes, record, store, console)
        workers.close()  # its own executor, freed before the gradebook is written
        ordered = [outcomes[e.id] for e in entries if e.id in outcomes]
        for outcome in ordered:  # re-rendered from the reports: presentation and the penalty may have changed
            record(outcome)
        failed = [line for lines in unwritten.values() for line in lines]
        failed += write_gradebook(
            out,
            ordered,
            options.show_hidden,
            batch.canvas_assignment,
            lms_title=spec.title,
            names=download.names,
            layout=download.layout,
        )
    stray = unmatched(marks, [entry.id for entry in entries], spec)  # marks that count for no one: said, not fatal
    for line in filter(None, [stray, *failed]):  # after the rest was written: the grades stand, one file is missing
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return BatchResult(out, ordered, planned.left_out, failed)


def _hold(out: Path, held: contextlib.ExitStack) -> None:
    """DIR, made, and the lock that lets one batch at a time write there (store.exclusive), held until `held` closes."""
    make_folder(out, f"--out {out}")
    held.enter_context(exclusive(out / STATE))


def speak(report: Report, spec: Spec, titles: dict[str, str]) -> None:
    """Put the grader's own wording of a stored report in the language spoken now: the assignment's title
    and the tests' (`titles`, by node id); a test's reason stays in the language it was graded in, and
    the rest is worded where it is rendered."""
    report.title = spec.shown_title
    for test in report.tests:
        test.name = titles.get(test.nodeid, test.name)


def _last_deadline(state: Path, dropped: bool, console: Console) -> Deadline | None:
    """The deadline of a run given none: the last run's (a rerun that forgot --deadline keeps every
    penalty, and says so), or none where it was dropped (--no-deadline) or never given."""
    last = None if dropped else last_deadline(state)
    if last is not None:
        due = last.due.isoformat(timespec="seconds")
        forgotten = (
            f"the last run applied a deadline of {due} ({last.policy.describe()}); this run was given none and "
            "applies it again: give --deadline again, or --no-deadline to drop the penalties"
        )
        console.print(forgotten, markup=False, highlight=False, soft_wrap=True)
    return last


def _grade_all(
    spec: Spec,
    pending: list[tuple[Snapshot, str]],
    collected: list[CollectedTest],
    profile: str,
    options: GradingOptions,
    executor: Executor,
    outcomes: dict[str, Outcome],
    record: Callable[[Outcome], None],
    store: Store,
    console: Console,
) -> None:
    """Grade the pending snapshots on the executor, recording each student as soon as they are done;
    those a busy machine stopped are graded once more, after the rest."""
    cancel = threading.Event()
    statuses = [o.status for o in outcomes.values()]  # "failed": the grader's errors; "unreadable" ran nothing
    counts = {"running": 0, "failed": statuses.count("error"), "unreadable": statuses.count("unreadable")}
    total = len(outcomes) + len(pending)
    board = BatchProgress(console, spec.name, total, len(outcomes), counts, executor.workers)

    def submit(snap: Snapshot) -> Future[Report]:
        board.eta.add()
        own = seeded(options, spec, snap.digest)  # here, not on the executor: the same seed on any node
        return executor.submit(partial(_grade_one, spec, snap, own, cancel, board))

    keys = dict(pending)
    with board:
        futures = {submit(snap): (snap, False) for snap, _ in pending}
        try:
            while futures:  # a round: what is pending now; retries go to the next round
                for future in as_completed(list(futures)):
                    snap, retried = futures.pop(future)
                    outcome = _outcome_of(future, snap, keys[snap], spec, collected, profile, store)
                    if outcome.busy and not retried:  # the machine's fault: once more, after the rest
                        futures[submit(snap)] = (snap, True)
                        board.console.print(
                            f"{snap.entry.id}: the machine was too busy; graded again later", markup=False
                        )
                        continue
                    record(outcome)
                    if outcome.status == "error":
                        board.count("failed", 1)
                    board.advance()
                    board.say(outcome_line(outcome))
        except KeyboardInterrupt:
            cancel.set()
            executor.shutdown(cancel=True)
            board.console.print("interrupted: run the same command again to grade the rest")
            raise


def _outcome_of(
    future: Future[Report],
    snap: Snapshot,
    key: str,
    spec: Spec,
    collected: list[CollectedTest],
    profile: str,
    store: Store,
) -> Outcome:
    try:
        report = future.result()
        broken = report.sandbox_failures()  # still, after its retry: graded again next run
        return Outcome(snap.entry.id, report, "error" if broken else "graded", key)
    except Exception as broken:  # the grader's fault, not the student's: graded again next time
        report = _zero_report(spec, collected, snap.entry, f"grader error: {broken}".strip(), profile)
        run_log = store.folder(snap.entry.id) / "run.log"  # the instructor's: it may quote hidden tests
        if isinstance(broken, BrokenRun) and broken.log:
            run_log.parent.mkdir(parents=True, exist_ok=True)
            run_log.write_text(broken.log)
        return Outcome(snap.entry.id, report, "error", key)


def _grade_one(
    spec: Spec,
    snapshot: Snapshot,
    options: GradingOptions,
    cancel: threading.Event,
    board: BatchProgress,
    slot: Slot,
) -> Report:
    """On a worker: grade one snapshot, checked to be still what was read, by the one grading path."""
    student = snapshot.entry.id
    board.eta.started(student)
    try:
        if cancel.is_set():
            raise GraderError("cancelled")
        if not snapshot.intact():
            raise GraderError("its snapshot changed after it was read: run the batch again")
        assert snapshot.folder is not None
        board.count("running", 1)
        try:
            return slot.grade(spec, snapshot.folder, options, cancel, str(snapshot.entry.path))
        finally:
            board.count("running", -1)
    finally:
        board.eta.finished(student)


def _collect(spec: Spec, options: GradingOptions) -> list[CollectedTest]:
    """The tests that will be graded: for the reports of hand-ins that cannot be read at all."""
    run = collect(spec.root, [spec], args=(*selection(options.select, options.marks), "--lang", options.lang))
    try:
        return collected_tests(run, spec, options)
    except BrokenRun as broken:  # the instructor's terminal: what broke the tests, before any grading
        raise GraderError(f"{broken}:\n{broken.log}") from None


def _zero_report(spec: Spec, collected: list[CollectedTest], entry: Entry, problem: str, profile: str) -> Report:
    """The report of a hand-in that could not be graded at all: every test at zero, the problem said once."""
    session = {"profile": profile, "device": "-", "dataset": "-", "isolation": N_("not run")}
    run = Run(session=session, collected=collected)
    return build_report(spec, run, str(entry.path), problem=problem)
