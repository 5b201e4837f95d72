"""Grading one submission, top to bottom: spec -> tests in a child process -> results -> report."""

from __future__ import annotations

import tempfile
from pathlib import Path

from grader.errors import GraderError
from grader.report import Report, build_report
from grader.runner import run_tests
from grader.spec import Spec
from grader.submission import materialize


def grade(
    spec: Spec,
    submission: Path,
    profile: str = "auto",
    data_dir: str | None = None,
    select_expr: str | None = None,
    marks: str | None = None,
    env: dict[str, str] | None = None,
) -> Report:
    """Grade one submission (a folder, a .py, a zip or a notebook) and return its report.

    The submission is first copied into a fresh folder, here, so that a broken one fails in
    one clear line before any test starts (a `SubmissionProblem`).
    """
    with tempfile.TemporaryDirectory(prefix="grader-submission-") as scratch:
        copy = materialize(submission, spec.files, Path(scratch) / "submission", spec.starter_dir)
        run = run_tests(spec, copy.folder, profile, data_dir, select_expr, marks, env)
    if run.collected is None or run.collect_errors:
        detail = run.collect_errors[0]["text"] if run.collect_errors else run.log_tail
        raise GraderError(f"the tests of {spec.name} did not start (exit code {run.exit_code}):\n{detail}")
    return build_report(spec, run, str(submission))
