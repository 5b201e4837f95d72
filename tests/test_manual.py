"""The TAs' marks (grader.manual): manual.csv written and read back, marks applied to a report as `grade
batch` applies them, and a batch whose feedback and gradebook carry them, resumed or not."""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

import grader.batch.run as run_module
from grader import i18n, render, render_html
from grader.batch.late import Deadline, parse_time
from grader.batch.run import BatchOptions, run_batch
from grader.batch.store import Store
from grader.cli import grade_batch
from grader.errors import UserError
from grader.manual import (
    MANUAL_FILE,
    Mark,
    apply_marks,
    by_student,
    marking_line,
    read_marks,
    save_marks,
    unmatched,
)
from grader.options import GradingOptions
from grader.report import Report
from grader.spec import LatePolicy, Question, RubricItem
from grader.written import answer_digest
from tests.kit import spec_of

QUESTIONS = (
    Question(
        "epochs",
        4,
        "5 epochs or 10?",
        "5 hay 10 epoch?",
        (
            RubricItem("numbers", 2, "Gives the numbers", "Nêu các số"),
            RubricItem("why", 2, "Says why", "Nói lý do"),
            RubricItem("copied", -2, "Copies the statement", "Chép lại đề"),
        ),
    ),
    Question("rates", 2, "Learning rates", "Các learning rate"),
)
TOY = dataclasses.replace(spec_of("assignment2"), questions=QUESTIONS)
COMMENT = 'Good: "5 vs 10", see\nthe curve, | <b>bold</b> ``` \x1b[31mred'


def report_of(answers: list[dict], score: float = 6, late: dict | None = None) -> Report:
    return Report("toy", "Toy", "ada", "quick", "cpu", "-", score, 10, 0.0, [], late=late or {}, answers=answers)


def answer(question: str, text: str, answered: bool = True) -> dict:
    return {"question": question, "answered": answered, "text": text, "digest": answer_digest(text), "source": "x"}


# --- manual.csv ------------------------------------------------------------------------------------


def test_marks_survive_manual_csv_as_written_and_as_a_spreadsheet_saves_it(tmp_path):
    marks = [
        Mark("ada", "epochs", 3.5, ("numbers", "why"), COMMENT, "Lan, TA", "2025-03-20T10:00:00+07:00", "d" * 64),
        Mark("bob", "epochs", 0, (), "=SUM(A1)+1", "@Minh", "", ""),  # formula-looking cells: kept as they are
        Mark("bob", "rates", -1.0, ("copied",)),
    ]
    save_marks(tmp_path, {mark.key: mark for mark in marks})
    assert read_marks(tmp_path) == {mark.key: mark for mark in marks}
    assert [p.name for p in tmp_path.iterdir()] == [MANUAL_FILE]  # no temporary file left beside it
    text = (tmp_path / MANUAL_FILE).read_text()
    (tmp_path / MANUAL_FILE).write_bytes(("\ufeff" + text.replace("\n", "\r\n")).encode())
    assert read_marks(tmp_path) == {mark.key: mark for mark in marks}
    assert by_student(read_marks(tmp_path))["bob"] == {"epochs": marks[1], "rates": marks[2]}
    assert read_marks(tmp_path / "nowhere") == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"id,question,points\nada,epochs,lots\n", r"manual\.csv line 2: points 'lots' is not a number$"),
        (b"id,question,points\nada,epochs,1\nada,rates,nan\n", r"manual\.csv line 3: points 'nan' is not a number$"),
        (b"id,question,points\n,epochs,1\n", r"manual\.csv line 2: no id or question \(columns: id,question,"),
        (b"id,question\n\xff\xfe\x00\n", r"manual\.csv: cannot be read \("),
    ],
)
def test_a_malformed_manual_csv_is_one_line(tmp_path, content, message):
    (tmp_path / MANUAL_FILE).write_bytes(content)
    with pytest.raises(UserError, match=message) as raised:
        read_marks(tmp_path)
    assert "\n" not in str(raised.value)


# --- marks applied to a report -----------------------------------------------------------------------


def test_a_mark_counts_within_its_questions_points_with_its_items_and_a_changed_answer_is_stale():
    report = report_of([answer("epochs", "It rose."), answer("rates", "", answered=False)], late={"penalty": 0.1})
    marks = {
        "epochs": Mark("ada", "epochs", 9, ("why", "numbers", "gone"), COMMENT, "Lan", "t", answer_digest("It rose.")),
        "rates": Mark("ada", "rates", -3, ("copied",), answer="an older answer's digest"),
    }
    apply_marks(report, TOY, marks)
    epochs, rates = report.manual
    assert (epochs["points"], epochs["max_points"], epochs["stale"]) == (4, 4, False)  # clamped to the question's
    assert epochs["rubric"] == [  # in the rubric's order; an item the rubric no longer has is left out
        {"id": "numbers", "text": "Gives the numbers", "points": 2},
        {"id": "why", "text": "Says why", "points": 2},
    ]
    assert epochs["comment"] == COMMENT.replace("\x1b[31m", "") and epochs["grader"] == "Lan"  # cleaned where it enters
    assert (rates["points"], rates["stale"]) == (0, True)  # a deduction never below 0
    assert (report.written_points, report.written_max, report.final_max) == (4, 6, 16)
    assert report.final_score == 6 * 0.9 + 4 and report.score_after_penalty == 5.4
    assert [a["title"] for a in report.answers] == ["5 epochs or 10?", "Learning rates"]
    with i18n.using("vi"):
        apply_marks(report, TOY, marks)
    assert report.manual[0]["rubric"][0]["text"] == "Nêu các số" and report.answers[0]["title"] == "5 hay 10 epoch?"
    apply_marks(report, TOY, {})  # marks removed from manual.csv since: none counts
    assert report.manual == [] and report.final_score == 5.4


def test_a_report_without_answers_gets_one_per_question_unanswered_and_marks_still_count():
    """An unreadable hand-in, or a report stored before the assignment had questions."""
    report = report_of([], score=0)
    apply_marks(report, TOY, {"rates": Mark("ada", "rates", 1, answer=answer_digest(""))})
    assert [(a["question"], a["answered"], a["digest"]) for a in report.answers] == [
        ("epochs", False, answer_digest("")),
        ("rates", False, answer_digest("")),
    ]
    assert report.manual[0]["stale"] is False and report.final_score == 1


def test_stray_marks_are_one_line_and_the_progress_counts_each_answer_once():
    marks = {("ada", "epochs"): Mark("ada", "epochs", 1), ("zed", "epochs"): Mark("zed", "epochs", 1)}
    marks[("ada", "q9")] = Mark("ada", "q9", 1)
    assert unmatched(marks, ["ada", "bob"], TOY) == (
        "manual.csv: 2 marks of no student or question of this batch, left out: ada/q9, zed/epochs"
    )
    assert unmatched({("ada", "epochs"): marks[("ada", "epochs")]}, ["ada"], TOY) == ""
    ada = report_of([answer("epochs", "a"), answer("rates", "b")])
    apply_marks(ada, TOY, {"epochs": Mark("ada", "epochs", 1, answer=answer_digest("a"))})
    bob = report_of([answer("epochs", "c"), answer("rates", "", answered=False)])
    apply_marks(bob, TOY, {"epochs": Mark("bob", "epochs", 1, answer="before")})
    assert marking_line([ada, bob]) == (
        "written answers: 1 marked, 1 to mark, 1 to review again (changed since they were marked), 1 not answered"
    )


def test_feedback_shows_each_question_its_points_items_and_comment_as_data():
    report = report_of([answer("epochs", "It rose."), answer("rates", "", answered=False)])
    mark = Mark("ada", "epochs", 3, ("numbers",), COMMENT, answer="changed")
    apply_marks(report, TOY, {"epochs": mark})
    markdown = render.markdown(report)
    assert markdown.startswith("### toy · Toy: 9 / 16 (56%)")
    assert "#### Written answers, marked by a TA: 3 / 6 points" in markdown
    assert "**epochs** · 5 epochs or 10?: 3 / 4 points · the answer changed since it was marked" in markdown
    assert "- ✓ `Gives the numbers` (+2)" in markdown and "**rates** · Learning rates: not answered" in markdown
    assert f"````\n{report.manual[0]['comment']}\n````" in markdown  # a fence longer than the comment's ```
    page = render_html.report_page(report)
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page and "<li>Gives the numbers (+2)</li>" in page
    assert "<b>9</b> / 16 points (56%)" in page and "not answered" in page
    console = Console(file=io.StringIO(), width=200)
    render.terminal(report, console)
    assert "written answers (marked by a TA, 6 points): epochs answered, rates not answered" in console.file.getvalue()
    row = render.csv_row(report)
    assert (row["written_points"], row["written_max"], row["final_score"], row["percent"]) == (3, 6, 9, 56.2)


# --- end to end: a batch with written questions ------------------------------------------------------

ONE_TEST = GradingOptions(profile="quick", select="test_mnist_cnn_parameters", marks="not accuracy")
DUE, LATE_POLICY = "2025-03-14T23:59+07:00", "10%/day,max 3"
COLLECTED: dict[str, list] = {}


def collected_once(spec, options):
    """The tests a batch collects, collected once for this module (else a pytest child each run)."""
    if spec.name not in COLLECTED:
        COLLECTED[spec.name] = REAL_COLLECT(spec, options)
    return COLLECTED[spec.name]


REAL_COLLECT = run_module._collect


@pytest.fixture(scope="module")
def graded_batch(tmp_path_factory) -> tuple[Path, Path]:
    """ada's hand-in of assignment3 (the reference and an answer to its first question, one day late),
    graded once by a batch before any mark: the submissions and the gradebook."""
    spec = spec_of("assignment3")
    folder = tmp_path_factory.mktemp("written")
    submissions, out = folder / "submissions", folder / "grades"
    shutil.copytree(spec.reference_dir, submissions / "ada")
    starter = (spec.starter_dir / "answers.md").read_text()
    first = spec.questions[0].id
    answered = starter.replace("_Your answer here._", "After 5 epochs 97.1%, after 10 98.0%: it rose.", 1)
    assert f"## {first}" in starter and answered != starter
    (submissions / "ada" / "answers.md").write_text(answered)
    (submissions / "submissions.csv").write_text("id,time\nada,2025-03-15T08:00+07:00\n")
    due = Deadline(parse_time(DUE, "--deadline"), LatePolicy.parse(LATE_POLICY))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "_collect", collected_once)
        run_batch(spec, submissions, out, ONE_TEST, BatchOptions(console=Console(file=io.StringIO()), deadline=due))
    return submissions, out


def test_a_batch_adds_the_tas_marks_to_the_late_tests_score_in_every_output_and_resumed(
    graded_batch, capsys, monkeypatch
):
    spec = spec_of("assignment3")
    submissions, out = graded_batch
    monkeypatch.setattr(run_module, "_collect", collected_once)
    before = Store(out).stored("ada").report
    first, second = spec.questions[0], spec.questions[1]
    answers = {a["question"]: a for a in before.answers}
    assert answers[first.id]["answered"] and not answers[second.id]["answered"] and before.manual == []
    assert before.late["days"] == 1 and before.score > 0 and before.written_max == spec.written_max
    assert "not marked yet" in (out / "students" / "ada" / "feedback.md").read_text()

    ticked = tuple(item.id for item in first.rubric[:2])
    marks = [
        Mark("ada", first.id, 3, ticked, COMMENT, "Lan", "2025-03-20T10:00+07:00", answers[first.id]["digest"]),
        Mark("ada", second.id, 1, (), "", "Lan", "", "the digest of an answer since changed"),
        Mark("zed", first.id, 2),  # no such student
        Mark("ada", "q9", 2),  # no such question
    ]
    save_marks(out, {mark.key: mark for mark in marks})
    grade_batch(  # what `grade batch` runs: resumed, nothing graded again, the marks applied
        spec,
        ONE_TEST,
        submissions,
        out,
        workers=1,
        only=(),
        failed=False,
        force=False,
        deadline=DUE,
        late_policy=LATE_POLICY,
        no_deadline=False,
        canvas_assignment=None,
        executor="local",
        address=None,
    )
    said = capsys.readouterr().out.strip().splitlines()
    assert said[0] == f"manual.csv: 2 marks of no student or question of this batch, left out: ada/q9, zed/{first.id}"
    assert said[1].startswith("nothing to grade: 1 submissions (1 graded; 1 late) up to date")
    assert said[-1] == (
        "written answers: 1 marked, 0 to mark, 1 to review again (changed since they were marked), 1 not answered"
    )

    tests_after_penalty = round(before.score * 0.9, 4)
    final, final_max = round(tests_after_penalty + 3 + 1, 4), before.max_score + spec.written_max
    assert stated(out) == {"report.json": final, "grades.csv": final, "canvas.csv": final, "feedback.md": final}
    row = next(csv.DictReader((out / "grades.csv").open()))
    assert (float(row["written_points"]), float(row["written_max"]), float(row["score"])) == (4, 12, before.score)
    points_possible = next(r for r in csv.reader((out / "canvas.csv").open()) if r[0] == "Points Possible")
    assert float(points_possible[-1]) == final_max
    feedback = (out / "students" / "ada" / "feedback.md").read_text()
    assert feedback.startswith(f"### assignment3 · {spec.title}: {final:g} / {final_max:g} (")
    assert f"**{first.id}** · {first.title}: 3 / 4 points\n" in feedback
    assert f"- ✓ `{first.rubric[0].text}` ({first.rubric[0].points:+g})" in feedback
    assert f"**{second.id}** · {second.title}: 1 / 4 points · the answer changed since it was marked" in feedback
    page = html.unescape((out / "students" / "ada" / "feedback.html").read_text())
    assert "<b>bold</b>" in page and "<b>bold</b>" not in (out / "students" / "ada" / "feedback.html").read_text()

    save_marks(out, {marks[0].key: marks[0]})  # a mark removed since: the next run, resumed, drops it
    quiet = BatchOptions(console=Console(file=io.StringIO()))  # and no deadline: the last one applies
    result = run_batch(spec, submissions, out, ONE_TEST, quiet)
    assert result.graded_now == 0 and result.outcomes[0].report.final_score == round(tests_after_penalty + 3, 4)
    assert stated(out)["grades.csv"] == round(tests_after_penalty + 3, 4)


def stated(out: Path) -> dict[str, float]:
    """ada's grade as each output states it."""
    report = json.loads((out / "students" / "ada" / "report.json").read_text())
    header = (out / "students" / "ada" / "feedback.md").read_text().splitlines()[0]
    return {
        "report.json": report["final_score"],
        "grades.csv": float(next(csv.DictReader((out / "grades.csv").open()))["final_score"]),
        "canvas.csv": float(next(r for r in csv.reader((out / "canvas.csv").open()) if r[0] == "ada")[-1]),
        "feedback.md": float(header.split(": ")[-1].split(" / ")[0]),
    }
