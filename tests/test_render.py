"""Every report format is rendered from the one JSON document."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET

from rich.console import Console

from grader import render
from grader.batch.gradebook import summary_markdown
from grader.batch.outcomes import Outcome
from grader.report import Report, build_report
from grader.runner import Run
from tests.kit import spec_of


def sample_report() -> Report:
    run = Run(
        session={
            "profile": "quick",
            "device": "cpu",
            "dataset": "MNIST 5k",
            "isolation": "nobody",
            "blanks": {"total": 4, "open": ["lenet.py line 3: None"]},
            "min_accuracy": 0.8,
        },
        collected=[
            {
                "nodeid": "a/tests/t.py::test_ok",
                "name": "shapes",
                "points": 3.0,
                "tasks": ["net"],
                "accuracy": False,
                "hidden": False,
            },
            {
                "nodeid": "a/tests/t.py::test_bad",
                "name": "update | step",
                "points": 2.0,
                "tasks": ["train"],
                "accuracy": False,
                "hidden": False,
            },
            {
                "nodeid": "a/hidden/t.py::test_secret",
                "name": "secret check",
                "points": 1.5,
                "tasks": [],
                "accuracy": False,
                "hidden": True,
            },
            {
                "nodeid": "a/tests/t.py::test_acc",
                "name": "accuracy",
                "points": 4.0,
                "tasks": [],
                "accuracy": True,
                "hidden": False,
            },
        ],
        results={
            "a/tests/t.py::test_ok": {"outcome": "passed", "reason": "", "output": "", "duration_s": 0.5},
            "a/tests/t.py::test_bad": {
                "outcome": "failed",
                "reason": "zero_grad() is never called",
                "output": "zero_grad() is never called\ndetails",
                "duration_s": 1.0,
            },
            "a/hidden/t.py::test_secret": {
                "outcome": "failed",
                "reason": "secret reason",
                "output": "secret",
                "duration_s": 0.1,
            },
        },
        exit_code=-9,
        duration_s=12.5,
    )
    return build_report(spec_of("assignment2"), run, "students/ada")


def test_scores_come_from_the_collected_tests_and_unreported_ones_fail():
    report = sample_report()
    assert (report.score, report.max_score) == (3.0, 10.5)
    never = report.tests[3]
    assert (never.outcome, never.status, never.score) == ("not run", "failed", 0.0)
    assert never.reason == "never reported: the test run ended early (exit code -9)"


def test_json_is_a_gradescope_superset_and_round_trips():
    doc = json.loads(json.dumps(sample_report().to_json()))
    for key in (
        "score",
        "max_score",
        "tests",
        "assignment",
        "submission",
        "profile",
        "device",
        "dataset",
        "duration_s",
        "grader_version",
        "execution_time",
        "output",
    ):
        assert key in doc
    assert set(doc["tests"][0]) >= {"name", "score", "max_score", "status", "output"}
    assert Report.from_json(doc) == sample_report().__class__.from_json(doc)
    assert Report.from_json(doc).score == 3.0


def test_markdown_hides_hidden_details_unless_asked():
    text = render.markdown(sample_report())
    assert "3 / 10.5" in text and "update \\| step" in text
    assert "secret reason" not in text and "hidden test 1" in text
    assert "secret reason" in render.markdown(sample_report(), show_hidden=True)


def test_junit_counts_failures_and_carries_points():
    root = ET.fromstring(render.junit(sample_report()))
    assert root.get("tests") == "4" and root.get("failures") == "3"
    bad = root.find("testcase[@name='update | step']")
    assert bad.find("failure").get("message") == "zero_grad() is never called"
    assert bad.find("properties/property").get("value") == "0 / 2"


def test_gradescope_marks_hidden_tests_after_published():
    doc = render.gradescope(sample_report())
    assert doc["score"] == 3.0
    assert [t["visibility"] for t in doc["tests"]] == ["visible", "visible", "after_published", "visible"]
    assert doc["tests"][2]["output"] == render.HIDDEN_NOTE == "hidden test: only its points are shown"  # no promise
    assert render.gradescope(sample_report(), show_hidden=True)["tests"][2]["output"] == "secret"  # made to show it


def test_terminal_shows_each_reason_and_the_total():
    out = io.StringIO()
    render.terminal(sample_report(), Console(file=out, width=100))
    text = out.getvalue()
    assert "zero_grad() is never called" in text
    assert "3 / 10.5 points" in text and "next blank to fill: lenet.py line 3" in text
    assert "secret reason" not in text


def test_a_failure_shows_the_last_lines_its_code_printed_but_a_hidden_test_never_does():
    report = sample_report()
    bad, secret = report.tests[1], report.tests[2]
    printed = [f"epoch {n} loss 0.{n}" for n in range(40)]
    bad.output = f"{bad.reason}\n\noutput (last lines):\n" + "\n".join(printed)
    secret.output = f"{secret.reason}\n\nprinted by the hidden test's probe"
    out = io.StringIO()
    render.terminal(report, Console(file=out, width=100))
    for text in (out.getvalue(), render.markdown(report), render.markdown(report, show_hidden=True)):
        assert "epoch 39 loss 0.39" in text and f"epoch {39 - render.SHOWN_LINES} " not in text, text
        assert "printed by the hidden" not in text
    assert "**update | step**\n\n```\nepoch 28 loss 0.28\n" in render.markdown(report)


def test_csv_row_has_the_totals_and_empty_late_fields_without_a_deadline():
    row = render.csv_row(sample_report())  # (each test's column is the gradebook's: tests/test_gradebook.py)
    assert row["score"] == row["final_score"] == 3.0 and row["max_score"] == 10.5
    assert row["late_days"] == row["penalty"] == row["submitted_at"] == ""


def test_a_passing_accuracy_test_shows_its_accuracy_and_threshold():
    report = sample_report()
    report.tests[0].measured = {"accuracy": 0.943, "min_accuracy": 0.9, "mean_iou": 0.71}
    out = io.StringIO()
    render.terminal(report, Console(file=out, width=100))
    assert "accuracy 94.3% (min 90%), mean IoU 0.71" in out.getvalue()
    assert "accuracy 94.3% (min 90%)" in render.markdown(report)


def selected_report() -> Report:
    """The sample, graded with --marks 'not accuracy', from an instructor's folder, with a note and a load error."""
    report = sample_report()
    report.submission = "/home/teacher/course/subs/ada.ipynb"
    report.selection = {"select": None, "marks": "not accuracy", "left_out": ["accuracy 2"], "left_out_points": 16.0}
    report.notes = [
        "`net` is defined 2 times: graded is the last one, in cell 9 (line 1), not the one in cell 3 (line 1)"
    ]
    report.load_errors = [
        {
            "file": "lenet.py",
            "reason": "NameError (cell 9, line 1): x",
            "line": 30,
            "source": "net = x",
            "place": "cell 9, line 1",
        }
    ]
    return report


def test_every_format_says_what_a_selection_left_out():
    report = selected_report()
    said = "3 / 10.5 points (of 26.5: 16 points of tests left out by --marks 'not accuracy')"
    assert said in report.summary() and said in render.markdown(report)
    out = io.StringIO()
    render.terminal(report, Console(file=out, width=200))
    assert said in out.getvalue()
    assert said in render.gradescope(report)["output"]
    assert said in ET.fromstring(render.junit(report)).find("properties/property[@name='points']").get("value")
    row = render.csv_row(report)
    assert row["selection"] == "--marks 'not accuracy'" and row["left_out_points"] == 16.0
    assert Report.from_json(json.loads(json.dumps(report.to_json()))).selection == report.selection
    assert "(29%)" in sample_report().summary() and "left out" not in render.markdown(sample_report())
    class_summary = summary_markdown([Outcome("ada", report, "graded", "key")])
    assert "graded without 16 of the 26.5 points: tests left out by --marks 'not accuracy'" in class_summary


def test_student_facing_formats_name_the_hand_in_not_the_instructors_folder():
    report = selected_report()
    assert "- submission: `ada.ipynb`" in render.markdown(report) and "/home/teacher" not in render.markdown(report)
    assert "/home/teacher" not in json.dumps(render.gradescope(report))
    out = io.StringIO()
    render.terminal(report, Console(file=out, width=200))
    assert "/home/teacher" not in out.getvalue() and "ada.ipynb" in out.getvalue()
    assert report.to_json()["submission"] == "/home/teacher/course/subs/ada.ipynb"  # the instructor's report keeps it


def test_notes_and_load_errors_are_said_once_where_the_student_wrote_the_code():
    report = selected_report()
    text = render.markdown(report)
    assert text.count(report.notes[0]) == 1
    assert "  cell 9, line 1: net = x" in text
    assert render.gradescope(report)["output"].count(report.notes[0]) == 1


HOSTILE_REASON = "ValueError: ![x](http://evil) <script>alert(1)</script> [link](http://evil) `tick` | pipe"


def hostile_report() -> Report:
    """A report whose reasons, notes and load errors hold a hand-in's Markdown, HTML and backticks."""
    report = sample_report()
    report.tests[1].reason = HOSTILE_REASON
    report.notes = ["cell ```` fenced ``` <img src=x>"]
    report.load_errors = [{"file": "lenet.py", "reason": "SyntaxError", "line": 2, "source": "```\n# ![x](y)"}]
    return report


def test_markdown_shows_a_hand_in_s_text_in_code_spans_and_fences():
    text = render.markdown(hostile_report())
    row = next(line for line in text.splitlines() if "evil" in line)
    assert "``" + " " + HOSTILE_REASON.replace("|", "\\|") + " " + "``" in row  # longer than its one backtick
    assert len(re.findall(r"(?<!\\)\|", row)) == 5  # the table's own pipes only: the reason's is escaped
    assert "- note: ````` cell ```` fenced ``` <img src=x> `````" in text
    assert "````\nlenet.py could not be loaded: SyntaxError\n  line 2: ```\n# ![x](y)\n````" in text
    assert render.code("") == "" and render.code("plain") == "`plain`"


def test_junit_holds_only_characters_xml_allows_even_uncleaned():
    report = sample_report()
    report.tests[1].reason = "bell\x07 esc\x1b[2J nul\x00 \ud800"
    report.tests[1].output = "out\x1b]52;c;aGk=\x07"
    document = render.junit(report)
    failure = ET.fromstring(document).find(".//failure")
    assert failure is not None and failure.get("message") == "bell\ufffd esc\ufffd[2J nul\ufffd \ufffd"
    assert failure.text == "out\ufffd]52;c;aGk=\ufffd"


def test_a_spreadsheet_cell_never_starts_a_formula():
    cells = ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "ada", "", 3, -1.5]
    assert [render.spreadsheet_cell(c) for c in cells] == [
        "'=1+2", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "ada", "", 3, -1.5
    ]  # fmt: skip
