"""The gradebook of a batch, rendered from the students' reports: the batch's counterpart of render.

DIR/grades.csv    a row per student: totals, the late penalty, status, then each test's points
                  under a short id (`lenet.parameter_count`); DIR/legend.csv says which test each is
DIR/canvas.csv    Canvas's gradebook import (Grades > Import)
DIR/moodle.csv    Moodle's CSV grade import (an identifier column, a grade column, a feedback column)
DIR/moodle_worksheet.csv  for a Moodle download (--layout moodle): the assignment's offline grading
                  worksheet, filled in (`Participant <id>`, the grade, the late note), to upload back
DIR/junit.xml     a suite per student
DIR/summary.md    the class's statistics, and the same on the terminal
DIR/index.html    the class page: the same, with charts, linking each student's feedback.html

grades.csv and legend.csv are the instructor's: they name the hidden tests. The LMS files hold
only ids (and the names the LMS's download gave), grades and the late note. A grade is the tests'
score after any late penalty plus the written answers' points (grader.manual); a hand-in that could
not be read counts 0, and one that the grader failed to grade (status `error`) is left blank.
"""

from __future__ import annotations

import csv
import io
import re
import statistics
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from tabulate import tabulate

from grader import render, render_html
from grader.batch.store import write_each
from grader.i18n import _

if TYPE_CHECKING:
    from grader.batch.outcomes import BatchResult, Outcome

FIRST_COLUMNS = (
    "id",
    "score",
    "late_days",
    "penalty",
    "written_points",
    "final_score",
    "max_score",
    "written_max",
    "percent",
    "status",
    "submitted_at",
    "limits",
    "problem",
    "profile",
    "isolation",
    "selection",
    "left_out_points",
)
CANVAS_STUDENT_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
# As Moodle exports an assignment's offline grading worksheet: it reads back Identifier, Grade, Last
# modified (grade) (a grade changed in Moodle since is kept) and Feedback comments.
MOODLE_WORKSHEET_COLUMNS = (
    "Identifier",
    "Full name",
    "Email address",
    "Status",
    "Grade",
    "Maximum Grade",
    "Grade can be changed",
    "Last modified (submission)",
    "Last modified (grade)",
    "Feedback comments",
)
MOODLE_PARTICIPANT = "Participant "  # the worksheet's identifier: "Participant 1234567"


def short_ids(nodeids: list[str]) -> dict[str, str]:
    """Short, stable column names from the tests' node ids: `lenet.parameter_count` for
    assignment2/tests/test_lenet.py::test_parameter_count; with the folder (`hidden/lenet.x`)
    where two files share a name."""

    def short(nodeid: str, folder: bool = False) -> str:
        path, _, function = nodeid.partition("::")
        module = re.sub(r"^test_(\d+_)?", "", PurePosixPath(path).stem)
        *classes, last = function.split("::")
        name = ".".join([module, *classes, re.sub(r"^test_", "", last)])
        return f"{PurePosixPath(path).parent.name}/{name}" if folder else name

    names = Counter(short(n) for n in nodeids)
    return {n: short(n, folder=names[short(n)] > 1) for n in nodeids}


def _tests(outcomes: list[Outcome]) -> dict[str, Any]:
    """Every test of the batch, by node id, in the order the reports list them."""
    return {t.nodeid: t for o in outcomes for t in o.report.tests}


def gradebook_rows(outcomes: list[Outcome], ids: dict[str, str]) -> list[dict[str, Any]]:
    """One row per student: totals, the late penalty, status, time, the limits tripped, then each
    test's points under its short id (`ids`; empty where no test ran: a hand-in that could not be graded)."""
    rows = []
    for o in outcomes:
        row = {"id": o.id, "status": o.status, "limits": " ".join(o.limits), "isolation": o.report.isolation}
        row.update(render.csv_row(o.report))
        row.update({ids[t.nodeid]: "" if o.report.problem else t.score for t in o.report.tests})
        rows.append(row)
    return rows


def write_gradebook(
    out: Path,
    outcomes: list[Outcome],
    show_hidden: bool = False,
    canvas_assignment: str | None = None,
    lms_title: str | None = None,
    names: dict[str, str] | None = None,
    layout: str = "folders",
) -> list[str]:
    """grades.csv, legend.csv, canvas.csv, moodle.csv, junit.xml, summary.md and index.html, from the
    reports, each apart from the others (grader.batch.store.write_each): a line for each that failed.
    `lms_title` heads the grade column of the LMS files whatever the language (an LMS matches the
    assignment by it); default: the reports' title. `names`: the students' names in the LMS, by id
    (grader.batch.layouts); `layout` the download was read as: a Moodle one gets moodle_worksheet.csv too."""
    names = names or {}
    lms_title = lms_title or (outcomes[0].report.title if outcomes else "grade")
    tests = _tests(outcomes)
    ids = short_ids(list(tests))
    rows = gradebook_rows(outcomes, ids)
    columns = list(FIRST_COLUMNS) + [k for k in dict.fromkeys(k for row in rows for k in row) if k not in FIRST_COLUMNS]
    legend = [("id", "test", "points", "hidden", "nodeid")]
    legend += [(ids[n], t.name, f"{t.max_score:g}", "yes" if t.hidden else "no", n) for n, t in tests.items()]
    files = {
        "grades.csv": lambda: csv_text([columns, *([row.get(c, "") for c in columns] for row in rows)]),
        "legend.csv": lambda: csv_text(legend),
        "canvas.csv": lambda: canvas_csv(outcomes, lms_title, canvas_assignment, names),
        "moodle.csv": lambda: moodle_csv(outcomes, lms_title),
        "junit.xml": lambda: junit_xml(outcomes, show_hidden),
        "summary.md": lambda: summary_markdown(outcomes),
        "index.html": lambda: render_html.class_page(outcomes, summarize(outcomes)),
    }
    if layout == "moodle":
        files["moodle_worksheet.csv"] = lambda: moodle_worksheet(outcomes, names)
    return write_each(out, files)


def junit_xml(outcomes: list[Outcome], show_hidden: bool = False) -> str:
    """A suite per student, named by the student's id."""
    suites = ET.Element("testsuites", name=outcomes[0].report.assignment if outcomes else "")
    for outcome in outcomes:
        suite = ET.fromstring(render.junit(outcome.report, show_hidden))
        suite.set("name", outcome.id)
        suites.append(suite)
    return render.xml_document(suites)


def canvas_csv(
    outcomes: list[Outcome], title: str, assignment_id: str | None = None, names: dict[str, str] | None = None
) -> str:
    """Canvas's gradebook import: its student columns (the student's name in the LMS, else the id,
    under Student; the id, a Canvas user id for a Canvas download, under ID), then the assignment's
    column, "Title (Canvas id)" so that Canvas updates that assignment (without an id, Canvas takes
    the assignment of that title, or makes a new one), and the Points Possible row."""
    names = names or {}
    column = f"{title} ({assignment_id})" if assignment_id else title
    points = max((o.report.final_max for o in outcomes), default=0)
    rows: list[list[str]] = [[*CANVAS_STUDENT_COLUMNS, column], ["Points Possible", "", "", "", "", lms_number(points)]]
    rows += [[names.get(o.id) or o.id, o.id, "", "", "", _grade(o)] for o in outcomes]
    return csv_text(rows)


def moodle_csv(outcomes: list[Outcome], title: str) -> str:
    """Moodle's CSV grade import: map "ID number" to the users' ID number (or username), the grade
    column (`title`) to the assignment's grade item, and Feedback (the late note) to its feedback, or ignore it."""
    rows = [["ID number", title, "Feedback"]]
    rows += [[o.id, _grade(o), o.report.late_note()] for o in outcomes]
    return csv_text(rows)


def moodle_worksheet(outcomes: list[Outcome], names: dict[str, str], now: datetime | None = None) -> str:
    """A Moodle assignment's offline grading worksheet, filled in, for a Moodle download (whose ids are
    the participant ids): Grading action "Upload grading worksheet" reads Identifier, Grade and Feedback
    comments (the late note), and keeps a grade changed in Moodle after Last modified (grade) (`now`:
    when this was written). Moodle takes no grade above the assignment's maximum grade: make that
    the kit's Maximum Grade."""
    modified = (now or datetime.now().astimezone()).isoformat(sep=" ", timespec="seconds")  # strtotime reads it
    rows: list[list[str]] = [list(MOODLE_WORKSHEET_COLUMNS)]
    for o in outcomes:
        grade = _grade(o)
        rows.append(
            [
                f"{MOODLE_PARTICIPANT}{o.id}",
                names.get(o.id, ""),
                "",  # not in the download
                "Submitted for grading - Graded" if grade else "Submitted for grading",
                grade,
                lms_number(o.report.final_max),
                "Yes",
                o.report.late.get("submitted_at", ""),
                modified if grade else "",
                o.report.late_note(),
            ]
        )
    return csv_text(rows)


def _grade(outcome: Outcome) -> str:
    """What an LMS records (Outcome.grade), with two decimals at most."""
    return "" if outcome.grade is None else lms_number(outcome.grade)


def lms_number(value: float) -> str:
    """A grade as an LMS file holds it."""
    return f"{round(value, 2):.2f}".rstrip("0").rstrip(".")  # as Canvas exports them: two decimals at most


def csv_text(rows: list[Any]) -> str:
    """Rows as CSV, every text cell safe to open in a spreadsheet (render.spreadsheet_cell)."""
    text = io.StringIO()
    csv.writer(text).writerows([render.spreadsheet_cell(cell) for cell in row] for row in rows)
    return text.getvalue()


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    """Class statistics over the graded hand-ins (those that could not be read or graded are only
    counted): scores after any late penalty, their distribution, each test's pass rate and the
    commonest reason of failure, if more than one student has it; what a selection left out."""
    graded = [o for o in outcomes if o.status == "graded"]
    percents = [o.report.final_percent for o in graded]
    bins = Counter(min(int(p // 10), 9) for p in percents)
    tests: dict[str, dict[str, Any]] = {}
    for outcome in graded:
        for test in outcome.report.tests:
            entry = tests.setdefault(
                test.nodeid, {"name": test.name, "max_score": test.max_score, "passed": 0, "points": [], "reasons": []}
            )
            entry["passed"] += test.status == "passed"
            entry["points"].append(test.score)
            if test.status != "passed":
                entry["reasons"].append(test.reason.splitlines()[0] if test.reason else "")
    per_test = []
    for entry in tests.values():
        common = [(reason, n) for reason, n in Counter(entry["reasons"]).most_common(1) if n > 1]
        per_test.append(
            {
                "name": entry["name"],
                "max_score": entry["max_score"],
                "pass_rate": entry["passed"] / len(graded),
                "mean": statistics.fmean(entry["points"]),
                "common_reason": f"{common[0][0]} ({common[0][1]})" if common else "",
            }
        )
    return {
        "students": len(outcomes),
        "graded": len(graded),
        "status": dict(Counter(o.status for o in outcomes)),
        "late": sum(o.report.late.get("days", 0) > 0 for o in outcomes),
        "mean": statistics.fmean(percents) if percents else 0.0,
        "median": statistics.median(percents) if percents else 0.0,
        "distribution": [(f"{10 * b}-{10 * b + 9 if b < 9 else 100}%", bins.get(b, 0)) for b in range(10)],
        "tests": sorted(per_test, key=lambda t: t["pass_rate"]),
        "left_out": next(filter(None, (render.left_out(o.report) for o in outcomes)), ""),  # --select, --marks
    }


def summary_markdown(outcomes: list[Outcome]) -> str:
    stats = summarize(outcomes)
    lines = [
        f"### {outcomes[0].report.assignment if outcomes else ''}: {render.class_headline(stats)}",
        "",
        render.class_scores(stats),
        "",
        *([stats["left_out"], ""] if stats["left_out"] else []),
        tabulate(
            [(band, n, "█" * n) for band, n in stats["distribution"]],
            headers=(_("score"), _("students"), ""),
            tablefmt="github",
        ),
        "",
        _("Tests, the most failed first:"),
        "",
        tabulate(
            [
                (
                    render.table_cell(t["name"]),
                    f"{t['max_score']:g}",
                    f"{t['pass_rate']:.0%}",
                    f"{t['mean']:.2g}",
                    render.table_cell(render.code(t["common_reason"])),  # a hand-in's text: never rendered
                )
                for t in stats["tests"]
            ],
            headers=(_("test"), _("points"), _("passed"), _("mean points"), _(render.COMMONEST)),
            tablefmt="github",
        ),
    ]
    return "\n".join(lines) + "\n"


def print_summary(result: BatchResult, console: Console) -> None:
    """The end of a batch on the terminal: totals, distribution, the most failed tests; one line
    when the run graded nobody (everything was up to date)."""
    stats = summarize(result.outcomes)
    where = f"gradebook: {result.out / 'grades.csv'} · reports: {result.out / 'students'}/<id>/"
    plain = {"markup": False, "highlight": False, "soft_wrap": True}  # ids and paths are the user's: no markup
    if result.left_out:
        names = ", ".join(result.left_out[:5]) + (" ..." if len(result.left_out) > 5 else "")
        console.print(f"{len(result.left_out)} never graded, left out of the gradebook: {names}", **plain)
    headline, scores = render.class_headline(stats), render.class_scores(stats)
    if not result.graded_now:
        nothing = _("nothing to grade: {headline} up to date · {scores} · {where}")
        console.print(nothing.format(headline=headline, scores=scores, where=where), **plain)
        return
    now = _("· {n} graded now · {scores}").format(n=result.graded_now, scores=scores)
    console.print(Text(headline, "bold"), now, **plain)
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in (_("test"), _("points"), _("passed"), _(render.COMMONEST)):
        table.add_column(column, overflow="fold")
    for test in stats["tests"]:
        # A str cell is rich markup: the reason is a hand-in's text, shown as it is
        table.add_row(test["name"], f"{test['max_score']:g}", f"{test['pass_rate']:.0%}", Text(test["common_reason"]))
    console.print(table)
    console.print(" · ".join(f"{band}: {n}" for band, n in stats["distribution"] if n))
    console.print(where, **plain)
