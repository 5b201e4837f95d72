"""Average precision and mAP (metrics.py): the notebook's 11-point example, cases worked out by hand, and
torchmetrics' COCO mean average precision on a small synthetic set of boxes.

torchmetrics (on pycocotools) averages AP over the IoU thresholds 0.5:0.95 by default; asked for the
single threshold 0.5, its `map_50` is the mAP that `mean_average_precision` computes: COCO's greedy
matching and 101 recall levels. Its default recall levels are float32 (0.6 is stored as 0.6000000238),
so a recall of exactly 3/5 would miss the 0.6 level there: the test hands it the exact levels i / 100.
"""

import math

import pytest
import torch

# The notebook's example: precisions at the recalls 0, 0.1, ..., 1.
NOTEBOOK_PRECISIONS = [0.91, 0.94, 0.96, 0.94, 0.95, 0.92, 0.80, 0.60, 0.45, 0.20, 0.10]


def attempt(function, *args):
    """Call a student's function; an exception comes back as {"error": ...} for the test to report."""
    try:
        value = function(*args)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    if isinstance(value, torch.Tensor):
        return value.detach().as_subclass(torch.Tensor).clone()
    return value if isinstance(value, (int, float, bool)) else f"a {type(value).__name__}"


def number(value, what):
    """A student's result as a float, or a one-line failure."""
    if isinstance(value, dict):
        pytest.fail(f"{what} raised {value['error']}")
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{what} returned {value!r}, not a number"
    return float(value)


# --- the precision envelope and interpolated AP ------------------------------------------------


def by_hand_envelope(precisions):
    """At each point, the best precision at this recall or a higher one."""
    return [max(precisions[i:]) for i in range(len(precisions))]


def by_hand_ap(recalls, precisions, num_points):
    """The mean, over the levels i / (num_points - 1), of the best precision at a recall >= the level (else 0)."""
    levels = [i / (num_points - 1) for i in range(num_points)]
    return (
        sum(max([p for r, p in zip(recalls, precisions, strict=True) if r >= level], default=0.0) for level in levels)
        / num_points
    )


# TP, FP, TP, FP over 3 ground-truth boxes: recall 1/3, 1/3, 2/3, 2/3; precision 1, 1/2, 2/3, 1/2.
# With 101 levels: 0.00..0.33 (34 levels) see 1, 0.34..0.66 (33) see 2/3, 0.67..1 (34) see 0:
# AP = (34 + 33 x 2/3) / 101 = 56/101. With 11 levels: (4 + 3 x 2/3) / 11 = 6/11.
HAND_RECALLS = [1 / 3, 1 / 3, 2 / 3, 2 / 3]
HAND_PRECISIONS = [1.0, 1 / 2, 2 / 3, 1 / 2]


def curves(sub):
    """Probe: the envelope and the AP of the notebook's example and of the hand-made curve."""
    notebook_recalls = torch.arange(11, dtype=torch.float64) / 10
    notebook_precisions = torch.tensor(NOTEBOOK_PRECISIONS, dtype=torch.float64)
    recalls, precisions = (
        torch.tensor(HAND_RECALLS, dtype=torch.float64),
        torch.tensor(HAND_PRECISIONS, dtype=torch.float64),
    )
    return {
        "envelope": attempt(sub.metrics.precision_envelope, notebook_precisions),
        "notebook_ap": attempt(sub.metrics.interpolated_ap, notebook_recalls, notebook_precisions, 11),
        "hand_ap_11": attempt(sub.metrics.interpolated_ap, recalls, precisions, 11),
        "hand_ap_101": attempt(sub.metrics.interpolated_ap, recalls, precisions, 101),
    }


@pytest.fixture(scope="module")
def curve(submission):
    return submission.run(curves)


@pytest.mark.points(2)
@pytest.mark.task("precision_envelope")
def test_precision_envelope(curve):
    """precision_envelope: the notebook's maximum precisions, never increasing"""
    got = curve["envelope"]
    if isinstance(got, dict):
        pytest.fail(f"precision_envelope raised {got['error']}")
    assert isinstance(got, torch.Tensor) and got.shape == (11,), (
        f"precision_envelope returned {got!r}, expected 11 values"
    )
    got = [round(v, 6) for v in got.tolist()]
    rises = [i for i in range(10) if got[i + 1] > got[i]]
    assert not rises, (
        f"the envelope {got} rises from recall {rises[0] / 10:.1f} to {(rises[0] + 1) / 10:.1f}: "
        "it must never increase (take the best precision at this recall or a higher one)"
    )
    expected = by_hand_envelope(NOTEBOOK_PRECISIONS)  # [0.96, 0.96, 0.96, 0.95, 0.95, 0.92, 0.8, ...]
    assert got == pytest.approx(expected), f"the envelope is {got}, expected {expected}"


@pytest.mark.points(2)
@pytest.mark.task("interpolated_ap", "precision_envelope")
def test_eleven_point_ap_of_the_notebook(curve):
    """interpolated_ap: the notebook's 11-point example is 7.85 / 11 = 0.7136"""
    got = number(curve["notebook_ap"], "interpolated_ap")
    expected = sum(by_hand_envelope(NOTEBOOK_PRECISIONS)) / 11  # 7.85 / 11: here every level is a point
    assert math.isclose(got, expected, abs_tol=1e-9), (
        f"AP of the notebook's example is {got:.4f}, expected the mean of the smoothed precisions, {expected:.4f}"
    )


@pytest.mark.points(3)
@pytest.mark.task("interpolated_ap", "precision_envelope")
def test_ap_at_recall_levels_between_points(curve):
    """interpolated_ap: levels between the curve's points, and recall never reaching 1"""
    for points, key, fraction in ((11, "hand_ap_11", "6/11"), (101, "hand_ap_101", "56/101")):
        got = number(curve[key], "interpolated_ap")
        expected = by_hand_ap(HAND_RECALLS, HAND_PRECISIONS, points)
        assert math.isclose(got, expected, abs_tol=1e-9), (
            f"{points}-point AP of TP, FP, TP, FP over 3 objects is {got:.4f}, expected {fraction} = {expected:.4f}: "
            "each level r takes the envelope at the first point with recall >= r, and 0 past the last recall"
        )


# --- matching detections to ground truth ----------------------------------------------------------

# (name, detections, scores, ground truth, expected true positives), IoU threshold 0.5.
MATCH_CASES = [
    # The exact box comes second by score: its object is taken already, so it is the duplicate.
    ("duplicate", [[0, 0, 10, 10], [1, 0, 11, 10]], [0.6, 0.9], [[0, 0, 10, 10]], [False, True]),
    # The second detection overlaps the taken A by 0.74 and the free B by 0.6: it takes B.
    (
        "next best object",
        [[0, 0, 10, 10], [1.5, 0, 11.5, 10]],
        [0.9, 0.8],
        [[0, 0, 10, 10], [4, 0, 14, 10]],
        [True, True],
    ),
    ("below the threshold", [[0, 0, 10, 10]], [0.9], [[5.5, 0, 15.5, 10]], [False]),  # IoU 45/155 = 0.29
    ("at the threshold", [[0, 0, 1, 1]], [0.9], [[0, 0, 2, 1]], [True]),  # IoU exactly 1/2 counts
    ("no ground truth", [[0, 0, 1, 1]], [0.9], [], [False]),
]


def matches(sub, cases):
    """Probe: match_detections on each case."""
    return [
        attempt(
            sub.metrics.match_detections,
            torch.tensor(boxes, dtype=torch.float32),
            torch.tensor(scores),
            torch.tensor(gt, dtype=torch.float32).reshape(-1, 4),
            0.5,
        )
        for _, boxes, scores, gt, _ in cases
    ]


@pytest.mark.points(3)
@pytest.mark.task("match_detections")
def test_match_detections(submission):
    """match_detections: by decreasing score, each object matched at most once (COCO)"""
    for (name, boxes, scores, gt, expected), got in zip(MATCH_CASES, submission.run(matches, MATCH_CASES), strict=True):
        if isinstance(got, dict):
            pytest.fail(f"match_detections raised {got['error']} ({name})")
        assert isinstance(got, torch.Tensor), f"match_detections returned {got!r}, expected a bool tensor"
        got = [bool(v) for v in got.tolist()]
        assert got == expected, (
            f"{name}: detections {boxes} with scores {scores} on objects {gt} give true positives {got}, "
            f"expected {expected} (by decreasing score, each takes the free object of highest IoU >= 0.5)"
        )


# --- AP and mAP over a set of images -----------------------------------------------------------

# Two images. Class 1 has 3 objects; its detections, by decreasing score, are TP, FP, TP, FP (the
# hand-made curve above: AP 56/101). Class 2 has one object, found by its best detection: AP 1.
# Class 3 has a detection and no object: it has no AP and stays out of the mean.
# mAP = (56/101 + 1) / 2 = 157/202.
HAND_PREDS = [
    {
        "boxes": [[0, 0, 10, 10], [50, 50, 60, 60], [30, 0, 40, 10], [100, 100, 110, 110]],
        "scores": [0.9, 0.8, 0.5, 0.3],
        "labels": [1, 1, 2, 3],
    },
    {"boxes": [[1, 1, 11, 11], [60, 0, 70, 10]], "scores": [0.7, 0.6], "labels": [1, 1]},
]
HAND_TARGETS = [
    {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30], [31, 0, 41, 10]], "labels": [1, 1, 2]},
    {"boxes": [[0, 0, 10, 10]], "labels": [1]},
]


def as_tensors(items):
    return [
        {
            key: torch.tensor(value, dtype=torch.int64 if key == "labels" else torch.float32)
            for key, value in item.items()
        }
        for item in items
    ]


def synthetic_set(seed, images=6, classes=3):
    """Random objects; detections that are jittered copies, duplicates, wrong labels and false alarms."""
    generator = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=generator)
    preds, targets = [], []
    for _ in range(images):
        count = int(torch.randint(1, 6, (1,), generator=generator))
        corners = rand(count, 2) * 80
        gt = torch.cat([corners, corners + 10 + rand(count, 2) * 30], dim=1)
        labels = torch.randint(0, classes, (count,), generator=generator)
        copies = torch.cat([gt, gt[:2]]) + torch.randn(count + min(count, 2), 4, generator=generator) * 4
        alarms = rand(2, 2) * 80
        boxes = torch.cat([copies, torch.cat([alarms, alarms + 10 + rand(2, 2) * 30], dim=1)])
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        guess = torch.cat([labels, labels[:2], torch.randint(0, classes + 1, (2,), generator=generator)])
        wrong = rand(len(guess)) < 0.15
        guess = torch.where(wrong, (guess + 1) % (classes + 1), guess)
        preds.append({"boxes": boxes, "scores": rand(len(boxes)), "labels": guess})
        targets.append({"boxes": gt, "labels": labels})
    return preds, targets


def average_precisions(sub, preds, targets, labels):
    """Probe: average_precision of each class and mean_average_precision, at IoU 0.5 with 101 levels."""
    return {
        "per_class": [attempt(sub.metrics.average_precision, preds, targets, label, 0.5, 101) for label in labels],
        "map": attempt(sub.metrics.mean_average_precision, preds, targets, 0.5, 101),
    }


@pytest.mark.points(3)
@pytest.mark.task("average_precision", "match_detections", "interpolated_ap", "precision_envelope")
def test_average_precision_by_hand(submission):
    """average_precision: detections pooled over images, sorted by score"""
    got = submission.run(average_precisions, as_tensors(HAND_PREDS), as_tensors(HAND_TARGETS), [1, 2])
    for label, value, expected, fraction in zip(
        (1, 2), got["per_class"], (56 / 101, 1.0), ("56/101", "1"), strict=True
    ):
        value = number(value, f"average_precision of class {label}")
        assert math.isclose(value, expected, abs_tol=1e-6), (
            f"AP of class {label} is {value:.4f}, expected {fraction} = {expected:.4f}"
        )


@pytest.mark.points(2)
@pytest.mark.task(
    "mean_average_precision", "average_precision", "match_detections", "interpolated_ap", "precision_envelope"
)
def test_mean_average_precision_by_hand(submission):
    """mean_average_precision: the mean over the classes that have objects"""
    got = number(
        submission.run(average_precisions, as_tensors(HAND_PREDS), as_tensors(HAND_TARGETS), [])["map"],
        "mean_average_precision",
    )
    assert math.isclose(got, 157 / 202, abs_tol=1e-6), (
        f"mAP is {got:.4f}, expected (56/101 + 1) / 2 = {157 / 202:.4f}: class 3 has no object, so no AP"
    )


@pytest.mark.points(3)
@pytest.mark.task(
    "mean_average_precision", "average_precision", "match_detections", "interpolated_ap", "precision_envelope"
)
def test_map_agrees_with_torchmetrics(submission):
    """mean_average_precision: torchmetrics' COCO map_50 on a random set of boxes"""
    from torchmetrics.detection import MeanAveragePrecision

    preds, targets = synthetic_set(seed=3)
    coco = MeanAveragePrecision(iou_thresholds=[0.5], rec_thresholds=[i / 100 for i in range(101)], class_metrics=True)
    coco.update(preds, targets)
    expected = coco.compute()
    classes = expected["classes"].tolist()
    got = submission.run(average_precisions, preds, targets, classes)
    for label, value, want in zip(classes, got["per_class"], expected["map_per_class"].tolist(), strict=True):
        if want >= 0:  # torchmetrics says -1 for a class with no object
            value = number(value, f"average_precision of class {label}")
            assert math.isclose(value, want, abs_tol=1e-4), (
                f"AP of class {label} is {value:.4f}, torchmetrics says {want:.4f}"
            )
    value, want = number(got["map"], "mean_average_precision"), expected["map_50"].item()
    assert math.isclose(value, want, abs_tol=1e-4), f"mAP is {value:.4f}, torchmetrics' map_50 is {want:.4f}"
