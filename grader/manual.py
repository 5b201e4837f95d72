"""The points a TA gives written answers: GRADEBOOK/manual.csv, one row per student and question.

    id,question,points,rubric,comment,grader,time,answer

`rubric` is the ticked items' ids joined by ";", `answer` the SHA-256 of the answer as it was when
marked (grader.written.answer_digest): an answer that changed since is marked for review again.
The file is the TAs' own: `grade batch` reads it and never writes it; `grade review` rewrites it
whole (a temporary file, fsync, rename) at every change, so a crash or a closed tab loses nothing
and a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.errors import UserError
from grader.text import clean
from grader.written import answer_digest

if TYPE_CHECKING:
    from grader.report import Report
    from grader.spec import Spec

MANUAL_FILE = "manual.csv"
COLUMNS = ("id", "question", "points", "rubric", "comment", "grader", "time", "answer")
COMMENT_CHARS, GRADER_CHARS, TIME_CHARS = 4000, 80, 40  # what a report keeps of a mark's texts


@dataclass(frozen=True)
class Mark:
    """One question of one student, as marked: `points` is what counts (the ticked items' sum unless typed)."""

    id: str
    question: str
    points: float
    rubric: tuple[str, ...] = ()
    comment: str = ""
    grader: str = ""
    time: str = ""  # ISO-8601, when it was marked
    answer: str = ""  # the answer's digest when it was marked

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.question)


def read_marks(gradebook: Path) -> dict[tuple[str, str], Mark]:
    """Every mark in `gradebook/manual.csv` by (student id, question) (none if there is no file);
    a file that cannot be read is one line naming it and the line."""
    path = gradebook / MANUAL_FILE
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: as spreadsheets save it
        rows = list(csv.DictReader(io.StringIO(text)))
    except (OSError, UnicodeDecodeError, csv.Error) as failure:
        raise UserError(f"{path}: cannot be read ({failure})") from None
    marks = {}
    for number, row in enumerate(rows, start=2):
        if not row.get("id") or not row.get("question"):
            raise UserError(f"{path} line {number}: no id or question (columns: {','.join(COLUMNS)})")
        try:
            points = float(row.get("points") or 0)
            if not math.isfinite(points):  # "nan" and "inf" are floats to Python, not points
                raise ValueError(points)
        except ValueError:
            raise UserError(f"{path} line {number}: points {row.get('points')!r} is not a number") from None
        rubric = tuple(item for item in (row.get("rubric") or "").split(";") if item)
        known = {f.name: (row.get(f.name) or "") for f in fields(Mark)} | {"points": points, "rubric": rubric}
        mark = Mark(**known)
        marks[mark.key] = mark
    return marks


def save_marks(gradebook: Path, marks: dict[tuple[str, str], Mark]) -> None:
    """Write every mark to `gradebook/manual.csv` at once: a temporary file beside it, flushed to the
    disk, then renamed over it."""
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for key in sorted(marks):
        row = asdict(marks[key])
        row["points"] = f"{row['points']:g}"
        row["rubric"] = ";".join(row["rubric"])
        writer.writerow(row)
    handle, temporary = tempfile.mkstemp(dir=gradebook, prefix=".manual-", suffix=".csv")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text.getvalue())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, gradebook / MANUAL_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def by_student(marks: Mapping[tuple[str, str], Mark]) -> dict[str, dict[str, Mark]]:
    """`read_marks`' marks by student, then by question."""
    students: dict[str, dict[str, Mark]] = {}
    for (student, question), mark in marks.items():
        students.setdefault(student, {})[question] = mark
    return students


def apply_marks(report: Report, spec: Spec, marks: Mapping[str, Mark]) -> None:
    """Set the written part of `report` from the spec and one student's marks (by question), as `grade
    batch` does at every run, stored reports included, like the late penalty: the questions' points
    (`written_max`); an answer for each question (one that could not be read: unanswered), titled in the
    language spoken now; and `manual`, for each marked question: its points, the question's total kept
    within [0, its points] (a rubric item may deduct), the ticked items with their text and points, the
    comment, who marked it and when, and `stale` where the answer changed since it was marked (its
    points still count until it is marked again). A mark's texts are cleaned here, where they enter."""
    read = {a["question"]: a for a in report.answers if isinstance(a, dict) and "question" in a}
    unanswered = {"answered": False, "text": "", "digest": answer_digest(""), "source": ""}
    report.written_max = spec.written_max
    report.answers = [
        {**unanswered, **read.get(q.id, {}), "question": q.id, "title": q.shown_title} for q in spec.questions
    ]
    report.manual = []
    for question, answer in zip(spec.questions, report.answers, strict=True):
        mark = marks.get(question.id)
        if mark is None:
            continue
        ticked = [item for item in question.rubric if item.id in mark.rubric]
        report.manual.append(
            {
                "question": question.id,
                "points": min(max(mark.points, 0.0), question.points),
                "max_points": question.points,
                "rubric": [{"id": item.id, "text": item.shown_text, "points": item.points} for item in ticked],
                "comment": clean(mark.comment, COMMENT_CHARS, lines=True),
                "grader": clean(mark.grader, GRADER_CHARS),
                "time": clean(mark.time, TIME_CHARS),
                "stale": mark.answer != answer["digest"],
            }
        )


def unmatched(marks: Iterable[tuple[str, str]], students: Iterable[str], spec: Spec) -> str:
    """One line naming the marks (by (student, question)) of no student of the batch or no question of
    the spec, left out of every grade ("" where there is none): a student renamed, a question removed."""
    known, questions = set(students), {q.id for q in spec.questions}
    stray = sorted(f"{s}/{q}" for s, q in marks if s not in known or q not in questions)
    if not stray:
        return ""
    shown = ", ".join(clean(name, 120) for name in stray[:10]) + (
        f" and {len(stray) - 10} more" if len(stray) > 10 else ""
    )
    return f"{MANUAL_FILE}: {len(stray)} marks of no student or question of this batch, left out: {shown}"


def marking_progress(reports: Iterable[Report]) -> dict[str, Any]:
    """How far the marking of a batch's written answers is: answers marked, answered ones to mark, marked
    ones to review again (changed since), and questions not answered nor marked."""
    counts = {"marked": 0, "to_mark": 0, "stale": 0, "unanswered": 0}
    for report in reports:
        marked = {mark["question"]: mark for mark in report.manual}
        for answer in report.answers:
            mark = marked.get(answer["question"])
            key = "to_mark" if answer["answered"] else "unanswered"
            counts["stale" if mark and mark["stale"] else "marked" if mark else key] += 1
    return counts


def marking_line(reports: Iterable[Report]) -> str:
    """The batch's last line where the spec has questions: "written answers: 12 marked, 5 to mark,
    2 to review again (changed since they were marked), 3 not answered"."""
    n = marking_progress(reports)
    line = f"written answers: {n['marked']} marked, {n['to_mark']} to mark, {n['stale']} to review again"
    return line + f" (changed since they were marked), {n['unanswered']} not answered"
