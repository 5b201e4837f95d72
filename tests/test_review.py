"""`grade review`: a TA marks written answers in a local page. The server over HTTP (the token, the
CSRF checks, hostile answers made inert, manual.csv rewritten, stale marks), the command line, and
the whole workflow by keyboard in headless Chromium, across a reload and a restarted server."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from unittest.mock import ANY

import pytest

from grader.cli import main
from grader.environment import ROOT_ENV
from grader.errors import UserError
from grader.manual import MANUAL_FILE, read_marks
from grader.report import Report
from grader.review import Review
from grader.review_server import ReviewServer
from grader.spec import load_spec
from tests.chromium import chromium_fixture, needs_chromium  # noqa: F401 (the fixture)

SPEC = """
title = "Demo"
files = ["demo.py"]
[profiles.quick]
device = "cpu"
[profiles.full]
device = "cuda"

[[questions]]
id = "epochs"
points = 3
title = "5 epochs or 10?"
[[questions.rubric]]
id = "numbers"
points = 2
text = "Gives both accuracies"
[[questions.rubric]]
id = "why"
points = 2
text = "Explains why"
[[questions.rubric]]
id = "copied"
points = -1
text = "Copies the statement"

[[questions]]
id = "rates"
points = 2
title = "Learning rates"
[[questions.rubric]]
id = "numbers"
points = 2
text = "Compares the three rates"
"""
HOSTILE = """Accuracy rose <script>alert("answer")</script> then fell.

<img src="http://evil.example/pixel.png" onerror="alert(1)">
![a chart](http://evil.example/chart.png) [click me](javascript:alert(2)) [site](http://evil.example/)
<http://evil.example/auto> <a href="http://evil.example/raw">raw</a>
"""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write_reports(gradebook: Path, answers: dict[str, dict[str, str | None]], assignment: str = "demo") -> None:
    """The reports `grade batch` would have written, with these answers (None: not answered), and its ledger."""
    ledger = {}
    for student, texts in answers.items():
        entries = [
            {
                "question": q,
                "answered": t is not None,
                "text": t or "",
                "digest": digest(t or ""),
                "source": "answers.md",
            }
            for q, t in texts.items()
        ]
        report = Report(assignment, "Demo", student, "quick", "cpu", "mnist", 0.0, 10.0, 1.0, [], answers=entries)
        document = json.dumps(report.to_json(), indent=2) + "\n"
        (gradebook / "students" / student).mkdir(parents=True, exist_ok=True)
        (gradebook / "students" / student / "report.json").write_text(document)
        ledger[student] = {"key": "k", "status": "graded", "report": digest(document)}
    (gradebook / ".batch").mkdir(exist_ok=True)
    (gradebook / ".batch" / "ledger.json").write_text(json.dumps(ledger))


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kit with one assignment, `demo`, of two written questions; $GRADER_ROOT points at it."""
    (tmp_path / "kit" / "assignments" / "demo").mkdir(parents=True)
    (tmp_path / "kit" / "reference").mkdir()  # a kit, not a student bundle
    (tmp_path / "kit" / "assignments" / "demo" / "spec.toml").write_text(SPEC)
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "kit"))
    return tmp_path / "kit"


@pytest.fixture
def gradebook(kit: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "gradebook"
    write_reports(
        folder,
        {
            "ana": {"epochs": "Accuracy rose from **97%** to 98%.", "rates": "0.01 was best."},
            "binh": {"epochs": HOSTILE, "rates": None},
            "chi<b>": {"epochs": None},
        },
    )
    return folder


def review_of(gradebook: Path, grader: str = "tuan") -> Review:
    return Review(load_spec("demo"), gradebook, grader)


@contextlib.contextmanager
def serving(review: Review) -> Iterator[ReviewServer]:
    server = ReviewServer(review)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def request(url: str, data: dict | bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict, str]:
    """(status, headers, body) of a GET, or of a POST of `data`."""
    body = json.dumps(data).encode() if isinstance(data, dict) else data
    sent = urllib.request.Request(url, body, headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(sent, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def save(server: ReviewServer, mark: dict, **headers: str) -> tuple[int, dict]:
    sent = {"Content-Type": "application/json", "X-Review-Token": server.token} | headers
    status, _, body = request(f"http://127.0.0.1:{server.server_port}/{server.token}/mark", mark, sent)
    return status, json.loads(body)


def test_every_path_needs_the_token_and_every_response_forbids_the_rest(gradebook):
    with serving(review_of(gradebook)) as server:
        origin = f"http://127.0.0.1:{server.server_port}"
        status, headers, page = request(server.address)
        assert status == 200 and "5 epochs or 10?" in page
        nonce = re.search(r"script-src 'nonce-([\w-]+)'", headers["Content-Security-Policy"])[1]
        assert page.count("<script") == page.count(f'<script nonce="{nonce}">') == 1
        for part in ("default-src 'none'", "connect-src 'self'", "img-src data:", "base-uri 'none'", "form-action"):
            assert part in headers["Content-Security-Policy"]
        assert request(server.address)[1]["Content-Security-Policy"] != headers["Content-Security-Policy"]
        assert request(f"{origin}/{server.token}/q/rates")[0] == 200
        wrong = server.token[:-1] + ("a" if server.token[-1] != "a" else "b")
        for path in (
            "/",
            f"/{wrong}/",
            f"/{wrong}/q/rates",
            f"/{server.token}/q/nope",
            f"/{server.token}/x",
            "/q/rates",
        ):
            status, headers, body = request(origin + path)
            assert (status, body) == (404, "not found\n"), path
            assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert request(server.address, headers={"Host": f"evil.example:{server.server_port}"})[0] == 404


def test_a_save_needs_the_header_this_origin_and_json(gradebook):
    mark = {"student": "ana", "question": "epochs", "rubric": ["numbers"], "points": None, "comment": ""}
    with serving(review_of(gradebook)) as server:
        assert save(server, mark, **{"X-Review-Token": ""})[0] == 403
        assert save(server, mark, **{"X-Review-Token": server.token[:-2]})[0] == 403
        assert save(server, mark, Origin="http://evil.example")[0] == 403
        assert save(server, mark, **{"Content-Type": "text/plain"})[0] == 403
        assert not (gradebook / MANUAL_FILE).exists()
        elsewhere = f"http://127.0.0.1:{server.server_port}/{server.token[:-1]}x/mark"
        assert request(elsewhere, mark, {"X-Review-Token": server.token})[0] == 404
        status, answer = save(server, mark, Origin=f"http://127.0.0.1:{server.server_port}")
        assert status == 200 and answer["status"].startswith("saved: 2 of 3 points, by tuan at ")
        assert answer["count"] == "1 of 3 marked, 0 to review again" and answer["tab"] == "epochs 1/3"
    assert set(read_marks(gradebook)) == {("ana", "epochs")}


class Tags(HTMLParser):
    """Every tag of a page, with its attributes."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_a_hostile_answer_id_and_comment_come_out_inert(gradebook):
    comment = '</textarea><script>alert("ta")</script>'
    with serving(review_of(gradebook)) as server:
        assert save(server, {"student": "chi<b>", "question": "epochs", "rubric": [], "comment": comment})[0] == 200
        page = request(server.address)[2]
        token = server.token
    tags = Tags(page).tags
    assert [attrs for tag, attrs in tags if tag == "script"] == [{"nonce": ANY}]
    assert not {tag for tag, _ in tags} & {"img", "iframe", "object", "embed", "base", "form", "svg"}
    links = [attrs["href"] for tag, attrs in tags if "href" in attrs]
    assert links[0] == "data:," and all(link.startswith(f"/{token}/q/") for link in links[1:])  # the switcher's
    assert [tag for tag, _ in tags if tag == "a"] == ["a", "a"]  # the two questions': no answer's link is one
    assert not [name for _, attrs in tags for name in attrs if name.startswith("on") or name == "src"]
    assert "&lt;script&gt;alert(&quot;answer&quot;)&lt;/script&gt;" in page  # raw HTML is shown as text
    assert "&lt;img src=&quot;http://evil.example/pixel.png&quot; onerror=" in page
    assert "&lt;/textarea&gt;&lt;script&gt;alert(&quot;ta&quot;)" in page and "<h2>chi&lt;b&gt;</h2>" in page
    assert "[image: a chart]" in page and "[click me](javascript:alert(2))" in page  # no link to it: its text
    assert '<span class="inert">site</span> <span class="url">&lt;http://evil.example/&gt;</span>' in page
    assert '<span class="inert">http://evil.example/auto</span>' in page


def test_a_save_rewrites_manual_csv_with_the_points_of_the_ticks_unless_typed(gradebook):
    (gradebook / MANUAL_FILE).write_text(
        "id,question,points,rubric,comment,grader,time,answer\nold,epochs,1,,kept,lan,t,x\n"
    )
    with serving(review_of(gradebook)) as server:
        ticked = {"student": "ana", "question": "epochs", "rubric": ["why", "numbers"], "points": None, "comment": "ok"}
        assert save(server, ticked)[1]["points"] == "3"  # 4, within the question's 3
        marks = read_marks(gradebook)
        mark = marks[("ana", "epochs")]
        assert (mark.points, mark.rubric, mark.comment, mark.grader) == (3, ("numbers", "why"), "ok", "tuan")
        assert mark.answer == digest("Accuracy rose from **97%** to 98%.")
        assert marks[("old", "epochs")].comment == "kept"  # a row the review did not touch
        assert save(server, ticked | {"rubric": ["copied"]})[1]["points"] == "0"  # a deduction alone: 0, not -1
        assert save(server, ticked | {"points": "1,5"})[1]["points"] == "1.5"  # typed, with a decimal comma
        assert read_marks(gradebook)[("ana", "epochs")].points == 1.5
        for wrong in ({"points": "4"}, {"points": "-1"}, {"points": "lots"}, {"rubric": ["nope"]}, {"student": "zoe"}):
            status, answer = save(server, ticked | wrong)
            assert status == 400 and answer["error"], wrong
        assert read_marks(gradebook)[("ana", "epochs")].points == 1.5
        status, answer = save(server, ticked | {"rubric": [], "comment": " "})  # nothing left: not marked
        assert (status, answer["status"]) == (200, "saved: not marked")
        assert answer["count"] == "0 of 3 marked, 0 to review again"
        assert set(read_marks(gradebook)) == {("old", "epochs")}
        headers = {"X-Review-Token": server.token, "Content-Type": "application/json"}
        assert request(f"{server.address}mark", b"{", headers)[0] == 400  # not JSON


def test_a_mark_of_an_answer_changed_since_is_to_review_again(gradebook):
    mark = {"student": "ana", "question": "rates", "rubric": ["numbers"], "points": None, "comment": ""}
    with serving(review_of(gradebook)) as server:
        save(server, mark)
        assert "answer changed since marked" not in request(f"{server.address}q/rates")[2]
    write_reports(gradebook, {"ana": {"rates": "0.1 was best, in fact."}, "binh": {}})  # graded again
    with serving(review_of(gradebook)) as server:
        page = request(f"{server.address}q/rates")[2]
        assert page.count("answer changed since marked: review again") == 1
        assert "1 of 2 marked, 1 to review again" in page and "rates 1/2 !" in page
        assert save(server, mark)[1]["count"] == "1 of 2 marked, 0 to review again"  # looked at again: kept
    assert read_marks(gradebook)[("ana", "rates")].answer == digest("0.1 was best, in fact.")


def test_what_cannot_be_reviewed_is_one_line(kit, gradebook, tmp_path, capsys):
    (kit / "assignments" / "plain").mkdir()
    (kit / "assignments" / "plain" / "spec.toml").write_text(SPEC.split("[[questions]]")[0])
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        ("demoo", str(gradebook)): "error: unknown assignment 'demoo': did you mean demo?",
        ("plain", str(gradebook)): "error: plain has no written questions ([[questions]] in its spec.toml)",
        ("demo", str(empty)): f"error: {empty}: no graded reports (students/<id>/report.json): run `grade batch` first",
        ("demo", str(tmp_path / "missing")): "error: ",
    }
    for (assignment, folder), said in cases.items():
        assert main(["review", assignment, folder, "--grader", "tuan"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(said) and err.count("\n") == 1, err
    write_reports(tmp_path / "other", {"ana": {}}, assignment="assignment9")
    with pytest.raises(UserError, match="holds the reports of assignment9, not of demo"):
        review_of(tmp_path / "other")
    (gradebook / "students" / "ana" / "report.json").write_text("{}")  # not what the batch wrote: left out
    ledger = json.loads((gradebook / ".batch" / "ledger.json").read_text())
    ledger["binh"]["status"] = "error"  # the grading failed: its answers were not read
    (gradebook / ".batch" / "ledger.json").write_text(json.dumps(ledger))
    left = review_of(gradebook)
    assert left.students == ["chi<b>"]
    assert left.left_out == [
        "left out ana: not the report `grade batch` wrote",
        "left out binh: the grader failed on it: `grade batch --failed`",
    ]


def test_grade_review_prints_its_address_and_stops_on_ctrl_c(kit, gradebook):
    env = os.environ | {ROOT_ENV: str(kit), "USER": "lan"}
    command = [sys.executable, "-m", "grader", "review", "demo", str(gradebook)]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        line = process.stdout.readline()
        address = re.fullmatch(r"review demo at (http://127\.0\.0\.1:\d+/[\w-]{32}/) \(Ctrl-C to stop\)\n", line)[1]
        token = address.split("/")[3]
        mark = {"student": "ana", "question": "epochs", "rubric": ["why"]}
        assert request(address + "mark", mark, {"X-Review-Token": token, "Content-Type": "application/json"})[0] == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0 and err == "", err
    assert out == f"stopped: the marks are in {gradebook / MANUAL_FILE}\n"
    assert read_marks(gradebook)[("ana", "epochs")].grader == "lan"


# --- in Chromium: the TA's workflow, by keyboard ------------------------------------------------

ROWS = """JSON.stringify([...document.querySelectorAll("section.student")].map(row => ({
  student: row.dataset.student, state: row.dataset.state, status: row.querySelector(".status").textContent,
  ticked: [...row.querySelectorAll("input[data-item]:checked")].map(box => box.dataset.item),
  points: row.querySelector("input.points").value, comment: row.querySelector("textarea.comment").value})))"""


def shown(tab) -> dict[str, dict]:
    return {row["student"]: row for row in json.loads(tab.evaluate(ROWS))}


def check_marks(tab) -> None:
    rows = shown(tab)
    assert rows["ana"]["ticked"] == ["numbers"] and rows["ana"]["points"] == "2", rows["ana"]
    assert rows["ana"]["status"].startswith("2 of 3 points, by tuan at ")
    assert rows["binh"]["ticked"] == ["numbers", "why"] and rows["binh"]["points"] == "3"
    assert rows["binh"]["comment"] == "Both <numbers> & why"
    assert rows["chi<b>"]["state"] == "unmarked" and rows["chi<b>"]["status"] == "not marked"
    assert tab.evaluate('document.getElementById("count").textContent') == "2 of 3 marked, 0 to review again"


@needs_chromium
def test_a_ta_marks_two_answers_by_keyboard_and_they_stay_marked(chromium, gradebook):
    with serving(review_of(gradebook)) as server:
        tab = chromium.tab(server.address)
        tab.key("1")  # ana: tick "numbers"
        tab.wait_for('document.querySelector("#s0").dataset.state === "saved"')
        tab.key("j")  # binh
        for key in ("1", "2"):
            tab.key(key)
        tab.key("c")
        tab.type("Both <numbers> & why")
        tab.key("Escape")
        tab.wait_for(
            'document.querySelector("#s1").dataset.state === "saved"'
            ' && document.querySelector("#s1 .status").textContent.startsWith("saved: 3 of 3")'
        )
        assert tab.evaluate("document.activeElement === document.body")  # Escape left the comment
        tab.reload()
        check_marks(tab)
        assert tab.evaluate('document.querySelector("section.current").id') == "s1"  # where the TA was
        requests, errors = tab.requests(), tab.errors()
        tab.close()
    with serving(review_of(gradebook)) as restarted:
        tab = chromium.tab(restarted.address)
        check_marks(tab)
        tab.go(lambda: tab.key("n"))  # the next question
        assert tab.evaluate("location.pathname + location.hash") == f"/{restarted.token}/q/rates#s0"
        requests += tab.requests()
        errors += tab.errors()
        tab.close()
    assert errors == []
    own = (f"http://127.0.0.1:{server.server_port}/{server.token}/", restarted.address)
    assert all(url.startswith(own) for url in requests), requests  # the page loads nothing but itself
    assert sum(url.endswith("/mark") for url in requests) >= 2  # each change posted
    with (gradebook / MANUAL_FILE).open() as file:
        rows = {row["id"]: row for row in csv.DictReader(file)}
    assert set(rows) == {"ana", "binh"}
    assert (rows["binh"]["rubric"], rows["binh"]["points"]) == ("numbers;why", "3")
    assert rows["binh"]["comment"] == "Both <numbers> & why"
    assert rows["ana"]["answer"] == digest("Accuracy rose from **97%** to 98%.") and rows["ana"]["grader"] == "tuan"
