"""Calibrating accuracy thresholds: grade the reference's accuracy tests over many seeds."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

from grader.batch.executors import LocalExecutor, Slot
from grader.grading import grade
from grader.options import GradingOptions
from grader.report import THRESHOLD
from grader.spec import Spec


@dataclass(frozen=True)
class SeedRun:
    seed: int
    accuracies: dict[str, float]  # test name (plus " · key" for other measurements) -> value
    thresholds: dict[str, float]  # test name -> the accuracy it requires
    duration_s: float


def calibration_runs(
    spec: Spec, profile: str, seeds: range, workers: int = 1, device: str | None = None, select: str | None = None
) -> Iterator[SeedRun]:
    """One graded run of the reference's accuracy tests (those `select` matches) per seed, with
    everything they measured, `workers` seeds at a time (each on its share of the cores), yielded in
    seed order; on `device` instead of the profile's own, where one is given."""

    def run(seed: int, slot: Slot) -> SeedRun:
        chosen = GradingOptions(profile=profile, device=device, select=select, marks="accuracy", seed=seed)
        options = slot.options(chosen)
        report = grade(spec, spec.reference_dir, options, slot.env)
        measured = {
            f"{t.name} · {key}" if key != "accuracy" else t.name: value
            for t in report.tests
            for key, value in t.measured.items()
            if isinstance(value, (int, float)) and key != THRESHOLD
        }
        thresholds = {t.name: t.measured[THRESHOLD] for t in report.tests if THRESHOLD in t.measured}
        return SeedRun(seed, measured, thresholds, report.duration_s)

    with LocalExecutor(workers) as executor:
        futures = [executor.submit(partial(run, seed)) for seed in seeds]
        for future in futures:
            yield future.result()


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
