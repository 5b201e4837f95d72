"""A failed test -> one line that says why, naming the blank still open when there is one.

Pure functions of a test's failure and of what the session knows about the submission. A hidden
test's reason never carries text that the student's code chose (an exception's message, what it
printed): a hidden probe could otherwise read the hidden test's own probe and print it.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from grader.i18n import N_, _, docstring_title
from grader.sandbox.api import SandboxBroken, SubmissionError

NOT_FILLED = N_("not filled in yet")
GRADER_FAULT = N_("the grader's sandbox failed (not your code's doing; this test is graded again)")


def test_title(item: pytest.Item) -> str:
    """A test's display name: its docstring's first line, translated (else its name), plus its case."""
    func = getattr(item, "function", None)
    doc = docstring_title(func.__doc__) if func else ""
    title = _(doc) if doc else item.name.split("[")[0].removeprefix("test_").replace("_", " ")
    case = getattr(item, "callspec", None)
    return f"{title} [{case.id}]" if case else title


def item_tasks(item: pytest.Item) -> tuple[str, ...]:
    return tuple(a for m in item.iter_markers("task") for a in m.args)


def explain(exc: BaseException, tasks: tuple[str, ...], submission: Any, hidden: bool) -> tuple[str, str]:
    """(one-line reason, details) for a failed test, naming an open blank when there is one, and each
    place in the student's code as its author knows it (a notebook's cell and line)."""
    reason, details = _explain(exc, tasks, submission, hidden)
    return submission.materialized.localize(reason), details


def _explain(exc: BaseException, tasks: tuple[str, ...], submission: Any, hidden: bool) -> tuple[str, str]:
    # The blanks of the test's first task first: that is the one it is about.
    if isinstance(exc, SandboxBroken):  # before any blank: it is no fault of the submission's
        return f"{_(GRADER_FAULT)}: {exc}", ""
    open_blanks = sorted(submission.blanks_for(tasks), key=lambda blank: tasks.index(blank.task))
    details = ""
    if isinstance(exc, SubmissionError):
        details = "" if hidden else tail(exc.output)
        at_error = [b for b in submission.open_blanks if (b.file, b.line) in set(exc.frames)]
        open_blanks = at_error or open_blanks
    elif isinstance(exc, AssertionError):
        details = own_message(exc).partition("\n")[2].strip()
    if open_blanks:
        more = len(set(submission.blanks_for(tasks)) - {open_blanks[0]})
        extra = _(" (+{more} more in {tasks})").format(more=more, tasks=", ".join(tasks)) if more else ""
        return f"{_(NOT_FILLED)}: {open_blanks[0].describe()}{extra}", details
    if isinstance(exc, SubmissionError):
        return (exc.brief if hidden else exc.reason), details
    text = (own_message(exc) if isinstance(exc, AssertionError) else str(exc)).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, pytest.fail.Exception) and first.startswith("Timeout"):
        return _("the test ran past its wall-clock backstop: the grading machine was too busy"), ""
    if isinstance(exc, (AssertionError, pytest.fail.Exception)):  # a test's own verdict
        return first or _("assertion failed"), details
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__, details


def own_message(exc: AssertionError) -> str:
    """A failed assertion's own message, without pytest's explanation after it (`assert 0`, a diff,
    "Use -v to get more diff"); the explanation's first line when the assertion has no message."""
    lines = str(exc).splitlines()
    own = itertools.takewhile(lambda line: not line.startswith("assert "), lines)
    return "\n".join(line.removeprefix("  ") for line in own).strip() or (lines[0] if lines else "")


def limit_of(exc: BaseException) -> str:
    """Which limit a failure tripped ("cpu", "memory", "output", "files", "processes", "backstop"...),
    "grader" for a failure of the grader's own, or ""."""
    if isinstance(exc, SubmissionError):
        return exc.limit or ""
    if isinstance(exc, SandboxBroken):
        return "grader"
    timed_out = isinstance(exc, pytest.fail.Exception) and str(exc).strip().startswith("Timeout")  # pytest-timeout
    return "backstop" if timed_out else ""


def tail(output: str, lines: int = 30) -> str:
    kept = output.rstrip().splitlines()[-lines:]
    return (_("output (last lines):") + "\n" + "\n".join(kept)) if kept else ""
