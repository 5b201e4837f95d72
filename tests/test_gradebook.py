"""The gradebook of a batch: grades.csv and its legend, the LMS exports, junit.xml, the class statistics."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from grader.batch.gradebook import FIRST_COLUMNS, print_summary, short_ids, summarize, write_gradebook
from grader.batch.outcomes import BatchResult, Outcome
from grader.batch.store import Store
from grader.report import build_report
from grader.runner import Run
from tests.kit import TableRows, spec_of

TESTS = (
    ("assignment2/tests/test_lenet.py::test_shapes", "shapes", 4.0, False),
    ("assignment2/tests/test_training.py::test_update", "update", 2.0, False),
    ("assignment2/tests/test_training.py::test_modes", "modes", 1.0, False),
    ("assignment2/hidden/test_hidden.py::test_secret_logits", "net: the secret check", 3.0, True),
)
LATE = {"submitted_at": "2025-03-16T05:59:00+07:00", "deadline": "2025-03-14T23:59:00+07:00", "days": 2}


def sample_outcome(
    student: str, passed: set[str], problem: str = "", status: str = "", reason: str = "", late: float = 0.0
) -> Outcome:
    """A student's outcome as a batch would keep it: `passed` names the tests passed (by their short name)."""
    collected = [
        {"nodeid": n, "name": name, "points": p, "tasks": [], "accuracy": False, "hidden": hidden}
        for n, name, p, hidden in TESTS
    ]
    results = {}
    for nodeid, *_ in TESTS:
        short = nodeid.split("::test_")[-1]
        ok = short in passed
        results[nodeid] = {
            "outcome": "passed" if ok else "failed",
            "reason": "" if ok else reason or f"{short} of {student} is wrong",
            "output": "",
            "duration_s": 1.0,
            "limit": "cpu" if short == "modes" and not ok else "",
        }
    run = Run(session={"profile": "quick"}, collected=collected, results={} if problem else results, duration_s=3.0)
    report = build_report(spec_of("assignment2"), run, f"submissions/{student}", problem=problem)
    if late:
        report.late = {**LATE, "penalty": late, "policy": "10% per day late, nothing after 3 days"}
    return Outcome(student, report, status or ("unreadable" if problem else "graded"), "k")


def class_of_five() -> list[Outcome]:
    return [
        sample_outcome("ada", {"shapes", "update", "modes", "secret_logits"}),
        sample_outcome("bob", {"shapes"}, reason="the same mistake"),
        sample_outcome("cy", {"shapes", "update", "secret_logits"}, reason="the same mistake", late=0.2),
        sample_outcome("dee", set(), problem="dee.zip is not a readable zip file"),
        sample_outcome("eve", set(), problem="grader error: the sandbox broke", status="error"),
    ]


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open(newline="")))


def test_short_test_ids_are_readable_stable_and_unique():
    nodeids = [
        "assignment2/tests/test_lenet.py::test_parameter_count",
        "assignment3/tests/test_1_cnn.py::test_mnist_cnn_parameters",
        "assignment1/tests/test_conv.py::test_output_size_matches_conv2d[valid and same]",
        "assignment2/tests/test_training.py::TestModes::test_eval",
        "assignment2/tests/test_hidden.py::test_twice",
        "assignment2/hidden/test_hidden.py::test_twice",
    ]
    assert list(short_ids(nodeids).values()) == [
        "lenet.parameter_count",
        "cnn.mnist_cnn_parameters",
        "conv.output_size_matches_conv2d[valid and same]",
        "training.TestModes.eval",
        "tests/hidden.twice",
        "hidden/hidden.twice",
    ]
    assert short_ids(list(reversed(nodeids))) == short_ids(nodeids)


def test_grades_csv_has_a_row_per_student_under_short_test_ids_and_a_legend(tmp_path):
    write_gradebook(tmp_path, class_of_five())
    header, *rows = read_csv(tmp_path / "grades.csv")
    assert header[:10] == [
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
    ]
    assert header[17:] == ["lenet.shapes", "training.update", "training.modes", "hidden.secret_logits"]
    by_id = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert [by_id["ada"][c] for c in header[17:]] == ["4.0", "2.0", "1.0", "3.0"]
    assert by_id["ada"]["written_points"] == by_id["ada"]["written_max"] == ""  # no written questions
    assert [by_id["bob"][c] for c in ("score", "final_score", "percent", "limits", "training.modes")] == [
        "4.0",
        "4.0",
        "40.0",
        "cpu",
        "0.0",
    ]
    cy = by_id["cy"]
    assert (cy["score"], cy["late_days"], cy["penalty"], cy["final_score"], cy["percent"]) == (
        "9.0",
        "2",
        "0.2",
        "7.2",
        "72.0",
    )
    assert cy["submitted_at"] == LATE["submitted_at"] and by_id["ada"]["late_days"] == ""
    dee = by_id["dee"]  # nothing ran: no test has points, not even 0
    assert [dee[c] for c in header[17:]] == ["", "", "", ""] and dee["score"] == "0.0" and dee["profile"] == "quick"
    assert dee["status"] == "unreadable" and by_id["eve"]["status"] == "error"
    assert read_csv(tmp_path / "legend.csv") == [
        ["id", "test", "points", "hidden", "nodeid"],
        *(
            [short, name, f"{p:g}", "yes" if hidden else "no", n]
            for (n, name, p, hidden), short in zip(TESTS, header[17:], strict=True)
        ),
    ]


def test_canvas_csv_follows_canvas_s_gradebook_import(tmp_path):
    write_gradebook(tmp_path, class_of_five(), canvas_assignment="4521")
    rows = read_csv(tmp_path / "canvas.csv")
    # Canvas's importer: "Student" then "ID" first, SIS User ID and SIS Login ID, the student columns
    # end with "Section", then the assignments as "title (id)"; a "Points Possible" row; two decimals
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "LeNet and train_ch6 (4521)"]
    assert rows[1] == ["Points Possible", "", "", "", "", "10"]
    assert rows[2:] == [
        ["ada", "ada", "", "", "", "10"],
        ["bob", "bob", "", "", "", "4"],
        ["cy", "cy", "", "", "", "7.2"],  # after the late penalty
        ["dee", "dee", "", "", "", "0"],  # could not be read: what it earned
        ["eve", "eve", "", "", "", ""],  # the grader failed: no grade yet (Canvas leaves it as it is)
    ]
    write_gradebook(tmp_path, class_of_five())
    assert read_csv(tmp_path / "canvas.csv")[0][-1] == "LeNet and train_ch6"  # Canvas matches it by title


def test_moodle_csv_has_an_identifier_a_grade_and_the_late_note(tmp_path):
    write_gradebook(tmp_path, class_of_five())
    rows = read_csv(tmp_path / "moodle.csv")
    assert rows[0] == ["ID number", "LeNet and train_ch6", "Feedback"]
    assert [r[:2] for r in rows[1:]] == [["ada", "10"], ["bob", "4"], ["cy", "7.2"], ["dee", "0"], ["eve", ""]]
    assert rows[3][2] == "handed in 2 days late (10% per day late, nothing after 3 days): -20%, 7.2 / 10 points"
    assert all(r[2] == "" for r in rows[1:] if r[0] != "cy")


def test_the_class_page_shows_each_grade_as_the_lms_files_record_it(tmp_path):
    write_gradebook(tmp_path, class_of_five())
    rows = TableRows((tmp_path / "index.html").read_text()).rows
    students = rows[rows.index(["student", "score", "days late", "penalty", "final score", "%", "status", ""]) :]
    assert students[1:] == [
        ["ada", "10 / 10", "", "", "10 / 10", "100%", "graded", ""],
        ["bob", "4 / 10", "", "", "4 / 10", "40%", "graded", ""],
        ["cy", "9 / 10", "2", "-20%", "7.2 / 10", "72%", "graded", ""],
        ["dee", "0 / 10", "", "", "0 / 10", "0%", "unreadable", "dee.zip is not a readable zip file"],
        ["eve", "0 / 10", "", "", "", "", "error", "grader error: the sandbox broke"],  # no grade yet, as canvas.csv
    ]
    on_time = [sample_outcome("ada", {"shapes"})]  # no deadline: no late columns
    write_gradebook(tmp_path, on_time)
    assert TableRows((tmp_path / "index.html").read_text()).rows[-2:] == [
        ["student", "score", "%", "status", ""],
        ["ada", "4 / 10", "40%", "graded", ""],
    ]


def test_no_hidden_test_name_reaches_what_students_or_the_lms_see(tmp_path):
    write_gradebook(tmp_path, class_of_five())
    for name in ("canvas.csv", "moodle.csv", "junit.xml"):
        text = (tmp_path / name).read_text()
        assert "secret" not in text, name
    assert "secret_logits" in (tmp_path / "grades.csv").read_text()  # the instructor's


def test_the_class_statistics_leave_out_who_could_not_be_graded_but_count_them(tmp_path):
    outcomes = class_of_five()
    write_gradebook(tmp_path, outcomes)
    stats = summarize(outcomes)
    assert (stats["students"], stats["graded"], stats["late"]) == (5, 3, 1)
    assert stats["status"] == {"graded": 3, "unreadable": 1, "error": 1}
    assert stats["mean"] == pytest.approx((100 + 40 + 72) / 3) and stats["median"] == pytest.approx(72)
    assert dict(stats["distribution"]) == {
        **dict.fromkeys(dict(stats["distribution"]), 0),
        "40-49%": 1,
        "70-79%": 1,
        "90-100%": 1,
    }
    assert [(t["name"], round(t["pass_rate"], 2)) for t in stats["tests"]] == [
        ("modes", 0.33),
        ("update", 0.67),
        ("net: the secret check", 0.67),
        ("shapes", 1.0),
    ]
    suites = ET.parse(tmp_path / "junit.xml").getroot()
    assert [(s.get("name"), s.get("failures")) for s in suites] == [
        ("ada", "0"),
        ("bob", "3"),
        ("cy", "1"),
        ("dee", "4"),
        ("eve", "4"),
    ]
    summary = (tmp_path / "summary.md").read_text()
    assert "5 submissions (1 error, 3 graded, 1 unreadable; 1 late)" in summary
    assert "mean 70.7% · median 72.0% (of the 3 graded)" in summary


def test_the_commonest_reason_is_one_that_more_than_one_student_has():
    stats = {t["name"]: t["common_reason"] for t in summarize(class_of_five())["tests"]}
    assert stats["modes"] == "the same mistake (2)"  # bob and cy
    assert stats["update"] == ""  # bob's alone: no tie of single students
    lone = [sample_outcome(s, set()) for s in ("ada", "bob", "cy")]
    assert {t["common_reason"] for t in summarize(lone)["tests"]} == {""}


def printed(result: BatchResult) -> str:
    out = io.StringIO()
    print_summary(result, Console(file=out, width=200))
    return out.getvalue()


def test_a_run_that_graded_nobody_prints_one_line(tmp_path):
    outcomes = class_of_five()
    for outcome in outcomes:
        outcome.resumed = True
    text = printed(BatchResult(tmp_path, outcomes))
    where = f"gradebook: {tmp_path / 'grades.csv'} · reports: {tmp_path / 'students'}/<id>/"
    assert text.splitlines() == [
        "nothing to grade: 5 submissions (1 error, 3 graded, 1 unreadable; 1 late) up to date · mean 70.7% · "
        f"median 72.0% (of the 3 graded) · {where}"
    ]
    outcomes[0].resumed = False
    text = printed(BatchResult(tmp_path, outcomes, left_out=["zed"]))
    assert text.splitlines()[0] == "1 never graded, left out of the gradebook: zed"
    assert "1 graded now" in text and "commonest reason of failure" in text


def test_no_cell_from_a_hand_in_starts_a_formula_in_any_gradebook_csv(tmp_path):
    outcomes = [sample_outcome("=1+2", {"shapes"}), sample_outcome("@SUM(A1)", set(), problem="-x.zip is not a zip")]
    write_gradebook(tmp_path, outcomes)
    for name in ("grades.csv", "canvas.csv", "moodle.csv"):
        rows = read_csv(tmp_path / name)
        cells = [cell for row in rows for cell in row]
        assert "'=1+2" in cells and "'@SUM(A1)" in cells, name
        assert not [cell for cell in cells if cell.startswith(("=", "+", "@"))], name
    grades = {row[0]: row for row in read_csv(tmp_path / "grades.csv")}
    assert grades["'@SUM(A1)"][FIRST_COLUMNS.index("problem")] == "'-x.zip is not a zip"


def test_a_file_that_cannot_be_written_leaves_the_others_written(tmp_path, monkeypatch):
    def broken(*args):
        raise ValueError("not well-formed (invalid token)")

    monkeypatch.setattr("grader.batch.gradebook.render.junit", broken)
    failed = write_gradebook(tmp_path, class_of_five())
    assert failed == [f"{tmp_path / 'junit.xml'} could not be written (ValueError: not well-formed (invalid token))"]
    written = {"grades.csv", "legend.csv", "canvas.csv", "moodle.csv", "summary.md", "index.html"}
    assert {p.name for p in tmp_path.iterdir()} == written
    (tmp_path / ".batch").mkdir()
    store = Store(tmp_path)
    monkeypatch.setattr("grader.batch.store.render.markdown", broken)
    ada = class_of_five()[0]
    (line,) = store.save("ada", ada.report, "graded", "k", False)
    assert line.startswith("ada: ") and "feedback.md could not be written" in line
    assert {p.name for p in store.folder("ada").iterdir()} == {"report.json", "feedback.html", "results.json"}
    assert store.stored("ada") is not None  # the grade stands


def test_the_class_table_shows_a_reason_as_text_not_markup(tmp_path):
    reason = "[bold red]boom[/] [link=http://evil]x[/link]"
    outcomes = [sample_outcome(s, set(), reason=reason) for s in ("ada", "bob")]
    text = printed(BatchResult(tmp_path, outcomes))
    assert reason in text
