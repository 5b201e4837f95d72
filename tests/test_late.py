"""Late days: the policy (spec or command line), the hand-in times, and the penalty in every format."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest

from grader import render
from grader.batch.late import Deadline, hand_in_times, parse_time
from grader.batch.store import find_entries
from grader.errors import UserError
from grader.report import Report, TestResult
from grader.spec import LatePolicy, load_spec

DUE = datetime(2025, 3, 14, 23, 59, tzinfo=timezone(timedelta(hours=7)))
TEN_A_DAY = LatePolicy(0.10, 3)
SPEC = """title = "T"
files = ["a.py"]
[profiles.quick]
device = "cpu"
[profiles.full]
device = "cpu"
"""


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("10%/day,max 3", LatePolicy(0.1, 3)),
        (" 12.5 % / day ", LatePolicy(0.125)),
        ("5%/day, max 2 days", LatePolicy(0.05, 2)),
    ],
)
def test_a_late_policy_reads_from_the_command_line(text, policy):
    assert LatePolicy.parse(text) == policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10/day", "--late-policy '10/day': expected PERCENT%/day[,max DAYS], e.g. '10%/day,max 3'"),
        ("10%/week", "--late-policy '10%/week': expected PERCENT%/day[,max DAYS]"),
        ("0%/day", "--late-policy '0%/day': a late policy takes 0 < per_day <= 1"),
        ("150%/day", "--late-policy '150%/day': a late policy takes 0 < per_day <= 1"),
    ],
)
def test_a_bad_late_policy_is_one_line(text, message):
    with pytest.raises(UserError) as mistake:
        LatePolicy.parse(text)
    assert str(mistake.value).startswith(message) and "\n" not in str(mistake.value)


def test_each_started_day_costs_its_share_and_nothing_is_left_after_the_last():
    assert [TEN_A_DAY.penalty(d) for d in range(6)] == [0.0, 0.1, 0.2, 0.3, 1.0, 1.0]
    assert LatePolicy(0.3).penalty(3) == 0.9 and LatePolicy(0.3).penalty(4) == 1.0  # no cut-off: never below 0
    deadline = Deadline(DUE, TEN_A_DAY)
    late = {
        delay: deadline.late(DUE + delay)["days"]
        for delay in (
            -timedelta(hours=5),
            timedelta(0),
            timedelta(minutes=1),
            timedelta(days=1),
            timedelta(days=1, seconds=1),
        )
    }
    assert list(late.values()) == [0, 0, 1, 1, 2]
    record = deadline.late(DUE + timedelta(hours=30))
    assert record == {
        "submitted_at": "2025-03-16T05:59:00+07:00",
        "deadline": "2025-03-14T23:59:00+07:00",
        "days": 2,
        "penalty": 0.2,
        "policy": "10% per day late, nothing after 3 days",
    }


def test_the_spec_holds_a_late_policy_and_its_mistakes_are_one_line(tmp_path):
    folder = tmp_path / "assignments" / "x"
    folder.mkdir(parents=True)
    (folder / "spec.toml").write_text(SPEC)
    assert load_spec("x", tmp_path).late is None
    (folder / "spec.toml").write_text(SPEC + "[late]\nper_day = 0.10\nmax_days = 3\n")
    assert load_spec("x", tmp_path).late == LatePolicy(0.1, 3)
    for table, message in [
        ("per_day = 0.1\nmax = 3", "[late]: unknown key max (it takes per_day = 0.10 and, optionally, max_days = 3)"),
        ("max_days = 3", "[late]: no per_day"),
        ("per_day = 10", "[late]: a late policy takes 0 < per_day <= 1"),
        ('per_day = "ten"', "[late]: per_day and max_days are numbers"),
    ]:
        (folder / "spec.toml").write_text(SPEC + "[late]\n" + table + "\n")
        with pytest.raises(UserError, match=r"spec\.toml \[late\]") as mistake:
            load_spec("x", tmp_path)
        assert message in str(mistake.value), str(mistake.value)


def test_times_in_iso_8601_with_or_without_a_zone():
    assert parse_time("2025-03-14T23:59+07:00", "x") == DUE
    assert parse_time("2025-03-14T16:59Z", "x") == DUE
    assert parse_time(" 2025-03-14 16:59:00+00:00 ", "x") == DUE
    local = parse_time("2025-03-14T23:59", "x")  # no zone: the machine's
    assert local.tzinfo is not None and local.replace(tzinfo=None) == datetime(2025, 3, 14, 23, 59)
    with pytest.raises(UserError, match=r"^--deadline: 'friday' is not an ISO-8601 time, e\.g\. "):
        parse_time("friday", "--deadline")


def hand_ins(folder):
    (folder / "ada").mkdir(parents=True)
    (folder / "ada" / "lenet.py").write_text("")
    (folder / "ada" / "training.py").write_text("")
    (folder / "bob.py").write_text("")


def test_hand_in_times_come_from_submissions_csv(tmp_path):
    hand_ins(tmp_path)
    (tmp_path / "submissions.csv").write_text(
        "\ufeffid,time\nada,2025-03-14T23:00+07:00\n\nbob,2025-03-15T01:00+07:00\n"
    )
    entries = find_entries(tmp_path)
    assert [e.id for e in entries] == ["ada", "bob"]  # the times are not a hand-in
    times = hand_in_times(entries, tmp_path)
    assert times == {"ada": DUE - timedelta(minutes=59), "bob": DUE + timedelta(minutes=61)}
    (tmp_path / "submissions.csv").write_text("id,time\nada,2025-03-14T23:00\n")
    with pytest.raises(UserError, match=r"submissions\.csv: no time for bob \(a line `id,time` each\)$"):
        hand_in_times(entries, tmp_path)
    (tmp_path / "submissions.csv").write_text("id,time\nada,2025-03-14T23:00\nbob,tomorrow\n")
    with pytest.raises(UserError, match=r"submissions\.csv line 3: 'tomorrow' is not an ISO-8601 time"):
        hand_in_times(entries, tmp_path)
    (tmp_path / "submissions.csv").write_text("student,handed in\nada,2025-03-14T23:00\n")
    with pytest.raises(UserError, match=r"submissions\.csv: its first line must name the columns id and time$"):
        hand_in_times(entries, tmp_path)


def test_without_submissions_csv_a_hand_in_is_as_late_as_its_newest_file(tmp_path):
    hand_ins(tmp_path)
    stamp = DUE.timestamp()
    os.utime(tmp_path / "ada" / "lenet.py", (stamp, stamp - 3600))
    os.utime(tmp_path / "ada" / "training.py", (stamp, stamp + 7200))
    os.utime(tmp_path / "ada", (stamp, stamp - 7200))  # a folder's own time says nothing of its files
    os.utime(tmp_path / "bob.py", (stamp, stamp))
    times = hand_in_times(find_entries(tmp_path), tmp_path)
    assert times == {"ada": DUE + timedelta(hours=2), "bob": DUE}


def late_report(days: int, penalty: float) -> Report:
    tests = [
        TestResult(
            name="shapes",
            nodeid="a/tests/test_a.py::test_shapes",
            score=6.0,
            max_score=6.0,
            status="passed",
            outcome="passed",
        ),
        TestResult(
            name="secret",
            nodeid="a/hidden/test_h.py::test_s",
            score=4.0,
            max_score=4.0,
            status="passed",
            outcome="passed",
            hidden=True,
        ),
    ]
    late = {"submitted_at": "2025-03-16T05:59:00+07:00", "deadline": "2025-03-14T23:59:00+07:00", "days": days}
    late |= {"penalty": penalty, "policy": "10% per day late, nothing after 3 days"}
    return Report("a2", "LeNet", "subs/ada", "quick", "cpu", "MNIST", 10.0, 10.0, 1.0, tests, late=late)


def test_the_penalty_is_shown_in_every_format_and_the_tests_keep_their_points():
    report = late_report(2, 0.2)
    note = "handed in 2 days late (10% per day late, nothing after 3 days): -20%, 8 / 10 points"
    assert report.score == 10 and report.final_score == 8 and [t.score for t in report.tests] == [6, 4]
    assert note in report.summary()
    doc = report.to_json()
    assert doc["score"] == 10 and doc["score_after_penalty"] == 8 and doc["late"]["days"] == 2
    assert Report.from_json(json.loads(json.dumps(doc))).final_score == 8  # what a resumed batch reads back
    markdown = render.markdown(report)
    assert markdown.startswith("### a2 · LeNet: 8 / 10 (80%) after the late penalty") and note in markdown
    properties = {p.get("name"): p.get("value") for p in ET.fromstring(render.junit(report)).iter("property")}
    assert properties["late_days"] == "2" and properties["late_penalty"] == "0.2"
    assert properties["score_after_penalty"] == "8.0" and properties["score"] == "10.0"
    gradescope = render.gradescope(report)
    assert (
        gradescope["score"] == 8 and note in gradescope["output"] and sum(t["score"] for t in gradescope["tests"]) == 10
    )
    row = render.csv_row(report)
    assert (row["score"], row["late_days"], row["penalty"], row["final_score"], row["percent"]) == (10, 2, 0.2, 8, 80)
    beyond = late_report(5, 1.0)
    assert "handed in 5 days late (10% per day late, nothing after 3 days): -100%, 0 / 10 points" in beyond.summary()
    on_time = late_report(0, 0.0)
    assert on_time.late_note() == "" and on_time.final_score == 10 and "late" not in on_time.summary()
