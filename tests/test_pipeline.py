"""Grading end to end: the same outcomes as plain pytest (repeatable: tests/test_assignments.py)."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

from grader.pipeline import grade
from tests.kit import ROOT, make_variant, spec_of


def test_plain_pytest_gives_the_same_outcomes_as_grade(tmp_path):
    spec = spec_of("assignment2")
    variant = {"name": "no zero_grad", "replace": [["training.py", "optimizer.zero_grad()", "pass"]]}
    folder = make_variant(spec, variant, tmp_path / "variant")
    report = grade(spec, folder, profile="quick", marks="not accuracy")
    junit = tmp_path / "junit.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "assignments/assignment2",
            "--submission",
            str(folder),
            "-m",
            "not accuracy",
            "-q",
            f"--junitxml={junit}",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=300,
    )
    plain = {
        case.get("name"): "failed" if case.find("failure") is not None or case.find("error") is not None else "passed"
        for case in ET.parse(junit).getroot().iter("testcase")
    }
    mine = {t.nodeid.split("::")[-1]: t.status for t in report.tests}
    assert plain == mine
    assert mine["test_zeroes_gradients_every_batch"] == "failed"
