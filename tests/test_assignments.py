"""Every assignment: a well-formed starter, a reference with full marks, a starter with zero,
and known-wrong variants that each lose points on the test that names their mistake."""

from __future__ import annotations

import pytest

from grader.blanks import assignment_blanks, pair_blanks
from grader.pipeline import grade
from tests.kit import ASSIGNMENTS, graded, make_variant, spec_of, variants


def test_the_kit_has_assignments():
    assert "assignment2" in ASSIGNMENTS


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_starter_is_the_reference_with_blanks(name):
    spec = spec_of(name)
    for file in spec.files:
        starter, reference = (spec.starter_dir / file).read_text(), (spec.reference_dir / file).read_text()
        blanks, violations = pair_blanks(starter, reference, file)
        assert not violations, "\n".join(v.describe() for v in violations)
        assert blanks, f"{name}/{file} has no blank to fill"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_reference_scores_full_marks(name):
    report = graded(name, "reference")
    failed = [f"{t.name}: {t.reason}" for t in report.tests if t.status != "passed"]
    assert not failed, "\n".join(failed)
    assert report.score == report.max_score > 0
    assert report.blanks["open"] == []


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_starter_scores_zero_and_every_failure_names_a_blank(name):
    report = graded(name, "starter")
    assert report.score == 0
    for test in report.tests:
        assert test.reason.startswith("not filled in yet: "), f"{test.name}: {test.reason}"
        assert " line " in test.reason
    spec = spec_of(name)
    total = len(assignment_blanks(spec.starter_dir, spec.reference_dir, spec.files))
    assert report.blanks == {"total": total, "open": report.blanks["open"]}
    assert len(report.blanks["open"]) == total


@pytest.mark.parametrize(("name", "variant"), variants())
def test_known_wrong_variant_loses_points_where_it_should(name, variant, tmp_path):
    spec = spec_of(name)
    folder = make_variant(spec, variant, tmp_path / "variant")
    marks = None if variant.get("accuracy") else "not accuracy"
    report = grade(spec, folder, profile="quick", marks=marks)
    outcomes = {t.nodeid.split("::")[-1]: t for t in report.tests}
    for test_name, expected_reason in variant["fails"].items():
        result = outcomes[test_name]
        assert result.status == "failed", f"{variant['name']}: {test_name} passed"
        assert expected_reason in result.reason, f"{variant['name']}: {test_name} says {result.reason!r}"
    assert report.score < report.max_score
