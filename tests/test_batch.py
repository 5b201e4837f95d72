"""`grade batch`: one child per submission, workers, resuming, and the gradebook exports."""

from __future__ import annotations

import csv
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
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
from rich.console import Console

from grader.batch.executors import LocalExecutor, cpu_count
from grader.batch.gradebook import summarize, write_gradebook
from grader.batch.run import Outcome, run_batch
from grader.batch.store import find_entries, grader_key
from grader.options import SANDBOX_ENV, GradingOptions
from grader.report import Report, build_report
from grader.runner import Run
from grader.spec import load_spec
from tests.gallery import ENTRIES, LIMITS, build, problems
from tests.kit import ROOT, make_variant, spec_of, variants

QUIET = Console(file=io.StringIO())
KINDS = "a folder, a .py file, a .zip or a .ipynb notebook"
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
    assert grader_key(spec, GradingOptions(show_hidden=True, threads=3, seed=5)) == key
    assert grader_key(spec, GradingOptions(limits={"test_timeout_s": 5})) != key
    assert grader_key(spec, GradingOptions(marks="not accuracy")) != key
    changed = (spec.hidden_dir / "test_hidden.py", spec.tests_dir / "test_lenet.py", spec.folder / "spec.toml")
    for path in (*changed, spec.folder / "probes.py", spec.hidden_dir / "probes.py"):
        text = path.read_text()
        path.write_text(text + "\n# changed\n")
        assert grader_key(spec, GradingOptions()) != key, path
        path.write_text(text)
    assert grader_key(spec, GradingOptions()) == key


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


def test_a_hand_in_that_cannot_be_read_gets_a_zero_report_saying_why(tmp_path):
    submissions, out = tmp_path / "submissions", tmp_path / "grades"
    submissions.mkdir()
    (submissions / "empty").mkdir()
    (submissions / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    (submissions / "notes.txt").write_text("I did it all in my head")
    (submissions / "link").symlink_to(spec_of("assignment2").reference_dir)
    options = GradingOptions(profile="quick", marks="not accuracy")
    result = run_batch(spec_of("assignment2"), submissions, out, options, console=QUIET)
    reasons = {o.id: (o.status, o.report.score, o.report.problem) for o in result.outcomes}
    assert reasons == {
        "empty": ("unreadable", 0, "the submission has none of the assignment's files (lenet.py, training.py)"),
        "broken": ("unreadable", 0, "broken.zip is not a readable zip file"),
        "notes.txt": ("unreadable", 0, f"cannot grade notes.txt: hand in {KINDS}"),
        "link": ("unreadable", 0, "link is a symbolic link: hand in the files themselves"),
    }
    for outcome in result.outcomes:
        assert all(t.reason == outcome.report.problem for t in outcome.report.tests)
        assert outcome.report.problem in (out / "students" / outcome.id / "feedback.md").read_text()
    rows = list(csv.DictReader((out / "grades.csv").open()))
    assert [(r["id"], r["status"], r["score"]) for r in rows] == [(i, "unreadable", "0.0") for i in sorted(reasons)]
    again = run_batch(spec_of("assignment2"), submissions, out, options, console=QUIET)
    assert again.graded_now == 0


def test_a_changed_hand_in_is_graded_again_and_only_it(tmp_path):
    spec = spec_of("assignment2")
    submissions, out = tmp_path / "submissions", tmp_path / "grades"
    shutil.copytree(spec.reference_dir, submissions / "ada")
    shutil.copytree(spec.starter_dir, submissions / "bob")
    options = GradingOptions(profile="quick", select="test_parameter_count")
    first = run_batch(spec, submissions, out, options, console=QUIET)
    assert [(o.id, o.report.score, o.report.max_score, o.resumed) for o in first.outcomes] == [
        ("ada", 2, 2, False),
        ("bob", 0, 2, False),
    ]
    shutil.copy(spec.reference_dir / "lenet.py", submissions / "bob" / "lenet.py")
    second = run_batch(spec, submissions, out, options, console=QUIET)
    assert [(o.id, o.report.score, o.resumed) for o in second.outcomes] == [("ada", 2, True), ("bob", 2, False)]
    saved = out / "students" / "bob" / "report.json"  # a report changed since the batch wrote it: graded again
    saved.write_text(saved.read_text().replace('"score": 2', '"score": 3', 1))
    third = run_batch(spec, submissions, out, options, console=QUIET)
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


def sample_outcome(student: str, passed: set[str], problem: str = "") -> Outcome:
    collected = [
        {"nodeid": f"a/tests/t.py::{n}", "name": n, "points": p, "tasks": [], "accuracy": False, "hidden": False}
        for n, p in (("shapes", 4.0), ("update", 2.0), ("modes", 1.0))
    ]
    results = {}
    for test in collected:
        ok = test["name"] in passed
        results[test["nodeid"]] = {
            "outcome": "passed" if ok else "failed",
            "reason": "" if ok else f"{test['name']} is wrong",
            "output": "",
            "duration_s": 1.0,
            "limit": "cpu" if test["name"] == "modes" and not ok else "",
        }
    run = Run(session={"profile": "quick"}, collected=collected, results={} if problem else results, duration_s=3.0)
    report = build_report(spec_of("assignment2"), run, f"submissions/{student}", problem=problem)
    return Outcome(student, report, "unreadable" if problem else "graded", "k")


def test_the_gradebook_has_a_row_a_suite_and_a_line_per_student(tmp_path):
    outcomes = [
        sample_outcome("ada", {"shapes", "update", "modes"}),
        sample_outcome("bob", {"shapes"}),
        sample_outcome("cy", {"shapes", "update"}),
        sample_outcome("dee", set(), problem="dee.zip is not a readable zip file"),
    ]
    write_gradebook(tmp_path, outcomes)
    rows = list(csv.DictReader((tmp_path / "grades.csv").open()))
    assert list(rows[0])[:10] == [
        "id",
        "score",
        "max_score",
        "percent",
        "status",
        "duration_s",
        "limits",
        "problem",
        "profile",
        "isolation",
    ]
    assert [(r["id"], r["score"], r["shapes"], r["update"], r["modes"], r["limits"]) for r in rows] == [
        ("ada", "7.0", "4.0", "2.0", "1.0", ""),
        ("bob", "4.0", "4.0", "0.0", "0.0", "cpu"),
        ("cy", "6.0", "4.0", "2.0", "0.0", "cpu"),
        ("dee", "0.0", "0.0", "0.0", "0.0", ""),
    ]
    suites = ET.parse(tmp_path / "junit.xml").getroot()
    failures = [(s.get("name"), s.get("failures")) for s in suites]
    assert failures == [("ada", "0"), ("bob", "2"), ("cy", "1"), ("dee", "3")]
    stats = summarize(outcomes)
    percents = [100, 400 / 7, 600 / 7, 0]
    assert stats["mean"] == pytest.approx(sum(percents) / 4)
    assert stats["median"] == pytest.approx((400 / 7 + 600 / 7) / 2)
    assert [(t["name"], t["pass_rate"]) for t in stats["tests"]] == [("modes", 0.25), ("update", 0.5), ("shapes", 0.75)]
    assert stats["tests"][0]["common_reason"] == "modes is wrong (2)"
    assert dict(stats["distribution"])["50-59%"] == 1 and dict(stats["distribution"])["90-100%"] == 1
    assert "| modes" in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no/such/folder", "--out", "x"], "error: Invalid value for 'SUBMISSIONS'"),
        (["assignments", "--out", "x", "--limit", "bogus=1"], "error: unknown limit bogus (known: test_timeout_s"),
        (["assignments", "--out", "x", "--limit", "processes"], "error: --limit processes: expected NAME=NUMBER"),
        (["assignments", "--out", "pyproject.toml/x"], "error: --out pyproject.toml/x: cannot create it"),
    ],
    ids=["missing folder", "unknown limit", "no value", "gradebook folder cannot be made"],
)
def test_mistakes_in_the_command_are_one_line(args, message, tmp_path):
    result = subprocess.run([*GRADE, "batch", "assignment2", *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


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
