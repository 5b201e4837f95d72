"""The grader's pytest plugin: markers, fixtures, and the hooks that turn tests into result records.

`assignments/conftest.py` loads it, so plain `pytest assignments/assignment2` and `grade
assignment2` run the same tests with the same outcomes. This process is the grader's: it holds
the expected values, the labels and the hidden tests, and never runs student code. The student's
code runs only in the sandbox, through `submission.run(probe, *args)`.

Markers:
  @pytest.mark.points(n)        what the test is worth (split evenly over parametrized cases)
  @pytest.mark.task("net", ...) the starter definitions the test exercises: a failing test whose
                                tasks still have open blanks names the first, by file and line
  @pytest.mark.accuracy         a trained-accuracy check: the profile's CPU budget applies
  @pytest.mark.official(what)   what the test checks only with the answers of the kit's official/
                                (grader.testing.official_for): a student bundle's README lists it
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import resource
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from grader import data, environment, i18n
from grader import options as options_mod
from grader.errors import UserError
from grader.options import GradingOptions
from grader.plugin import early
from grader.plugin.reasons import NOT_FILLED, explain, item_tasks, limit_of, test_title
from grader.plugin.records import CollectedTest, Records, Selection
from grader.plugin.session import Assignment, Grading, Submission, resolve_profile
from grader.sandbox.api import SandboxBroken, SubmissionError, Zygote
from grader.sandbox.supervise import backstop_s
from grader.spec import Profile, Spec, did_you_mean, preloads, spec_for, specs_in
from grader.testing import use_seed

_GRADING = pytest.StashKey[Grading]()
WARM_ZYGOTE: Zygote | None = None  # a warm worker's zygote, lent to the session it forked (grader.batch.warm)
_GRADER_MARGIN_S = 120.0  # the grader's own work in a test (its reference computations), on top of the probes'
_GRADER_MEMORY_MB = 8192  # what the grader's own process may grow by: a crafted result must not exhaust it


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("grader")
    group.addoption("--submission", help="what to grade (default: the assignment's starter)")
    group.addoption("--profile", choices=("quick", "full", "auto"), help="grading profile (default: quick)")
    group.addoption("--data-dir", help="the folder that holds the datasets")
    group.addoption("--seed", type=int, help="this grading's seed (default: a random one)")
    group.addoption("--lang", choices=i18n.LANGUAGES, help="the language of reasons and titles (default: the spec's)")
    group.addoption("--results-fd", type=int, help=argparse.SUPPRESS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "points(n): what the test is worth")
    config.addinivalue_line("markers", "task(*names): the starter definitions the test exercises")
    config.addinivalue_line("markers", "accuracy: a trained-accuracy check, under the profile's CPU budget")
    config.addinivalue_line("markers", "training: runs a training loop (grade --watch runs it on a key press)")
    config.addinivalue_line("markers", "official(what): what the test checks only with the kit's answers")
    option = config.getoption
    specs = specs_in(config.args)
    options = options_mod.from_environment() or GradingOptions(
        profile=option("profile") or "quick",
        data_dir=option("data_dir"),
        seed=option("seed"),
        lang=option("lang") or i18n.default_language(next((s.language for s in specs if s.language), None)),
    )
    i18n.use(options.lang)  # every reason and title of this session
    seed = options.seed if options.seed is not None else environment.seed_from_environment()
    # plain pytest without a seed: a random one (`grade` always hands the hand-in's own, grader.seeding)
    use_seed(seed if seed is not None else secrets.randbits(62))
    fd = option("results_fd", None)
    if fd is not None and os.environ.get(environment.PARENT_ENV):
        _die_with(int(os.environ[environment.PARENT_ENV]))
    zygote = None
    if specs and not config.option.collectonly:  # started now: torch's import overlaps with collection
        try:
            profiles = [resolve_profile(spec, options.profile, options.data_dir, options.device) for spec in specs]
        except UserError as mistake:
            raise pytest.UsageError(str(mistake)) from None
        preload = preloads(specs)
        gpu = any(p.device.startswith("cuda") for p in profiles)
        threads = early.threads_of(options)
        zygote = WARM_ZYGOTE or early.take(threads, preload, gpu) or Zygote(threads, preload, gpu)
        if zygote.mechanism == "none" and not options.allow_unisolated:
            zygote.close()
            raise pytest.UsageError("no sandbox here (bubblewrap is missing or refused): install bubblewrap")
        if fd is not None and not gpu:  # CUDA maps far more address space than it uses
            _limit_own_memory()
    grading = Grading(options, Records(fd), zygote, option("submission"), own_zygote=WARM_ZYGOTE is None)
    config.stash[_GRADING] = grading
    config.pluginmanager.register(SessionHooks(grading), "grader-session")


_MARKER_NAME = re.compile(r"(?:\w|:|\+|-|\.|\[|\]|\\|/)+")  # pytest's identifier in a -m expression
_MARKER_ARGUMENTS = re.compile(r"\([^()]*=[^()]*\)")  # -m "task(name='net')": argument names are no markers


def _check_marker_names(expression: str, items: list[pytest.Item], config: pytest.Config) -> None:
    """Every marker a -m expression names is one the tests carry or the kit registers: a typo
    ('not acuracy') would otherwise select every test, silently."""
    carried = {mark.name for item in items for mark in item.iter_markers()}
    registered = {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}
    named = set(_MARKER_NAME.findall(_MARKER_ARGUMENTS.sub("", expression))) - {"and", "or", "not"}
    unknown = sorted(named - carried - registered)
    if unknown:
        known = sorted(carried - {"parametrize", "timeout"})  # the tests' own, not pytest's machinery
        hint = did_you_mean(unknown[0], sorted(carried | registered))
        raise pytest.UsageError(
            f"the marker expression '{expression}' names {', '.join(unknown)}, a marker no test has{hint} "
            f"(the tests' markers: {', '.join(known) or 'none'})"
        )


def _die_with(parent_pid: int) -> None:
    """Be killed when the process that started this one ends (a batch killed mid-run)."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # it ended before we asked
        os._exit(1)


def _limit_own_memory() -> None:
    """A soft address-space limit on this process: what comes back from a sandbox is bounded data,
    and this keeps a mistake in bounding it from exhausting the machine."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            limit = int(line.split()[1]) * 1024 + _GRADER_MEMORY_MB * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


def _grading(config: pytest.Config) -> Grading:
    return config.stash[_GRADING]


def _assignment(node: pytest.Item) -> Assignment:
    spec = spec_for(Path(str(node.path)))
    if spec is None:
        raise pytest.UsageError(f"{node.path} is not inside assignments/<name>/")
    try:
        return _grading(node.config).assignment_of(spec)
    except UserError as mistake:  # one line, not an internal error
        raise pytest.UsageError(str(mistake)) from None


def _check_sandbox(grading: Grading) -> None:
    """Wait for the zygote; one that cannot start (torch not in its view) ends the session at once,
    saying why in one record: no test could pass, and none is the submission's fault."""
    assert grading.zygote is not None
    try:
        grading.zygote.ready()
    except SandboxBroken as broken:
        grading.records.send("sandbox_broken", reason=str(broken))
        pytest.exit(str(broken), returncode=pytest.ExitCode.INTERNAL_ERROR)


def _budget(item: pytest.Item, assignment: Assignment) -> float:
    """A test's CPU budget: the profile's for a trained-accuracy test, else the spec's per test."""
    limits = _grading(item.config).options.apply(assignment.spec.limits)
    return assignment.profile.timeout_s if item.get_closest_marker("accuracy") else limits.test_timeout_s


def _entry(item: pytest.Item, spec: Spec, cases: Counter) -> CollectedTest:
    """A test as the report lists it: its title, its points (its share of a parametrized test's), its tasks."""
    points = item.get_closest_marker("points")
    if points is None:
        raise pytest.UsageError(f"{item.nodeid} has no @pytest.mark.points(n)")
    return {
        "nodeid": item.nodeid,
        "name": test_title(item),
        "points": float(points.args[0]) / cases[(item.path, getattr(item, "originalname", item.name))],
        "tasks": list(item_tasks(item)),
        "accuracy": item.get_closest_marker("accuracy") is not None,
        "hidden": Path(str(item.path)).relative_to(spec.folder).parts[0] == "hidden",
    }


def progress_sender(records: Records, nodeid: str) -> Callable[[dict[str, Any]], None]:
    """What a probe says of its progress, as a record for the screen: numbers only, once a second."""
    last = [0.0]

    def send(fields: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - last[0] < 1.0:
            return
        last[0] = now
        numbers = {str(k)[:20]: v for k, v in list(fields.items())[:8] if isinstance(v, (int, float))}
        records.send("progress", nodeid=nodeid, fields=numbers)

    return send


class SessionHooks:
    """The hooks that follow one session's tests (registered by pytest_configure with its state)."""

    def __init__(self, grading: Grading):
        self.grading = grading
        self.phases: dict[str, list[pytest.TestReport]] = {}

    # -- collection --

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # a broken test file is the grader's problem, never the student's
            self.grading.records.send("collect_error", nodeid=report.nodeid, text=report.longreprtext[-3000:])

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.grading.deselected += items

    @pytest.hookimpl(trylast=True)  # after -k/-m deselection: only the tests that run must report
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        grading = self.grading
        if config.getoption("markexpr"):
            _check_marker_names(config.getoption("markexpr"), [*items, *grading.deselected], config)
        # a parametrized test's points are split over all its cases, deselected ones included
        cases = Counter((i.path, getattr(i, "originalname", i.name)) for i in (*items, *grading.deselected))
        # the slow trained-accuracy tests last (hidden ones included): a run stopped at its time limit loses them only
        items.sort(key=lambda item: item.get_closest_marker("accuracy") is not None)
        collecting = self.grading.zygote is None  # --collect-only: no submission, no sandbox
        if items and not collecting:
            _check_sandbox(grading)  # before any test (and not within the first one's time)
        for item in items:
            spec = spec_for(Path(str(item.path)))
            if spec is None:
                raise pytest.UsageError(f"{item.nodeid} is not inside assignments/<name>/")
            if not collecting and item.get_closest_marker("timeout") is None:  # a backstop: the sandbox counts CPU
                backstop = backstop_s(_budget(item, _assignment(item))) + _GRADER_MARGIN_S
                # func_only: the alarm can then fire in the test, never in a hook (which crashes the session)
                item.add_marker(pytest.mark.timeout(backstop, func_only=True))
            grading.tests[item.nodeid] = _entry(item, spec, cases)
        # what -k/-m left out, so that a report can say it graded only part of the assignment
        specs = {item: spec_for(Path(str(item.path))) for item in grading.deselected}
        left_out = [_entry(item, spec, cases) for item, spec in specs.items() if spec is not None]
        selection: Selection = {
            "select": config.getoption("keyword") or None,
            "marks": config.getoption("markexpr") or None,
            "left_out": [entry["name"] for entry in left_out],
            "left_out_points": sum(entry["points"] for entry in left_out),
        }
        grading.records.send("collected", tests=list(grading.tests.values()), selection=selection)

    # -- running --

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Any:
        assignment = _assignment(item)
        submission = assignment.submission
        submission.budget_s, submission.tasks = _budget(item, assignment), item_tasks(item)
        name = self.grading.tests.get(item.nodeid, {}).get("name", item.name)
        self.grading.records.send("start", nodeid=item.nodeid, name=name)
        submission.on_progress = progress_sender(self.grading.records, item.nodeid)
        try:
            return (yield)
        finally:
            submission.budget_s, submission.tasks, submission.on_progress = None, (), None
            self.grading.send_new_load_errors()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
        report: pytest.TestReport = yield
        hidden = self.grading.tests.get(item.nodeid, {}).get("hidden", False)
        if report.failed and call.excinfo is not None:
            exc, submission = call.excinfo.value, _assignment(item).submission
            if submission.already_reported(exc, item.nodeid):
                exc = submission.pointer_to(exc.importing)
            reason, details = explain(exc, item_tasks(item), submission, hidden)
            report.grader_reason = reason  # type: ignore[attr-defined]
            report.grader_output = "\n\n".join(filter(None, (reason, details)))  # type: ignore[attr-defined]
            report.grader_limit = limit_of(exc)  # type: ignore[attr-defined]
            if isinstance(exc, SubmissionError) or reason.startswith(i18n._(NOT_FILLED)):
                report.longrepr = report.grader_output  # the grader's own traceback helps nobody
        elif report.skipped and isinstance(report.longrepr, tuple):
            why = report.longrepr[2].removeprefix("Skipped: ")
            report.grader_reason = i18n._("skipped: {why}").format(why=why)  # type: ignore[attr-defined]
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.phases.setdefault(report.nodeid, []).append(report)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        reports = self.phases.pop(nodeid, [])
        test = self.grading.tests.get(nodeid, {})
        decisive = next((r for r in reports if r.failed), None) or next((r for r in reports if r.skipped), None)
        outcome = decisive.outcome if decisive else "passed"
        reason = getattr(decisive, "grader_reason", "") if decisive else ""
        if decisive is not None and not reason:  # a failure the plugin did not explain: the grader's own
            reason = decisive.longreprtext.strip().splitlines()[-1][:300] if decisive.longreprtext else outcome
        if outcome == "passed" and test:
            self.grading.earned += test["points"]
        output = getattr(decisive, "grader_output", reason) if decisive else ""
        self.grading.records.send(
            "result",
            nodeid=nodeid,
            outcome=outcome,
            reason=reason,
            output=reason if test.get("hidden") else output,
            limit=getattr(decisive, "grader_limit", "") if decisive else "",
            duration_s=round(sum(r.duration for r in reports), 3),
            measured=dict(p for r in reports for p in r.user_properties),
        )

    def pytest_sessionfinish(self, exitstatus: int) -> None:
        self.grading.send_new_load_errors()
        self.grading.records.send("done", exitstatus=int(exitstatus))
        self.grading.close()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        grading = self.grading
        if not grading.tests:
            return
        total = sum(t["points"] for t in grading.tests.values())
        line = f"grader: {grading.earned:g} / {total:g} points"
        for name, assignment in grading.assignments.items():
            sub = assignment.submission
            blanks = f"blanks filled {sub.filled_blanks}/{sub.total_blanks}"
            line += f" · {name}: {blanks}, profile {assignment.profile.name}"
        terminalreporter.write_line(line, bold=True)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def submission(request: pytest.FixtureRequest) -> Submission:
    """The submission under test: `submission.run(probe, *args)` runs a probe next to its code."""
    return _assignment(request.node).submission


@pytest.fixture(scope="module")
def profile(request: pytest.FixtureRequest) -> Profile:
    """The grading profile: device, dataset, training budget and accuracy threshold."""
    return _assignment(request.node).profile


@pytest.fixture(scope="module")
def dataset(request: pytest.FixtureRequest) -> data.Dataset:
    """The profile's dataset, loaded once per session. Its labels stay in this process."""
    grading = _grading(request.config)
    return _assignment(request.node).dataset(grading.options.data_dir)
