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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from grader.environment import DATA_DIR_ENV, DOWNLOAD_ENV, PARENT_ENV, SANDBOX_ENV, ZYGOTE_ENV
from grader.options import GradingOptions
from grader.plugin.records import (
    CollectedTest,
    CollectErrorRecord,
    LoadErrorRecord,
    ResultRecord,
    ScreenLine,
    Selection,
    SessionRecord,
)
from grader.spec import Spec

if TYPE_CHECKING:
    from grader.batch.warm import WarmWorker
    from grader.sandbox.api import Zygote

# The grading child's environment: what Python, torch and the datasets need, nothing else of ours.
_KEPT_ENV = ("PATH", "LANG", "LC_ALL", "HOME", "USER", "CUDA_VISIBLE_DEVICES", "XDG_CACHE_HOME", "TORCH_HOME")
_KEPT_ENV += (DATA_DIR_ENV, DOWNLOAD_ENV, SANDBOX_ENV)


@dataclass
class Run:
    """What one child run reported: its records, how it ended, and the tail of its log."""

    # {} until the session record came; where no run made one, a stand-in's few fields (grader.batch's zero report)
    session: SessionRecord | dict[str, Any] = field(default_factory=dict)
    collected: list[CollectedTest] | None = None  # None until the collected record came
    selection: Selection | dict[str, Any] = field(default_factory=dict)  # -k/-m and what they left out; {} before
    collect_errors: list[CollectErrorRecord] = field(default_factory=list)
    results: dict[str, ResultRecord] = field(default_factory=dict)  # by nodeid
    load_errors: list[LoadErrorRecord] = field(default_factory=list)
    finished: bool = False
    done_status: int | None = None  # pytest's exit status, as the session reported it before exiting
    exit_code: int | None = None
    usage_error: str = ""  # pytest's "ERROR: ..." line when the grading could not start (exit code 4)
    sandbox_broken: str = ""  # why the sandbox could not start (the grader's problem, not the submission's)
    timed_out: bool = False
    duration_s: float = 0.0
    log_tail: str = ""


def test_paths(spec: Spec) -> list[Path]:
    """The public tests, and the official and hidden ones where the kit has them."""
    return [p for p in (spec.tests_dir, spec.official_dir, spec.hidden_dir) if p.is_dir()]


def run_tests(
    spec: Spec,
    submission: Path,
    options: GradingOptions,
    env: dict[str, str] | None = None,
    cancel: threading.Event | None = None,
    worker: WarmWorker | None = None,
    on_progress: Callable[[ScreenLine], None] | None = None,
    lent: Zygote | None = None,
) -> Run:
    """Grade `submission` (a folder) with the spec's tests in a pytest child: a fresh process, or a
    fork of a warm `worker`'s.

    The child gets `options` as one document; `env` adds to its environment (a worker's TMPDIR).
    Setting `cancel` stops the run at once (a batch being interrupted): its results are partial.
    `on_progress` gets the records that only the screen needs: a test starting, a probe's progress.
    A fresh child takes over the `lent` zygote (grader.plugin.early), already importing torch.
    """
    args = ["--submission", str(submission), *selection(options.select, options.marks)]
    total = options.apply(spec.limits).total_timeout_s
    env = {**(env or {}), **options.child_env()}
    return _pytest(spec.root, test_paths(spec), args, total, env, cancel, worker, on_progress, lent)


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
    worker: WarmWorker | None = None,
    on_progress: Callable[[ScreenLine], None] | None = None,
    lent: Zygote | None = None,
) -> Run:
    """One pytest session in a child: a fresh process, or a fork of a warm worker's."""
    assignments = root / "assignments"
    read_fd, write_fd = os.pipe()
    options = [*map(str, paths), "-c", str(assignments / "pytest.ini"), "--rootdir", str(assignments)]
    options += ["-p", "no:cacheprovider", "-q", "--no-header", "-rN", *args]
    child_env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV}
    child_env.update(env or {})
    child_env.update(
        PYTHONDONTWRITEBYTECODE="1",
        OMP_WAIT_POLICY="PASSIVE",  # torch's idle threads sleep: spinning ones cost 100x on a busy machine
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        **{PARENT_ENV: str(os.getpid())},  # it dies with us
    )
    run = Run()
    started = time.monotonic()
    # in the child's own TMPDIR when it has one (a batch worker's folder, removed with it)
    scratch = tempfile.TemporaryDirectory(prefix="grader-run-", dir=(env or {}).get("TMPDIR"))
    with scratch as workdir:
        if worker is not None:
            warm = worker.start(options, child_env, workdir, write_fd)
            pid = warm.pid
        else:  # grader.plugin.early: the child takes the `lent` zygote over, or starts one before importing torch
            command = [sys.executable, "-m", "pytest", "-p", "grader.plugin.early", *options]
            command += ["--results-fd", str(write_fd)]
            lent_fds, handed = lent.handover() if lent is not None else ([], "")
            with open(Path(workdir, "log"), "wb") as log:
                child = subprocess.Popen(
                    command,
                    cwd=workdir,
                    env={**child_env, ZYGOTE_ENV: handed} if handed else child_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(write_fd, *lent_fds),
                    start_new_session=True,
                )
            pid = child.pid
        os.close(write_fd)
        run.timed_out = not _read_records(read_fd, run, started + timeout_s, cancel, on_progress)
        if worker is not None:
            if run.timed_out:
                _kill_group(pid)
            code = warm.wait()
        else:
            # a session that ended as sessions do (0 all passed, 1 some failed) has sent every record:
            # Python's own exit (torch's) is not worth waiting for; any other status explains itself after
            code = _stop(child, grace_s=0 if run.timed_out or run.done_status in (0, 1) else 5)
        run.exit_code = code if run.done_status is None else run.done_status
        run.log_tail = Path(workdir, "log").read_bytes().decode("utf-8", errors="replace")[-4000:]
    if run.exit_code == 4:  # a mistake in what was asked (pytest.UsageError): the user's, in one line
        errors = [line for line in run.log_tail.splitlines() if line.startswith("ERROR: ")]
        run.usage_error = errors[-1].removeprefix("ERROR: ") if errors else ""
    run.duration_s = time.monotonic() - started
    return run


def _read_records(
    fd: int,
    run: Run,
    deadline: float,
    cancel: threading.Event | None = None,
    on_progress: Callable[[ScreenLine], None] | None = None,
) -> bool:
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
                record = json.loads(line)
                if record["kind"] in ("start", "progress"):
                    if on_progress is not None:
                        on_progress(record)
                else:
                    _take(record, run)


def _take(record: dict[str, Any], run: Run) -> None:
    kind = record.pop("kind")
    if kind == "session":
        run.session = cast("SessionRecord", record)
    elif kind == "collected":
        run.collected = record["tests"]
        run.selection = record.get("selection", {})
    elif kind == "collect_error":
        run.collect_errors.append(cast("CollectErrorRecord", record))
    elif kind == "result":
        run.results[record["nodeid"]] = cast("ResultRecord", record)
    elif kind == "load_error":
        run.load_errors.append(cast("LoadErrorRecord", record))
    elif kind == "sandbox_broken":
        run.sandbox_broken = str(record["reason"])
    elif kind == "done":
        run.finished = True
        run.done_status = record["exitstatus"]


def _stop(child: subprocess.Popen, grace_s: float) -> int:
    """End the child and what it started in its group (its zygote), after `grace_s` to finish; its exit code."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=grace_s)
    _kill_group(child.pid)
    return child.wait()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, 9)
