"""The one grading path: the same outcomes as plain pytest, options as one document, and a mistake in
what was asked said in one line before anything runs."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from grader import render
from grader.errors import UserError
from grader.grading import grade
from grader.options import GradingOptions
from grader.seeding import SECRET_FILE, hand_in_seed
from tests.kit import GRADINGS, ROOT, make_variant, spec_of


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
        (GradingOptions(profile="quick", select="lenet and ("), "Wrong expression passed to '-k'"),
        (GradingOptions(profile="full", data_dir="/nonexistent"), "--profile full needs"),
        (GradingOptions(profile="quick", marks="not acuracy"), "a marker no test has: did you mean accuracy?"),
        (GradingOptions(profile="quick", marks="not (accuracy"), "Wrong expression passed to '-m'"),
    ],
    ids=[
        "nothing selected",
        "a broken expression",
        "full profile without its GPU or dataset",
        "a mistyped marker",
        "a broken marker expression",
    ],
)
def test_a_mistake_in_what_was_asked_is_one_line_before_any_test_runs(options, message):
    spec = spec_of("assignment2")
    with pytest.raises(UserError, match=message):
        grade(spec, spec.starter_dir, options)


def test_a_module_that_cannot_load_is_found_once_and_named_above_the_table(tmp_path):
    """An endless loop at import costs one test's CPU budget, not one per test; a syntax error is
    shown once, with its line and a caret, and every test that needs the module points to it."""
    spec = spec_of("assignment2")
    hangs = make_variant(
        spec,
        {"name": "hang", "replace": [["lenet.py", "from torch import nn\n", "while True:\n    pass\n"]]},
        tmp_path / "hang",
    )
    options = GradingOptions(profile="quick", marks="not accuracy", limits={"test_timeout_s": 5})
    report = grade(spec, hangs, options)
    (error,) = report.load_errors
    assert error["file"] == "lenet.py" and "of CPU, the limit is 5 s" in error["reason"]
    needs_lenet = [t for t in report.tests if "net" in t.tasks]
    assert [t.limit for t in needs_lenet].count("cpu") == 1  # found once
    assert all(t.status == "failed" for t in needs_lenet)
    assert sum("lenet.py could not be loaded" in t.reason for t in needs_lenet) == len(needs_lenet) - 1
    assert all(t.status == "passed" for t in report.tests if not t.hidden and "net" not in t.tasks)

    broken = make_variant(
        spec,
        {
            "name": "syntax",
            "replace": [["training.py", "    net.apply(init_weights)\n", "    net.apply(init_weights\n"]],
        },
        tmp_path / "syntax",
    )
    report = grade(spec, broken, GradingOptions(profile="quick", marks="not accuracy"))
    (error,) = report.load_errors
    assert error["file"] == "training.py" and error["source"].strip().startswith("net.apply(init_weights")
    assert error["reason"].startswith("SyntaxError (training.py line") and error["column"] > 0
    lines = render.load_errors(report)
    assert lines[0].startswith("training.py could not be loaded: SyntaxError") and lines[-1].strip() == "^"
    assert "training.py could not be loaded" in render.markdown(report)


def test_a_hand_in_seed_comes_from_the_course_secret_the_assignment_and_the_modules(tmp_path):
    spec = dataclasses.replace(spec_of("assignment2"), root=tmp_path)
    seed = hand_in_seed(spec, "digest")
    assert (tmp_path / SECRET_FILE).stat().st_mode & 0o777 == 0o600  # made at first use, for its owner only
    assert hand_in_seed(spec, "digest") == seed and 0 <= seed < 2**62
    assert hand_in_seed(spec, "other digest") != seed
    assert hand_in_seed(dataclasses.replace(spec, name="assignment3"), "digest") != seed
    (tmp_path / SECRET_FILE).unlink()  # a lost secret: other inputs drawn
    assert hand_in_seed(spec, "digest") != seed


def test_the_same_hand_in_gets_the_same_seed_and_grade_however_handed_in_and_a_changed_one_another(tmp_path):
    """Issue 18: a regrade drew a new seed, and with it another grade."""
    spec = spec_of("assignment2")
    folder = make_variant(spec, {"name": "as handed in", "replace": []}, tmp_path / "folder")
    zipped = shutil.make_archive(str(tmp_path / "handed-in"), "zip", folder)
    edit = [["lenet.py", "from torch import nn\n", "from torch import nn  # mine\n"]]
    changed = make_variant(spec, {"name": "changed", "replace": edit}, tmp_path / "changed")
    hand_ins = {"folder": folder, "again": folder, "zip": Path(zipped), "changed": changed}
    futures = {
        name: GRADINGS.submit(("seed", name), spec, path, select="evaluate_accuracy_matches", marks="not accuracy")
        for name, path in hand_ins.items()
    }
    reports = {name: future.result() for name, future in futures.items()}
    assert reports["folder"].seed is not None
    assert reports["folder"].seed == reports["again"].seed == reports["zip"].seed != reports["changed"].seed
    assert reports["folder"].score == reports["again"].score == reports["zip"].score == reports["folder"].max_score
