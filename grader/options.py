"""How one grading runs: one frozen object, from the command line to the pytest child.

`grade`, `grade batch` and `grade calibrate` build a `GradingOptions`; the grading child receives
it as one JSON document ($GRADER_OPTIONS) and rebuilds it. Plain `pytest assignments/<name>`
builds one from its own command-line options. The GRADER_* variables are named in grader.environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from grader.environment import OPTIONS_ENV
from grader.errors import UserError
from grader.spec import Limits


@dataclass(frozen=True)
class GradingOptions:
    """Everything that decides how a submission is graded (and, with `show_hidden`, shown)."""

    profile: str = "auto"  # quick | full | auto
    data_dir: str | None = None
    device: str | None = None  # instead of the profile's: `full` on the CPU, to check or calibrate it without a GPU
    download: bool = False
    select: str | None = None  # a pytest -k expression
    marks: str | None = None  # a pytest -m expression: 'not accuracy'
    seed: int | None = None  # None: the hand-in's own (grader.seeding), which no submission can know
    limits: dict[str, float] = field(default_factory=dict)  # overrides of the spec's [limits]
    threads: int = 0  # torch threads of each probe; 0: as many as the cores this grading owns
    gpu_fraction: float = 0.0  # each probe's share of the GPU's memory (workers sharing one GPU)
    allow_unisolated: bool = True  # a student's own `grade` runs anyway; `grade batch` must be told
    show_hidden: bool = False  # the details of hidden tests, in what is rendered
    lang: str = (
        "en"  # what the student reads: en | vi (grader.i18n); `grade` defaults it to the spec's, else the locale's
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "limits", typed_limits(self.limits))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GradingOptions:
        return cls(**json.loads(text))

    def with_(self, **changes: Any) -> GradingOptions:
        return replace(self, **changes)

    def scoring(self) -> dict[str, Any]:
        """The options that change a score (not how it is shown, nor in which language): what a batch's
        resume key holds."""
        kept = ("profile", "data_dir", "device", "select", "marks", "seed", "limits")
        return {name: getattr(self, name) for name in kept}

    def apply(self, limits: Limits) -> Limits:
        return replace(limits, **self.limits)

    def child_env(self) -> dict[str, str]:
        return {OPTIONS_ENV: self.to_json()}


def typed_limits(overrides: dict[str, Any]) -> dict[str, float]:
    """Overrides of the spec's [limits], each of its field's type (a UserError names an unknown one)."""
    known = {f.name: f.type for f in fields(Limits)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise UserError(f"unknown limit {', '.join(unknown)} (known: {', '.join(known)})")
    return {k: int(v) if known[k] == "int" else float(v) for k, v in overrides.items()}


def parse_limits(items: tuple[str, ...]) -> dict[str, float]:
    """`--limit NAME=N` options as overrides."""
    overrides: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            overrides[name.strip()] = float(value)
        except ValueError:
            raise UserError(f"--limit {item}: expected NAME=NUMBER, e.g. test_timeout_s=30") from None
    return overrides


def from_environment() -> GradingOptions | None:
    """The options a grading child was handed, if it was."""
    text = os.environ.get(OPTIONS_ENV)
    return GradingOptions.from_json(text) if text else None
