"""`grade batch`: one child per submission, workers, resuming, and the gradebook exports."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import grader.batch.executors as executors_module
import grader.batch.run as run_module
from grader import i18n
from grader.batch.executors import LocalExecutor, cpu_count
from grader.batch.late import Deadline, parse_time
from grader.batch.outcomes import BatchResult
from grader.batch.progress import Eta
from grader.batch.run import BatchOptions, run_batch
from grader.batch.store import Store, find_entries, grader_key
from grader.environment import SANDBOX_ENV
from grader.errors import UserError
from grader.options import GradingOptions
from grader.plugin.session import resolve_profile
from grader.report import Report, build_report
from grader.runner import Run
from grader.spec import LatePolicy, load_spec
from tests.gallery import ENTRIES, LIMITS, build, problems
from tests.kit import ROOT, TableRows, make_variant, spec_of, variants

QUIET = Console(file=io.StringIO())
GRADE = [sys.executable, "-c", "from grader.cli import run; run()"]


def test_each_entry_is_a_student_named_after_it(tmp_path):
    for name in ("alice", "eve", "__MACOSX", ".git"):
        (tmp_path / name).mkdir()
    for name in ("bob.zip", "carol.py", "dan.ipynb", "eve.zip", ".DS_Store"):
        (tmp_path / name).write_text("")
    entries = find_entries(tmp_path)
    assert [(e.id, e.path.name) for e in entries] == [
        ("alice", "alice"),
        ("bob", "bob.zip"),
        ("carol", "carol.py"),
        ("dan", "dan.ipynb"),
        ("eve", "eve"),
        ("eve.zip", "eve.zip"),
    ]


def test_the_grader_key_changes_with_the_tests_the_spec_and_the_options_that_change_grades(tmp_path):
    kit = tmp_path / "kit"
    shutil.copytree(ROOT / "assignments", kit / "assignments", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("starter", "reference"):
        shutil.copytree(ROOT / folder / "assignment2", kit / folder / "assignment2")
    spec = load_spec("assignment2", kit)
    key = grader_key(spec, GradingOptions())
    assert grader_key(spec, GradingOptions(show_hidden=True, threads=3)) == key
    assert grader_key(spec, GradingOptions(seed=5)) != key  # --seed: other inputs drawn
    assert grader_key(spec, GradingOptions(limits={"test_timeout_s": 5})) != key
    assert grader_key(spec, GradingOptions(marks="not accuracy")) != key
    changed = (spec.hidden_dir / "test_hidden.py", spec.tests_dir / "test_lenet.py", spec.folder / "spec.toml")
    for path in (*changed, spec.folder / "probes.py", spec.hidden_dir / "probes.py"):
        text = path.read_text()
        path.write_text(text + "\n# changed\n")
        assert grader_key(spec, GradingOptions()) != key, path
        path.write_text(text)
    assert grader_key(spec, GradingOptions()) == key


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ({"select": "zzz"}, "no test of assignment2 matches 'zzz'"),
        ({"select": "lenet and ("}, "-k"),
        ({"marks": "not acuracy"}, "names acuracy, a marker no test has: did you mean accuracy?"),
        ({"marks": "not (accuracy"}, "-m"),
    ],
    ids=["nothing selected", "a broken expression", "a mistyped marker", "a broken marker expression"],
)
def test_a_batch_says_a_selection_mistake_in_one_line_as_grade_does(tmp_path, asked, message):
    spec = spec_of("assignment2")
    shutil.copytree(spec.starter_dir, tmp_path / "subs" / "ana")
    options = GradingOptions(profile="quick", **asked)
    with pytest.raises(UserError, match=re.escape(message)):
        run_batch(spec, tmp_path / "subs", tmp_path / "out", options, BatchOptions(workers=1, console=QUIET))


def test_the_batch_command_refuses_a_mistyped_marker_in_one_line(tmp_path):
    (tmp_path / "subs").mkdir()
    shutil.copytree(ROOT / "starter" / "assignment2", tmp_path / "subs" / "ana")
    args = ["batch", "assignment2", str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "--marks", "not acuracy"]
    result = subprocess.run([*GRADE, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith("error: the marker expression 'not acuracy' names acuracy"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_forced_regrade_gives_every_student_the_same_seed_and_grades(tmp_path):
    """Issue 18: each grading drew a new seed; a hand-in whose evaluation runs in training mode
    was caught on some draws only."""
    spec = spec_of("assignment2")
    wrong_mode = next(v.values[1] for v in variants() if v.values[1]["name"].startswith("net.train() instead"))
    shutil.copytree(spec.reference_dir, tmp_path / "subs" / "ana")
    make_variant(spec, wrong_mode, tmp_path / "subs" / "bao")
    options = GradingOptions(profile="quick", select="evaluate", marks="not accuracy")

    def grades() -> tuple[str, dict[str, int | None]]:
        result = run_batch(
            spec, tmp_path / "subs", tmp_path / "out", options, BatchOptions(workers=2, console=QUIET, force=True)
        )
        return (tmp_path / "out" / "grades.csv").read_text(), {o.id: o.report.seed for o in result.outcomes}

    first, again = grades(), grades()
    assert first == again  # grades.csv byte for byte
    assert len(set(first[1].values())) == 2 and None not in first[1].values()  # each hand-in its own
    assert [float(row["score"]) for row in csv.DictReader(io.StringIO(first[0]))] == [5, 0]


def test_workers_run_at_once_each_with_a_folder_and_cores_of_its_own():
    running, peak, lock = [0], [0], threading.Lock()

    def job(slot):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return slot

    with LocalExecutor(2) as executor:
        slots = [f.result() for f in [executor.submit(job) for _ in range(6)]]
        with LocalExecutor(2) as other:  # a second batch on the same machine
            theirs = [f.result() for f in [other.submit(job) for _ in range(2)]]
    assert peak[0] == 2
    assert {s.index for s in slots} == {0, 1}
    assert all(s.threads == max(1, cpu_count() // 2) for s in slots)
    assert all(s.options(GradingOptions()).threads == s.threads and s.env["TMPDIR"] == str(s.tmp) for s in slots)
    assert len({s.tmp for s in slots + theirs}) == 4
    assert not any(s.tmp.exists() for s in slots + theirs)  # removed at shutdown


def test_a_hand_in_that_cannot_be_read_gets_a_zero_report_saying_why_once(tmp_path):
    spec = spec_of("assignment2")
    submissions, out = tmp_path / "submissions", tmp_path / "grades"
    submissions.mkdir()
    (submissions / "empty").mkdir()
    (submissions / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    (submissions / "link").symlink_to(spec.reference_dir)
    for stray in ("notes.txt", ".DS_Store"):  # no hand-in: left aside, in one line, not a student
        (submissions / stray).write_text("I did it all in my head")
    options = GradingOptions(marks="not accuracy")  # profile auto
    said = Console(file=io.StringIO(), width=200)
    result = run_batch(spec, submissions, out, options, BatchOptions(console=said))
    reasons = {o.id: (o.status, o.report.score, o.report.problem) for o in result.outcomes}
    assert reasons == {
        "empty": ("unreadable", 0, "the submission has none of the assignment's files (lenet.py, training.py)"),
        "broken": ("unreadable", 0, "broken.zip is not a readable zip file"),
        "link": ("unreadable", 0, "link is a symbolic link: hand in the files themselves"),
    }
    aside = "not hand-ins, left aside (a hand-in is a folder, a .zip, a .py or a .ipynb): .DS_Store, notes.txt\n"
    printed = said.file.getvalue()
    assert printed.startswith(aside), printed
    assert "\nbroken: unreadable · broken.zip is not a readable zip file\n" in printed, printed
    used = resolve_profile(spec, "auto", None).name  # quick without a GPU and the full dataset
    for outcome in result.outcomes:
        report = outcome.report
        assert report.profile == used and all(t.reason == t.output == "" for t in report.tests)
        feedback = (out / "students" / outcome.id / "feedback.md").read_text()
        assert feedback.count(report.problem) == 1 and "❌" not in feedback and "(-, -)" not in feedback, feedback
    rows = list(csv.DictReader((out / "grades.csv").open()))
    assert [(r["id"], r["status"], r["score"]) for r in rows] == [(i, "unreadable", "0.0") for i in sorted(reasons)]
    tests = [name for name in rows[0] if name.startswith(("lenet.", "training.", "hidden."))]
    assert len(tests) > 5 and all(row[name] == "" for row in rows for name in tests)  # no test ran: no 0.0 either
    assert "3 submissions (3 unreadable)\n\nno submission could be graded" in (out / "summary.md").read_text()
    with i18n.using("vi"):  # another language reads them again, in it, and grades nothing
        again = run_batch(spec, submissions, out, options.with_(lang="vi"), BatchOptions(console=QUIET))
    assert again.graded_now == 0
    empty = (out / "students" / "empty" / "feedback.md").read_text()
    assert "bài nộp không có tệp nào của bài tập (lenet.py, training.py)" in empty, empty


def test_a_changed_hand_in_is_graded_again_and_only_it(tmp_path):
    spec = spec_of("assignment2")
    submissions, out = tmp_path / "submissions", tmp_path / "grades"
    shutil.copytree(spec.reference_dir, submissions / "ada")
    shutil.copytree(spec.starter_dir, submissions / "bob")
    options = GradingOptions(profile="quick", select="test_parameter_count")
    first = run_batch(spec, submissions, out, options, BatchOptions(console=QUIET))
    assert [(o.id, o.report.score, o.report.max_score, o.resumed) for o in first.outcomes] == [
        ("ada", 2, 2, False),
        ("bob", 0, 2, False),
    ]
    shutil.copy(spec.reference_dir / "lenet.py", submissions / "bob" / "lenet.py")
    second = run_batch(spec, submissions, out, options, BatchOptions(console=QUIET))
    assert [(o.id, o.report.score, o.resumed) for o in second.outcomes] == [("ada", 2, True), ("bob", 2, False)]
    saved = out / "students" / "bob" / "report.json"  # a report changed since the batch wrote it: graded again
    saved.write_text(saved.read_text().replace('"score": 2', '"score": 3', 1))
    third = run_batch(spec, submissions, out, options, BatchOptions(console=QUIET))
    assert [(o.id, o.report.score, o.resumed) for o in third.outcomes] == [("ada", 2, True), ("bob", 2, False)]


def test_a_batch_refuses_to_run_unisolated_unless_told_and_then_says_so(tmp_path):
    spec = spec_of("assignment2")
    submissions, out = tmp_path / "submissions", tmp_path / "grades"
    shutil.copytree(spec.reference_dir, submissions / "ada")
    command = [*GRADE, "batch", "assignment2", str(submissions), "--out", str(out), "--select", "parameter_count"]
    env = {**os.environ, SANDBOX_ENV: "none"}
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and refused.stderr.startswith("error: no sandbox on this machine")
    assert not (out / "grades.csv").exists()
    allowed = subprocess.run([*command, "--allow-unisolated"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert allowed.returncode == 0, allowed.stderr
    (row,) = csv.DictReader((out / "grades.csv").open())
    assert row["isolation"] == "not isolated" and float(row["score"]) == 2
    assert "isolation: not isolated" in (out / "students" / "ada" / "feedback.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no/such/folder", "--out", "x"], "error: Invalid value for 'SUBMISSIONS'"),
        (["assignments", "--out", "x", "--limit", "bogus=1"], "error: unknown limit bogus (known: test_timeout_s"),
        (["assignments", "--out", "x", "--limit", "processes"], "error: --limit processes: expected NAME=NUMBER"),
        (["assignments", "--out", "pyproject.toml/x"], "error: --out pyproject.toml/x: cannot create it"),
        (
            ["assignments", "--out", "x", "--only", "assignment3,zed"],
            "error: --only zed: assignments has no submission",
        ),
        (["assignments", "--out", "x", "--late-policy", "10%/day"], "error: --late-policy needs a --deadline"),
        (
            ["assignments", "--out", "x", "--deadline", "2025-03-14T23:59"],
            "error: --deadline needs a late policy: --late-policy '10%/day,max 3', or [late] in assignment2's spec",
        ),
        (
            ["assignments", "--out", "x", "--deadline", "friday", "--late-policy", "10%/day"],
            "error: --deadline: 'friday' is not an ISO-8601 time, e.g. 2025-03-14T23:59+07:00",
        ),
        (
            ["assignments", "--out", "x", "--deadline", "2025-03-14T23:59", "--late-policy", "10% a day"],
            "error: --late-policy '10% a day': expected PERCENT%/day[,max DAYS], e.g. '10%/day,max 3'",
        ),
        (
            ["assignments", "--out", "x", "--deadline", "2025-03-14T23:59", "--no-deadline"],
            "error: --no-deadline drops the late penalties: give it without --deadline and --late-policy",
        ),
    ],
    ids=[
        "missing folder",
        "unknown limit",
        "no value",
        "gradebook folder cannot be made",
        "unknown student",
        "policy without a deadline",
        "deadline without a policy",
        "bad deadline",
        "bad policy",
        "a deadline and none",
    ],
)
def test_mistakes_in_the_command_are_one_line(args, message, tmp_path):
    result = subprocess.run([*GRADE, "batch", "assignment2", *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_time_left_comes_from_the_gradings_of_this_run_only():
    now = [0.0]
    eta = Eta(workers=2, clock=lambda: now[0])
    eta.add(6)  # six to grade now, whatever was resumed before
    eta.started("a"), eta.started("b")
    now[0] = 1.0
    assert eta.left() is None  # nothing to go by yet
    now[0] = 10.0
    eta.finished("a"), eta.finished("b"), eta.started("c"), eta.started("d")
    now[0] = 15.0
    assert eta.left() == pytest.approx(15)  # c and d end at 20, e and f (10 s each, two at once) at 30
    now[0] = 20.0
    eta.finished("c"), eta.finished("d"), eta.started("e")
    assert eta.left() == pytest.approx(10)  # f waits for no one: one worker is free
    eta.started("f")
    now[0] = 26.0
    assert eta.left() == pytest.approx(4)  # the last two end together
    now[0] = 40.0
    assert eta.left() == 0  # late, but not negative


def three_hand_ins(tmp_path: Path) -> tuple[Path, Path]:
    spec = spec_of("assignment2")
    submissions, out = tmp_path / "submissions", tmp_path / "grades"
    shutil.copytree(spec.reference_dir, submissions / "ada")
    shutil.copytree(spec.starter_dir, submissions / "bob")
    (submissions / "cy.py").write_text("\n".join((spec.reference_dir / f).read_text() for f in spec.files))
    return submissions, out


def graded(result: BatchResult) -> list[str]:
    return [o.id for o in result.outcomes if not o.resumed]


COLLECTED: dict[tuple[Path, str], list] = {}  # (assignment, options) -> the tests its batches collect
REAL_COLLECT = run_module._collect


def collected_once(spec, options):
    """The tests a batch collects, collected once per selection in this session (else a pytest child each run)."""
    key = (spec.folder, options.to_json())
    if key not in COLLECTED:
        COLLECTED[key] = REAL_COLLECT(spec, options)
    return COLLECTED[key]


@pytest.fixture
def collect_once(monkeypatch):
    monkeypatch.setattr(run_module, "_collect", collected_once)


def test_regrades_grade_the_students_asked_for_and_keep_the_others_as_stored(tmp_path, monkeypatch, collect_once):
    spec = spec_of("assignment2")
    submissions, out = three_hand_ins(tmp_path)
    graded_by_fake = []  # whom a batch picks is its own business: the grading is a fake here, the rest is real

    def fake_grade(spec, folder, options, env, cancel, label, worker):
        graded_by_fake.append(Path(label).stem)
        test = {"nodeid": "t.py::test_a", "name": "a", "points": 2.0, "tasks": [], "accuracy": False, "hidden": False}
        run = Run(
            session={"profile": "quick"},
            collected=[test],
            results={"t.py::test_a": {"outcome": "passed", "reason": "", "output": "", "duration_s": 0.1}},
        )
        return build_report(spec, run, label)

    monkeypatch.setattr(executors_module, "grade", fake_grade)  # a worker grades through Slot.grade
    options = GradingOptions(profile="quick", select="test_parameter_count")
    with LocalExecutor(1) as executor:

        def regrade(**picked: Any) -> BatchResult:
            return run_batch(spec, submissions, out, options, BatchOptions(executor=executor, console=QUIET, **picked))

        assert graded(regrade()) == graded_by_fake == ["ada", "bob", "cy"]
        assert graded(regrade()) == []
        with pytest.raises(UserError, match=r"^--only bbo: .* has no submission of that name \(did you mean bob\?\)$"):
            regrade(only=("bbo",))
        shutil.copytree(spec.reference_dir, submissions / "dan")  # handed in late: never graded yet
        only = regrade(only=("bob",))
        assert (
            graded(only) == ["bob"]
            and only.left_out == ["dan"]
            and [o.id for o in only.outcomes] == ["ada", "bob", "cy"]
        )
        assert "dan" not in (out / "grades.csv").read_text()

        store = Store(out)  # last time, a busy machine stopped one of ada's tests and the grader failed cy
        ada, cy = store.stored("ada"), store.stored("cy")
        assert ada and cy
        ada.report.tests[0].limit = "backstop"
        store.save("ada", ada.report, "graded", ada.key, False)
        store.save("cy", cy.report, "error", cy.key, False)
        failed = regrade(failed=True)
        assert graded(failed) == ["ada", "cy"] and failed.left_out == ["dan"]
        assert [(o.status, o.limits) for o in failed.outcomes] == [("graded", [])] * 3
        assert graded(regrade(only=("bob",), failed=True)) == ["bob"]  # nobody failed now

        assert graded(regrade()) == ["dan"]  # resuming grades only who was never graded
        graded_by_fake.clear()
        assert graded(regrade(force=True)) == graded_by_fake == ["ada", "bob", "cy", "dan"]

        wider = options.with_(marks="not accuracy")  # a new resume key for everyone
        picked = run_batch(spec, submissions, out, wider, BatchOptions(executor=executor, console=QUIET, only=("ada",)))
        assert graded(picked) == ["ada"]
        keys = {s: Store(out).stored(s).key.split(":")[0] for s in ("ada", "bob", "cy", "dan")}
        assert keys["bob"] == keys["cy"] == keys["dan"] != keys["ada"]  # kept with what they were graded with
        assert graded(run_batch(spec, submissions, out, wider, BatchOptions(executor=executor, console=QUIET))) == [
            "bob",
            "cy",
            "dan",
        ]


DRY_RUN = GradingOptions(profile="quick", select="test_parameter_count", marks="not accuracy")  # one test, no training
DUE = "2025-03-14T23:59+07:00"
HANDED_IN = "id,time\nada,2025-03-14T23:00+07:00\nbob,2025-03-15T08:00+07:00\ncy,2025-03-16T05:59+07:00\n"
HANDED_IN += "dee,2025-03-14T20:00+07:00\n"
CY_NOTE = "handed in 2 days late (10% per day late, nothing after 3 days): -20%, 1.6 / 2 points"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[Path, Path]:
    """ada (the reference), bob (the starter), cy (the reference as one .py) and dee (a zip that is
    not one), graded once for this module by a dry run (DRY_RUN): the submissions and the gradebook."""
    folder = tmp_path_factory.mktemp("dry-run")
    submissions, out = three_hand_ins(folder)
    (submissions / "dee.zip").write_bytes(b"not a zip")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "_collect", collected_once)
        run_batch(spec_of("assignment2"), submissions, out, DRY_RUN, BatchOptions(workers=2, console=QUIET))
    return submissions, out


def late_copy(dry_run: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the dry run's submissions, with their hand-in times, and of its gradebook (resumed as it is)."""
    submissions, out = (shutil.copytree(folder, tmp_path / folder.name) for folder in dry_run)
    (submissions / "submissions.csv").write_text(HANDED_IN)
    return submissions, out


def test_a_deadline_sets_each_penalty_without_grading_again(dry_run, tmp_path, collect_once):
    spec = spec_of("assignment2")
    submissions, out = late_copy(dry_run, tmp_path)
    stored = {s: Store(out).stored(s).report for s in ("ada", "bob", "cy", "dee")}
    assert {s: (r.score, r.late) for s, r in stored.items()} == {
        "ada": (2, {}),
        "bob": (0, {}),
        "cy": (2, {}),
        "dee": (0, {}),
    }
    command = [*GRADE, "batch", "assignment2", str(submissions), "--out", str(out), "--profile", "quick"]
    command += ["--select", "test_parameter_count", "--marks", "not accuracy", "--deadline", DUE]
    done = subprocess.run([*command, "--late-policy", "10%/day,max 3"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("nothing to grade: 4 submissions (3 graded, 1 unreadable; 2 late) up to date")
    reports = {p.parent.name: json.loads(p.read_text()) for p in out.glob("students/*/report.json")}
    assert {s: (r["late"]["days"], r["late"]["penalty"], r["score"]) for s, r in reports.items()} == {
        "ada": (0, 0.0, 2),
        "bob": (1, 0.1, 0),
        "cy": (2, 0.2, 2),
        "dee": (0, 0.0, 0),
    }
    assert reports["cy"]["score_after_penalty"] == 1.6 and CY_NOTE in reports["cy"]["output"]
    rows = {r["id"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert (rows["cy"]["late_days"], rows["cy"]["penalty"], rows["cy"]["final_score"]) == ("2", "0.2", "1.6")
    assert rows["ada"]["submitted_at"] == "2025-03-14T23:00:00+07:00"

    later = Deadline(parse_time("2025-03-20T00:00+07:00", "--deadline"), LatePolicy(0.1, 3))
    lms_headers = [next(csv.reader((out / name).open())) for name in ("canvas.csv", "moodle.csv")]
    with i18n.using("vi"):  # another language too: re-rendered in it, never graded again
        moved = run_batch(spec, submissions, out, DRY_RUN.with_(lang="vi"), BatchOptions(console=QUIET, deadline=later))
    assert graded(moved) == [] and [o.report.final_score for o in moved.outcomes] == [2, 0, 2, 0]
    feedback = (out / "students" / "cy" / "feedback.md").read_text()
    assert "late" not in feedback and spec.title_vi in feedback and "tham số" in feedback, feedback
    assert "3 đã chấm" in (out / "summary.md").read_text()
    assert [next(csv.reader((out / name).open())) for name in ("canvas.csv", "moodle.csv")] == lms_headers
    assert lms_headers[1][1] == spec.title  # an LMS matches the assignment by its column: never translated


def stated_grades(out: Path, student: str) -> dict[str, float]:
    """The grade each output states for `student`, read as a reader of that format would."""
    folder = out / "students" / student
    page = (folder / "feedback.html").read_text()
    markdown = (folder / "feedback.md").read_text().splitlines()[0]
    report = json.loads((folder / "report.json").read_text())
    students = TableRows((out / "index.html").read_text()).rows
    header = next(row for row in students if "final score" in row)
    in_index = next(row for row in students if row[0] == student)
    grades = {row["id"]: row for row in csv.DictReader((out / "grades.csv").open())}
    return {
        "feedback.html": float(re.search(r'<p class="score"><b>([\d.]+)</b> / ', page)[1]),
        "feedback.md": float(
            re.fullmatch(r"### .*: ([\d.]+) / [\d.]+ \(\d+%\)( after the late penalty)?", markdown)[1]
        ),
        "report.json": report.get("score_after_penalty", report["score"]),
        "results.json": json.loads((folder / "results.json").read_text())["score"],
        "grades.csv": float(grades[student]["final_score"]),
        "canvas.csv": float(next(r for r in csv.reader((out / "canvas.csv").open()) if r[0] == student)[-1]),
        "moodle.csv": float(next(r for r in csv.reader((out / "moodle.csv").open()) if r[0] == student)[1]),
        "index.html": float(in_index[header.index("final score")].split(" / ")[0]),
    }


def test_every_output_states_the_same_grade_after_the_penalty_and_what_the_dry_run_left_out(
    dry_run, tmp_path, collect_once
):
    """Issue 18: a late hand-in's feedback.html showed its points before the penalty, index.html had no
    late column and did not say what --marks left out."""
    submissions, out = late_copy(dry_run, tmp_path)
    due = Deadline(parse_time(DUE, "--deadline"), LatePolicy(0.1, 3))
    result = run_batch(spec_of("assignment2"), submissions, out, DRY_RUN, BatchOptions(console=QUIET, deadline=due))
    assert graded(result) == []
    expected = {"ada": 2, "bob": 0, "cy": 1.6, "dee": 0}  # on time; late with 0; 2 days late; unreadable
    for student, grade in expected.items():
        stated = stated_grades(out, student)
        assert set(stated.values()) == {grade}, (student, stated)
    feedback = html.unescape((out / "students" / "cy" / "feedback.html").read_text())
    assert "2 / 2 points (of 43" in feedback and CY_NOTE in feedback  # the tests' points, the penalty
    index = TableRows((out / "index.html").read_text()).rows
    assert next(row for row in index if row[0] == "cy") == ["cy", "2 / 2", "2", "-20%", "1.6 / 2", "80%", "graded", ""]
    left_out = (
        "graded without 41 of the 43 points: tests left out by --select test_parameter_count and --marks 'not accuracy'"
    )
    for name in ("index.html", "summary.md"):
        assert left_out in html.unescape((out / name).read_text()), name
    for name in ("feedback.html", "feedback.md"):  # the summary line: "2 / 2 points (of 43: 41 points of tests ..."
        text = html.unescape((out / "students" / "ada" / name).read_text())
        assert "41 points of tests left out by --select test_parameter_count and --marks 'not accuracy'" in text, name


def test_a_rerun_without_the_deadline_keeps_the_last_one_and_says_so_until_dropped(dry_run, tmp_path, collect_once):
    """Issue 18: a rerun without --deadline silently removed every penalty."""
    spec = spec_of("assignment2")
    submissions, out = late_copy(dry_run, tmp_path)
    due = Deadline(parse_time(DUE, "--deadline"), LatePolicy(0.1, 3))

    def rerun(**deadline: Deadline | bool) -> tuple[list[float], str]:
        console = Console(file=io.StringIO(), width=300)
        result = run_batch(spec, submissions, out, DRY_RUN, BatchOptions(console=console, **deadline))
        assert graded(result) == []
        return [o.report.final_score for o in result.outcomes], console.file.getvalue()

    assert rerun(deadline=due) == ([2, 0, 1.6, 0], "")
    kept, said = rerun()
    assert kept == [2, 0, 1.6, 0] and said.splitlines() == [
        "the last run applied a deadline of 2025-03-14T23:59:00+07:00 (10% per day late, nothing after 3 days); "
        "this run was given none and applies it again: give --deadline again, or --no-deadline to drop the penalties"
    ]
    assert rerun(no_deadline=True) == ([2, 0, 2, 0], "")
    assert rerun() == ([2, 0, 2, 0], "")  # dropped for good
    (out / ".batch" / "deadline.json").write_text("{")
    with pytest.raises(UserError, match=r"deadline\.json cannot be read .*: give --deadline again, or --no-deadline"):
        rerun()


# --- twenty hand-ins, the batch killed halfway, then resumed ------------------------------------

HOSTILE = ["syntax-error", "os-exit-at-import", "sys-exit-in-a-test", "empty-folder", "broken-zip"]


def twenty_hand_ins(submissions: Path, out: Path) -> dict[str, dict]:
    """The reference three ways, the starter, every known-wrong variant, five broken or hostile ones."""
    spec = spec_of("assignment2")
    expected: dict[str, dict] = {}
    shutil.copytree(spec.reference_dir, submissions / "reference")
    with zipfile.ZipFile(submissions / "reference-zipped.zip", "w") as archive:
        for file in spec.files:
            archive.write(spec.reference_dir / file, f"hand-in/{file}")
    single = "\n".join((spec.reference_dir / file).read_text() for file in spec.files)
    (submissions / "reference-one-file.py").write_text(single)
    for name in ("reference", "reference-zipped", "reference-one-file"):
        expected[name] = {"fails": []}
    shutil.copytree(spec.starter_dir, submissions / "starter")
    expected["starter"] = {"fails": ["everything"], "reason": "not filled in yet: "}
    for param in variants():
        assignment, variant = param.values
        if assignment == "assignment2":
            name = "variant-" + re.sub(r"[^a-z0-9]+", "-", variant["name"].lower()).strip("-")
            make_variant(spec, variant, submissions / name)
            expected[name] = {"variant": variant}
    for name in HOSTILE:
        build(ENTRIES[name], spec, submissions, out)
        expected[name] = ENTRIES[name]
    assert len(expected) >= 20
    return expected


def done_students(out: Path) -> set[str]:
    try:
        return set(json.loads((out / ".batch" / "ledger.json").read_text()))
    except (OSError, ValueError):
        return set()


@pytest.mark.timeout(3000)  # forty gradings on a busy 2-core machine
def test_a_batch_killed_halfway_and_run_again_grades_only_what_is_left(tmp_path):
    submissions, out = tmp_path / "submissions", tmp_path / "grades"
    submissions.mkdir()
    expected = twenty_hand_ins(submissions, out)
    limits = [f"--limit={name}={value}" for name, value in LIMITS.items()]
    command = [*GRADE, "batch", "assignment2", str(submissions), "--out", str(out), "--workers", "2"]
    command += ["--profile", "quick", "--marks", "not accuracy", *limits]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 1500
    while len(done_students(out)) < 9 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done = done_students(out)
    assert 9 <= len(done) < len(expected)
    saved = {s: (out / "students" / s / "report.json").read_bytes() for s in done}
    # its grading children die with it: at once, or as soon as they are far enough to notice (pytest started)
    waited = time.monotonic() + 60
    while _commands_with(f"grader-batch-{first.pid}-") and time.monotonic() < waited:
        time.sleep(0.5)
    assert not _commands_with(f"grader-batch-{first.pid}-")

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    graded_again = set(re.findall(r"^([\w.-]+): [\d.]+ / [\d.]+ \(", second.stdout, re.MULTILINE))
    assert graded_again == set(expected) - done
    assert {s: (out / "students" / s / "report.json").read_bytes() for s in done} == saved
    rows = {r["id"]: r for r in csv.DictReader((out / "grades.csv").open())}
    assert set(rows) == set(expected)
    for name, entry in expected.items():
        report = Report.from_json(json.loads((out / "students" / name / "report.json").read_text()))
        assert float(rows[name]["score"]) == report.score
        if "variant" in entry:
            by_test = {t.nodeid.split("::")[-1]: t for t in report.tests}
            for test, phrase in entry["variant"]["fails"].items():
                if test in by_test:  # the accuracy test was left out
                    assert by_test[test].status == "failed" and phrase in by_test[test].reason, (name, test)
            assert report.score < report.max_score, name
        else:
            assert not problems(entry, report, rows[name]["status"]), (name, report.summary())


def _commands_with(text: str) -> list[str]:
    """The command lines of the running processes that contain `text`."""
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(command)
    return found
