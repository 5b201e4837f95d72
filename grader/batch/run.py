"""Grading a whole class: `grade batch <assignment> <submissions> --out DIR`.

One submission per entry of the folder: a folder, a `.zip`, a `.py` or a `.ipynb`. Every entry is
read once, before any student code runs, into a snapshot (grader.batch.store). Each snapshot is
then graded by THE grading path (grader.grading.grade) on a worker of the executor
(grader.batch.executors), with a temporary folder and a share of the cores of its own; its
student code runs only in sandboxes that see neither the submissions, nor DIR, nor another
worker. A grading stopped by the wall-clock backstop (a machine too busy, not the student's code)
is graded once more, at the end, before it is scored.

Running the same command again grades only the students whose submission, tests, spec, grader or
scoring options changed, and those whose last grading hit a grader error (grader.batch.store).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from grader import data
from grader.batch.executors import Executor, LocalExecutor, Slot, Warm, default_workers
from grader.batch.gradebook import print_summary, write_gradebook
from grader.batch.store import STATE, Entry, Snapshot, Store, exclusive, find_entries, grader_key, take_snapshot
from grader.errors import GraderError, UserError, make_folder
from grader.grading import BrokenRun
from grader.options import GradingOptions, parse_limits
from grader.report import Report, build_report
from grader.runner import Run, collect, selection
from grader.sandbox import platform
from grader.spec import Spec, load_spec

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
    def busy(self) -> bool:
        """Whether the machine or the grader, not the code, failed a test (the wall-clock backstop, a
        broken sandbox): graded again, later, before it counts."""
        return bool({"backstop", "grader"} & set(self.limits))


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


def run_batch(
    spec: Spec,
    submissions: Path,
    out: Path,
    options: GradingOptions | None = None,
    workers: int | None = None,
    executor: Executor | None = None,
    console: Console | None = None,
    where: str = "local",
    address: str | None = None,
) -> BatchResult:
    """Grade every submission in `submissions` that `out` does not hold already; write the gradebook.

    `where` the gradings run when no `executor` is given: "local" (this machine's workers) or "ray"
    (the Ray cluster at `address`, whose nodes each check their own sandbox).

    Interrupting it (KeyboardInterrupt) stops the running gradings at once: what they did is lost,
    what was finished before is kept.
    """
    options = options or GradingOptions(allow_unisolated=False)
    console = console or Console(stderr=True)
    entries = find_entries(submissions)
    if not entries:
        raise UserError(f"{submissions} holds no submission")
    if where == "local" and not options.allow_unisolated and platform.mechanism() == platform.NONE:
        raise UserError(
            "no sandbox on this machine (bubblewrap is missing or refused: apt-get install bubblewrap): "
            "student code would run as you; pass --allow-unisolated to grade anyway"
        )
    make_folder(out, f"--out {out}")
    with exclusive(out / STATE):
        collected = _collect(spec, options)
        key = grader_key(spec, options)
        store = Store(out)
        snapshots = [take_snapshot(e, spec, out / STATE / "snapshots" / e.id) for e in entries]
        outcomes: dict[str, Outcome] = {}
        pending = []
        for snap in snapshots:
            student_key = f"{key}:{snap.digest}"
            previous = store.previous(snap.entry.id, student_key)
            if previous is not None:
                outcomes[snap.entry.id] = Outcome(snap.entry.id, previous[0], previous[1], student_key, resumed=True)
            elif snap.problem:
                report = _zero_report(spec, collected, snap.entry, snap.problem, options)
                outcomes[snap.entry.id] = Outcome(snap.entry.id, report, "unreadable", student_key)
                store.save(snap.entry.id, report, "unreadable", student_key, options.show_hidden)
            else:
                pending.append((snap, student_key))
        if pending:
            owned = executor is None
            executor = executor or _executor(spec, options, workers, where, address)
            try:
                _grade_all(spec, pending, collected, options, executor, outcomes, store, console)
            finally:
                if owned:
                    executor.shutdown()
        ordered = [outcomes[e.id] for e in entries]
        for outcome in ordered:  # re-rendered from the reports: presentation may have changed
            store.save(outcome.id, outcome.report, outcome.status, outcome.key, options.show_hidden)
        write_gradebook(out, ordered, options.show_hidden)
    return BatchResult(out, ordered)


def _grade_all(
    spec: Spec,
    pending: list[tuple[Snapshot, str]],
    collected: list[dict[str, Any]],
    options: GradingOptions,
    executor: Executor,
    outcomes: dict[str, Outcome],
    store: Store,
    console: Console,
) -> None:
    """Grade the pending snapshots on the executor, saving each student as soon as they are done;
    those a busy machine stopped are graded once more, after the rest."""
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

    def submit(snap: Snapshot) -> Future[Report]:
        return executor.submit(partial(_grade_one, spec, snap, options, cancel, count))

    keys = dict(pending)
    with progress:
        futures = {submit(snap): (snap, False) for snap, _ in pending}
        try:
            while futures:  # a round: what is pending now; retries go to the next round
                for future in as_completed(list(futures)):
                    snap, retried = futures.pop(future)
                    outcome = _outcome_of(future, snap, keys[snap], spec, collected, options, store)
                    if outcome.busy and not retried:  # the machine's fault: once more, after the rest
                        futures[submit(snap)] = (snap, True)
                        progress.console.print(f"{snap.entry.id}: the machine was too busy; graded again later")
                        continue
                    outcomes[outcome.id] = outcome
                    store.save(outcome.id, outcome.report, outcome.status, outcome.key, options.show_hidden)
                    if outcome.status != "graded":
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
    options: GradingOptions,
    store: Store,
) -> Outcome:
    try:
        report = future.result()
        broken = any(t.limit == "grader" for t in report.tests)  # still, after its retry: graded again next run
        return Outcome(snap.entry.id, report, "error" if broken else "graded", key)
    except Exception as broken:  # the grader's fault, not the student's: graded again next time
        report = _zero_report(spec, collected, snap.entry, f"grader error: {broken}".strip(), options)
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
    slot: Slot,
) -> Report:
    """On a worker: grade one snapshot, checked to be still what was read, by the one grading path."""
    if cancel.is_set():
        raise GraderError("cancelled")
    if not snapshot.intact():
        raise GraderError("its snapshot changed after it was read: run the batch again")
    assert snapshot.folder is not None
    count("running", 1)
    try:
        label = str(snapshot.entry.path)
        return slot.grade(spec, snapshot.folder, options, cancel, label)
    finally:
        count("running", -1)


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
    run = collect(spec.root, [spec], args=tuple(selection(options.select, options.marks)))
    if run.collected is None or run.collect_errors:
        detail = run.collect_errors[0]["text"] if run.collect_errors else run.log_tail
        raise GraderError(f"the tests of {spec.name} could not be collected:\n{detail}")
    if not run.collected:
        raise UserError(f"no test of {spec.name} is selected")
    return run.collected


def _zero_report(
    spec: Spec, collected: list[dict[str, Any]], entry: Entry, problem: str, options: GradingOptions
) -> Report:
    session = {"profile": options.profile, "device": "-", "dataset": "-", "isolation": "not run"}
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
    limits = f" · limits: {', '.join(outcome.limits)}" if outcome.limits else ""
    problem = f" · {report.problem}" if report.problem else ""
    return f"{outcome.id}: {report.score:g} / {report.max_score:g} ({report.duration_s:.0f} s){limits}{problem}"


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
    allow_unisolated: bool,
    executor: str,
    address: str | None,
) -> int:
    """`grade batch`: see grader/cli.py for its options."""
    if executor == "ray":
        ray_executor().check_address(address)  # before any test is collected: a mistake costs no time
    elif address is not None:
        raise UserError("--address is the Ray cluster's: give it with --executor ray")
    overrides = parse_limits(limits)
    if timeout is not None:
        overrides["total_timeout_s"] = timeout
    spec = load_spec(assignment)
    options = GradingOptions(
        profile=profile,
        select=select,
        marks=marks,
        data_dir=data_dir,
        limits=overrides,
        show_hidden=show_hidden,
        allow_unisolated=allow_unisolated,
    )
    console = Console()
    result = run_batch(spec, submissions, out, options, workers, console=console, where=executor, address=address)
    print_summary(result, console)
    if result.errors:
        names = ", ".join(o.id for o in result.errors)
        raise GraderError(f"{len(result.errors)} submissions could not be graded ({names}): run again to retry them")
    return 0
