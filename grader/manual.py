"""The points a TA gives written answers: GRADEBOOK/manual.csv, one row per student and question.

    id,question,points,rubric,comment,grader,time,answer

`rubric` is the ticked items' ids joined by ";", `answer` the SHA-256 of the answer as it was when
marked (grader.answers.answer_digest): an answer that changed since is marked for review again.
The file is the TAs' own: `grade batch` reads it and never writes it; `grade review` rewrites it
whole (a temporary file, fsync, rename) at every change, so a crash or a closed tab loses nothing
and a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from grader.errors import UserError

MANUAL_FILE = "manual.csv"
COLUMNS = ("id", "question", "points", "rubric", "comment", "grader", "time", "answer")


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
