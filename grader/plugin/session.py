"""One assignment's grading session, on the grader's side: the submission, its sandbox, its budget.

`prepare` reads the submission once into a clean copy, finds the blanks it leaves open, and gives
it a `Sandbox` on the session's zygote. Tests reach the student's code only through
`Submission.run(probe, *args)`: the probe (a function of the assignment's probes module) runs in
the sandbox on the grader's inputs, and each test's CPU budget is shared by the probes it runs.
A submission whose module cannot be imported (a syntax error, a crash, an endless loop) is found
by the first probe that imports it: later tests that need that module fail at once, pointing to it.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader import blanks as blanks_mod
from grader import data
from grader.errors import UserError
from grader.i18n import _
from grader.options import GradingOptions
from grader.plugin.records import CollectedTest, Records
from grader.sandbox.api import Sandbox, SubmissionError, Zygote
from grader.spec import Profile, Spec
from grader.submission import Materialized, materialize
from grader.testing import derived_seed, grading_seed
from grader.text import clean

PROBES_PACKAGE = "grader_probes."  # where grader.testing.probes_for puts an assignment's probes


@dataclass
class LoadError:
    """A student's file that could not be imported: what happened, where, and the line itself."""

    file: str
    reason: str
    line: int = 0
    source: str = ""
    column: int = 0
    place: str = ""  # where the line is for its author, when not in the file: "cell 14, line 3"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Submission:
    """The student's code as a test sees it: probes run in the sandbox; open blanks are known."""

    spec: Spec
    materialized: Materialized
    sandbox: Sandbox
    open_blanks: list[blanks_mod.Blank]
    total_blanks: int
    task_files: dict[str, set[str]]
    load_errors: dict[str, LoadError] = field(default_factory=dict)
    first_reported: dict[str, str] = field(default_factory=dict)  # file -> the test that reported its load error
    task_sources: dict[str, set[str]] = field(default_factory=dict)  # task -> the assignment files it is in
    missing_blanks: int = 0  # blanks in files the submission does not have: neither open nor filled
    budget_s: float | None = None  # CPU seconds left to the running test
    tasks: tuple[str, ...] = ()  # the running test's tasks
    on_progress: Callable[[dict[str, Any]], None] | None = None  # the running test's progress, for the screen

    def run(self, probe: Callable[..., Any], *args: Any, seed: int = 0) -> Any:
        """Run `probe(sub, *args)` next to the student's code and return its result, as data.

        The probe gets what is left of the test's CPU budget. `seed` tells apart calls of the same
        probe that must draw differently.
        """
        if not probe.__module__.startswith(PROBES_PACKAGE):
            raise TypeError(f"{probe.__name__} is not a probe: probes come from grader.testing.probes_for(__file__)")
        for file in self.materialized.missing:  # the running test's tasks are defined in a file not handed in
            if any(file in self.task_sources.get(task, ()) for task in self.tasks):
                raise SubmissionError(_("{file} is missing from the submission").format(file=file))
        for file in sorted(self.files_needed()):
            if file in self.load_errors:
                raise self.pointer_to(file)
        budget = self.budget_s if self.budget_s is not None else self.spec.limits.test_timeout_s
        try:
            seed = derived_seed(f"{probe.__name__}:{seed}")
            return self.sandbox.run(probe, *args, cpu_s=max(budget, 1.0), seed=seed, on_progress=self.on_progress)
        except SubmissionError as failure:
            if failure.importing and failure.importing not in self.load_errors:
                self.load_errors[failure.importing] = self._load_error(failure)
            raise
        finally:
            if self.budget_s is not None:
                self.budget_s -= self.sandbox.last_cpu_s

    def pointer_to(self, file: str) -> SubmissionError:
        """The failure of a test that needs `file`, which could not be loaded: a pointer to the headline."""
        error = self.load_errors[file]
        reason = _("{file} could not be loaded ({reason}): see the top of the report")
        return SubmissionError(reason.format(file=file, reason=error.reason))

    def already_reported(self, failure: BaseException, nodeid: str) -> bool:
        """Whether `failure` is a load error that an earlier test reported already (a fixture's cached
        failure reaches every test that uses it): then the later ones point to it instead."""
        if not isinstance(failure, SubmissionError) or not failure.importing:
            return False
        return self.first_reported.setdefault(failure.importing, nodeid) != nodeid

    def files_needed(self) -> set[str]:
        """The student's files the running test's tasks live in (all of them, for a test without tasks)."""
        found = set().union(*(self.task_files.get(task, set()) for task in self.tasks)) if self.tasks else set()
        return found or set(self.materialized.modules.values())

    @property
    def filled_blanks(self) -> int:
        return self.total_blanks - len(self.open_blanks) - self.missing_blanks

    def blanks_for(self, tasks: tuple[str, ...]) -> list[blanks_mod.Blank]:
        return [b for b in self.open_blanks if b.task in tasks]

    def _load_error(self, failure: SubmissionError) -> LoadError:
        """Where the import failed, with the line from the grader's own copy of the file."""
        file = failure.importing
        line, column = failure.syntax or (next((n for f, n in reversed(failure.frames) if f == file), 0), 0)
        text = self.materialized.source(Path(file).stem) or ""
        lines = text.splitlines()
        source = lines[line - 1] if 0 < line <= len(lines) else ""
        reason, place = self.materialized.localize(failure.reason), self.materialized.where(file, line)
        source = clean(source.rstrip(), 300, lines=True)  # the hand-in's own line, shown in every report
        return LoadError(file, reason, line, source, column, place)


@dataclass
class Assignment:
    """What one assignment's tests share during a session."""

    spec: Spec
    profile: Profile
    submission: Submission
    source: Path
    datasets: dict[str, data.Dataset] = field(default_factory=dict)

    def dataset(self, data_dir: str | None) -> data.Dataset:
        name = self.profile.dataset
        if name is None:
            raise UserError(f"the {self.profile.name} profile of {self.spec.name} names no dataset")
        if name not in self.datasets:
            self.datasets[name] = data.load(name, data_dir)
        return self.datasets[name]


def resolve_profile(spec: Spec, requested: str, data_dir: str | None, device: str | None = None) -> Profile:
    """`auto` is `full` where this machine has everything it needs (grader.staging.lacking), else
    `quick`; `device` (`--device`) replaces the profile's own before that is judged. A profile asked for
    by name that cannot run is the user's mistake, said before any test runs."""
    from grader.staging import lacking

    def on_device(name: str) -> Profile:
        profile = spec.profile(name)
        return dataclasses.replace(profile, device=device) if device else profile

    if requested != "auto":
        profile = on_device(requested)
        missing = lacking(profile, data_dir)
        if missing:
            raise UserError(f"--profile {requested} needs {'; '.join(missing)} (see grade doctor, or --profile quick)")
        return profile
    full = on_device("full")
    return on_device("quick") if lacking(full, data_dir) else full


def prepare(spec: Spec, options: GradingOptions, source: Path, scratch: Path, zygote: Zygote) -> Assignment:
    """Read the submission into `scratch`, find its open blanks, give it a sandbox on `zygote`."""
    profile = resolve_profile(spec, options.profile, options.data_dir, options.device)
    materialized = materialize(source.expanduser().resolve(), spec.files, scratch / "submission", spec.starter_dir)
    released = blanks_mod.released_blanks(spec)  # measured against the starter as released, not as edited
    task_files: dict[str, set[str]] = {}
    task_sources: dict[str, set[str]] = {}
    for blank in released.blanks:
        task_sources.setdefault(blank.task, set()).add(blank.file)
        module = materialized.modules.get(Path(blank.file).stem)
        if module:
            task_files.setdefault(blank.task, set()).add(module)
    files = {name: (materialized.folder / name).read_bytes() for name in set(materialized.modules.values())}
    sandbox = Sandbox(
        files,
        dict(materialized.modules),
        zygote,
        options.apply(spec.limits),
        profile.device,
        options.gpu_fraction,
    )
    submission = Submission(
        spec,
        materialized,
        sandbox,
        released.left_open(materialized),
        len(released.blanks),
        task_files,
        task_sources=task_sources,
        missing_blanks=released.in_missing_files(materialized),
    )
    return Assignment(spec, profile, submission, source)


def dataset_shown(name: str | None) -> str:
    """The dataset, as the report names it: a full one with its images counted (verified before use)."""
    from grader.i18n import number
    from grader.staging import SIZES

    if name is None:
        return _("no dataset")
    if name not in SIZES:
        return _(data.title(name))
    train, test = SIZES[name]
    return _("{title}, {train} training and {test} test images").format(
        title=_(data.title(name)), train=number(train), test=number(test)
    )


class Grading:
    """The pytest session's state: the options, the sandbox's zygote, each assignment once prepared,
    the tests collected, and the records sent so far."""

    def __init__(
        self,
        options: GradingOptions,
        records: Records,
        zygote: Zygote | None,
        submission: str | None,
        own_zygote: bool = True,
    ):
        self.options = options
        self.own_zygote = own_zygote  # else a warm worker's, which outlives this session
        self.records = records
        self.zygote = zygote
        self.submission = submission
        self.scratch = Path(tempfile.mkdtemp(prefix="grader-"))
        self.assignments: dict[str, Assignment] = {}
        self.tests: dict[str, CollectedTest] = {}
        self.earned = 0.0
        self.deselected: list[Any] = []
        self.sent_load_errors: set[tuple[str, str]] = set()

    def _why_not_full(self, spec: Spec, profile: Profile) -> str:
        """Where `auto` fell back on another profile: what the full one lacks here."""
        from grader.staging import lacking

        if self.options.profile != "auto" or profile.name == "full":
            return ""
        full = spec.profile("full")
        full = dataclasses.replace(full, device=self.options.device) if self.options.device else full
        missing = "; ".join(lacking(full, self.options.data_dir))
        return _("auto chose {profile}: the full profile needs {missing}").format(profile=profile.name, missing=missing)

    def assignment_of(self, spec: Spec) -> Assignment:
        if spec.name not in self.assignments:
            if self.zygote is None:
                raise UserError("the sandbox was not started (pytest --collect-only?)")
            source = Path(self.submission or spec.starter_dir)
            assignment = prepare(spec, self.options, source, self.scratch / spec.name, self.zygote)
            self.assignments[spec.name] = assignment
            sub = assignment.submission
            self.records.send(
                "session",
                assignment=spec.name,
                title=spec.shown_title,
                profile=assignment.profile.name,
                device=assignment.profile.device,
                dataset=dataset_shown(assignment.profile.dataset),
                profile_note=self._why_not_full(spec, assignment.profile),
                submission=str(source),
                submission_kind=sub.materialized.kind,
                missing_files=list(sub.materialized.missing),
                blanks={
                    "total": sub.total_blanks,
                    "open": [b.describe() for b in sub.open_blanks],
                    "missing": sub.missing_blanks,
                },
                notes=sub.materialized.notes,
                isolation=self.zygote.isolation,
                min_accuracy=assignment.profile.min_accuracy,
                calibrated=assignment.profile.calibrated,
                seed=grading_seed(),
            )
        return self.assignments[spec.name]

    def send_new_load_errors(self) -> None:
        for name, assignment in self.assignments.items():
            for file, error in assignment.submission.load_errors.items():
                if (name, file) not in self.sent_load_errors:
                    self.sent_load_errors.add((name, file))
                    self.records.send("load_error", assignment=name, **error.to_json())

    def close(self) -> None:
        if self.zygote is not None and self.own_zygote:
            self.zygote.close()
        self.records.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
