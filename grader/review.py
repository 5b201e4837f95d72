"""`grade review`'s state: a graded batch's written answers and the marks TAs give them.

The answers are those of the reports `grade batch` wrote (GRADEBOOK/students/<id>/report.json, only
those whose digest its ledger holds: grader.batch.store); the marks live in GRADEBOOK/manual.csv only
(grader.manual), read afresh for every page and every save, so a reload, a restarted server or a hand
edit between two saves loses nothing. A mark whose answer digest is not the answer's own any more is
stale: the hand-in changed since it was marked, and a TA must look again. The page is grader/review_page.py,
the server grader/review_server.py.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from grader.batch.store import Store
from grader.errors import UserError
from grader.manual import MANUAL_FILE, Mark, read_marks, save_marks
from grader.spec import Question, Spec
from grader.text import clean

COMMENT_CHARS = 4000
GRADER_CHARS = 80


class Refused(ValueError):
    """A save that is not one: an unknown student, question or rubric item, points out of range."""


@dataclass(frozen=True)
class Answer:
    """A student's answer to one question as the grading read it: its Markdown (a hand-in's text, to
    escape), its digest, and where it was (answers.md, a notebook's cell)."""

    answered: bool = False
    text: str = ""
    digest: str = ""
    source: str = ""

    @classmethod
    def from_report(cls, entry: dict[str, Any]) -> Answer:
        return cls(
            bool(entry.get("answered")),
            str(entry.get("text", "")),
            str(entry.get("digest", "")),
            str(entry.get("source", "")),
        )


@dataclass(frozen=True)
class Row:
    """One student on a question's page: the answer and the mark so far (None: not marked)."""

    student: str
    answer: Answer
    mark: Mark | None

    @property
    def stale(self) -> bool:
        """Marked, but the answer changed since: to review again."""
        return self.mark is not None and self.mark.answer != self.answer.digest


@dataclass(frozen=True)
class Progress:
    """How far the marking of one question is: "12 of 30 marked, 2 to review again"."""

    marked: int
    stale: int
    total: int


def rubric_points(question: Question, ticked: tuple[str, ...]) -> float:
    """The points of the ticked items, within [0, the question's points]."""
    total = sum(item.points for item in question.rubric if item.id in ticked)
    return min(max(total, 0.0), question.points)


class Review:
    """The written answers of one gradebook and the saving of their marks, one save at a time."""

    def __init__(self, spec: Spec, gradebook: Path, grader: str):
        if not spec.questions:
            raise UserError(f"{spec.name} has no written questions ([[questions]] in its spec.toml): nothing to review")
        grader = clean(grader, GRADER_CHARS).strip()
        if not grader:
            raise UserError("who is marking? --grader NAME (no $USER here)")
        self.spec, self.gradebook, self.grader = spec, gradebook, grader
        self.answers, self.left_out = _read_answers(spec, gradebook)
        self.students = sorted(self.answers)
        self.lock = threading.Lock()  # one save at a time: each reads manual.csv, changes a row, writes it whole
        read_marks(gradebook)  # a manual.csv that cannot be read is said now, not at the first save

    @property
    def questions(self) -> tuple[Question, ...]:
        return self.spec.questions

    def question(self, question_id: str) -> Question | None:
        return next((q for q in self.questions if q.id == question_id), None)

    def marks(self) -> dict[tuple[str, str], Mark]:
        return read_marks(self.gradebook)

    def rows(self, question: Question, marks: dict[tuple[str, str], Mark]) -> list[Row]:
        return [Row(s, self.answer(s, question.id), marks.get((s, question.id))) for s in self.students]

    def answer(self, student: str, question_id: str) -> Answer:
        return self.answers[student].get(question_id, Answer())

    def progress(self, question: Question, marks: dict[tuple[str, str], Mark]) -> Progress:
        rows = self.rows(question, marks)
        return Progress(sum(r.mark is not None for r in rows), sum(r.stale for r in rows), len(rows))

    def save(self, student: str, question_id: str, ticked: Any, points: Any, comment: Any) -> Mark | None:
        """Mark `student`'s answer to a question: the `ticked` rubric items, the `points` typed (None or "":
        the ticked items' points), a comment; who and when are this review's grader and now, and the mark
        holds the answer's digest. Nothing ticked, typed or said takes the mark away (None). The rest of
        manual.csv is kept as it is on the disk. A Refused says what was wrong with the request."""
        question = self.question(str(question_id))
        if question is None or student not in self.answers:
            raise Refused(f"no student {student!r} or question {question_id!r} in this review")
        known = [item.id for item in question.rubric]
        if not isinstance(ticked, list) or not all(isinstance(item, str) and item in known for item in ticked):
            raise Refused(f"rubric: a list of the items of {question.id} ({', '.join(known)})")
        if not isinstance(comment, str):
            raise Refused("comment: a text")
        rubric = tuple(item for item in known if item in ticked)
        typed = _typed_points(points, question)
        comment = clean(comment, COMMENT_CHARS, lines=True).strip()
        key = (student, question.id)
        with self.lock:
            marks = self.marks()
            if not rubric and typed is None and not comment:
                marks.pop(key, None)
                mark = None
            else:
                now = datetime.now().astimezone().isoformat(timespec="seconds")
                given = rubric_points(question, rubric) if typed is None else typed
                digest = self.answer(student, question.id).digest
                mark = Mark(student, question.id, given, rubric, comment, self.grader, now, digest)
                marks[key] = mark
            save_marks(self.gradebook, marks)
        return mark

    @property
    def manual_csv(self) -> Path:
        return self.gradebook / MANUAL_FILE


def _typed_points(points: Any, question: Question) -> float | None:
    """The points a TA typed (a number, or a text such as "1,5"), None for none; within [0, the question's]."""
    if points is None or (isinstance(points, str) and not points.strip()):
        return None
    try:
        value = float(points.strip().replace(",", ".")) if isinstance(points, str) else float(points)
    except (TypeError, ValueError):
        raise Refused(f"points {str(points)[:20]!r} is not a number") from None
    if isinstance(points, bool) or not math.isfinite(value) or not 0 <= value <= question.points:
        raise Refused(f"points are between 0 and {question.points:g}, not {str(points)[:20]}")
    return value


def _read_answers(spec: Spec, gradebook: Path) -> tuple[dict[str, dict[str, Answer]], list[str]]:
    """Each student's answers by question, from the reports `grade batch` wrote and has not seen changed;
    and a line for each report left out: changed since, or of a grading that failed (its answers unread)."""
    students = gradebook / "students"
    if not students.is_dir():
        raise UserError(f"{gradebook}: no graded reports (students/<id>/report.json): run `grade batch` first")
    store = Store(gradebook)
    answers, left_out = {}, []
    for student in sorted(store.ledger):
        stored = store.stored(student)
        if stored is None or stored.status == "error":
            continue
        if stored.report.assignment != spec.name:
            raise UserError(f"{gradebook} holds the reports of {stored.report.assignment}, not of {spec.name}")
        entries = [entry for entry in stored.report.answers if isinstance(entry, dict)]
        answers[student] = {str(entry.get("question")): Answer.from_report(entry) for entry in entries}
    for name in sorted({p.parent.name for p in students.glob("*/report.json")} - set(answers)):
        failed = name in store.ledger and store.ledger[name].get("status") == "error"
        why = "the grader failed on it: `grade batch --failed`" if failed else "not the report `grade batch` wrote"
        left_out.append(f"left out {clean(name, 120)}: {why}")
    if not answers:
        raise UserError(f"{gradebook}: no report that `grade batch` wrote (and that is unchanged since)")
    return answers, left_out
