"""Calibration: each seed's accuracies and thresholds, in seed order, summarized."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from grader import calibrate
from grader.report import TestResult
from tests.kit import spec_of


def fake_grade(spec, folder, options, env):
    """A reference whose accuracy rises with the seed."""
    measured = {"accuracy": 0.9 + options.seed / 100, "min_accuracy": 0.8, "mean_iou": 0.5}
    test = TestResult("trained accuracy", "t.py::test_acc", 1, 1, "passed", "passed", measured=measured)
    assert (folder, options.profile, options.marks) == (spec.reference_dir, "quick", "accuracy")
    return SimpleNamespace(tests=[test], duration_s=1.0)


def test_each_seed_is_a_run_with_its_accuracies_and_the_tests_thresholds(monkeypatch):
    monkeypatch.setattr(calibrate, "grade", fake_grade)
    runs = list(calibrate.calibration_runs(spec_of("assignment2"), "quick", range(4), workers=2))
    assert [run.seed for run in runs] == [0, 1, 2, 3]
    assert runs[2].accuracies == {"trained accuracy": 0.92, "trained accuracy · mean_iou": 0.5}
    assert runs[2].thresholds == {"trained accuracy": 0.8}
    stats = calibrate.summary(runs)["trained accuracy"]
    assert stats["runs"] == 4
    assert (stats["min"], stats["max"]) == pytest.approx((0.90, 0.93))
    assert stats["mean"] == pytest.approx(0.915)
