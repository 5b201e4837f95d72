"""Every format of a report, rendered from the one JSON document: terminal, Markdown, JUnit, Gradescope."""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from tabulate import tabulate

from grader.figures import image_tags
from grader.report import THRESHOLD, Report, TestResult

HIDDEN_NOTE = "details hidden until grades are released"


def _visible(report: Report, show_hidden: bool) -> list[tuple[str, TestResult]]:
    """(display name, result) pairs; hidden tests keep their score but lose their details."""
    rows, hidden = [], 0
    for test in report.tests:
        if test.hidden and not show_hidden:
            hidden += 1
            shown = TestResult(**{**test.__dict__, "reason": HIDDEN_NOTE, "output": HIDDEN_NOTE, "images": []})
            rows.append((f"hidden test {hidden}", shown))
        else:
            rows.append((test.name, test))
    return rows


def _note(test: TestResult) -> str:
    """The reason of a failure, or what a passing test measured: "accuracy 94.3% (min 90%), mean_iou 0.71"."""
    if test.reason or not test.measured:
        return test.reason
    notes = []
    for key, value in test.measured.items():
        if key == THRESHOLD:
            continue
        note = f"{key} {value:.1%}" if key.endswith("accuracy") else f"{key} {value}"
        if key == "accuracy" and THRESHOLD in test.measured:
            note += f" (min {test.measured[THRESHOLD]:.0%})"
        notes.append(note)
    return ", ".join(notes)


def _points(test: TestResult) -> str:
    return f"{test.score:g} / {test.max_score:g}"


def _footer(report: Report) -> list[str]:
    lines = []
    open_blanks = report.blanks.get("open", [])
    if open_blanks:
        lines.append(f"next blank to fill: {open_blanks[0]}")
    if report.min_accuracy is not None and not report.calibrated:
        lines.append(f"the accuracy thresholds of the {report.profile} profile are provisional: not yet calibrated")
    lines.append(
        f"graded in {report.duration_s:.1f} s · isolation: {report.isolation} · grader {report.grader_version}"
    )
    return lines


def load_errors(report: Report) -> list[str]:
    """A headline for each student file that could not be imported: the reason, the line, a caret."""
    lines = []
    for error in report.load_errors:
        lines.append(f"{error['file']} could not be loaded: {error['reason']}")
        if error.get("source"):
            prefix = f"  line {error['line']}: "
            lines.append(prefix + error["source"])
            if error.get("column"):
                lines.append(" " * (len(prefix) + error["column"] - 1) + "^")
    return lines


def terminal(report: Report, console: Console, show_hidden: bool = False) -> None:
    """The table a student reads after `grade assignmentN`: each failure's reason under its test."""
    console.print(Text.assemble((f"{report.assignment} · {report.title}", "bold"), f"   {report.submission}"))
    for line in load_errors(report):
        console.print(Text(line, "bold red"), soft_wrap=True)
    table = Table(show_edge=False, pad_edge=False, box=None, show_header=False, padding=(0, 1))
    table.add_column(width=1)
    table.add_column(justify="right", no_wrap=True)
    table.add_column(overflow="fold")
    for name, test in _visible(report, show_hidden):
        passed = test.status == "passed"
        cell = Text(name)
        if _note(test):
            cell.append("\n" + _note(test), "dim" if passed else "yellow")
        table.add_row(Text("✓", "green") if passed else Text("✗", "red"), _points(test), cell)
    console.print(table)
    style = "bold green" if report.score == report.max_score else "bold"
    console.print(Text(report.summary(), style))
    for line in _footer(report):
        console.print(Text(line, "dim"))


def markdown(report: Report, show_hidden: bool = False) -> str:
    """The report as GitHub Markdown (a CI job summary, a feedback file)."""
    cell = lambda text: text.replace("|", "\\|").replace("\n", " ")
    rows = [
        ("✅" if t.status == "passed" else "❌", cell(name), _points(t), cell(_note(t)))
        for name, t in _visible(report, show_hidden)
    ]
    table = tabulate(rows, headers=("", "test", "points", "reason"), tablefmt="github")
    header = (
        f"### {report.assignment} · {report.title}: {report.score:g} / {report.max_score:g} ({report.percent:.0f}%)"
    )
    details = [
        f"- submission: `{report.submission}`",
        f"- {report.summary()}",
        *(f"- {line}" for line in _footer(report)),
    ]
    headline = "```\n" + "\n".join(load_errors(report)) + "\n```" if report.load_errors else ""
    return "\n\n".join(filter(None, [header, headline, table, "\n".join(details)])) + "\n"


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
    for name, test in _visible(report, show_hidden):
        case = ET.SubElement(suite, "testcase", classname=report.assignment, name=name, time=f"{test.duration_s:.3f}")
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", name="points", value=_points(test))
        if test.outcome == "skipped":
            ET.SubElement(case, "skipped", message=test.reason)
        elif test.status == "failed":
            ET.SubElement(case, "failure", message=test.reason).text = test.output
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="unicode", xml_declaration=True) + "\n"


def _gradescope_output(test: TestResult) -> dict[str, str]:
    """A test's output; with pictures, as HTML with the images inline (Gradescope's "html" format)."""
    if not test.images:
        return {"output": test.output}
    return {"output": f"<pre>{html.escape(test.output)}</pre>{image_tags(test.images)}", "output_format": "html"}


def gradescope(report: Report, show_hidden: bool = False) -> dict[str, Any]:
    """Gradescope's results.json: hidden tests are shown once published, and only their points
    unless `show_hidden`. A test's pictures are in its output, as HTML."""
    return {
        "score": report.score,
        "execution_time": round(report.duration_s, 3),
        "output": report.summary(),
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


def csv_row(report: Report) -> dict[str, Any]:
    """One gradebook row: totals, then each test's points under its name."""
    row: dict[str, Any] = {
        "score": report.score,
        "max_score": report.max_score,
        "percent": round(report.percent, 1),
        "profile": report.profile,
        "duration_s": round(report.duration_s, 1),
        "problem": report.problem,
    }
    row.update({test.name: test.score for test in report.tests})
    return row
