"""Grading one submission, top to bottom: spec -> tests in a child process -> results -> report.

THE path: `grade`, `grade batch`, `grade calibrate` and the kit's own tests all call `grade`.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from grader import i18n
from grader.errors import GraderError, UserError
from grader.options import GradingOptions
from grader.plugin.early import zygote_for
from grader.plugin.records import CollectedTest, ScreenLine
from grader.report import Report, build_report
from grader.runner import Run, run_tests
from grader.seeding import seeded
from grader.spec import Spec
from grader.submission import folder_digest, materialize
from grader.written import read_answers

if TYPE_CHECKING:
    from grader.batch.warm import WarmWorker


class BrokenRun(GraderError):
    """The grading child itself failed (not the student's code, which never runs in it)."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


def grade(
    spec: Spec,
    submission: Path,
    options: GradingOptions | None = None,
    env: dict[str, str] | None = None,
    cancel: threading.Event | None = None,
    label: str | None = None,
    worker: WarmWorker | None = None,
    on_progress: Callable[[ScreenLine], None] | None = None,
) -> Report:
    """Grade one submission (a folder, a .py, a zip or a notebook) and return its report.

    The submission is first copied into a fresh folder (in `env`'s TMPDIR: a worker's own), so
    that a broken one fails in one clear line before any test starts (a `SubmissionProblem`).
    `label` is how the report names the submission (default: its path). With a warm `worker`
    (a batch's), the grading child is a fork of its process rather than a fresh one. `on_progress`
    gets the test starting and its progress, for the screen. Without a seed in `options`, the
    grading draws its inputs from the hand-in's own (grader.seeding).
    """
    options = options or GradingOptions()
    scratch_root = (env or {}).get("TMPDIR")
    # a fresh grading child gets a zygote started now, first thing: its torch import overlaps the child's
    lent = zygote_for([spec], options) if worker is None else None
    with contextlib.ExitStack() as held:
        if lent is not None:
            held.callback(lent.close)
        scratch = held.enter_context(tempfile.TemporaryDirectory(prefix="grader-submission-", dir=scratch_root))
        copy = materialize(submission, spec.files, Path(scratch) / "submission", spec.starter_dir)
        with i18n.using(options.lang):  # plain text, read here: no student code runs in this process
            answers, notes = read_answers(copy.folder, spec)
        options = seeded(options, spec, folder_digest(copy.folder))  # the same hand-in, the same seed
        run = run_tests(spec, copy.folder, options, env, cancel, worker, on_progress, lent)
    if cancel is not None and cancel.is_set():
        raise GraderError("cancelled")
    collected_tests(run, spec, options)
    if not run.timed_out and run.exit_code not in (0, 1):  # pytest: 0 all passed, 1 some failed
        raise BrokenRun(f"the test run of {spec.name} ended early (exit code {run.exit_code})", run.log_tail)
    with i18n.using(options.lang):  # its own texts (a test that never reported) in the language of the tests'
        report = build_report(spec, run, label or str(submission))
    report.answers, report.written_max, report.notes = answers, spec.written_max, report.notes + notes
    return report


def collected_tests(run: Run, spec: Spec, options: GradingOptions) -> list[CollectedTest]:
    """The tests a session collected: a UserError for a mistake in the selection or when none
    matches it, a BrokenRun when the tests themselves did not start, a GraderError when the sandbox
    could not."""
    if run.sandbox_broken:
        raise GraderError(run.sandbox_broken)
    if run.usage_error:
        raise UserError(run.usage_error)
    if run.collected is None or run.collect_errors:
        detail = run.collect_errors[0]["text"] if run.collect_errors else run.log_tail
        raise BrokenRun(f"the tests of {spec.name} did not start (exit code {run.exit_code})", detail)
    if not run.collected:
        what = " and ".join(f"'{e}'" for e in (options.select, options.marks) if e)
        raise UserError(f"no test of {spec.name} matches {what}" if what else f"{spec.name} has no tests")
    return run.collected
