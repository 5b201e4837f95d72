"""The HTML reports and their pictures: figure data bounded, drawn within a budget, carried in the
JSON report (PrairieLearn's `images`, Gradescope's HTML output), and each page opened in headless
Chromium, which must load it without an error or a request beyond the page, and show every image."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from rich.console import Console

from grader import figures, i18n, render, render_html
from grader.batch.gradebook import summarize
from grader.batch.outcomes import Outcome
from grader.batch.run import BatchOptions, run_batch
from grader.cli import main
from grader.options import GradingOptions
from grader.report import Report, build_report
from grader.runner import Run
from grader.testing import probes_for
from tests.chromium import Chromium, chromium_fixture, needs_chromium  # noqa: F401 (the fixture)
from tests.kit import ROOT, spec_of, submit_graded

QUIET = Console(file=io.StringIO())

PNG = b"\x89PNG\r\n\x1a\n"


# --- figure data -------------------------------------------------------------------------------


def sample_figures() -> dict[str, dict[str, Any]]:
    """One figure of each kind, at its largest."""
    rng = torch.Generator().manual_seed(0)
    epochs = torch.linspace(0, 30, 1000)
    predicted = torch.randint(0, 10, (1000,), generator=rng)
    made = {
        "training": figures.curves(
            "training",
            {"train loss": list(zip(epochs.tolist(), torch.exp(-epochs / 8).mul(2.3).tolist(), strict=True))},
        ),
        "confusion": figures.confusion("confusion", predicted, predicted.roll(1), 10),
        "maps": figures.feature_maps(
            "maps", torch.rand(1, 28, 28, generator=rng), torch.rand(32, 26, 26, generator=rng)
        ),
        "boxes": figures.boxes(
            "boxes",
            torch.rand(12, 1, 64, 64, generator=rng),
            torch.tensor([[8.0, 8.0, 40.0, 40.0]]).repeat(12, 1),
            torch.tensor([[10.0, 6.0, 44.0, 38.0]]).repeat(12, 1),
            torch.arange(12),
            torch.arange(12).flip(0),
        ),
    }
    assert all(made.values()), [name for name, figure in made.items() if figure is None]
    return made


def test_figure_data_is_bounded_and_checked():
    made = sample_figures()
    assert len(made["training"]["series"]["train loss"]) == figures.MAX_POINTS
    assert made["maps"]["maps"]["shape"] == [figures.MAX_MAPS, 26, 26]
    assert len(made["boxes"]["true"]) == figures.MAX_BOX_IMAGES
    assert sum(map(sum, made["confusion"]["values"])) == 1000
    json.dumps(made)  # plain data, as a test record carries it
    # what a sandbox hands back may be anything: only finite numbers are kept, or nothing at all
    crafted = {
        "<b>loss</b> $\\frac{1}{0}$": [(0, 1.0), (1, math.nan), (2, math.inf), "x", (3, 1e300), (4, True)],
        "empty": [],
        **{f"line {i}": [(0, i)] for i in range(20)},
    }
    series = figures.curves("t", crafted)["series"]
    assert len(series) <= figures.MAX_SERIES
    assert series["bloss/b frac10"] == [[0.0, 1.0], [3.0, 1e9]]
    assert "empty" not in series
    for junk in (None, "text", {"a": "text"}, {"a": [(1, 2, 3)]}, 7):
        assert figures.curves("t", junk) is None
    # a figure that cannot be made is left out, it never fails the test that records it
    assert figures.feature_maps("t", "not a tensor", None) is None
    assert figures.confusion("t", torch.zeros(3), torch.zeros(3), 1000) is None
    recorded = []
    figures.record(lambda *pair: recorded.append(pair), "x", None)
    assert recorded == []


def report_with(figure_sets: list[dict[str, Any]], hidden: set[int] = frozenset(), reason: str = "") -> Report:
    """A report whose i-th test recorded figure_sets[i] (hidden when i is in `hidden`), built as a grading builds it."""
    collected, results = [], {}
    for index, recorded in enumerate(figure_sets):
        nodeid = f"{'hidden' if index in hidden else 'tests'}/t.py::test_{index}"
        collected.append(
            {
                "nodeid": nodeid,
                "name": f"test {index}",
                "points": 1.0,
                "tasks": [],
                "accuracy": True,
                "hidden": index in hidden,
            }
        )
        measured = {"accuracy": 0.5, **{figures.PREFIX + name: data for name, data in recorded.items()}}
        results[nodeid] = {
            "nodeid": nodeid,
            "outcome": "failed",
            "reason": reason or f"reason {index}",
            "output": reason or f"reason {index}",
            "duration_s": 1.0,
            "measured": measured,
        }
    run = Run(session={"profile": "quick", "device": "cpu", "dataset": "MNIST"}, collected=collected, results=results)
    return build_report(spec_of("assignment3"), run, "/instructor/subs/dung")


def test_the_report_keeps_figure_data_and_draws_them_under_one_megabyte():
    made = sample_figures()
    report = report_with([made] * 6)  # far more than a grading records
    first = report.tests[0]
    assert first.measured == {"accuracy": 0.5}
    assert first.figures == made
    assert [image["label"] for image in first.images] == [figure["title"] for figure in made.values()]
    for image in first.images:
        assert base64.b64decode(image["url"].removeprefix("data:image/png;base64,")).startswith(PNG)
    urls = sum(len(image["url"]) for test in report.tests for image in test.images)
    assert urls <= figures.IMAGE_BUDGET < 1_000_000
    assert sum(len(test.images) for test in report.tests) < 6 * len(made)  # past the budget: data kept, no picture
    assert report.tests[-1].figures == made
    document = json.dumps(report.to_json())
    assert Report.from_json(json.loads(document)).tests[0].images == first.images
    gradescope = json.dumps(render.gradescope(report))
    assert len(gradescope.encode()) < 1_000_000


def test_a_hidden_tests_figures_are_never_kept_or_drawn():
    report = report_with([sample_figures()] * 2, hidden={1})
    assert report.tests[0].images
    assert report.tests[1].figures == {} and report.tests[1].images == []
    assert "figure:" not in json.dumps(report.to_json())


def test_gradescope_and_prairielearn_read_the_pictures():
    report = report_with([{"training": sample_figures()["training"]}, {}], reason="loss <b>exploded</b>")
    pictured, plain = render.gradescope(report)["tests"]
    assert pictured["output_format"] == "html"  # Gradescope renders data-URL images in HTML output
    assert pictured["output"].startswith(
        '<pre>loss &lt;b&gt;exploded&lt;/b&gt;</pre><figure><img src="data:image/png;base64,'
    )
    assert plain["output"] == "loss <b>exploded</b>" and "output_format" not in plain
    images = report.to_json()["tests"][0]["images"]  # PrairieLearn's per-test images: {label, url}
    assert set(images[0]) == {"label", "url"} and images[0]["url"].startswith("data:image/png;base64,")


def test_the_page_escapes_what_a_submission_wrote_and_loads_nothing():
    crafted = figures.curves("t", {"<img src=x onerror=alert(1)>": [(0, 1), (1, 2)]})
    report = report_with([{"training": crafted}], reason='<script>alert("x")</script>')
    page = render_html.report_page(report)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "onerror" not in page  # a series' name is drawn in the picture, never written in the page
    assert "http://" not in page and "https://" not in page
    assert "/instructor/subs" not in page  # the student's page names the hand-in, not the instructor's folder
    assert page.count("<img ") == 1


# --- in Chromium ---------------------------------------------------------------------------------


def check_page(chromium: Chromium, path: Path, images: int) -> None:
    """The page loads with no error and no request but itself and its data URLs, and shows `images` images."""
    page = chromium.open(path)
    assert page["errors"] == [], f"{path.name}: {page['errors']}"
    beyond = [
        url
        for url in page["requests"]
        if not url.startswith("data:image/png;base64,") and url != path.resolve().as_uri()
    ]
    assert beyond == [], f"{path.name} requested {beyond}"
    assert len(page["images"]) == images, f"{path.name} has {len(page['images'])} images, expected {images}"
    assert all(complete and width > 0 and height > 0 for complete, width, height in page["images"]), page["images"]
    assert base64.b64decode(page["screenshot"]).startswith(PNG)


@needs_chromium
def test_a_report_page_with_each_kind_of_picture_opens_in_chromium(chromium, tmp_path):
    report = report_with([sample_figures(), {}], reason="a reason with <tags> & more")
    path = tmp_path / "report.html"
    path.write_text(render_html.report_page(report))
    check_page(chromium, path, images=4)
    assert chromium.open(path)["images"][0][1] >= 300  # drawn at a readable size


@needs_chromium
def test_a_page_that_loads_anything_else_fails_the_check(chromium, tmp_path):
    """The check itself: a request beyond the page or a console error is caught."""
    report = report_with([{}])
    path = tmp_path / "bad.html"
    path.write_text(render_html.report_page(report).replace("</body>", '<img src="https://example.com/x.png"></body>'))
    with pytest.raises(AssertionError, match=r"Content Security Policy|requested"):
        check_page(chromium, path, images=1)


@needs_chromium
def test_grade_html_writes_a_page_with_pictures_that_opens_in_chromium(chromium, tmp_path):
    """`grade assignment3 --html`: the trained MnistCNN's confusion matrix and conv1's feature maps."""
    page, document = tmp_path / "report.html", tmp_path / "report.json"
    code = main(
        [
            "assignment3",
            "--submission",
            str(ROOT / "reference" / "assignment3"),
            "--profile",
            "quick",
            "--select",
            "mnist_cnn_accuracy",
            "--html",
            str(page),
            "--json",
            str(document),
        ]
    )
    assert code == 0
    (test,) = json.loads(document.read_text())["tests"]
    assert set(test["figures"]) == {"confusion", "conv1 maps"}
    assert [image["label"].split(":")[0] for image in test["images"]] == ["MnistCNN trained"] * 2
    check_page(chromium, page, images=2)


@needs_chromium
def test_a_batch_writes_feedback_pages_and_a_class_page_that_open_in_chromium(chromium, tmp_path):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    shutil.copytree(ROOT / "reference" / "assignment3", submissions / "ana")
    shutil.copytree(ROOT / "starter" / "assignment3", submissions / "binh")
    (submissions / "chi.zip").write_bytes(b"not a zip")
    options = GradingOptions(profile="quick", select="mnist_cnn_accuracy")
    result = run_batch(
        spec_of("assignment3"), submissions, tmp_path / "out", options, BatchOptions(workers=2, console=QUIET)
    )
    out = result.out
    check_page(chromium, out / "students" / "ana" / "feedback.html", images=2)  # trained: its pictures
    check_page(chromium, out / "students" / "binh" / "feedback.html", images=0)  # blanks: nothing trained
    check_page(chromium, out / "students" / "chi" / "feedback.html", images=0)
    check_page(chromium, out / "index.html", images=2)  # the score histogram, each test's pass rate
    index = (out / "index.html").read_text()
    for student in ("ana", "binh", "chi"):
        assert f'href="students/{student}/feedback.html"' in index
    assert "not filled in yet" in index  # the commonest reason


def test_the_class_page_counts_students_once_per_reason():
    reports = [report_with([{}, {}], reason="same reason\nsecond line") for _ in range(3)]
    outcomes = [Outcome(f"s{i}", report, "graded", "") for i, report in enumerate(reports)]
    page = render_html.class_page(outcomes, summarize(outcomes))
    assert "<td>same reason</td><td>3</td><td>test 0, test 1</td>" in page
    assert "second line" not in page


def test_both_pages_speak_the_language_of_the_grading():
    report = report_with([{}, {}])
    outcomes = [Outcome("s0", report, "unreadable", "")]
    with i18n.using("vi"):
        page, index = render_html.report_page(report), render_html.class_page(outcomes, summarize(outcomes))
    assert '<html lang="vi">' in page and "<b>0</b> / 2 điểm (0%)" in page and "bài kiểm tra" in page
    assert '<html lang="vi">' in index and "Sinh viên" in index and "không đọc được" in index
    english = render_html.report_page(report)
    assert '<html lang="en">' in english and "<b>0</b> / 2 points (0%)" in english


@pytest.mark.parametrize("name", ["assignment2", "assignment3", "assignment6", "assignment7"])
def test_the_reference_grading_draws_its_pictures(name):
    """The pictures each assignment promises: assignment2's training curve, assignment3's confusion
    matrices and feature maps, assignment6's boxes, assignment7's curves, confusion matrix, accuracy
    per class and five test images with their predictions; drawn from the reference's graded report."""
    expected = {
        "assignment2": {"training"},
        "assignment3": {"confusion", "conv1 maps"},
        "assignment6": {"boxes"},
        "assignment7": {"training", "confusion", "per class", "predictions"},
    }[name]
    report = submit_graded(name, "reference").result()
    pictured = [test for test in report.tests if test.figures]
    assert pictured and all(set(test.figures) == expected for test in pictured), [t.figures.keys() for t in pictured]
    assert all(len(test.images) == len(expected) for test in pictured)
    if name == "assignment2":
        (test,) = pictured
        assert set(test.figures["training"]["series"]) == {"train loss", "train acc", "test acc"}


def test_the_training_probe_returns_what_train_ch6_handed_its_animator():
    """assignment2's training probe, run here on the reference with a tiny budget: its weights and
    the Animator's points (whatever a submission made of them, the probe still returns its weights)."""
    modules = {}
    for name in ("lenet", "training"):
        spec = importlib.util.spec_from_file_location(f"html_{name}", ROOT / "reference" / "assignment2" / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    probes = probes_for(str(ROOT / "assignments" / "assignment2" / "tests" / "test_lenet.py"))
    sub = SimpleNamespace(device="cpu", **modules)
    x, y = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (64,))
    trained = probes.train_lenet(sub, x, y, {"steps": 8, "batch_size": 16, "lr": 0.1, "val_size": 16})
    assert set(trained["state"]) == set(modules["lenet"].net.state_dict())
    history = trained["history"]
    assert set(history) == {"train loss", "train acc", "test acc"}
    assert len(history["test acc"]) == 2  # two epochs of 4 batches, one evaluation each
    assert figures.curves("t", history)["series"].keys() == history.keys()
    d2l_add = probes.d2l.Animator.add
    probes.d2l.Animator.add = lambda self, x, ys: setattr(self, "history", "not points")
    try:
        assert probes.train_lenet(sub, x, y, {"steps": 4, "batch_size": 16, "lr": 0.1, "val_size": 16})["history"] == {}
    finally:
        probes.d2l.Animator.add = d2l_add


def test_an_html_path_that_cannot_be_written_is_one_line_before_grading(capsys, tmp_path):
    assert main(["assignment2", "--html", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: --html {tmp_path}: is a folder, give a file name\n"


def test_the_page_shows_what_a_failing_test_printed_and_nothing_else_for_an_unreadable_hand_in():
    """feedback.html tells what feedback.md tells: a failure's own prints under its reason, and for a
    hand-in that could not be read, its one reason and no table of tests that never ran."""
    printed = report_with([{}], reason="zero_grad() is never called")
    printed.tests[0].output = "zero_grad() is never called\nepoch 1 <loss> 2.3"
    page = render_html.report_page(printed)
    assert '<pre class="output">epoch 1 &lt;loss&gt; 2.3</pre>' in page
    unreadable = build_report(spec_of("assignment3"), Run(), "subs/chi.zip", problem="not a zip file")
    page = render_html.report_page(unreadable)
    assert "<table>" not in page and page.count("not a zip file") == 1
