"""`grade ASSIGNMENT --watch`: grade again every time a file of the submission is saved.

One warm process (grader.batch.warm: Python, pytest, torch and the sandbox's zygote, started once)
forks a grading per save through the one grading function (grader.grading.grade), so a save
costs the checks and their probes, not the start-up. A save grades every check that trains
nothing (the tests marked `training` or `accuracy` are left out, unless `--marks` chooses
otherwise); `t` runs every test once, `q` or Ctrl-C stops, and nothing of the watch outlives
it. A half-typed file is graded as it is: its syntax error is the report's headline, one line,
and the next save grades again.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

from rich.console import Console

from grader import render
from grader.batch.executors import warm_for
from grader.batch.warm import WarmWorker
from grader.errors import GraderError, UserError
from grader.grading import grade
from grader.options import GradingOptions
from grader.plugin.early import threads_of
from grader.spec import Spec
from grader.written import ANSWERS_FILE

QUICK_MARKS = "not training and not accuracy"  # what a save grades unless --marks says
_POLL_S = 0.05
_SETTLE_S = 0.03  # an editor writes a file in several calls: grade once it has stopped changing


def watched_files(submission: Path, spec: Spec) -> list[Path]:
    """What a save of which grades again: the hand-in itself when it is one file, else the
    assignment's files and the written answers in its folder."""
    if not submission.is_dir():
        return [submission]
    return [submission / name for name in (*spec.files, ANSWERS_FILE)]


def fingerprint(files: list[Path]) -> tuple[tuple[int, int] | None, ...]:
    """Each file's modification time and size (None while it does not exist)."""
    found = []
    for path in files:
        try:
            st = path.stat()
            found.append((st.st_mtime_ns, st.st_size))
        except OSError:
            found.append(None)
    return tuple(found)


def watch(spec: Spec, submission: Path, options: GradingOptions, console: Console) -> int:
    """Grade `submission` now and after every save until `q` or Ctrl-C; the exit code (130 on Ctrl-C)."""
    quick = options if options.marks else options.with_(marks=QUICK_MARKS)
    files = watched_files(submission, spec)
    warm = astuple(warm_for([spec], options))
    worker = WarmWorker(threads_of(options), *warm)

    def grade_with(chosen: GradingOptions, why: str) -> None:
        nonlocal worker
        try:
            _grade_once(spec, submission, chosen, worker, console, why)
        except RuntimeError:  # the warm process ended (killed from outside): a fresh one, next save
            worker.close()
            worker = WarmWorker(threads_of(options), *warm)
            console.print("[red]the grading process ended[/]: started again, waiting for the next save")

    try:
        with _keys() as pressed:
            last = fingerprint(files)
            grade_with(quick, "started")
            while True:
                key = pressed(_POLL_S)
                if key in ("q", "Q"):
                    return 0
                if key in ("t", "T"):
                    grade_with(options.with_(marks=None), "on t")
                now = fingerprint(files)
                if now != last:
                    while (settled := fingerprint(files)) != now:  # still being written
                        now = settled
                        time.sleep(_SETTLE_S)
                    last = now
                    grade_with(quick, "saved")
    except KeyboardInterrupt:
        return 130
    finally:
        worker.close()  # its process group: the warm process, a grading in flight, the sandbox


def _grade_once(
    spec: Spec, submission: Path, options: GradingOptions, worker: WarmWorker, console: Console, why: str
) -> None:
    started = time.monotonic()
    try:
        report = grade(spec, submission, options, worker=worker, label=str(submission))
    except UserError as mistake:  # a file being replaced, a notebook half written: said, and watched again
        console.print(f"[yellow]{mistake}[/]: waiting for the next save")
        return
    except GraderError as broken:
        console.print(f"[red]the grader failed: {broken}[/] (waiting for the next save)")
        return
    console.clear()
    render.terminal(report, console, options.show_hidden)
    which = f"tests marked '{options.marks}'" if options.marks else "every test"
    console.print(
        f"[dim]{why}: {which} graded in {time.monotonic() - started:.2f} s · watching {submission} · "
        "t: every test once · q or Ctrl-C: stop[/]"
    )


@contextlib.contextmanager
def _keys() -> Iterator:
    """A function that waits up to its argument's seconds for one key pressed (None if none): the
    terminal in cbreak mode meanwhile, as it was after. Without a terminal, no key ever comes."""
    if not sys.stdin.isatty():
        yield lambda timeout: time.sleep(timeout)
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def pressed(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace") if ready else None

    try:
        yield pressed
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
