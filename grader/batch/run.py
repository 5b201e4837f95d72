"""Grading a whole class: `grade batch <assignment> <submissions> --out DIR`.

One submission per entry of the folder: a folder, a `.zip`, a `.py` or a `.ipynb`; or an LMS's
download, the folder or its .zip, read into an entry per student (grader.batch.layouts). Every entry is
read once, before any student code runs, into a snapshot (grader.batch.store). Each snapshot is
then graded by THE grading path (grader.grading.grade) on a worker of the executor
(grader.batch.executors), with a temporary folder and a share of the cores of its own; its
student code runs only in sandboxes that see neither the submissions, nor DIR, nor another
worker. A grading stopped by the wall-clock backstop (a machine too busy, not the student's code)
is graded once more, at the end, before it is scored.

Running the same command again grades only the students whose submission, tests, spec, grader or
scoring options changed, and those whose last grading hit a grader error (grader.batch.store).
A regrade picks its students instead: `--only ID` and `--failed` (a grader error or a busy
machine last time) grade those again and keep the others as stored; `--force` grades everyone.
`--deadline` sets each report's late penalty (grader.batch.late) without grading again; the next
runs apply it again until given another, or `--no-deadline`.
"""

from __future__ import annotations

import contextlib
import difflib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from grader import data
from grader.batch.executors import Executor, LocalExecutor, Slot, Warm, default_workers
from grader.batch.gradebook import print_summary, write_gradebook
from grader.batch.late import Deadline, hand_in_times, keep_deadline, last_deadline, parse_time
from grader.batch.layouts import DOWNLOAD, read_hand_ins, writes
from grader.batch.store import (
    STATE,
    Entry,
    Snapshot,
    Store,
    Stored,
    exclusive,
    grader_key,
    take_snapshot,
)
from grader.errors import GraderError, UserError, make_folder
from grader.grading import BrokenRun, collected_tests
from grader.i18n import N_
from grader.manual import apply_marks, by_student, marking_line, read_marks, unmatched
from grader.options import GradingOptions
from grader.plugin.session import resolve_profile
from grader.report import Report, build_report
from grader.runner import Run, collect, selection
from grader.sandbox import platform
from grader.seeding import seeded
from grader.spec import LatePolicy, Spec

if TYPE_CHECKING:
    from grader.batch.ray import RayExecutor


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

    @property
    def grade(self) -> float | None:
        """What the gradebook records: the score after any late penalty; none where the grader failed
        (graded again at the next run)."""
        return None if self.status == "error" else self.report.final_score

    @property
    def busy(self) -> bool:
        """Whether the machine or the grader, not the code, failed a test (the wall-clock backstop, a
        broken sandbox): graded again, later, before it counts."""
        return machine_failed(self.report)


def machine_failed(report: Report) -> bool:
    """Whether a test of `report` met the wall-clock backstop (a busy machine) or a broken sandbox."""
    return any(t.limit in ("backstop", "grader") for t in report.tests)


@dataclass
class BatchResult:
    out: Path
    outcomes: list[Outcome]
    left_out: list[str] = field(default_factory=list)  # never graded, and not picked by --only/--failed
    unwritten: list[str] = field(default_factory=list)  # the files that could not be written, a line each

    @property
    def graded_now(self) -> int:
        return sum(not o.resumed for o in self.outcomes)

    @property
    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "error"]


def run_batch(
    spec: Spec,
    submissions: Path,
    out: Path,
    options: GradingOptions | None = None,
    workers: int | None = None,
    executor: Executor | None = None,
    console: Console | None = None,
    only: tuple[str, ...] = (),
    failed: bool = False,
    force: bool = False,
    deadline: Deadline | None = None,
    no_deadline: bool = False,
    canvas_assignment: str | None = None,
    where: str = "local",
    address: str | None = None,
    layout: str = "auto",
) -> BatchResult:
    """Grade every submission in `submissions` that `out` does not hold already; write the gradebook.

    `only` (ids) and `failed` (those whose last grading the grader or a busy machine failed) grade
    those students again, whatever is stored, and keep the others as they are; `force` grades every
    student again. `deadline` sets each report's late penalty; without it, the last run's deadline
    applies again (said in one line) unless `no_deadline` drops it. `where` the gradings run when no
    `executor` is given: "local" (this machine's workers) or "ray" (the Ray cluster at `address`,
    whose nodes each check their own sandbox). Interrupting it (KeyboardInterrupt) stops the running
    gradings at once: what they did is lost, what was finished before is kept. `submissions` is
    read as `layout` (grader.batch.layouts: auto, folders, canvas, moodle, classroom, gradescope),
    a folder or the .zip an LMS gave; what it unpacks or puts together goes in DIR/.batch/download/.
    """
    options = options or GradingOptions(allow_unisolated=False)
    console = console or Console(stderr=True)
    lock = _Lock(out)
    try:
        if writes(submissions, layout):  # a zip unpacked, an LMS's files put together: in DIR, under its lock
            lock.take()
        download = read_hand_ins(submissions, layout, out / STATE / DOWNLOAD)
        entries = download.entries
        if not entries:
            raise UserError(f"{submissions} holds no submission")
        for line in download.lines():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        _check_ids(only, entries, submissions)
        deadline = deadline or _last_deadline(out / STATE, no_deadline, console)
        # its mistakes before any grading
        handed_in = hand_in_times(entries, download.beside, download.handed_in) if deadline else {}
        if where == "local" and not options.allow_unisolated and platform.mechanism() == platform.NONE:
            raise UserError(
                "no sandbox on this machine (bubblewrap is missing or refused: apt-get install bubblewrap): "
                "student code would run as you; pass --allow-unisolated to grade anyway"
            )
    except BaseException:
        lock.release()
        raise
    with lock:
        keep_deadline(out / STATE, deadline)
        collected = _collect(spec, options)
        profile = resolve_profile(spec, options.profile, options.data_dir, options.device).name  # what "auto" is here
        key = grader_key(spec, options)
        store = Store(out)
        outcomes: dict[str, Outcome] = {}
        unwritten: dict[str, list[str]] = {}  # per student, the files of their last save that failed
        left_out = []

        titles = {test["nodeid"]: test["name"] for test in collected}  # in this run's language
        marks = read_marks(out)  # the TAs' (grade review), read once before any grading: a mistake costs none
        marked = by_student(marks)

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

        last = {entry.id: store.stored(entry.id) for entry in entries}
        picked = _picked(last, only, failed)
        pending = []
        for entry in entries:
            stored = last[entry.id]
            if picked is not None and entry.id not in picked:  # a regrade of others: kept as stored
                if stored:
                    outcomes[entry.id] = Outcome(entry.id, stored.report, stored.status, stored.key, resumed=True)
                else:
                    left_out.append(entry.id)
                continue
            snap = take_snapshot(entry, spec, out / STATE / "snapshots" / entry.id)
            student_key = f"{key}:{snap.digest}"
            resumed = picked is None and not force and stored is not None and stored.current(student_key)
            if snap.problem:  # said again in this run's language: reading it is all the grading there is
                report = _zero_report(spec, collected, entry, snap.problem, profile)
                record(outcome := Outcome(entry.id, report, "unreadable", student_key, resumed=resumed))
                if not resumed:
                    console.print(_line(outcome), markup=False, highlight=False, soft_wrap=True)
            elif resumed:
                assert stored is not None
                outcomes[entry.id] = Outcome(entry.id, stored.report, stored.status, student_key, resumed=True)
            else:
                pending.append((snap, student_key))
        if pending:
            owned = executor is None
            executor = executor or _executor(spec, options, workers, where, address)
            try:
                executor.ready()  # a sandbox that cannot start says why once, before the first hand-in
                _grade_all(spec, pending, collected, profile, options, executor, outcomes, record, store, console)
            finally:
                if owned:
                    executor.shutdown()
        ordered = [outcomes[e.id] for e in entries if e.id in outcomes]
        for outcome in ordered:  # re-rendered from the reports: presentation and the penalty may have changed
            record(outcome)
        failed = [line for lines in unwritten.values() for line in lines]
        failed += write_gradebook(
            out,
            ordered,
            options.show_hidden,
            canvas_assignment,
            lms_title=spec.title,
            names=download.names,
            layout=download.layout,
        )
    stray = unmatched(marks, [entry.id for entry in entries], spec)  # marks that count for no one: said, not fatal
    for line in filter(None, [stray, *failed]):  # after the rest was written: the grades stand, one file is missing
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return BatchResult(out, ordered, left_out, failed)


class _Lock:
    """DIR, made, and the lock that lets one batch at a time write there (store.exclusive), taken once:
    before the hand-ins are read where reading writes in DIR, else after the checks that need no DIR
    (a mistake in the command leaves no folder behind)."""

    def __init__(self, out: Path):
        self.out = out
        self.held = contextlib.ExitStack()
        self.taken = False

    def take(self) -> None:
        if not self.taken:
            make_folder(self.out, f"--out {self.out}")
            self.held.enter_context(exclusive(self.out / STATE))
            self.taken = True

    def release(self) -> None:
        self.held.close()
        self.taken = False

    def __enter__(self) -> _Lock:
        self.take()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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


def _check_ids(only: tuple[str, ...], entries: list[Entry], submissions: Path) -> None:
    """Every id of --only names a submission: a typo is one line, with the nearest name."""
    ids = [e.id for e in entries]
    for student in only:
        if student not in ids:
            near = difflib.get_close_matches(student, ids, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise UserError(f"--only {student}: {submissions} has no submission of that name{hint}")


def _picked(last: dict[str, Stored | None], only: tuple[str, ...], failed: bool) -> set[str] | None:
    """The students a regrade grades again: those named, and with `failed` those whose last grading
    the grader or a busy machine failed; None: no regrade, every student as resuming decides."""
    if not only and not failed:
        return None
    broken = {s for s, stored in last.items() if stored and (stored.status == "error" or machine_failed(stored.report))}
    return set(only) | (broken if failed else set())


class Eta:
    """Time left in a batch, from the gradings done in this run only (what was resumed or could not
    be read took no time): each worker grades one hand-in at a time, so what is left takes about
    the mean grading time for each hand-in not started, and the rest of it for each running one,
    shared by the workers."""

    def __init__(self, workers: int, clock: Callable[[], float] = time.monotonic):
        self.workers = workers
        self.clock = clock
        self.queued = 0
        self.running: dict[str, float] = {}  # id -> when it started
        self.durations: list[float] = []
        self.lock = threading.Lock()

    def add(self, count: int = 1) -> None:
        with self.lock:
            self.queued += count

    def started(self, student: str) -> None:
        with self.lock:
            self.queued -= 1
            self.running[student] = self.clock()

    def finished(self, student: str) -> None:
        with self.lock:
            self.durations.append(self.clock() - self.running.pop(student))

    def left(self) -> float | None:
        """Seconds left, or None until one grading is done."""
        with self.lock:
            if not self.durations:
                return None
            mean = sum(self.durations) / len(self.durations)
            now = self.clock()
            rests = [max(0.0, mean - (now - begun)) for begun in self.running.values()]
            return max((self.queued * mean + sum(rests)) / self.workers, max(rests, default=0.0))


class _EtaColumn(ProgressColumn):
    """rich's TimeRemainingColumn estimates from the bar's own speed, which counts the resumed
    hand-ins as if they had been graded now; this one asks the Eta."""

    def __init__(self, eta: Eta):
        super().__init__()
        self.eta = eta

    def render(self, task: Task) -> Text:
        left = self.eta.left()
        return Text("-:--:--" if left is None else str(timedelta(seconds=round(left))), style="progress.remaining")


def _grade_all(
    spec: Spec,
    pending: list[tuple[Snapshot, str]],
    collected: list[dict[str, Any]],
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
    lock = threading.Lock()
    eta = Eta(executor.workers)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "{task.fields[running]} running · {task.fields[failed]} failed · {task.fields[unreadable]} unreadable"
        ),
        TimeElapsedColumn(),
        TextColumn("· left"),
        _EtaColumn(eta),
        console=console,
    )
    task = progress.add_task(spec.name, total=len(outcomes) + len(pending), completed=len(outcomes), **counts)

    def count(key: str, step: int) -> None:
        with lock:
            counts[key] += step
            progress.update(task, **counts)

    def submit(snap: Snapshot) -> Future[Report]:
        eta.add()
        own = seeded(options, spec, snap.digest)  # here, not on the executor: the same seed on any node
        return executor.submit(partial(_grade_one, spec, snap, own, cancel, count, eta))

    keys = dict(pending)
    with progress:
        futures = {submit(snap): (snap, False) for snap, _ in pending}
        try:
            while futures:  # a round: what is pending now; retries go to the next round
                for future in as_completed(list(futures)):
                    snap, retried = futures.pop(future)
                    outcome = _outcome_of(future, snap, keys[snap], spec, collected, profile, store)
                    if outcome.busy and not retried:  # the machine's fault: once more, after the rest
                        futures[submit(snap)] = (snap, True)
                        progress.console.print(
                            f"{snap.entry.id}: the machine was too busy; graded again later", markup=False
                        )
                        continue
                    record(outcome)
                    if outcome.status == "error":
                        count("failed", 1)
                    progress.advance(task)
                    progress.console.print(_line(outcome), markup=False, highlight=False, soft_wrap=True)
        except KeyboardInterrupt:
            cancel.set()
            executor.shutdown(cancel=True)
            progress.console.print("interrupted: run the same command again to grade the rest")
            raise


def _outcome_of(
    future: Future[Report],
    snap: Snapshot,
    key: str,
    spec: Spec,
    collected: list[dict[str, Any]],
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
    count: Callable[[str, int], None],
    eta: Eta,
    slot: Slot,
) -> Report:
    """On a worker: grade one snapshot, checked to be still what was read, by the one grading path."""
    student = snapshot.entry.id
    eta.started(student)
    try:
        if cancel.is_set():
            raise GraderError("cancelled")
        if not snapshot.intact():
            raise GraderError("its snapshot changed after it was read: run the batch again")
        assert snapshot.folder is not None
        count("running", 1)
        try:
            return slot.grade(spec, snapshot.folder, options, cancel, str(snapshot.entry.path))
        finally:
            count("running", -1)
    finally:
        eta.finished(student)


def _executor(spec: Spec, options: GradingOptions, workers: int | None, where: str, address: str | None) -> Executor:
    if where == "ray":
        return ray_executor().for_batch(spec, options, address, workers)
    gpu = uses_gpu(spec, options)
    workers = workers or default_workers(options.apply(spec.limits).memory_mb)
    return LocalExecutor(workers, gpu=gpu, warm=warm_for([spec], options, gpu))


def ray_executor() -> type[RayExecutor]:
    try:
        from grader.batch.ray import RayExecutor
    except ImportError as missing:
        raise UserError(f"--executor ray needs Ray ({missing}): pip install '.[ray]'") from None
    return RayExecutor


def _collect(spec: Spec, options: GradingOptions) -> list[dict[str, Any]]:
    """The tests that will be graded: for the reports of hand-ins that cannot be read at all."""
    run = collect(spec.root, [spec], args=(*selection(options.select, options.marks), "--lang", options.lang))
    try:
        return collected_tests(run, spec, options)
    except BrokenRun as broken:  # the instructor's terminal: what broke the tests, before any grading
        raise GraderError(f"{broken}:\n{broken.log}") from None


def _zero_report(spec: Spec, collected: list[dict[str, Any]], entry: Entry, problem: str, profile: str) -> Report:
    """The report of a hand-in that could not be graded at all: every test at zero, the problem said once."""
    session = {"profile": profile, "device": "-", "dataset": "-", "isolation": N_("not run")}
    run = Run(session=session, collected=collected)
    return build_report(spec, run, str(entry.path), problem=problem)


def warm_for(specs: list[Spec], options: GradingOptions, gpu: bool = False) -> Warm:
    """What the workers of a batch of these assignments load once: sandbox preloads and the quick datasets."""
    preload = tuple(sorted({m for spec in specs for m in spec.sandbox_preload}))
    named = "quick" if options.profile == "auto" else options.profile
    datasets = tuple(sorted({d for spec in specs if (d := spec.profile(named).dataset) and data.SOURCES[d].packaged}))
    return Warm(preload, datasets, gpu)


def uses_gpu(spec: Spec, options: GradingOptions) -> bool:
    """Whether the gradings of `spec` with `options` on this machine train on its GPU."""
    name = "full" if options.profile == "auto" else options.profile
    if not spec.profile(name).device.startswith("cuda"):
        return False
    import torch

    return torch.cuda.is_available()


def _line(outcome: Outcome) -> str:
    report = outcome.report
    if report.problem:  # nothing ran: its status and why, no score nor time of a grading
        return f"{outcome.id}: {outcome.status} · {report.problem}"
    limits = f" · limits: {', '.join(outcome.limits)}" if outcome.limits else ""
    days = report.late.get("days", 0)
    tests_late = f"{report.score_after_penalty:g} after the penalty"  # the tests': the written points come later
    late = f" · {days} day{'s' if days > 1 else ''} late: {tests_late}" if days else ""
    score = f"{report.score:g} / {report.max_score:g} ({report.duration_s:.0f} s)"
    return f"{outcome.id}: {score}{late}{limits}"


def command(
    spec: Spec,
    options: GradingOptions,
    submissions: Path,
    out: Path,
    workers: int | None,
    only: tuple[str, ...],
    failed: bool,
    force: bool,
    deadline: str | None,
    late_policy: str | None,
    no_deadline: bool,
    canvas_assignment: str | None,
    executor: str,
    address: str | None,
    layout: str = "auto",
) -> int:
    """`grade batch`, with its GradingOptions built: see grader/cli.py for its options."""
    if executor == "ray":
        ray_executor().check_address(address)  # before any test is collected: a mistake costs no time
    elif address is not None:
        raise UserError("--address is the Ray cluster's: give it with --executor ray")
    ids = tuple(i.strip() for item in only for i in item.split(",") if i.strip())  # --only a --only b,c
    console = Console()
    result = run_batch(
        spec,
        submissions,
        out,
        options,
        workers,
        console=console,
        only=ids,
        failed=failed,
        force=force,
        deadline=_deadline(spec, deadline, late_policy, no_deadline),
        no_deadline=no_deadline,
        canvas_assignment=canvas_assignment,
        where=executor,
        address=address,
        layout=layout,
    )
    print_summary(result, console)
    if spec.questions:  # the last line: what the TAs have left to mark (grade review)
        console.print(marking_line(o.report for o in result.outcomes), markup=False, highlight=False, soft_wrap=True)
    if result.errors:
        names = ", ".join(o.id for o in result.errors)
        raise GraderError(f"{len(result.errors)} submissions could not be graded ({names}): run again to retry them")
    return 0


def _deadline(spec: Spec, deadline: str | None, late_policy: str | None, no_deadline: bool) -> Deadline | None:
    """--deadline with --late-policy, or with the spec's [late]."""
    if no_deadline and (deadline is not None or late_policy is not None):
        raise UserError("--no-deadline drops the late penalties: give it without --deadline and --late-policy")
    if deadline is None:
        if late_policy is not None:
            raise UserError("--late-policy needs a --deadline")
        return None
    policy = LatePolicy.parse(late_policy) if late_policy is not None else spec.late
    if policy is None:
        raise UserError(
            f"--deadline needs a late policy: --late-policy '10%/day,max 3', or [late] in {spec.name}'s spec.toml"
        )
    return Deadline(parse_time(deadline, "--deadline"), policy)
