"""The one grading path: the same outcomes as plain pytest, options as one document, and a mistake in
what was asked said in one line before anything runs."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from grader.errors import UserError
from grader.grading import grade
from grader.options import GradingOptions
from tests.kit import ROOT, make_variant, spec_of


def test_plain_pytest_gives_the_same_outcomes_as_grade(tmp_path):
    spec = spec_of("assignment2")
    variant = {"name": "no zero_grad", "replace": [["training.py", "optimizer.zero_grad()", "pass"]]}
    folder = make_variant(spec, variant, tmp_path / "variant")
    report = grade(spec, folder, GradingOptions(profile="quick", marks="not accuracy"))
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


def test_options_travel_as_one_document_and_reject_an_unknown_limit():
    options = GradingOptions(profile="quick", marks="not accuracy", seed=7, limits={"test_timeout_s": "30"})
    assert GradingOptions.from_json(options.to_json()) == options
    assert options.limits == {"test_timeout_s": 30.0}
    assert options.scoring() == options.with_(show_hidden=True, threads=3).scoring()
    with pytest.raises(UserError, match="unknown limit bogus"):
        GradingOptions(limits={"bogus": 1})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (GradingOptions(profile="quick", select="zzz"), "no test of assignment2 matches 'zzz'"),
        (GradingOptions(profile="full", data_dir="/nonexistent"), "--profile full needs"),
    ],
    ids=["nothing selected", "full profile without its GPU or dataset"],
)
def test_a_mistake_in_what_was_asked_is_one_line_before_any_test_runs(options, message):
    spec = spec_of("assignment2")
    with pytest.raises(UserError, match=message):
        grade(spec, spec.starter_dir, options)
