"""The report: one JSON document per graded submission, and how a run's records become one.

The document is a superset of Gradescope's results.json (`score`, `max_score`, `tests[]` with
`name`, `score`, `max_score`, `status`, `output`); every other format is rendered from it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from grader import __version__
from grader.figures import PREFIX, draw_images
from grader.i18n import _, ngettext
from grader.plugin.records import Blanks, LoadErrorFields, Selection
from grader.runner import Run
from grader.spec import Spec
from grader.text import clean

# What an accuracy test records (`record_property`) as the accuracy it requires, next to "accuracy".
THRESHOLD = "min_accuracy"


@dataclass
class TestResult:
    __test__ = False  # a result, not a test class for pytest to collect
    name: str
    nodeid: str
    score: float
    max_score: float
    status: str  # Gradescope's: "passed" or "failed"
    outcome: str  # ours: "passed", "failed", "skipped" or "not run"
    reason: str = ""
    output: str = ""
    tasks: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    hidden: bool = False
    accuracy: bool = False
    measured: dict[str, Any] = field(default_factory=dict)  # what the test measured (an accuracy...)
    limit: str = ""  # the limit it tripped: "timeout", "total_timeout", "memory", "output", "files", "processes"
    figures: dict[str, Any] = field(default_factory=dict)  # figure data the test recorded, by name (grader.figures)
    images: list[dict[str, str]] = field(default_factory=list)  # drawn from them: PrairieLearn's {"label", "url"}


@dataclass
class Report:
    assignment: str
    title: str
    submission: str
    profile: str
    device: str
    dataset: str
    score: float
    max_score: float
    duration_s: float
    tests: list[TestResult]
    blanks: Blanks | dict[str, Any] = field(default_factory=dict)  # the session's; {} where none ran
    isolation: str = ""
    min_accuracy: float | None = None
    calibrated: bool = True
    profile_note: str = ""  # why `auto` chose another profile than full: what full lacks here
    problem: str = ""  # why the submission could not be graded at all, if it could not
    seed: int | None = None  # the grading's seed: the inputs it drew (a regrade with it draws the same)
    load_errors: list[LoadErrorFields] = field(default_factory=list)  # student files that could not be imported
    # set by `grade batch --deadline`, never by the grading: {submitted_at, deadline, days, penalty, policy};
    # `score` stays the tests' points, the penalty takes `penalty` (a fraction) of them (`final_score`)
    late: dict[str, Any] = field(default_factory=dict)
    selection: Selection | dict[str, Any] = field(default_factory=dict)  # {} where no test was collected
    notes: list[str] = field(default_factory=list)  # what the grader noted reading the submission (a notebook)
    # written answers, read by the grading (never run): [{question, title, answered, text, digest, source}]
    answers: list[dict[str, Any]] = field(default_factory=list)
    written_max: float = 0.0  # the written questions' points (the spec's), not in max_score
    # set by `grade batch` from GRADEBOOK/manual.csv, like `late`: [{question, points, max_points, rubric:
    # [{id, text, points}], comment, grader, time, stale}]; `stale`: the answer changed since it was marked
    manual: list[dict[str, Any]] = field(default_factory=list)
    grader_version: str = __version__

    @property
    def percent(self) -> float:
        return 100.0 * self.score / self.max_score if self.max_score else 0.0

    def sandbox_failures(self) -> list[str]:
        """The tests a broken sandbox failed (the grader's fault, not the code's): to grade again before they count."""
        return [t.name for t in self.tests if t.limit == "grader"]

    @property
    def written_points(self) -> float:
        """The points TAs gave the written answers (manual.csv), 0 before any is marked."""
        return sum(mark["points"] for mark in self.manual)

    @property
    def score_after_penalty(self) -> float:
        """The tests' score after the late penalty, if any."""
        return round(self.score * (1 - self.late.get("penalty", 0.0)), 4)

    @property
    def final_score(self) -> float:
        """The grade: the tests' score after the late penalty, if any, plus the written answers' points."""
        return round(self.score_after_penalty + self.written_points, 4)

    @property
    def final_max(self) -> float:
        """What the grade is out of: the tests' points and the written questions'."""
        return self.max_score + self.written_max

    @property
    def final_percent(self) -> float:
        return 100.0 * self.final_score / self.final_max if self.final_max else 0.0

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["execution_time"] = round(self.duration_s, 3)  # Gradescope's name for it
        doc["output"] = self.summary()
        if self.late:
            doc["score_after_penalty"] = self.score_after_penalty
        if self.written_max:  # the grade: the tests' and the written answers' points
            doc["final_score"], doc["final_max"] = self.final_score, self.final_max
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Report:
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        known["tests"] = [TestResult(**t) for t in doc["tests"]]
        return cls(**known)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")

    def summary(self) -> str:
        """One line for the top of every format."""
        parts = [f"{self.assignment}: {self.points()}"]
        if self.late_note():
            parts.append(self.late_note())
        if self.problem:  # nothing ran: no blanks counted, no profile used
            return " · ".join([*parts, self.problem])
        if self.blanks.get("total"):
            filled = self.blanks["total"] - len(self.blanks.get("open", [])) - self.blanks.get("missing", 0)
            parts.append(_("blanks filled {filled}/{total}").format(filled=filled, total=self.blanks["total"]))
        parts.append(
            _("profile {profile} ({device}, {dataset})").format(
                profile=self.profile, device=self.device, dataset=self.dataset
            )
        )
        return " · ".join(parts)

    def late_note(self) -> str:
        """What every format says of a late hand-in (nothing if on time): "handed in 2 days late (10% per
        day late, nothing after 3 days): -20%, 8 / 10 points"."""
        days = self.late.get("days", 0)
        if days <= 0:
            return ""
        when = ngettext("{days} day late ({policy})", "{days} days late ({policy})", days)
        note = _("handed in {when}: -{penalty:g}%, {score:g} / {max_score:g} points")
        when = when.format(days=days, policy=self.late["policy"])
        return note.format(
            when=when, penalty=self.late["penalty"] * 100, score=self.score_after_penalty, max_score=self.max_score
        )

    def points(self) -> str:
        """The points, "10 / 43 points (23%)"; after a selection that left tests out, what it left out (a
        percentage of part of the assignment would mislead): "62 / 62 points (of 78: 16 points of tests left
        out by --marks 'not accuracy')"."""
        left_out = self.selection.get("left_out_points", 0)
        if not left_out:
            points = _("{score:g} / {max_score:g} points ({percent:.0f}%)")
            return points.format(score=self.score, max_score=self.max_score, percent=self.percent)
        points = _("{score:g} / {max_score:g} points (of {total:g}: {left_out:g} points of tests left out by {flags})")
        total = self.max_score + left_out
        return points.format(
            score=self.score, max_score=self.max_score, total=total, left_out=left_out, flags=self.selected_by()
        )

    def selected_by(self) -> str:
        """The options that selected the tests, as typed: "--select lenet and --marks 'not accuracy'"."""
        flags = [
            f"--{key} {shlex.quote(self.selection[key])}" for key in ("select", "marks") if self.selection.get(key)
        ]
        return _(" and ").join(flags)


def build_report(spec: Spec, run: Run, submission: str, problem: str = "") -> Report:
    """Score a run: a test earns its points only if it reported `passed`.

    The list of tests comes from the collection, before any student code ran: a test that
    never reported (the run crashed or ran out of time) is failed, with that as its reason.
    `problem`: why the submission could not be graded at all (then no test ran, and the tests
    carry no reason of their own: the problem is said once).
    """
    stopped = (
        _("the test run was stopped at its {limit:.0f} s limit").format(limit=spec.limits.total_timeout_s)
        if run.timed_out
        else _("the test run ended early (exit code {code})").format(code=run.exit_code)
    )
    unreported = "" if problem else _("never reported: {why}").format(why=stopped)
    tests = []
    for entry in run.collected or []:
        record = run.results.get(entry["nodeid"])
        outcome = record["outcome"] if record else "not run"
        passed = outcome == "passed"
        reason = record["reason"] if record else unreported
        measured = record.get("measured", {}) if record else {}
        figures = {k.removeprefix(PREFIX): v for k, v in measured.items() if k.startswith(PREFIX)}
        tests.append(
            TestResult(
                name=entry["name"],
                nodeid=entry["nodeid"],
                score=entry["points"] if passed else 0.0,
                max_score=entry["points"],
                status="passed" if passed else "failed",
                outcome=outcome,
                reason=reason,
                output=record["output"] if record else reason,
                tasks=entry["tasks"],
                duration_s=record["duration_s"] if record else 0.0,
                hidden=entry["hidden"],
                accuracy=entry["accuracy"],
                measured={k: v for k, v in measured.items() if not k.startswith(PREFIX)},
                limit=record.get("limit", "") if record else ("total_timeout" if run.timed_out else ""),
                figures={} if entry["hidden"] else figures,  # a hidden test's data is never drawn
            )
        )
    if any(test.figures for test in tests):
        draw_images(tests)
    session = run.session
    return Report(
        assignment=spec.name,
        title=spec.shown_title,
        submission=clean(submission, 1000),  # a hand-in's path: its name is its author's text
        profile=session.get("profile", "?"),
        device=session.get("device", "?"),
        dataset=session.get("dataset", "?"),
        score=round(sum(t.score for t in tests), 4),
        max_score=round(sum(t.max_score for t in tests), 4),
        duration_s=round(run.duration_s, 3),
        tests=tests,
        blanks=session.get("blanks", {}),
        isolation=session.get("isolation", ""),
        min_accuracy=session.get("min_accuracy"),
        calibrated=session.get("calibrated", True),
        profile_note=session.get("profile_note", ""),
        problem=problem,
        seed=session.get("seed"),
        load_errors=[
            cast("LoadErrorFields", {k: v for k, v in e.items() if k != "assignment"}) for e in run.load_errors
        ],
        selection=run.selection,
        notes=session.get("notes", []),
    )
