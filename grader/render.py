"""Every format of a report, rendered from the one JSON document: terminal, Markdown, JUnit, Gradescope."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from tabulate import tabulate

from grader.figures import image_tags
from grader.i18n import N_, _
from grader.report import THRESHOLD, Report, TestResult

HIDDEN_NOTE = N_("hidden test: only its points are shown")  # in every format: no promise of what comes later
COMMONEST = N_("commonest reason of failure")
STATUSES = {"graded": N_("graded"), "unreadable": N_("unreadable"), "error": N_("error")}  # a batch's, as said
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")  # XML 1.0's Char, negated
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
SHOWN_LINES, SHOWN_LINE_CHARS = 12, 300  # what the terminal and feedback.md show of a failure's output
MEASURED = {  # what the tests measure (their record_property names), as the reports name them
    "accuracy": N_("accuracy"),
    "scratch_accuracy": N_("accuracy from scratch"),
    "class_accuracy": N_("class accuracy"),
    "mean_iou": N_("mean IoU"),
}


def _listed(report: Report, show_hidden: bool) -> list[tuple[str, TestResult]]:
    """The tests a student reads a line of: none for a hand-in that could not be read (no test ran:
    its problem, in the summary, is the one reason)."""
    return [] if report.problem else _visible(report, show_hidden)


def _visible(report: Report, show_hidden: bool) -> list[tuple[str, TestResult]]:
    """(display name, result) pairs; hidden tests keep their score but lose their details."""
    rows, hidden = [], 0
    for test in report.tests:
        if test.hidden and not show_hidden:
            hidden += 1
            shown = TestResult(**{**test.__dict__, "reason": _(HIDDEN_NOTE), "output": _(HIDDEN_NOTE), "images": []})
            rows.append((_("hidden test {n}").format(n=hidden), shown))
        else:
            rows.append((test.name, test))
    return rows


def details(test: TestResult) -> str:
    """What a failure's output adds under its reason, capped for reading: the last lines that its
    code printed (kept by the sandbox, cleaned where they entered), or the rest of an assertion's
    message. Never a hidden test's: its output is its reason."""
    if test.hidden or test.status != "failed":
        return ""
    rest = test.output.removeprefix(test.reason).strip()
    return "\n".join(line[:SHOWN_LINE_CHARS] for line in rest.splitlines()[-SHOWN_LINES:])


def _note(test: TestResult) -> str:
    """The reason of a failure, or what a passing test measured: "accuracy 94.3% (min 90%), mean_iou 0.71"."""
    if test.reason or not test.measured:
        return test.reason
    notes = []
    for key, value in test.measured.items():
        if key == THRESHOLD:
            continue
        name = _(MEASURED[key]) if key in MEASURED else key
        note = f"{name} {value:.1%}" if key.endswith("accuracy") else f"{name} {value}"
        if key == "accuracy" and THRESHOLD in test.measured:
            note += _(" (min {threshold:.0%})").format(threshold=test.measured[THRESHOLD])
        notes.append(note)
    return ", ".join(notes)


def _total(report: Report) -> str:
    """The total of a report's header: "8 / 10 (80%)", after the late penalty if there is one, with the
    written answers' points (their questions' in the maximum)."""
    return f"{report.final_score:g} / {report.final_max:g} ({report.final_percent:.0f}%){after_penalty(report)}"


def after_penalty(report: Report) -> str:
    """What follows a grade that a late penalty made: " after the late penalty" (else nothing)."""
    return _(" after the late penalty") if report.late_note() else ""


def _points(test: TestResult) -> str:
    return f"{test.score:g} / {test.max_score:g}"


def _footer(report: Report) -> list[str]:
    lines = []
    open_blanks = report.blanks.get("open", [])
    if open_blanks:
        lines.append(_("next blank to fill: {blank}").format(blank=open_blanks[0]))
    if report.min_accuracy is not None and not report.calibrated:
        provisional = _("the accuracy thresholds of the {profile} profile are provisional: not yet calibrated")
        lines.append(provisional.format(profile=report.profile))
    if report.profile_note:
        lines.append(report.profile_note)
    graded = _("graded in {seconds:.1f} s · isolation: {isolation} · grader {version}")
    lines.append(graded.format(seconds=report.duration_s, isolation=_(report.isolation), version=report.grader_version))
    return lines


def handin(report: Report, here: Path | None = None) -> str:
    """How a student-facing format names the submission: its own name, never the folder it was graded
    from (an instructor's); on the terminal, the path from `here` when it is below it."""
    path = Path(report.submission)
    if here is not None and path.is_absolute() and path.is_relative_to(here):
        return str(path.relative_to(here))
    return str(path) if here is not None and not path.is_absolute() else path.name


def left_out(report: Report) -> str:
    """A sentence for what a selection left out of the grading, or ""."""
    points = report.selection.get("left_out_points", 0)
    if not points:
        return ""
    total = report.max_score + points
    left = _("graded without {points:g} of the {total:g} points: tests left out by {flags}")
    return left.format(points=points, total=total, flags=report.selected_by())


def load_errors(report: Report) -> list[str]:
    """A headline for each student file that could not be imported: the reason, the line, a caret."""
    lines = []
    for error in report.load_errors:
        lines.append(_("{file} could not be loaded: {reason}").format(file=error["file"], reason=error["reason"]))
        if error.get("source"):
            place = error.get("place") or _("line {line}").format(line=error["line"])
            prefix = f"  {place}: "
            lines.append(prefix + error["source"])
            if error.get("column"):
                lines.append(" " * (len(prefix) + error["column"] - 1) + "^")
    return lines


def written(report: Report) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each written question of a report, in the spec's order: its answer and its mark (None: not marked)."""
    marks = {mark["question"]: mark for mark in report.manual}
    return [(answer, marks.get(answer["question"])) for answer in report.answers]


def written_heading(report: Report) -> str:
    """The head of a report's written answers: "Written answers, marked by a TA: 7 / 12 points"."""
    heading = _("Written answers, marked by a TA: {points:g} / {max_points:g} points")
    return heading.format(points=report.written_points, max_points=report.written_max)


def mark_state(answer: dict[str, Any], mark: dict[str, Any] | None) -> str:
    """A written answer's state: "3 / 4 points" (and, where it changed since it was marked, so), "not
    marked yet", or "not answered"."""
    if mark is None:
        return _("not marked yet") if answer["answered"] else _("not answered")
    points = _("{points:g} / {max_points:g} points").format(points=mark["points"], max_points=mark["max_points"])
    return points + (_(" · the answer changed since it was marked") if mark["stale"] else "")


def rubric_line(item: dict[str, Any]) -> tuple[str, str]:
    """A ticked rubric item: its text and its points, signed ("+2", "-1")."""
    return item["text"], f"{item['points']:+g}"


def class_headline(stats: dict[str, Any]) -> str:
    """The class in one line: "12 submissions (10 graded, 2 unreadable; 3 late)"."""
    status = ", ".join(f"{n} {_(STATUSES.get(s, s))}" for s, n in sorted(stats["status"].items()))
    late = _("; {late} late").format(late=stats["late"]) if stats["late"] else ""
    return _("{students} submissions ({status}{late})").format(students=stats["students"], status=status, late=late)


def class_scores(stats: dict[str, Any]) -> str:
    """The class's scores in one line: "mean 71.2% · median 75.0% (of the 10 graded)"."""
    if not stats["graded"]:
        return _("no submission could be graded")
    return _("mean {mean:.1f}% · median {median:.1f}% (of the {graded} graded)").format(**stats)


def terminal(report: Report, console: Console, show_hidden: bool = False) -> None:
    """The table a student reads after `grade assignmentN`: each failure's reason under its test."""
    console.print(Text.assemble((f"{report.assignment} · {report.title}", "bold"), f"   {handin(report, Path.cwd())}"))
    for line in load_errors(report):
        console.print(Text(line, "bold red"), soft_wrap=True)
    for note in report.notes:
        console.print(Text(_("note: {note}").format(note=note), "yellow"), soft_wrap=True)
    table = Table(show_edge=False, pad_edge=False, box=None, show_header=False, padding=(0, 1))
    table.add_column(width=1)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(overflow="fold")
    for name, test in _listed(report, show_hidden):
        passed = test.status == "passed"
        cell = Text(name)
        if _note(test):
            cell.append("\n" + _note(test), "dim" if passed else "yellow")
        if details(test):
            cell.append("\n" + details(test), "dim")
        table.add_row(Text("✓", "green") if passed else Text("✗", "red"), _points(test), cell)
    console.print(table)
    if report.answers:
        said = [
            (_("{question} answered") if answer["answered"] else _("{question} not answered")).format(
                question=answer["question"]
            )
            for answer in report.answers
        ]
        line = _("written answers (marked by a TA, {points:g} points): {answers}")
        console.print(Text(line.format(points=report.written_max, answers=", ".join(said))), soft_wrap=True)
    style = "bold green" if report.score == report.max_score else "bold"
    console.print(Text(report.summary(), style))
    for line in _footer(report):
        console.print(Text(line, "dim"))


def _backticks(text: str, least: int) -> str:
    """A run of backticks longer than any in `text` (and at least `least`): CommonMark's fence for it."""
    return "`" * max(least, max(map(len, re.findall("`+", text)), default=0) + 1)


def code(text: str) -> str:
    """`text` as a Markdown code span: a hand-in's text shown as it is, never rendered as markup,
    a link, an image or HTML (GitHub's job summary renders all of them)."""
    if not text:
        return ""
    pad = " " if "`" in text else ""  # a backtick at an edge would join the fence
    return f"{_backticks(text, 1)}{pad}{text}{pad}{_backticks(text, 1)}"


def table_cell(text: str) -> str:
    """`text` in one cell of a GitHub Markdown table (a pipe in a code span is escaped there too)."""
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: Report, show_hidden: bool = False) -> str:
    """The report as GitHub Markdown (a CI job summary, a feedback file): the text that may hold a
    hand-in's (reasons, notes, the summary with its problem, load errors) in code spans and blocks."""
    rows = [
        ("✅" if t.status == "passed" else "❌", table_cell(name), _points(t), table_cell(code(_note(t))))
        for name, t in _listed(report, show_hidden)
    ]
    table = tabulate(rows, headers=("", _("test"), _("points"), _("reason")), tablefmt="github") if rows else ""
    header = f"### {report.assignment} · {report.title}: {_total(report)}"
    lines = [
        _("- submission: {handin}").format(handin=code(handin(report))),
        f"- {code(report.summary())}",
        *(f"- {line}" for line in _footer(report)),
    ]
    headline = fenced("\n".join(load_errors(report)))
    notes = "\n".join("- " + _("note: {note}").format(note=code(note)) for note in report.notes)
    outputs = [f"**{name}**\n\n{fenced(details(t))}" for name, t in _listed(report, show_hidden) if details(t)]
    parts = [header, headline, notes, table, *outputs, written_markdown(report), "\n".join(lines)]
    return "\n\n".join(filter(None, parts)) + "\n"


def written_markdown(report: Report) -> str:
    """The written answers of feedback.md: each question, its points or why it has none, the ticked rubric
    items and the TA's comment, as data (code spans and blocks: never rendered); "" without questions."""
    if not report.answers:
        return ""
    parts = [f"#### {written_heading(report)}"]
    for answer, mark in written(report):
        parts.append(f"**{answer['question']}** · {answer.get('title', '')}: {mark_state(answer, mark)}")
        if mark:
            items = [f"- ✓ {code(text)} ({points})" for text, points in map(rubric_line, mark["rubric"])]
            parts += ["\n".join(items), fenced(mark["comment"])]
    return "\n\n".join(filter(None, parts))


def fenced(text: str) -> str:
    """`text` as a Markdown code block, shown as it is ("" for no text)."""
    return f"{_backticks(text, 3)}\n{text}\n{_backticks(text, 3)}" if text else ""


def junit(report: Report, show_hidden: bool = False) -> str:
    """JUnit XML, for CI test tabs: one testcase per test, its points as a property."""
    suite = ET.Element(
        "testsuite",
        name=report.assignment,
        tests=str(len(report.tests)),
        failures=str(sum(t.outcome in ("failed", "not run") for t in report.tests)),
        skipped=str(sum(t.outcome == "skipped" for t in report.tests)),
        time=f"{report.duration_s:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    for key in ("score", "max_score", "profile", "device", "dataset"):
        ET.SubElement(properties, "property", name=key, value=str(getattr(report, key)))
    if report.late:  # graded against a deadline
        for key in ("submitted_at", "days", "penalty"):
            ET.SubElement(properties, "property", name=f"late_{key}", value=str(report.late[key]))
        ET.SubElement(properties, "property", name="score_after_penalty", value=str(report.score_after_penalty))
    if report.written_max:  # the grade: the tests' and the written answers' points
        for key in ("written_points", "written_max", "final_score", "final_max"):
            ET.SubElement(properties, "property", name=key, value=f"{getattr(report, key):g}")
    if report.selection.get("left_out_points"):
        ET.SubElement(properties, "property", name="points", value=report.points())
    for name, test in _visible(report, show_hidden):
        case = ET.SubElement(suite, "testcase", classname=report.assignment, name=name, time=f"{test.duration_s:.3f}")
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", name="points", value=_points(test))
        if test.outcome == "skipped":
            ET.SubElement(case, "skipped", message=test.reason)
        elif test.status == "failed":
            ET.SubElement(case, "failure", message=test.reason).text = test.output
    return xml_document(suite)


def xml_document(root: ET.Element) -> str:
    """The XML of `root`, with U+FFFD for each character XML 1.0 does not allow (ElementTree writes
    them as they are, and no reader then parses the file): a defensive filter after the cleaning."""
    return _NOT_XML.sub("\ufffd", ET.tostring(root, encoding="unicode", xml_declaration=True)) + "\n"


def _gradescope_output(test: TestResult) -> dict[str, str]:
    """A test's output; with pictures, as HTML with the images inline (Gradescope's "html" format)."""
    if not test.images:
        return {"output": test.output}
    return {"output": f"<pre>{html.escape(test.output)}</pre>{image_tags(test.images)}", "output_format": "html"}


def gradescope(report: Report, show_hidden: bool = False) -> dict[str, Any]:
    """Gradescope's results.json: hidden tests are shown once published, and only their points
    unless `show_hidden`. A test's pictures are in its output, as HTML."""
    return {
        "score": report.final_score,  # the total, which Gradescope takes over the tests' sum: after the late penalty
        "execution_time": round(report.duration_s, 3),
        "output": "\n".join(
            [report.summary(), *load_errors(report), *(_("note: {note}").format(note=note) for note in report.notes)]
        ),
        "stdout_visibility": "hidden",
        "tests": [
            {
                "name": name,
                "score": test.score,
                "max_score": test.max_score,
                "status": test.status,
                **_gradescope_output(test),
                "visibility": "after_published" if test.hidden else "visible",
            }
            for name, test in _visible(report, show_hidden)
        ],
    }


def spreadsheet_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet reads as a formula (OWASP's advice on CSV injection): text that
    begins with =, +, -, @, a tab or a carriage return gets a single quote before it; numbers stay numbers."""
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def csv_row(report: Report) -> dict[str, Any]:
    """A report's fields of its gradebook row: totals, the late penalty, the written answers' points, where
    it ran (not how long: the same hand-in gets the same row on every regrade; report.json keeps the time).
    `final_score` is the grade (the score after the penalty, plus the written points), `percent` of the
    maximum with the written questions'; the late fields are empty without a deadline, the written ones
    without questions."""
    written = bool(report.written_max)
    return {
        "score": report.score,
        "max_score": report.max_score,
        "written_points": report.written_points if written else "",
        "written_max": report.written_max if written else "",
        "percent": round(report.final_percent, 1),
        "late_days": report.late.get("days", ""),
        "penalty": report.late.get("penalty", ""),
        "final_score": report.final_score,
        "submitted_at": report.late.get("submitted_at", ""),
        "profile": report.profile,
        "problem": report.problem,
        "selection": report.selected_by(),
        "left_out_points": report.selection.get("left_out_points", 0),
    }
