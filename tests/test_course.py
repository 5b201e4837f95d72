"""`grade course`: the term's gradebook from the gradebooks of `grade batch`, built here without grading."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.batch.late import Deadline, keep_deadline
from grader.batch.store import STATE, Store, exclusive
from grader.cli import cli, main
from grader.course import best_mean, grade_course
from grader.report import Report
from grader.spec import LatePolicy

DUE = datetime(2026, 3, 14, 23, 59, tzinfo=timezone.utc)
POLICY = LatePolicy(0.1, 3)  # 10% a day, nothing after 3 days
HOSTILE = "<img src=x onerror=alert(1)>"


def report(score: float, max_score: float = 10, late_days: int = 0, problem: str = "") -> Report:
    """A report as a batch keeps it, with its late penalty from the deadline when handed in `late_days` late."""
    graded = Report("a", "A", "s", "quick", "cpu", "-", score, max_score, 1.0, [], problem=problem)
    if late_days:
        graded.late = Deadline(DUE, POLICY).late(DUE + timedelta(days=late_days, minutes=-1))
    return graded


def gradebook(folder: Path, reports: dict[str, Report | str], deadline: bool = False) -> Path:
    """A gradebook as `grade batch` writes it (the Store, its ledger, its deadline); a str is a grader error."""
    with exclusive(folder / STATE):
        keep_deadline(folder / STATE, Deadline(DUE, POLICY) if deadline else None)
        for student, kept in reports.items():
            graded, status = (report(0, problem=kept), "error") if isinstance(kept, str) else (kept, "graded")
            assert Store(folder).save(student, graded, status, "key", show_hidden=False) == []
    return folder


def course_file(folder: Path, text: str) -> Path:
    path = folder / "course.toml"
    path.write_text(text)
    return path


def assignments(*entries: tuple[str, float]) -> str:
    return "".join(f'[[assignments]]\nname = "{name}"\ngradebook = "{name}"\nweight = {w}\n' for name, w in entries)


def read(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open(newline="")))


def by_id(out: Path) -> dict[str, dict[str, str]]:
    header, *rows = read(out / "course.csv")
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def test_the_course_percent_weighs_each_assignment(tmp_path):
    gradebook(tmp_path / "a1", {"ada": report(10), "bob": report(4)})
    gradebook(tmp_path / "a2", {"ada": report(5), "bob": report(8, max_score=20)})
    term, unwritten = grade_course(course_file(tmp_path, assignments(("a1", 1), ("a2", 3))), tmp_path / "out")
    assert unwritten == [] and term.problems == []
    rows = by_id(tmp_path / "out")
    assert [rows["ada"][c] for c in ("a1", "a2", "course_percent", "late_days_used", "notes")] == [
        "100",
        "50",
        "62.5",  # (100 + 3 * 50) / 4
        "0",
        "",
    ]
    assert rows["bob"]["course_percent"] == "40"  # (40 + 3 * 40) / 4


def test_drop_lowest_leaves_out_the_lowest_and_renormalizes_the_weights(tmp_path):
    gradebook(tmp_path / "a1", {"ada": report(9), "bob": report(2)})
    gradebook(tmp_path / "a2", {"ada": report(3), "bob": report(8)})
    gradebook(tmp_path / "a3", {"ada": report(7), "bob": report(6)})
    text = "drop_lowest = 1\n" + assignments(("a1", 1), ("a2", 1), ("a3", 2))
    grade_course(course_file(tmp_path, text), tmp_path / "out")
    rows = by_id(tmp_path / "out")
    assert (rows["ada"]["course_percent"], rows["ada"]["notes"]) == ("76.67", "dropped: a2")  # (90 + 2 * 70) / 3
    assert (rows["bob"]["course_percent"], rows["bob"]["notes"]) == ("66.67", "dropped: a1")  # (80 + 2 * 60) / 3


def test_with_unequal_weights_the_drop_is_the_one_that_raises_the_percent_most():
    percents, weights = {"a1": 50.0, "a2": 40.0, "a3": 100.0}, {"a1": 10, "a2": 1, "a3": 10}
    # dropping the lowest percent (a2) would give 75; dropping a1 gives (40 + 1000) / 11
    assert best_mean(percents, weights, 2) == (pytest.approx(1040 / 11), ("a2", "a3"))
    assert best_mean(percents, weights, 3) == (pytest.approx(1540 / 21), ("a1", "a2", "a3"))
    assert best_mean({}, weights, 2) == (None, ())


def test_the_bank_of_late_days_forgives_penalties_in_assignment_order(tmp_path):
    gradebook(tmp_path / "a1", {"ada": report(10, late_days=2), "bob": report(0, late_days=2)}, deadline=True)
    gradebook(tmp_path / "a2", {"ada": report(10, late_days=2), "bob": report(10, late_days=5)}, deadline=True)
    gradebook(tmp_path / "a3", {"ada": report(10, late_days=1), "bob": report(10)}, deadline=True)
    text = "late_days = 3\n" + assignments(("a1", 1), ("a2", 1), ("a3", 1))
    grade_course(course_file(tmp_path, text), tmp_path / "out")
    rows = by_id(tmp_path / "out")
    ada = rows["ada"]  # a1: both days from the bank; a2: one of two; a3: none left
    assert [ada[c] for c in ("a1", "a2", "a3", "late_days_used")] == ["100", "90", "90", "3"]
    assert ada["notes"] == "a1: 2 days from the bank; a2: 1 day from the bank, 1 day late: -10%; a3: 1 day late: -10%"
    bob = rows["bob"]  # a1 scored 0, nothing to save: no day spent; a2: 5 days (all lost) less 3 is 2 days, -20%
    assert [bob[c] for c in ("a1", "a2", "a3", "late_days_used")] == ["0", "80", "100", "3"]
    canvas = {row[0]: row[5:] for row in read(tmp_path / "out" / "canvas.csv")[2:]}
    assert canvas["ada"] == ["10", "9", "9"]  # the LMS gets the grades with the bank's days forgiven


def test_a_missing_gradebook_and_a_missing_student_are_listed_and_never_counted_as_zero(tmp_path):
    gradebook(tmp_path / "a1", {"ada": report(8), "bob": report(6)})
    gradebook(tmp_path / "a2", {"ada": report(4), "cy": report(10)})
    (tmp_path / "a4").mkdir()  # a folder holding no report
    text = assignments(("a1", 1), ("a2", 1), ("a3", 1), ("a4", 1))
    term, _ = grade_course(course_file(tmp_path, text), tmp_path / "out")
    assert term.problems == [
        f"a3: {tmp_path / 'a3'} does not exist",
        f"a4: {tmp_path / 'a4'} holds no report of grade batch",
        f"bob: missing from a2 ({tmp_path / 'a2'})",
        f"cy: missing from a1 ({tmp_path / 'a1'})",
    ]
    rows = by_id(tmp_path / "out")
    assert set(rows) == {"ada", "bob", "cy"}  # the union of the gradebooks
    bob = rows["bob"]
    assert (bob["a1"], bob["a2"], bob["a3"], bob["course_percent"]) == ("60", "", "", "60")  # not (60 + 0) / 2
    assert bob["notes"] == "a2: missing; a3: missing; a4: missing; incomplete: over a1"
    assert rows["cy"]["course_percent"] == "100" and rows["ada"]["course_percent"] == "60"
    assert [row[1:] for row in read(tmp_path / "out" / "moodle.csv")] == [
        ["a1", "a2", "a3", "a4"],
        ["8", "4", "", ""],
        ["6", "", "", ""],
        ["", "10", "", ""],
    ]


def test_a_missing_assignment_takes_the_place_of_a_dropped_one(tmp_path):
    gradebook(tmp_path / "a1", {"ada": report(5), "bob": report(5)})
    gradebook(tmp_path / "a2", {"ada": report(9)})
    gradebook(tmp_path / "a3", {"ada": report(7), "bob": report(7)})
    grade_course(course_file(tmp_path, "drop_lowest = 1\n" + assignments(("a1", 1), ("a2", 1), ("a3", 1))), tmp_path)
    rows = by_id(tmp_path)
    assert (rows["bob"]["course_percent"], rows["bob"]["notes"]) == ("60", "a2: missing")  # over two, as ada's
    assert (rows["ada"]["course_percent"], rows["ada"]["notes"]) == ("80", "dropped: a1")


def test_grader_errors_unreadable_hand_ins_and_changed_reports(tmp_path):
    book = gradebook(
        tmp_path / "a1",
        {"ada": report(10), "bob": "grader error: the sandbox broke", "cy": report(0, problem="cy.zip is broken")},
    )
    gradebook(tmp_path / "a2", {"ada": report(10), "bob": report(5), "cy": report(5)})
    (book / "students" / "ada" / "report.json").write_text(json.dumps(report(10).to_json()))  # rewritten by hand
    term, _ = grade_course(course_file(tmp_path, assignments(("a1", 1), ("a2", 1))), tmp_path / "out")
    assert term.problems == ["ada: a1's report is missing or changed since grade batch wrote it: left blank"]
    rows = by_id(tmp_path / "out")
    assert (rows["ada"]["a1"], rows["ada"]["course_percent"]) == ("", "100")
    assert (rows["bob"]["a1"], rows["bob"]["course_percent"]) == ("", "50")  # no grade yet: not a zero
    assert rows["bob"]["notes"].startswith("a1: not graded (grader error)")
    assert (rows["cy"]["a1"], rows["cy"]["course_percent"]) == ("0", "25")  # what it earned


def test_canvas_csv_has_a_column_and_points_possible_per_assignment(tmp_path):
    gradebook(tmp_path / "a1", {"ada": report(7.5), "=HYPERLINK()": report(10)})
    gradebook(tmp_path / "a2", {"ada": report(12, max_score=20)})
    text = '[[assignments]]\nname = "Assignment 1"\ngradebook = "a1"\n' + assignments(("a2", 1))
    grade_course(course_file(tmp_path, text), tmp_path / "out")
    assert read(tmp_path / "out" / "canvas.csv") == [
        ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Assignment 1", "a2"],
        ["Points Possible", "", "", "", "", "10", "20"],
        ["'=HYPERLINK()", "'=HYPERLINK()", "", "", "", "10", ""],  # no formula: a quote before it
        ["ada", "ada", "", "", "", "7.5", "12"],
    ]
    assert read(tmp_path / "out" / "moodle.csv")[0] == ["ID number", "Assignment 1", "a2"]


def test_the_course_page_escapes_a_hostile_id_and_loads_nothing(tmp_path):
    gradebook(tmp_path / "a1", {HOSTILE: report(7), "ada": report(9)})
    grade_course(course_file(tmp_path, 'title = "CNN <2026>"\n' + assignments(("a1", 1))), tmp_path / "out")
    page = (tmp_path / "out" / "index.html").read_text()
    assert HOSTILE not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<h1>CNN &lt;2026&gt;</h1>" in page and "default-src 'none'" in page
    assert "<td>70.0%</td>" in page and "<td>90.0%</td>" in page


def test_the_command_prints_each_problem_then_what_it_wrote(tmp_path):
    gradebook(tmp_path / "a1", {"ada": report(8), "bob\x1b]0;pwned\x07": report(6)})
    gradebook(tmp_path / "a2", {"ada": report(4)})
    path = course_file(tmp_path, assignments(("a1", 1), ("a2", 1)))
    result = CliRunner().invoke(cli, ["course", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    *problems, last = result.output.splitlines()
    assert problems == [f"bob\\x1b]0;pwned\\x07: missing from a2 ({tmp_path / 'a2'})"]  # the terminal gets no escape
    assert (
        last
        == f"2 students, 2 assignments: wrote {tmp_path / 'out' / 'course.csv'}, canvas.csv, moodle.csv and index.html"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "canvas.csv",
        "course.csv",
        "index.html",
        "moodle.csv",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("title = \n", "course.toml: cannot be read (Invalid value"),
        ("titel = 'x'\n" + assignments(("a1", 1)), "course.toml: unknown key 'titel': did you mean title?"),
        ("title = 'x'\n", "course.toml: assignments: give each assignment an [[assignments]] table"),
        ("title = 3\n" + assignments(("a1", 1)), "course.toml: title is a string"),
        ('[[assignments]]\ngradebook = "a1"\n', "course.toml [[assignments]] #1: name is missing"),
        ('[[assignments]]\nname = "a1"\n', "course.toml [[assignments]] #1: gradebook is missing"),
        (assignments(("a1", 1)) + "wieght = 2\n", "course.toml [[assignments]] #1: unknown key 'wieght': did you"),
        (assignments(("a1", 1), ("a2", 0)), "course.toml [[assignments]] #2: weight is a positive number, not 0"),
        (assignments(("a1", -1)), "course.toml [[assignments]] #1: weight is a positive number, not -1"),
        (assignments(("a1", '"10"')), "course.toml [[assignments]] #1: weight is a positive number, not '10'"),
        (assignments(("a1", "inf")), "course.toml [[assignments]] #1: weight is a positive number, not inf"),
        (assignments(("a1", 1), ("a1", 2)), "course.toml [[assignments]]: name 'a1' is given twice"),
        ("drop_lowest = 2\n" + assignments(("a1", 1), ("a2", 1)), "course.toml: drop_lowest = 2 would drop every"),
        ("drop_lowest = 0.5\n" + assignments(("a1", 1)), "course.toml: drop_lowest is a whole number, 0 or more"),
        ("late_days = -1\n" + assignments(("a1", 1)), "course.toml: late_days is a whole number, 0 or more, not -1"),
        ("late_days = true\n" + assignments(("a1", 1)), "course.toml: late_days is a whole number, 0 or more"),
    ],
)
def test_every_mistake_in_course_toml_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    path = course_file(tmp_path, text)
    assert main(["course", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_the_course_is_refused_a_gradebook_as_its_folder_and_a_missing_file(tmp_path, capsys):
    book = gradebook(tmp_path / "a1", {"ada": report(8)})
    assert main(["course", str(course_file(tmp_path, assignments(("a1", 1)))), "--out", str(book)]) == 2
    refused = f"error: --out {book} is a gradebook of grade batch: give the course a folder of its own\n"
    assert capsys.readouterr().err == refused and not (book / "course.csv").exists()
    assert main(["course", str(tmp_path / "none.toml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Invalid value for 'COURSE.toml'") and err.count("\n") == 1, err


def test_a_student_bundle_neither_lists_nor_runs_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("grader.cli._in_bundle", lambda: True)
    assert main(["course", str(course_file(tmp_path, assignments(("a1", 1)))), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: `grade course` is an instructor's command")
    assert "course" not in CliRunner().invoke(cli, ["--help"]).output
