"""Every assignment: a well-formed starter, a reference with full marks, a starter with zero,
known-wrong variants that each lose points on the test that names their mistake, and correct
alternatives to the reference (another way to write it) that keep full marks."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from grader.blanks import pair_blanks, released_blanks
from grader.report import Report
from tests.kit import ANOTHER_SEED, ASSIGNMENTS, GRADINGS, graded, make_variant, spec_of, submit_graded, variants


@pytest.fixture(scope="module", autouse=True)
def _grade_ahead(request, tmp_path_factory):
    """Submit every grading that this module's selected tests will ask for, so they run side by side."""
    for item in request.session.items:
        params = getattr(item, "callspec", None) and item.callspec.params
        if not params or item.module is not request.module:
            continue
        if "variant" in params:
            seed = ANOTHER_SEED if item.originalname == "test_a_variant_gets_the_same_verdict_on_another_seed" else None
            variant_gradings(params["name"], params["variant"], tmp_path_factory, seed)
        elif "alternative" in params:
            alternative_grading(params["name"], params["alternative"], tmp_path_factory)
        elif item.originalname == "test_reference_scores_full_marks":
            submit_graded(params["name"], "reference")
        elif item.originalname == "test_the_reference_graded_twice_gets_the_same_score":
            submit_graded(params["name"], "reference", again=True)
        elif item.originalname == "test_starter_scores_zero_and_every_failure_names_a_blank":
            submit_graded(params["name"], "starter")


def variant_gradings(name: str, variant: dict, tmp_path_factory, seed: int | None = None) -> list[Future[Report]]:
    """A variant's gradings, with its own seed unless one is given, on the tests it names: without
    the trained-accuracy ones and with every test of its exact scope (EXACT_IN), then on the accuracy
    tests it names; elsewhere a variant about accuracy is graded once, on its tests alone, as it
    cannot be known here which of them train."""
    key = (name, variant["name"], seed)
    exact, accuracy = name in EXACT_IN, bool(variant.get("accuracy"))
    keys = ([key] if exact or not accuracy else []) + ([(*key, "accuracy")] if accuracy else [])
    if key not in GRADINGS and (*key, "accuracy") not in GRADINGS:
        spec = spec_of(name)
        folder = make_variant(spec, variant, tmp_path_factory.mktemp("variant") / "submission")
        named = sorted({test.split("[")[0] for test in [*variant["fails"], *variant.get("cascades", {})]})
        if exact or not accuracy:  # -k takes no [params], and matches a module's name too
            select = " or ".join([*EXACT_IN.get(name, ()), *named])
            GRADINGS.submit(key, spec, folder, marks="not accuracy", select=select, seed=seed)
        if accuracy:
            marks = "accuracy" if exact else None
            GRADINGS.submit((*key, "accuracy"), spec, folder, marks=marks, select=" or ".join(named), seed=seed)
    return [GRADINGS.submit(k) for k in keys]


def alternative_grading(name: str, alternative: dict, tmp_path_factory) -> Future[Report]:
    """A correct alternative, graded on every test but the trained-accuracy ones."""
    key = (name, "alternative", alternative["name"])
    if key in GRADINGS:
        return GRADINGS.submit(key)
    spec = spec_of(name)
    folder = make_variant(spec, alternative, tmp_path_factory.mktemp("alternative") / "submission")
    return GRADINGS.submit(key, spec, folder, marks="not accuracy")


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


@pytest.mark.parametrize("name", ["assignment5"])  # trains two networks (transfer, from scratch), quickly
def test_the_reference_graded_twice_gets_the_same_score(name):
    """A grading with another seed draws other inputs: the scores are the same, not every figure measured."""
    first, second = graded(name, "reference"), submit_graded(name, "reference", again=True).result()
    assert [(t.nodeid, t.status, t.score) for t in first.tests] == [(t.nodeid, t.status, t.score) for t in second.tests]
    assert first.seed != second.seed
    assert any("accuracy" in t.measured for t in first.tests)


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_starter_scores_zero_and_every_failure_names_a_blank(name):
    report = graded(name, "starter")
    assert report.score == 0
    for test in report.tests:
        assert test.reason.startswith("not filled in yet: "), f"{test.name}: {test.reason}"
        assert " line " in test.reason
    spec = spec_of(name)
    total = len(released_blanks(spec).blanks)
    assert report.blanks == {"total": total, "open": report.blanks["open"], "missing": 0}
    assert len(report.blanks["open"]) == total


# Where one mistake costs only the tests that name it (issue 18): among the tests of these modules, a
# variant must fail exactly those it names, `fails`, and those listed as `cascades`: tests that fail
# for a mistake made elsewhere (a conv2d fed the wrong output size), known and counted until
# untangled. Still to bring in: assignment5, assignment6's localization and metrics, and the network
# tests of 2, 3 and 4 (a wrong layer also fails the hidden logits test and the count tests'
# reproduction checks; a training mistake also fails assignment3's experiments).
EXACT_IN = {
    "assignment1": ("test_conv", "test_counting", "test_filters", "test_layers", "test_library_calls", "test_pooling"),
    "assignment2": ("test_training",),
    "assignment3": ("test_2_training",),
    "assignment4": ("test_training", "test_cnns"),
    "assignment6": ("test_boxes",),
}


def in_exact_scope(name: str, nodeid: str) -> bool:
    return any(f"/{module}.py::" in nodeid for module in EXACT_IN.get(name, ()))


def failures(name: str, variant: dict, tmp_path_factory, seed: int | None = None) -> dict[str, tuple[str, str]]:
    """{test: (node id, reason)} of every test the variant fails."""
    reports = [future.result() for future in variant_gradings(name, variant, tmp_path_factory, seed)]
    failed = [test for report in reports for test in report.tests if test.status != "passed"]
    return {test.nodeid.split("::")[-1]: (test.nodeid, test.reason) for test in failed}


def fails_as_named(name: str, variant: dict, failed: dict[str, tuple[str, str]]) -> None:
    """Every test the variant names (`fails`, `cascades`) failed with its phrase in the reason and,
    in its exact scope, no other test failed."""
    expected = {**variant["fails"], **variant.get("cascades", {})}
    for test_name, expected_reason in expected.items():
        assert test_name in failed, f"{variant['name']}: {test_name} passed"
        reason = failed[test_name][1]
        assert expected_reason in reason, f"{variant['name']}: {test_name} says {reason!r}"
    extra = {t: r for t, (nodeid, r) in failed.items() if in_exact_scope(name, nodeid) and t not in expected}
    assert not extra, f"{variant['name']} also fails " + "; ".join(f"{t}: {r}" for t, r in sorted(extra.items()))


@pytest.mark.parametrize(("name", "variant"), variants())
def test_known_wrong_variant_loses_points_where_it_should(name, variant, tmp_path_factory):
    fails_as_named(name, variant, failures(name, variant, tmp_path_factory))


def exact_variants() -> list:
    """The variants whose exact scope can be graded without training (no accuracy test named)."""
    return [case for case in variants() if case.values[0] in EXACT_IN and not case.values[1].get("accuracy")]


@pytest.mark.parametrize(("name", "variant"), exact_variants())
def test_a_variant_gets_the_same_verdict_on_another_seed(name, variant, tmp_path_factory):
    """Issue 18: what a grading draws (its batches, its random inputs) decides no verdict: on another
    seed than the hand-in's own (a fresh kit's secret draws others), a variant fails the same tests
    of its exact scope, for the reasons it names."""
    fails_as_named(name, variant, failures(name, variant, tmp_path_factory, ANOTHER_SEED))


def test_evaluation_in_training_mode_loses_the_same_points_on_every_seed(tmp_path_factory):
    """Issue 18: this hand-in lost its accuracy points on some seeds only; the inputs now make the
    mode decisive on every draw."""
    wrong_mode = "net.train() instead of net.eval() in evaluate_accuracy_gpu"
    variant = next(case.values[1] for case in variants() if case.values[1]["name"] == wrong_mode)
    for seed in range(1, 7):  # submitted side by side, then read
        variant_gradings("assignment2", variant, tmp_path_factory, seed)
    verdicts = set()
    for seed in range(1, 7):
        failed = failures("assignment2", variant, tmp_path_factory, seed)
        verdicts.add(frozenset(t for t, (nodeid, _reason) in failed.items() if in_exact_scope("assignment2", nodeid)))
    assert verdicts == {frozenset(variant["fails"])}, verdicts


@pytest.mark.parametrize(("name", "alternative"), variants("alternative"))
def test_correct_alternative_keeps_full_marks(name, alternative, tmp_path_factory):
    report = alternative_grading(name, alternative, tmp_path_factory).result()
    failed = [f"{t.name}: {t.reason}" for t in report.tests if t.status != "passed"]
    assert not failed, f"{alternative['name']}: " + "\n".join(failed)
