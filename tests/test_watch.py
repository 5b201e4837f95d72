"""`grade --watch`: a table after every save, a half-typed file said in one line, nothing left after Ctrl-C."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from grader.spec import load_spec
from grader.watch import QUICK_MARKS, fingerprint, watched_files
from tests.kit import ROOT

GRADE = [sys.executable, "-c", "from grader.cli import run; run()"]


def test_a_folder_is_watched_by_the_assignments_files_and_a_file_by_itself(tmp_path):
    spec = load_spec("assignment2", ROOT)
    assert watched_files(tmp_path, spec) == [tmp_path / "lenet.py", tmp_path / "training.py", tmp_path / "answers.md"]
    notebook = tmp_path / "lenet.ipynb"
    assert watched_files(notebook, spec) == [notebook]
    before = fingerprint([notebook])
    assert before == (None,)
    notebook.write_text("{}")
    assert fingerprint([notebook]) != before


def test_watch_takes_no_report_files():
    done = subprocess.run([*GRADE, "assignment2", "--watch", "--json", "r.json"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --watch shows the table only: leave out --json"


def _read_until(process: subprocess.Popen, marker: str, timeout_s: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    seen, deadline = "", time.monotonic() + timeout_s
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0 and selector.select(remaining), f"no {marker!r} in:\n{seen[-3000:]}"
        chunk = os.read(process.stdout.fileno(), 1 << 16).decode(errors="replace")
        assert chunk, f"the watch ended before {marker!r}:\n{seen[-3000:]}"
        seen += chunk
    return seen


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.add(int(status.parent.name))
    return found


def test_a_save_grades_again_a_syntax_error_is_one_line_and_ctrl_c_stops_everything(tmp_path):
    copy = tmp_path / "submission"
    shutil.copytree(ROOT / "reference" / "assignment2", copy)
    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.Popen(
        [*GRADE, "assignment2", "--watch", "--submission", str(copy)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        first = _read_until(process, "started:", 300)
        assert f"tests marked '{QUICK_MARKS}' graded in" in first
        assert "assignment2: 10 / 10 points" in first  # the LeNet checks; the training ones wait for `t`
        warm = _children(process.pid)
        assert warm, "no warm grading process"

        lenet = copy / "lenet.py"
        lenet.write_text(lenet.read_text() + "\ndef half_typed(:\n")
        broken = _read_until(process, "saved:", 120)
        assert "lenet.py could not be loaded (SyntaxError" in broken
        assert "Traceback" not in broken
        assert "assignment2: 0 / 10 points" in broken

        shutil.copy(ROOT / "reference" / "assignment2" / "lenet.py", lenet)
        fixed = _read_until(process, "saved:", 120)
        assert "assignment2: 10 / 10 points" in fixed
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    assert code == 130
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in warm) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in warm if Path(f"/proc/{pid}").exists()], "the warm process outlived the watch"


def test_keys_are_read_only_from_a_terminal():
    from grader.watch import _keys

    with _keys() as pressed:  # the tests' stdin is no terminal: no key ever comes, and nothing hangs
        started = time.monotonic()
        assert pressed(0.05) is None
        assert time.monotonic() - started < 1
