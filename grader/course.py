"""The term's gradebook: `grade course COURSE.toml --out DIR`, from the gradebooks of `grade batch`.

COURSE.toml names each assignment's gradebook (a folder, relative to the file's) and its weight;
`drop_lowest = N` leaves out of each student's course percent the N assignments whose removal raises
it most (with equal weights, their N lowest percents; as Canvas drops), the other weights
re-normalized; `late_days = N` is a bank of late days for the term.

A gradebook is read back as `grade batch` reads it (grader.batch.store.Store): a report counts only
if the ledger says the batch wrote those bytes. A grade is the report's (Outcome.grade): the score
after the late penalty plus the written answers' points; a hand-in that could not be read counts 0;
one the grader failed to grade has none.

The bank is spent in COURSE.toml's order of assignments, on each late hand-in that has points to
lose (not one without a grade or that scored 0 anyway), as many of its days late as the bank still
holds; the penalty is then that of the days left, by the policy its gradebook applied.

Nothing missing is counted as zero, and everything missing is listed (`Term.problems`, and the
student's notes): a gradebook that is absent or holds no report, a student absent from a gradebook,
a report the batch did not write as it is, a grade the grader failed to give. Such a cell is empty,
and a student's course percent is over the grades they have: the best (assignments - drop_lowest)
of them, or all of them, marked "incomplete", where they have fewer. A missing assignment thus takes
a dropped one's place first: missing one assignment with drop_lowest = 1 gives the percent a zero
there would (it would be dropped), and nothing more.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader import render_html
from grader.batch.gradebook import CANVAS_STUDENT_COLUMNS, csv_text, lms_number
from grader.batch.late import last_deadline
from grader.batch.outcomes import Outcome
from grader.batch.store import STATE, Store, write_each
from grader.errors import UserError, make_folder
from grader.spec import LatePolicy, known_keys, read_toml

_COURSE_KEYS = ("title", "drop_lowest", "late_days", "assignments")
_ASSIGNMENT_KEYS = ("name", "gradebook", "weight")


@dataclass(frozen=True)
class Assignment:
    name: str
    gradebook: Path
    weight: float


@dataclass(frozen=True)
class Course:
    title: str
    assignments: tuple[Assignment, ...]
    drop_lowest: int = 0
    late_days: int = 0


def load_course(path: Path) -> Course:
    """COURSE.toml, checked: each mistake is one line naming the file and the key."""
    data = read_toml(path)
    known_keys(data, _COURSE_KEYS, str(path))
    tables = data.get("assignments")
    if not isinstance(tables, list) or not tables:
        raise UserError(f"{path}: assignments: give each assignment an [[assignments]] table (name, gradebook, weight)")
    assignments = tuple(_assignment(t, f"{path} [[assignments]] #{n}", path.parent) for n, t in enumerate(tables, 1))
    twice = [name for name, n in Counter(a.name for a in assignments).items() if n > 1]
    if twice:
        raise UserError(f"{path} [[assignments]]: name {twice[0]!r} is given twice")
    title = data.get("title", path.stem)
    if not isinstance(title, str):
        raise UserError(f"{path}: title is a string")
    drop = _count(data, "drop_lowest", path)
    if drop >= len(assignments):
        raise UserError(f"{path}: drop_lowest = {drop} would drop every one of the {len(assignments)} assignments")
    return Course(title, assignments, drop, _count(data, "late_days", path))


def _assignment(table: Any, where: str, folder: Path) -> Assignment:
    if not isinstance(table, dict):
        raise UserError(f"{where}: an [[assignments]] table, with name, gradebook and weight")
    known_keys(table, _ASSIGNMENT_KEYS, where)
    for key in ("name", "gradebook"):
        if not isinstance(table.get(key), str) or not table[key].strip():
            raise UserError(f"{where}: {key} is missing (a string)")
    weight = table.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (0 < weight < math.inf):
        raise UserError(f"{where}: weight is a positive number, not {weight!r}")
    return Assignment(table["name"].strip(), folder / table["gradebook"], float(weight))


def _count(data: dict[str, Any], key: str, path: Path) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{path}: {key} is a whole number, 0 or more, not {value!r}")
    return value


@dataclass(frozen=True)
class Gradebook:
    """An assignment's gradebook as the batch wrote it: each student's outcome (None: a report the
    batch did not write as it is now), and the late policy its last run applied."""

    assignment: Assignment
    outcomes: dict[str, Outcome | None]
    policy: LatePolicy | None


@dataclass(frozen=True)
class Mark:
    """A student's grade in one assignment (None: none to count), what it is out of, and the bank's
    late days spent on it."""

    points: float | None
    out_of: float = 0.0
    banked: int = 0
    note: str = ""

    @property
    def percent(self) -> float | None:
        if self.points is None:
            return None
        return 100.0 * self.points / self.out_of if self.out_of else 0.0


@dataclass(frozen=True)
class Student:
    id: str
    marks: dict[str, Mark]  # by assignment name, in COURSE.toml's order
    percent: float | None  # the course percent, over `counted`
    counted: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def late_days(self) -> int:
        return sum(mark.banked for mark in self.marks.values())


@dataclass(frozen=True)
class Term:
    course: Course
    students: list[Student]
    problems: list[str]  # a line for each thing missing
    out_of: dict[str, float | None]  # each assignment's points possible (None: no gradebook)

    def distribution(self, assignment: str | None = None) -> list[tuple[str, int]]:
        """The students' percents in an assignment (None: the course's) in bands of ten, as a class page's histogram."""
        percents = [s.marks[assignment].percent if assignment else s.percent for s in self.students]
        bins = Counter(min(int(p // 10), 9) for p in percents if p is not None)
        return [(f"{10 * b}-{10 * b + 9 if b < 9 else 100}%", bins.get(b, 0)) for b in range(10)]


def grade_course(path: Path, out: Path) -> tuple[Term, list[str]]:
    """Read COURSE.toml at `path` and its gradebooks; write DIR's files: the term, and a line per file not written."""
    course = load_course(path)
    if (out / STATE).is_dir():  # its canvas.csv, moodle.csv and index.html would be overwritten
        raise UserError(f"--out {out} is a gradebook of grade batch: give the course a folder of its own")
    term = read_term(course)
    make_folder(out, f"--out {out}")
    return term, write_term(term, out)


def read_term(course: Course) -> Term:
    """Every student of any gradebook, with their marks, late days and course percent."""
    problems: list[str] = []
    books = [_read_gradebook(a, problems) for a in course.assignments]
    students = sorted({student for book in books for student in book.outcomes})
    rows = [_student(student, course, books, problems) for student in students]
    out_of = {
        b.assignment.name: max((o.report.final_max for o in filter(None, b.outcomes.values())), default=None)
        for b in books
    }
    return Term(course, rows, problems, out_of)


def _read_gradebook(assignment: Assignment, problems: list[str]) -> Gradebook:
    folder, name = assignment.gradebook, assignment.name
    store = Store(folder)
    students = set(store.ledger) | {p.parent.name for p in (folder / "students").glob("*/report.json")}
    outcomes: dict[str, Outcome | None] = {}
    for student in sorted(students):
        stored = store.stored(student)
        outcomes[student] = Outcome(student, stored.report, stored.status, stored.key) if stored else None
        if stored is None:
            problems.append(f"{student}: {name}'s report is missing or changed since grade batch wrote it: left blank")
    if not any(outcomes.values()):
        problems.append(f"{name}: {folder} {'holds no report of grade batch' if folder.is_dir() else 'does not exist'}")
    deadline = last_deadline(folder / STATE)
    return Gradebook(assignment, outcomes, deadline.policy if deadline else None)


def _student(student: str, course: Course, books: list[Gradebook], problems: list[str]) -> Student:
    bank = course.late_days
    marks: dict[str, Mark] = {}
    for book in books:
        marks[book.assignment.name] = mark = _mark(student, book, bank)
        bank -= mark.banked
        if student not in book.outcomes and any(book.outcomes.values()):  # a missing gradebook is one line
            problems.append(f"{student}: missing from {book.assignment.name} ({book.assignment.gradebook})")
    grades = {name: mark.percent for name, mark in marks.items() if mark.percent is not None}
    weights = {a.name: a.weight for a in course.assignments}
    keep = len(course.assignments) - course.drop_lowest
    percent, counted = best_mean(grades, weights, keep)
    notes = [f"{name}: {mark.note}" for name, mark in marks.items() if mark.note]
    dropped = [name for name in grades if name not in counted]
    notes += [f"dropped: {', '.join(dropped)}"] if dropped else []
    notes += [f"incomplete: over {', '.join(counted) or 'nothing'}"] if len(counted) < keep else []
    return Student(student, marks, percent, counted, tuple(notes))


def _mark(student: str, book: Gradebook, bank: int) -> Mark:
    """The student's grade in `book`, with as many of its late days as `bank` covers spent and forgiven."""
    if student not in book.outcomes:
        return Mark(None, note="missing")
    outcome = book.outcomes[student]
    if outcome is None:
        return Mark(None, note="report changed since graded")
    report, grade = outcome.report, outcome.grade
    if grade is None:
        return Mark(None, note="not graded (grader error): run grade batch again")
    if report.problem:
        return Mark(grade, report.final_max, note="could not be read: counts 0")
    days = report.late.get("days", 0)
    kept = report.late.get("per_day")  # a report may keep its policy; else its gradebook's last deadline's
    policy = LatePolicy(kept, report.late.get("max_days")) if kept else book.policy
    if not days or policy is None or report.score <= 0:
        note = f"{_days(days)} late, late policy unknown: no bank day spent" if days and policy is None else ""
        return Mark(grade, report.final_max, note=note)
    banked = min(days, bank)
    penalty = policy.penalty(days - banked)
    late = dataclasses.replace(report, late={**report.late, "penalty": penalty})
    said = [f"{_days(banked)} from the bank"] if banked else []
    said += [f"{_days(days - banked)} late: -{penalty * 100:g}%"] if penalty else []
    return Mark(late.final_score, report.final_max, banked, ", ".join(said))


def best_mean(percents: dict[str, float], weights: dict[str, float], keep: int) -> tuple[float | None, tuple[str, ...]]:
    """The highest weighted mean of `keep` of `percents` (all of them where there are no more), and
    which those are, in their order: Dinkelbach's iteration, exact, each step a sort (ties: the first)."""
    names = list(percents)
    if not names:
        return None, ()

    def mean(chosen: list[str]) -> float:
        return sum(weights[n] * percents[n] for n in chosen) / sum(weights[n] for n in chosen)

    chosen = sorted(names, key=lambda n: -percents[n])[:keep]
    best = mean(chosen)
    while True:  # each step raises the mean, or stops: it ends, at the best
        better = sorted(names, key=lambda n: -weights[n] * (percents[n] - best))[:keep]
        if mean(better) <= best + 1e-9:
            return best, tuple(n for n in names if n in chosen)
        chosen, best = better, mean(better)


def write_term(term: Term, out: Path) -> list[str]:
    """course.csv, canvas.csv, moodle.csv and index.html in `out`, each apart from the others (write_each):
    a line for each that failed."""
    names = [a.name for a in term.course.assignments]

    def points(student: Student) -> list[str]:
        return [_cell(student.marks[name].points) for name in names]

    course = [["id", *names, "late_days_used", "course_percent", "notes"]]
    course += [
        [s.id, *(_cell(s.marks[n].percent) for n in names), s.late_days, _cell(s.percent), "; ".join(s.notes)]
        for s in term.students
    ]
    canvas = [[*CANVAS_STUDENT_COLUMNS, *names], ["Points Possible", "", "", "", "", *map(_cell, term.out_of.values())]]
    canvas += [[s.id, s.id, "", "", "", *points(s)] for s in term.students]
    moodle = [["ID number", *names]] + [[s.id, *points(s)] for s in term.students]
    return write_each(
        out,
        {
            "course.csv": lambda: csv_text(course),
            "canvas.csv": lambda: csv_text(canvas),
            "moodle.csv": lambda: csv_text(moodle),
            "index.html": lambda: render_html.course_page(term),
        },
    )


def _cell(value: float | None) -> str:
    return "" if value is None else lms_number(value)


def _days(count: int) -> str:
    return f"{count} day{'s' if count != 1 else ''}"
