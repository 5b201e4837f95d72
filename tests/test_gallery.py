"""The gallery (tests/gallery/gallery.toml): hostile and broken hand-ins of assignment2, graded in
one batch next to the reference. Each gets what it earned, with a clear reason, and none stops the
batch or reaches another student, the gradebook, the hidden tests or the machine."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from grader.batch import Options, Outcome, run_batch
from grader.plugin import REDACTED, hidden_source_lines
from grader.sandbox import ISOLATION_ENV, isolation_user
from tests.gallery import ENTRIES, LIMITS, build, problems
from tests.kit import spec_of

# The accuracy test only trains the reference for a minute: it tells nothing about hostile code.
OPTIONS = Options(profile="quick", marks="not accuracy", limits=LIMITS)
SAME_USER = [name for name, entry in ENTRIES.items() if entry.get("same_user")]
TWICE = ["reference", "starter", "nan-outputs", "fork-bomb"]
as_root = pytest.mark.skipif(
    isolation_user() is None, reason="fork bombs and kill(-1) run only where each sandbox gets a user of its own (root)"
)


def grade_gallery(folder: Path, names: list[str]) -> dict[str, Outcome]:
    spec = spec_of("assignment2")
    submissions, out = folder / "submissions", folder / "grades"
    submissions.mkdir(parents=True)
    for name in names:
        build(ENTRIES[name], spec, submissions, out)
    result = run_batch(spec, submissions, out, OPTIONS, workers=2, console=Console(file=io.StringIO()))
    return {outcome.id: outcome for outcome in result.outcomes}


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Outcome]]:
    folder = tmp_path_factory.mktemp("gallery")
    return folder, grade_gallery(folder, list(ENTRIES))


@pytest.fixture(scope="module")
def same_user(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Outcome]]:
    folder = tmp_path_factory.mktemp("same-user")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ISOLATION_ENV, "same-user")
        return folder, grade_gallery(folder, SAME_USER)


@as_root
@pytest.mark.parametrize("name", list(ENTRIES))
def test_each_hand_in_gets_what_it_earned(gallery, name):
    outcome = gallery[1][name]
    assert not problems(ENTRIES[name], outcome.report, outcome.status), outcome.report.summary()


@pytest.mark.parametrize("name", SAME_USER)
def test_as_the_graders_own_user_too(same_user, name):
    outcome = same_user[1][name]
    assert outcome.report.isolation in ("same-user", "not run")
    assert not problems(ENTRIES[name], outcome.report, outcome.status), outcome.report.summary()


def student_files(out: Path) -> dict[Path, str]:
    return {path: path.read_text() for path in (out / "students").glob("*/*") if path.is_file()}


@pytest.mark.parametrize("mode", [pytest.param("gallery", marks=as_root), "same_user"])
def test_no_line_of_a_hidden_test_reaches_a_report(request, mode):
    folder, outcomes = request.getfixturevalue(mode)
    secrets = hidden_source_lines(spec_of("assignment2"))
    assert secrets
    for path, text in student_files(folder / "grades").items():
        leaked = [line for line in secrets if line in text]
        assert not leaked, f"{path} quotes the hidden tests: {leaked[:3]}"
    reader = outcomes["reads-hidden-tests"].report
    if reader.isolation.endswith("private files"):  # the hidden tests and the reference were not there
        assert all("read 0 hidden files" in t.reason for t in reader.tests if t.status == "failed")
    else:  # they were read, and every line that quoted them was removed
        assert any(REDACTED in t.output for t in reader.tests)


@pytest.mark.parametrize("mode", [pytest.param("gallery", marks=as_root), "same_user"])
def test_forged_reports_and_grades_do_not_survive(request, mode):
    folder, outcomes = request.getfixturevalue(mode)
    out = folder / "grades"
    for student, outcome in outcomes.items():
        saved = json.loads((out / "students" / student / "report.json").read_text())
        assert saved["score"] == outcome.report.score and saved["max_score"] == outcome.report.max_score
        assert json.loads((out / "students" / student / "grading.json").read_text())["key"] == outcome.key
    reference = outcomes["reference"].report
    assert reference.score == reference.max_score > 0
    assert f"\nreference,{reference.score},{reference.max_score},100.0,graded," in (out / "grades.csv").read_text()


@as_root
def test_a_hand_in_cannot_reach_another_one(gallery):
    folder, _ = gallery
    handed_in = (folder / "submissions" / "reference" / "lenet.py").read_text()
    assert handed_in == (spec_of("assignment2").reference_dir / "lenet.py").read_text()


@as_root
def test_nothing_is_left_running(gallery):
    uids = {int(m.group(1)) for o in gallery[1].values() if (m := re.match(r"uid (\d+)", o.report.isolation))}
    assert len(uids) == 2  # one per worker
    left = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(fields["Uid"].split()[0]) in uids:
            left.append(status.parent.name)
    assert not left, f"processes of the sandbox users still run: {left}"
    assert not any(Path("/proc", pid).exists() for pid in left)


@as_root
def test_the_same_hand_ins_graded_twice_get_the_same_grades(gallery, tmp_path):
    again = grade_gallery(tmp_path, TWICE)
    for name in TWICE:
        first, second = gallery[1][name].report, again[name].report
        assert (first.score, first.max_score) == (second.score, second.max_score), name
        assert [(t.nodeid, t.status, t.reason, t.limit) for t in first.tests] == [
            (t.nodeid, t.status, t.reason, t.limit) for t in second.tests
        ], name


def test_the_gallery_covers_the_threat_model():
    limits = {entry.get("limit") for entry in ENTRIES.values()}
    assert {"timeout", "memory", "processes", "output", "files"} <= limits
    assert {e.get("status", "graded") for e in ENTRIES.values()} == {"graded", "unreadable"}
