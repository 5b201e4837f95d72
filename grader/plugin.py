"""The grader's pytest plugin: markers, fixtures, blank-aware reasons and result records.

`assignments/conftest.py` loads it, so plain `pytest assignments/assignment2` and `grade
assignment2` run the same tests with the same outcomes. Under `grade`, the session also writes
one JSON line per event to the pipe given by `--results-fd`: the session, the collected tests
(known before any student code runs), then one result per test.

Markers:
  @pytest.mark.points(n)        what the test is worth (split evenly over parametrized cases)
  @pytest.mark.task("net", ...) the starter definitions the test exercises: a failing test whose
                                tasks still have open blanks names the first, by file and line
  @pytest.mark.accuracy         a trained-accuracy check: the profile's time limit applies
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from grader import blanks as blanks_mod
from grader import data
from grader.errors import UserError
from grader.sandbox import (
    GPU_FRACTION_ENV,
    HIDE_ENV,
    LIMITS_ENV,
    PARENT_ENV,
    THREADS_ENV,
    Sandbox,
    SandboxLimits,
    SubmissionError,
    can_hide_files,
    dedicated_user,
    die_with_parent,
    isolation_user,
    make_undumpable,
    start_server,
    wait_for_server,
)
from grader.spec import Profile, Spec, load_spec
from grader.submission import Materialized, materialize
from grader.testing import derived_seed, grading_seed, use_seed

SUBMISSION_ENV = "GRADER_SUBMISSION"
PROFILE_ENV = "GRADER_PROFILE"
REDACTED = "[hidden test source removed]"
NOT_FILLED = "not filled in yet"
_TIMEOUT_MARGIN_S = 1.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("grader")
    group.addoption("--submission", help="what to grade (default: the assignment's starter)")
    group.addoption("--profile", choices=("quick", "full", "auto"), help="grading profile (default: quick)")
    group.addoption("--data-dir", help="the folder that holds the datasets")
    group.addoption("--results-fd", type=int, help=argparse.SUPPRESS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "points(n): what the test is worth")
    config.addinivalue_line("markers", "task(*names): the starter definitions the test exercises")
    config.addinivalue_line("markers", "accuracy: a trained-accuracy check, under the profile's time limit")
    use_seed(int(os.environ.get("GRADER_SEED") or secrets.randbits(62)))  # inputs no submission can know
    fd = config.getoption("results_fd", None)
    if fd is not None:
        make_undumpable()  # the sandboxes run as our user: keep them out of this process
        if os.environ.get(PARENT_ENV):
            die_with_parent(int(os.environ[PARENT_ENV]))
    hide = tuple(filter(None, os.environ.pop(HIDE_ENV, "").split(os.pathsep)))  # before the sandboxes see it
    if not config.option.collectonly:  # start it now: its imports overlap with collection
        specs = [s for s in (_spec_for(Path(a.split("::")[0]).resolve()) for a in config.args) if s]
        start_server(tuple(sorted({m for spec in specs for m in spec.sandbox_preload})))
    config.pluginmanager.register(Grading(config, fd, hide), "grader-session")


def _spec_for(path: Path) -> Spec | None:
    """The spec of the assignment folder that holds `path`, if any."""
    for folder in (path, *path.parents):
        if (folder / "spec.toml").is_file() and folder.parent.name == "assignments":
            spec = load_spec(folder.name, folder.parent.parent)
            overrides = json.loads(os.environ.get(LIMITS_ENV) or "{}")
            return replace(spec, limits=replace(spec.limits, **overrides)) if overrides else spec
    return None


def hidden_source_lines(spec: Spec) -> frozenset[str]:
    """The lines of the hidden tests that students cannot know (not in the public tests or the starter)."""
    if not spec.hidden_dir.is_dir():
        return frozenset()
    public = {
        line.strip()
        for folder in (spec.tests_dir, spec.starter_dir)
        if folder.is_dir()
        for path in folder.rglob("*.py")
        for line in path.read_text().splitlines()
    }
    lines = (line.strip() for path in spec.hidden_dir.rglob("*.py") for line in path.read_text().splitlines())
    return frozenset(line for line in lines if len(line) >= 12 and line not in public)


def redact(text: str, secrets: frozenset[str]) -> str:
    """`text` without any line that quotes a hidden test (the student's output goes into reports)."""
    if not secrets or not text:
        return text
    return "\n".join(REDACTED if any(s in line for s in secrets) else line for line in text.split("\n"))


def test_title(item: pytest.Item) -> str:
    """A test's display name: its docstring's first line (else its name), plus its case."""
    func = getattr(item, "function", None)
    doc = (func.__doc__ or "").strip().splitlines() if func else []
    title = doc[0].rstrip(".") if doc else item.name.split("[")[0].removeprefix("test_").replace("_", " ")
    case = getattr(item, "callspec", None)
    return f"{title} [{case.id}]" if case else title


def item_tasks(item: pytest.Item) -> tuple[str, ...]:
    return tuple(a for m in item.iter_markers("task") for a in m.args)


@dataclass
class Submission:
    """The student's code as a test sees it: probes run in the sandbox; open blanks are known."""

    spec: Spec
    materialized: Materialized
    sandbox: Sandbox
    open_blanks: list[blanks_mod.Blank]
    total_blanks: int
    deadline: float | None = None

    def run(self, probe: Callable[..., Any], *args: Any, seed: int = 0, timeout_s: float | None = None) -> Any:
        """Run `probe(sub, *args)` next to the student's code and return its result, as data.

        Without `timeout_s`, the probe gets what is left of the test's own time limit.
        """
        if timeout_s is None and self.deadline is not None:
            timeout_s = max(self.deadline - time.monotonic() - _TIMEOUT_MARGIN_S, 1.0)
        seed = derived_seed(f"sandbox:{probe.__name__}:{seed}")
        return self.sandbox.run(probe, *args, seed=seed, timeout_s=timeout_s)

    def blanks_for(self, tasks: tuple[str, ...]) -> list[blanks_mod.Blank]:
        return [b for b in self.open_blanks if b.task in tasks]


@dataclass
class Assignment:
    """What one assignment's tests share during a session."""

    spec: Spec
    profile: Profile
    submission: Submission
    datasets: dict[str, data.Dataset] = field(default_factory=dict)


class Grading:
    """The session: prepares each assignment once, explains failures, sends result records."""

    def __init__(self, config: pytest.Config, results_fd: int | None, hide: tuple[str, ...] = ()):
        self.config = config
        self.hide = hide
        self.secrets: frozenset[str] = frozenset()
        self.stream = os.fdopen(results_fd, "w", buffering=1) if results_fd is not None else None
        self.scratch = Path(tempfile.mkdtemp(prefix="grader-"))
        self.assignments: dict[str, Assignment] = {}
        self.tests: dict[str, dict[str, Any]] = {}
        self.phases: dict[str, list[pytest.TestReport]] = {}
        self.earned = 0.0
        self.deselected: list[pytest.Item] = []

    def send(self, kind: str, **payload: Any) -> None:
        if self.stream:
            self.stream.write(json.dumps({"kind": kind, **payload}) + "\n")

    # -- per-assignment state --

    def assignment_of(self, node: pytest.Item) -> Assignment:
        spec = _spec_for(Path(str(node.path)))
        if spec is None:
            raise UserError(f"{node.path} is not inside assignments/<name>/")
        if spec.name not in self.assignments:
            try:
                self.assignments[spec.name] = self._prepare(spec)
            except UserError as mistake:  # plain pytest: one line, not an internal error
                raise pytest.UsageError(str(mistake)) from None
        return self.assignments[spec.name]

    def _prepare(self, spec: Spec) -> Assignment:
        option = self.config.getoption
        requested = option("profile") or os.environ.get(PROFILE_ENV) or "quick"
        profile = spec.profile(_resolve_profile(spec, requested, option("data_dir")))
        source = Path(option("submission") or os.environ.get(SUBMISSION_ENV) or spec.starter_dir)
        folder = self.scratch / spec.name
        materialized = materialize(source.expanduser().resolve(), spec.files, folder / "submission", spec.starter_dir)
        all_blanks = blanks_mod.assignment_blanks(spec.starter_dir, spec.reference_dir, spec.files)
        open_blanks = []
        for file in spec.files:
            text = materialized.source(file)
            if text is not None:
                starter = (spec.starter_dir / file).read_text()
                mine = [b for b in all_blanks if b.file == file]
                open_blanks += blanks_mod.open_blanks(starter, mine, text, file)
        user = isolation_user()
        private = user is not None and can_hide_files()
        hidden = (spec.root / "reference", *(spec.root / "assignments").glob("*/hidden"))
        self.secrets |= hidden_source_lines(spec)
        sandbox = Sandbox(
            materialized,
            device=profile.device,
            limits=SandboxLimits(
                timeout_s=spec.limits.test_timeout_s,
                memory_mb=spec.limits.memory_mb,
                output_kb=spec.limits.output_kb,
                file_mb=spec.limits.file_mb,
                processes=spec.limits.processes,
                threads=int(os.environ.get(THREADS_ENV, "0")),
                gpu_fraction=float(os.environ.get(GPU_FRACTION_ENV, "0")),
            ),
            scratch=folder / "runs",
            user=user,
            private=private,
            hide=tuple(str(p) for p in hidden) + self.hide if private else (),
            reap=dedicated_user(),
        )
        sandbox.scratch.mkdir(parents=True)
        if user:
            for path in (self.scratch, folder, sandbox.scratch):
                os.chown(path, *user)
        self.send(
            "session",
            assignment=spec.name,
            title=spec.title,
            profile=profile.name,
            device=profile.device,
            dataset=data.title(profile.dataset) if profile.dataset else "no dataset",
            submission=str(source),
            submission_kind=materialized.kind,
            missing_files=list(materialized.missing),
            blanks={"total": len(all_blanks), "open": [b.describe() for b in open_blanks]},
            isolation=_isolation(user, private),
            min_accuracy=profile.min_accuracy,
            calibrated=profile.calibrated,
            seed=grading_seed(),
        )
        submission = Submission(spec, materialized, sandbox, open_blanks, len(all_blanks))
        return Assignment(spec, profile, submission)

    # -- collection --

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # a broken test file is the grader's problem, never the student's
            self.send("collect_error", nodeid=report.nodeid, text=report.longreprtext[-3000:])

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += items

    @pytest.hookimpl(trylast=True)  # after -k/-m deselection: only the tests that run must report
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # a parametrized test's points are split over all its cases, deselected ones included
        cases = Counter((item.path, getattr(item, "originalname", item.name)) for item in (*items, *self.deselected))
        # the slow trained-accuracy tests last (hidden tests included): a run stopped at its time limit loses them only
        items.sort(key=lambda item: item.get_closest_marker("accuracy") is not None)
        for item in items:
            assignment = self.assignment_of(item)
            points = item.get_closest_marker("points")
            if points is None:
                raise UserError(f"{item.nodeid} has no @pytest.mark.points(n)")
            accuracy = item.get_closest_marker("accuracy") is not None
            if item.get_closest_marker("timeout") is None:
                limit = assignment.profile.timeout_s if accuracy else assignment.spec.limits.test_timeout_s
                # func_only: the alarm can then fire in the test, never in a hook (which crashes the session)
                item.add_marker(pytest.mark.timeout(limit, func_only=True))
            relative = Path(str(item.path)).relative_to(assignment.spec.folder)
            self.tests[item.nodeid] = {
                "nodeid": item.nodeid,
                "name": test_title(item),
                "points": float(points.args[0]) / cases[(item.path, getattr(item, "originalname", item.name))],
                "tasks": list(item_tasks(item)),
                "accuracy": accuracy,
                "hidden": relative.parts[0] == "hidden",
            }
        self.send("collected", tests=list(self.tests.values()))
        if items and not self.config.option.collectonly:
            wait_for_server()  # not within the first test's time limit

    # -- running --

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Any:
        submission = self.assignment_of(item).submission
        timeout = item.get_closest_marker("timeout")
        submission.deadline = time.monotonic() + float(timeout.args[0]) if timeout else None
        try:
            return (yield)
        finally:
            submission.deadline = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
        report: pytest.TestReport = yield
        if report.failed and call.excinfo is not None:
            exc = call.excinfo.value
            reason, details = self.explain(item, exc)
            report.grader_reason = reason  # type: ignore[attr-defined]
            report.grader_output = "\n\n".join(filter(None, (reason, details)))  # type: ignore[attr-defined]
            report.grader_limit = _limit_of(exc)  # type: ignore[attr-defined]
            if isinstance(exc, SubmissionError) or reason.startswith(NOT_FILLED):
                report.longrepr = report.grader_output  # the grader's own traceback helps nobody
        elif report.skipped and isinstance(report.longrepr, tuple):
            report.grader_reason = "skipped: " + report.longrepr[2].removeprefix("Skipped: ")  # type: ignore[attr-defined]
        return report

    def explain(self, item: pytest.Item, exc: BaseException) -> tuple[str, str]:
        """(one-line reason, details) for a failed test, naming an open blank when there is one."""
        submission = self.assignment_of(item).submission
        tasks = item_tasks(item)
        # The blanks of the test's first task first: that is the one it is about.
        open_blanks = sorted(submission.blanks_for(tasks), key=lambda blank: tasks.index(blank.task))
        details = ""
        if isinstance(exc, SubmissionError):
            details = _tail(exc.output)
            at_error = [b for b in submission.open_blanks if (b.file, b.line) in set(exc.frames)]
            open_blanks = at_error or open_blanks
        elif isinstance(exc, AssertionError):
            details = str(exc).partition("\n")[2].strip()
        if open_blanks:
            more = len(set(submission.blanks_for(tasks)) - {open_blanks[0]})
            extra = f" (+{more} more in {', '.join(tasks)})" if more else ""
            return f"{NOT_FILLED}: {open_blanks[0].describe()}{extra}", details
        if isinstance(exc, SubmissionError):
            return exc.reason, details
        text = str(exc).strip()
        first = text.splitlines()[0] if text else ""
        if isinstance(exc, pytest.fail.Exception) and first.startswith("Timeout"):
            return f"ran past its time limit ({first.removeprefix('Timeout').strip()})", ""
        if isinstance(exc, (AssertionError, pytest.fail.Exception)):  # a test's own verdict
            return first or "assertion failed", details
        return f"{type(exc).__name__}: {first}" if first else type(exc).__name__, details

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.phases.setdefault(report.nodeid, []).append(report)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        reports = self.phases.pop(nodeid, [])
        decisive = next((r for r in reports if r.failed), None) or next((r for r in reports if r.skipped), None)
        outcome = decisive.outcome if decisive else "passed"
        reason = getattr(decisive, "grader_reason", "") if decisive else ""
        if decisive is not None and not reason:
            reason = decisive.longreprtext.strip().splitlines()[-1][:300] if decisive.longreprtext else outcome
        if outcome == "passed" and nodeid in self.tests:
            self.earned += self.tests[nodeid]["points"]
        self.send(
            "result",
            nodeid=nodeid,
            outcome=outcome,
            reason=redact(reason, self.secrets),
            output=redact(getattr(decisive, "grader_output", reason) if decisive else "", self.secrets),
            limit=getattr(decisive, "grader_limit", "") if decisive else "",
            duration_s=round(sum(r.duration for r in reports), 3),
            measured=dict(p for r in reports for p in r.user_properties),
        )

    def pytest_sessionfinish(self, exitstatus: int) -> None:
        self.send("done", exitstatus=int(exitstatus))
        shutil.rmtree(self.scratch, ignore_errors=True)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.tests:
            return
        total = sum(t["points"] for t in self.tests.values())
        line = f"grader: {self.earned:g} / {total:g} points"
        for name, assignment in self.assignments.items():
            sub = assignment.submission
            filled = sub.total_blanks - len(sub.open_blanks)
            line += f" · {name}: blanks filled {filled}/{sub.total_blanks}, profile {assignment.profile.name}"
        terminalreporter.write_line(line, bold=True)


def _resolve_profile(spec: Spec, requested: str, data_dir: str | None) -> str:
    """`auto` is `full` when its device and dataset are both there, else `quick`."""
    if requested != "auto":
        return requested
    import torch

    full = spec.profile("full")
    if full.device.startswith("cuda") and not torch.cuda.is_available():
        return "quick"
    return "full" if full.dataset is None or data.available(full.dataset, data_dir) else "quick"


def _isolation(user: tuple[int, int] | None, private: bool) -> str:
    if user is None:
        return "same-user"
    name = f"uid {user[0]}" if dedicated_user() else "nobody"
    return f"{name}, private files" if private else name


def _limit_of(exc: BaseException) -> str:
    """Which limit a failure tripped ("timeout", "memory", "output", "files", "processes"...), or ""."""
    if isinstance(exc, SubmissionError):
        return exc.limit or ""
    timed_out = isinstance(exc, pytest.fail.Exception) and str(exc).strip().startswith("Timeout")  # pytest-timeout
    return "timeout" if timed_out else ""


def _tail(output: str, lines: int = 30) -> str:
    kept = output.rstrip().splitlines()[-lines:]
    return ("output (last lines):\n" + "\n".join(kept)) if kept else ""


def _grading(config: pytest.Config) -> Grading:
    return config.pluginmanager.get_plugin("grader-session")


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def submission(request: pytest.FixtureRequest) -> Submission:
    """The submission under test: `submission.run(probe, *args)` runs a probe next to its code."""
    return _grading(request.config).assignment_of(request.node).submission


@pytest.fixture(scope="module")
def profile(request: pytest.FixtureRequest) -> Profile:
    """The grading profile: device, dataset, training budget and accuracy threshold."""
    return _grading(request.config).assignment_of(request.node).profile


@pytest.fixture(scope="module")
def dataset(request: pytest.FixtureRequest) -> data.Dataset:
    """The profile's dataset, loaded once per session. Its labels stay in this process."""
    assignment = _grading(request.config).assignment_of(request.node)
    name = assignment.profile.dataset
    if name is None:
        raise UserError(f"the {assignment.profile.name} profile of {assignment.spec.name} names no dataset")
    if name not in assignment.datasets:
        assignment.datasets[name] = data.load(name, request.config.getoption("data_dir"))
    return assignment.datasets[name]
