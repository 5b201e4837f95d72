"""Calibrating accuracy thresholds: grade the reference's accuracy tests over many seeds."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass

from grader.pipeline import grade
from grader.spec import Spec
from grader.testing import SEED_ENV


@dataclass(frozen=True)
class SeedRun:
    seed: int
    accuracies: dict[str, float]  # test name (plus " · key" for other measurements) -> value
    duration_s: float


def calibration_runs(spec: Spec, profile: str, seeds: range) -> Iterator[SeedRun]:
    """One graded run of the reference's accuracy tests per seed, with everything they measured."""
    for seed in seeds:
        report = grade(spec, spec.reference_dir, profile, marks="accuracy", env={SEED_ENV: str(seed)})
        measured = {
            f"{t.name} · {key}" if key != "accuracy" else t.name: value
            for t in report.tests
            for key, value in t.measured.items()
            if isinstance(value, (int, float))
        }
        yield SeedRun(seed, measured, report.duration_s)


def summary(runs: list[SeedRun]) -> dict[str, dict[str, float]]:
    """min / mean / max / stdev of each accuracy test over the runs."""
    names = sorted({name for run in runs for name in run.accuracies})
    out = {}
    for name in names:
        values = [run.accuracies[name] for run in runs if name in run.accuracies]
        out[name] = {
            "runs": len(values),
            "min": min(values),
            "mean": statistics.fmean(values),
            "max": max(values),
            "stdev": statistics.pstdev(values),
        }
    return out
