"""Run an assignment's tests with pytest in a child process and read its result records.

The child runs only the instructor's tests (from the kit, never from the submission), with the
kit's own pytest configuration, in an empty working folder. It reports through a pipe; what it
prints goes to a log that is read only when the grader itself breaks.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.sandbox import PARENT_ENV
from grader.spec import Spec

_KEPT_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "HOME",
    "USER",
    "CUDA_VISIBLE_DEVICES",
    "XDG_CACHE_HOME",
    "TORCH_HOME",
    "GRADER_DATA_DIR",
    "GRADER_DOWNLOAD",
    "GRADER_THREADS",
    "GRADER_ISOLATION",
)


@dataclass
class Run:
    """What one child run reported: its records, how it ended, and the tail of its log."""

    session: dict[str, Any] = field(default_factory=dict)
    collected: list[dict[str, Any]] | None = None
    collect_errors: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    finished: bool = False
    exit_code: int | None = None
    timed_out: bool = False
    duration_s: float = 0.0
    log_tail: str = ""


def test_paths(spec: Spec) -> list[Path]:
    """The public tests, and the hidden ones where the kit has them."""
    return [p for p in (spec.tests_dir, spec.hidden_dir) if p.is_dir()]


def run_tests(
    spec: Spec,
    submission: Path,
    profile: str = "auto",
    data_dir: str | None = None,
    select_expr: str | None = None,
    marks: str | None = None,
    env: dict[str, str] | None = None,
    cancel: threading.Event | None = None,
) -> Run:
    """Grade `submission` (a folder) with the spec's tests in a fresh pytest process.

    Setting `cancel` stops the run at once (a batch being interrupted): its results are partial.
    """
    args = ["--submission", str(submission), "--profile", profile]
    args += ["--data-dir", data_dir] if data_dir else []
    args += selection(select_expr, marks)
    return _pytest(spec.root, test_paths(spec), args, spec.limits.total_timeout_s, env, cancel)


def selection(select_expr: str | None = None, marks: str | None = None) -> list[str]:
    """pytest's arguments for a -k expression and a -m expression."""
    return (["-k", select_expr] if select_expr else []) + (["-m", marks] if marks else [])


def collect(root: Path, specs: list[Spec], timeout_s: float = 120, args: tuple[str, ...] = ()) -> Run:
    """Collect the tests of several assignments (no test runs, no student code is read)."""
    paths = [p for spec in specs for p in test_paths(spec)]
    return _pytest(root, paths, ["--collect-only", *args], timeout_s)


def _pytest(
    root: Path,
    paths: list[Path],
    args: list[str],
    timeout_s: float,
    env: dict[str, str] | None = None,
    cancel: threading.Event | None = None,
) -> Run:
    assignments = root / "assignments"
    read_fd, write_fd = os.pipe()
    command = [
        sys.executable,
        "-m",
        "pytest",
        *map(str, paths),
        "-c",
        str(assignments / "pytest.ini"),
        "--rootdir",
        str(assignments),
        "-p",
        "no:cacheprovider",
        "-q",
        "--no-header",
        "-rN",
        "--results-fd",
        str(write_fd),
        *args,
    ]
    child_env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV}
    child_env.update(env or {})
    child_env.update(
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        **{PARENT_ENV: str(os.getpid())},  # it dies with us
    )
    run = Run()
    started = time.monotonic()
    # in the child's own TMPDIR when it has one (a batch worker's folder, removed with it)
    scratch = tempfile.TemporaryDirectory(prefix="grader-run-", dir=(env or {}).get("TMPDIR"))
    with scratch as workdir, open(Path(workdir, "log"), "w+b") as log:
        child = subprocess.Popen(
            command,
            cwd=workdir,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
        os.close(write_fd)
        run.timed_out = not _read_records(read_fd, run, started + timeout_s, cancel)
        _stop(child, grace_s=0 if run.timed_out else 5)
        run.exit_code = child.returncode
        log.seek(0)
        run.log_tail = log.read().decode("utf-8", errors="replace")[-4000:]
    run.duration_s = time.monotonic() - started
    return run


def _read_records(fd: int, run: Run, deadline: float, cancel: threading.Event | None = None) -> bool:
    """Read JSON lines until the child closes the pipe; False if the deadline (or `cancel`) came first."""
    pending = b""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (cancel is not None and cancel.is_set()):
                return False
            ready, _, _ = select.select([pipe], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = pipe.read(1 << 16)
            if not chunk:
                return True
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                _take(json.loads(line), run)


def _take(record: dict[str, Any], run: Run) -> None:
    kind = record.pop("kind")
    if kind == "session":
        run.session = record
    elif kind == "collected":
        run.collected = record["tests"]
    elif kind == "collect_error":
        run.collect_errors.append(record)
    elif kind == "result":
        run.results[record["nodeid"]] = record
    elif kind == "done":
        run.finished = True


def _stop(child: subprocess.Popen, grace_s: float) -> None:
    """End the child and what it started in its group (its fork server), after `grace_s` to finish."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, 9)
    child.wait()
