"""The session's records, one JSON line each on the pipe `grade` reads (grader.runner).

`session` (the profile, the submission, its blanks), `collected` (the tests and their points,
known before any probe runs), one `result` per test, `load_error` for a student's file that could
not be imported, and `done`. `collect_error` (a test file that did not import: the grader's
problem) and `sandbox_broken` (no test could run) say why a session graded nothing. `start` and
`progress` are for the screen only. Without a pipe (plain pytest) nothing is written.

A line is `{"kind": kind, **record}`: each TypedDict below is a record without its kind, as the
runner keeps it (grader.runner.Run). This module imports neither torch nor pytest: the runner's
process imports it for the types.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Literal, TypedDict, overload

if TYPE_CHECKING:  # typing's own from Python 3.11 (the kit runs on 3.10): for type checkers only
    from typing_extensions import Unpack


class Blanks(TypedDict):
    total: int  # the starter's blanks
    open: list[str]  # those the submission leaves open, each "file line N: code" (or its notebook cell)
    missing: int  # those in files the submission does not have: neither open nor filled


class SessionRecord(TypedDict):
    """An assignment's session, sent once its submission is prepared (before its first test runs)."""

    assignment: str
    title: str
    profile: str  # the profile that runs ("quick", "full"), `auto` resolved
    device: str
    dataset: str  # as the report names it: "MNIST, 60,000 training and 10,000 test images"
    profile_note: str  # why `auto` chose another profile than full ("" where it did not)
    submission: str  # the folder graded (a clean copy of the hand-in)
    submission_kind: str  # what was handed in: a folder, a .py, a .zip, a notebook
    missing_files: list[str]  # the assignment's files the submission does not have
    blanks: Blanks
    notes: list[str]  # what the grader noted reading the submission (files missing, notebook cells skipped)
    isolation: str  # how the sandbox isolated the probes, or "not isolated"
    min_accuracy: float | None  # the profile's threshold for the tests marked `accuracy`
    calibrated: bool  # whether that threshold comes from calibration runs
    seed: int  # the grading's seed: the inputs it drew


class CollectedTest(TypedDict):
    """A test as the report lists it (one parametrized case each)."""

    nodeid: str
    name: str  # its title, in the session's language
    points: float  # its share of a parametrized test's points
    tasks: list[str]  # the starter definitions it exercises (@pytest.mark.task)
    accuracy: bool  # a trained-accuracy test: the profile's CPU budget
    hidden: bool  # from the assignment's hidden/ tests: its output is never shown


class Selection(TypedDict):
    """What -k/-m selected, so that a report can say it graded only part of the assignment."""

    select: str | None  # the -k expression
    marks: str | None  # the -m expression
    left_out: list[str]  # the names of the tests they left out
    left_out_points: float  # and those tests' points


class CollectedRecord(TypedDict):
    """The tests that will run, sent once after collection (and deselection), before any runs."""

    tests: list[CollectedTest]
    selection: Selection


class CollectErrorRecord(TypedDict):
    """A test file that could not be collected: the grader's problem, never the student's."""

    nodeid: str
    text: str  # the end of pytest's report of it


class ResultRecord(TypedDict):
    """One test's outcome, sent when it finished."""

    nodeid: str
    outcome: Literal["passed", "failed", "skipped"]
    reason: str  # one line: why it failed or was skipped ("" if it passed)
    output: str  # the reason and its details (a hidden test's: the reason only)
    limit: str  # the limit it tripped ("timeout", "memory", "output", ...; "grader": a broken sandbox), else ""
    duration_s: float
    measured: dict[str, Any]  # what it recorded (`record_property`): an accuracy, figure data (grader.figures)


class LoadErrorFields(TypedDict):
    """A student's file that could not be imported (grader.plugin.session.LoadError), as the report lists it."""

    file: str
    reason: str
    line: int  # 0 where no line is known
    source: str  # the line itself
    column: int
    place: str  # where the line is for its author, when not in the file: "cell 14, line 3"


class LoadErrorRecord(LoadErrorFields):
    """A load error, sent once, after the test that found it."""

    assignment: str


class SandboxBrokenRecord(TypedDict):
    """The sandbox could not start: the session ends before any test, none failed by the submission."""

    reason: str


class DoneRecord(TypedDict):
    """The session's end: every record was sent."""

    exitstatus: int  # pytest's exit status (0 all passed, 1 some failed)


class StartRecord(TypedDict):
    """For the screen: a test starts."""

    nodeid: str
    name: str  # its title


class ProgressRecord(TypedDict):
    """For the screen: what a probe said of its progress (numbers only, at most once a second)."""

    nodeid: str
    fields: dict[str, float]  # "epoch", "of", "steps", a loss... (grader.progress.describe)


class StartLine(StartRecord):
    kind: Literal["start"]


class ProgressLine(ProgressRecord):
    kind: Literal["progress"]


# What the runner's `on_progress` gets: a screen-only record as it came down the pipe, its kind kept.
ScreenLine = StartLine | ProgressLine


class Records:
    def __init__(self, fd: int | None):
        self.stream = os.fdopen(fd, "w", buffering=1) if fd is not None else None

    # one signature per kind: a type checker sees each record's fields at every `send`
    @overload
    def send(self, kind: Literal["session"], **record: Unpack[SessionRecord]) -> None: ...
    @overload
    def send(self, kind: Literal["collected"], **record: Unpack[CollectedRecord]) -> None: ...
    @overload
    def send(self, kind: Literal["collect_error"], **record: Unpack[CollectErrorRecord]) -> None: ...
    @overload
    def send(self, kind: Literal["result"], **record: Unpack[ResultRecord]) -> None: ...
    @overload
    def send(self, kind: Literal["load_error"], **record: Unpack[LoadErrorRecord]) -> None: ...
    @overload
    def send(self, kind: Literal["sandbox_broken"], **record: Unpack[SandboxBrokenRecord]) -> None: ...
    @overload
    def send(self, kind: Literal["done"], **record: Unpack[DoneRecord]) -> None: ...
    @overload
    def send(self, kind: Literal["start"], **record: Unpack[StartRecord]) -> None: ...
    @overload
    def send(self, kind: Literal["progress"], **record: Unpack[ProgressRecord]) -> None: ...

    def send(self, kind: str, **record: Any) -> None:
        if self.stream:
            self.stream.write(json.dumps({"kind": kind, **record}) + "\n")

    def close(self) -> None:
        if self.stream:
            self.stream.close()
            self.stream = None
