"""What a batch shows on the terminal while it grades: a bar of the hand-ins done, how many are
running, failed or could not be read, the time left (`Eta`), and a line per student as they end.

A batch's own: `grade` on one hand-in follows its tests with grader.progress instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from grader.batch.outcomes import Outcome


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


class BatchProgress:
    """The bar of a batch titled `title`: `total` hand-ins, `done` of them already (resumed, or
    unreadable), the `counts` of those running, failed and unreadable, and the time left for
    `workers` workers. `with` it shows it; its methods may be called from any worker's thread."""

    def __init__(self, console: Console, title: str, total: int, done: int, counts: dict[str, int], workers: int):
        self.counts = counts
        self.eta = Eta(workers)
        self._lock = threading.Lock()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "{task.fields[running]} running · {task.fields[failed]} failed · {task.fields[unreadable]} unreadable"
            ),
            TimeElapsedColumn(),
            TextColumn("· left"),
            _EtaColumn(self.eta),
            console=console,
        )
        self.task = self.progress.add_task(title, total=total, completed=done, **counts)

    def count(self, key: str, step: int) -> None:
        """`step` more (or fewer) hand-ins under `key`: running, failed, unreadable."""
        with self._lock:
            self.counts[key] += step
            self.progress.update(self.task, **self.counts)

    def advance(self) -> None:
        """One more hand-in done."""
        self.progress.advance(self.task)

    @property
    def console(self) -> Console:
        """The console above the bar."""
        return self.progress.console

    def say(self, line: str) -> None:
        """A line above the bar, as it is (ids and reasons are the hand-ins' own text: no markup)."""
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> BatchProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)


def outcome_line(outcome: Outcome) -> str:
    """A student's line as their grading ends: the score, its time, the late penalty, the limits met;
    for a hand-in nothing ran for, its status and why."""
    report = outcome.report
    if report.problem:  # nothing ran: its status and why, no score nor time of a grading
        return f"{outcome.id}: {outcome.status} · {report.problem}"
    limits = f" · limits: {', '.join(outcome.limits)}" if outcome.limits else ""
    days = report.late.get("days", 0)
    tests_late = f"{report.score_after_penalty:g} after the penalty"  # the tests': the written points come later
    late = f" · {days} day{'s' if days > 1 else ''} late: {tests_late}" if days else ""
    score = f"{report.score:g} / {report.max_score:g} ({report.duration_s:.0f} s)"
    return f"{outcome.id}: {score}{late}{limits}"
