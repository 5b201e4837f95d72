"""The gallery (tests/gallery/gallery.toml): hostile and broken hand-ins of assignment2, graded in one
batch next to the reference, as root and as a normal user (with TMPDIR outside /tmp). Each gets what
it earned, with a clear reason, and none stops the batch, reaches another student, the gradebook,
the hidden tests, the reference, the network or the machine, or outlives the batch."""

from __future__ import annotations

import base64
import csv
import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from grader.grading import grade
from grader.options import GradingOptions
from grader.render import spreadsheet_cell
from grader.report import Report
from grader.sandbox import platform
from tests.gallery import ENTRIES, LIMITS, build, problems
from tests.kit import ROOT, requires, spec_of

CANARY = "canary-8c1f3e"  # in the batch's environment, as an instructor's token would be
TEST_USER = "grader-kit-test"
pytestmark = requires(platform.mechanism() == platform.BWRAP, "bubblewrap is missing or refused here")


class Listener:
    """A TCP listener on the loopback that remembers whether anything connected."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.socket.accept()[0].close()
            except OSError:
                return
            self.connections += 1


def normal_user() -> tuple[int, int]:
    """A user of the kit's tests' own, created once: an instructor grading as themselves."""
    try:
        user = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", TEST_USER], check=True)
        user = pwd.getpwnam(TEST_USER)
    return user.pw_uid, grp.getgrgid(user.pw_gid).gr_gid


def grade_gallery(folder: Path, as_user: tuple[int, int] | None) -> dict[str, Report]:
    """The whole gallery in one batch, in a process of its own; the reports it saved, by student."""
    listener = Listener()
    tmp = folder / "tmp"  # outside /tmp
    for path in (folder, tmp, folder / "home"):
        path.mkdir(parents=True, exist_ok=True)
        if as_user:
            os.chown(path, *as_user)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(folder / "home"),
        "TMPDIR": str(tmp),
        "PYTHONPATH": str(ROOT),
        "INSTRUCTOR_TOKEN": CANARY,
    }
    command = [sys.executable, "-m", "tests.gallery.batch", str(folder / "run"), str(listener.port)]
    if as_user:
        command = [sys.executable, "-m", "tests.as_user", *map(str, as_user), *command]
        (folder / "run").mkdir()
        os.chown(folder / "run", *as_user)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    listener.socket.close()
    out = folder / "run" / "grades"
    reports = {p.parent.name: Report.from_json(json.loads(p.read_text())) for p in out.glob("students/*/report.json")}
    return {"reports": reports, "out": out, "run": folder / "run", "tmp": tmp, "connections": listener.connections}


@pytest.fixture(scope="module")
def as_root(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return grade_gallery(tmp_path_factory.mktemp("root"), None)


@pytest.fixture(scope="module")
def as_normal_user(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("user")
    for parent in (folder, *folder.parents):  # pytest's temporary folders are the user's own (0700)
        if parent == Path(parent.anchor) or parent.stat().st_mode & 0o005 == 0o005:
            break
        parent.chmod(parent.stat().st_mode | 0o005)
    return grade_gallery(folder, normal_user())


MODES = ["as_root", "as_normal_user"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(ENTRIES))
def test_each_hand_in_gets_what_it_earned(request, mode, name):
    graded = request.getfixturevalue(mode)
    status = json.loads((graded["out"] / ".batch" / "ledger.json").read_text())[name]["status"]
    report = graded["reports"][name]
    assert not problems(ENTRIES[name], report, status), report.summary()
    assert report.isolation in ("bubblewrap + namespaces per probe", "not run")


def test_a_normal_user_gets_the_grades_root_gets(as_root, as_normal_user):
    for name in ENTRIES:
        first, second = as_root["reports"][name], as_normal_user["reports"][name]
        assert [(t.nodeid, t.status) for t in first.tests] == [(t.nodeid, t.status) for t in second.tests], name
        assert first.score == second.score, name


def secrets_of_the_kit() -> set[str]:
    """Lines of the hidden tests, their probes and the reference that no student could know (not in the
    public tests, probes or starter), with their base64 and hex: none may appear in an output file."""
    spec = spec_of("assignment2")
    public = {
        line.strip()
        for folder in (spec.tests_dir, spec.starter_dir)
        for path in folder.rglob("*.py")
        for line in path.read_text().splitlines()
    } | {line.strip() for line in (spec.folder / "probes.py").read_text().splitlines()}
    private = [*spec.hidden_dir.rglob("*.py"), *spec.reference_dir.rglob("*.py")]
    lines = {line.strip() for path in private for line in path.read_text().splitlines()}
    found = set()
    for line in (line for line in lines if len(line) >= 16 and line not in public):
        found |= {line, base64.b64encode(line.encode()).decode()[:20], line.encode().hex()[:32]}
    return found


@pytest.mark.parametrize("mode", MODES)
def test_no_secret_reaches_an_output_file(request, mode):
    graded = request.getfixturevalue(mode)
    secrets = secrets_of_the_kit() | {CANARY}
    assert len(secrets) > 30
    files = [p for p in graded["out"].rglob("*") if p.is_file() and ".batch" not in p.parts]
    assert any(p.name == "feedback.md" for p in files)
    for path in files:
        text = path.read_text(errors="replace")
        leaked = [secret for secret in secrets if secret in text]
        assert not leaked, f"{path} holds {leaked[:3]}"


@pytest.mark.parametrize("mode", MODES)
def test_the_gradebook_and_other_hand_ins_are_out_of_reach(request, mode):
    graded = request.getfixturevalue(mode)
    out, submissions = graded["out"], graded["run"] / "submissions"
    spec = spec_of("assignment2")
    for student in ("reference", "starter"):
        for file in spec.files:
            base = spec.reference_dir if student == "reference" else spec.starter_dir
            assert (submissions / student / file).read_text() == (base / file).read_text(), (student, file)
    rows = {row["id"]: row for row in csv.DictReader((out / "grades.csv").open())}
    assert set(rows) == {spreadsheet_cell(name) for name in ENTRIES}  # `=1+2` is `'=1+2` in a spreadsheet
    assert float(rows["reference"]["score"]) == float(rows["reference"]["max_score"]) > 0
    assert float(rows["tampers-with-the-batch"]["score"]) == graded["reports"]["tampers-with-the-batch"].score
    ledger = json.loads((out / ".batch" / "ledger.json").read_text())
    assert set(ledger) == set(ENTRIES)
    assert graded["connections"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_hand_in_s_text_and_names_reach_no_terminal_spreadsheet_or_reader_raw(request, mode):
    graded = request.getfixturevalue(mode)
    out = graded["out"]
    gradebook = ("grades.csv", "legend.csv", "canvas.csv", "moodle.csv", "junit.xml", "summary.md", "index.html")
    assert all((out / name).is_file() for name in gradebook)
    suites = ET.parse(out / "junit.xml").getroot()
    assert {suite.get("name") for suite in suites} == set(ENTRIES)
    files = [p for p in out.rglob("*") if p.is_file() and ".batch" not in p.parts]
    for path in [*files, graded["run"] / "terminal.txt"]:
        data = path.read_bytes()
        assert b"\x1b" not in data and b"\x07" not in data, path
    hostile = graded["reports"]["hostile-text"]
    assert "\\x1b]52;c;ZXZpbA==\\x07" in "".join(t.output + t.reason for t in hostile.tests)  # shown, harmless
    for name in ("=1+2", "@SUM(A1)"):  # graded as the reference is: only their cells are escaped
        assert graded["reports"][name].score == graded["reports"]["reference"].score > 0
    names = {name for name in ENTRIES if name.startswith(("=", "+", "-", "@"))}
    for sheet in ("grades.csv", "canvas.csv", "moodle.csv"):
        cells = [cell for row in csv.reader((out / sheet).open(newline="")) for cell in row]
        assert {f"'{name}" for name in names} <= set(cells), sheet
        assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@"))], sheet


@pytest.mark.parametrize("mode", MODES)
def test_nothing_outlives_the_batch_and_nothing_is_left_on_disk(request, mode):
    graded = request.getfixturevalue(mode)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 4711" not in ps
    assert list(graded["tmp"].iterdir()) == []  # the workers' folders, and every probe's files, are gone
    assert "lingers,100,100" not in (graded["out"] / "grades.csv").read_text()


def test_a_forged_result_and_a_label_lookup_score_zero_in_grade_too(tmp_path):
    """`grade` (not only `grade batch`), with the trained-accuracy test: the forger at import, and a
    "net" that would look each test image up in the dataset it cannot open (its train_ch6 trains nothing)."""
    spec = spec_of("assignment2")
    (tmp_path / "a").mkdir()
    forger = build(ENTRIES["forged-result-at-import"], spec, tmp_path / "a", tmp_path / "out")
    assert grade(spec, forger, GradingOptions(profile="quick", limits=LIMITS)).score == 0
    lookup = tmp_path / "lookup"
    shutil.copytree(spec.reference_dir, lookup)
    (lookup / "training.py").write_text(
        (spec.reference_dir / "training.py").read_text() + "\n\ndef train_ch6(*args, **kwargs):\n    return 0, 0, 0\n"
    )
    (lookup / "lenet.py").write_text((ROOT / "tests" / "gallery" / "lookup_net.py").read_text())
    report = grade(spec, lookup, GradingOptions(profile="quick", select="trained_accuracy"))
    (accuracy,) = report.tests
    assert accuracy.status == "failed" and "is below the 85% required" in accuracy.reason, accuracy.reason
    assert report.score == 0


def test_the_gallery_covers_the_threat_model():
    limits = {entry.get("limit") for entry in ENTRIES.values()}
    assert {"cpu", "memory", "processes", "output", "files"} <= limits
    assert {e.get("status", "graded") for e in ENTRIES.values()} == {"graded", "unreadable"}
    names = set(ENTRIES)
    assert {
        "forged-result-at-import",
        "walks-frames-and-gc",
        "reads-the-machine",
        "stashes-for-the-next-probe",
    } <= names
    assert {
        "crafted-result",
        "network",
        "lingers",
        "tampers-with-the-batch",
        "kill-everyone",
        "fills-the-disk",
    } <= names
    assert "environment-canary" in names
    assert {"hostile-text", "=1+2", "@SUM(A1)"} <= names
