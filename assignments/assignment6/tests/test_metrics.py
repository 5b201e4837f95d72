"""Average precision and mAP (metrics.py): the notebook's 11-point example, cases worked out by hand, and
random curves and detections drawn for this grading, compared with the grader's own computation:
the envelope and the interpolated AP recomputed here, COCO's greedy matching recomputed here on
torchvision.ops.box_iou, and torchmetrics' COCO mean average precision for AP and mAP.

torchmetrics (on pycocotools) averages AP over the IoU thresholds 0.5:0.95 by default; asked for a
single threshold t and the recall levels i / (n - 1), its `map` is the mAP that
`mean_average_precision(..., t, n)` computes: COCO's greedy matching and n recall levels. Its
default recall levels are float32 (0.6 is stored as 0.6000000238), so a recall of exactly 3/5 would
miss the 0.6 level there: the tests hand it the exact levels. A random set is redrawn until no IoU
lies within 1e-3 of the threshold, where float32 and float64 could disagree.
"""

import math

import pytest
import torch
from torchvision.ops import box_iou

from grader.i18n import _
from grader.testing import generator, probes_for

probes = probes_for(__file__)

# The notebook's example: precisions at the recalls 0, 0.1, ..., 1.
NOTEBOOK_PRECISIONS = [0.91, 0.94, 0.96, 0.94, 0.95, 0.92, 0.80, 0.60, 0.45, 0.20, 0.10]


def number(value, what):
    """A student's result as a float, or a one-line failure."""
    if isinstance(value, dict) and "error" in value:
        pytest.fail(_("{what} raised {error}").format(what=what, error=value["error"]))
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    assert isinstance(value, (int, float)) and not isinstance(value, bool), _(
        "{what} returned {value!r}, not a number"
    ).format(what=what, value=value)
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


def random_curve(rng):
    """The (recalls, precisions) of a random list of TP and FP over a random number of objects, some
    never found: float64, as average_precision builds them."""
    objects = int(torch.randint(3, 12, (1,), generator=rng))
    hits = torch.rand(int(torch.randint(objects, 3 * objects, (1,), generator=rng)), generator=rng) < 0.5
    hits &= hits.cumsum(0) <= objects - int(torch.randint(0, 3, (1,), generator=rng))
    tp = hits.cumsum(0).double()
    return tp / objects, tp / torch.arange(1, len(hits) + 1, dtype=torch.float64)


def curve_inputs():
    rng = generator("precision curves")
    envelopes = [torch.tensor(NOTEBOOK_PRECISIONS, dtype=torch.float64)]
    envelopes += [torch.rand(int(torch.randint(8, 20, (1,), generator=rng)), generator=rng).double() for _ in range(3)]
    # 11-point curves as the notebook's: one precision at each level 0, 0.1, ..., 1
    levels = torch.arange(11, dtype=torch.float64) / 10
    eleven = [(levels, torch.tensor(NOTEBOOK_PRECISIONS, dtype=torch.float64), 11)]
    eleven += [(levels, torch.rand(11, generator=rng, dtype=torch.float64), 11) for _ in range(2)]
    # TP, FP, TP, FP over 3 ground-truth boxes: recall 1/3, 1/3, 2/3, 2/3; precision 1, 1/2, 2/3, 1/2.
    # With 101 levels: 0.00..0.33 (34 levels) see 1, 0.34..0.66 (33) see 2/3, 0.67..1 (34) see 0:
    # AP = (34 + 33 x 2/3) / 101 = 56/101. With 11 levels: (4 + 3 x 2/3) / 11 = 6/11.
    hand = (
        torch.tensor([1 / 3, 1 / 3, 2 / 3, 2 / 3], dtype=torch.float64),
        torch.tensor([1.0, 1 / 2, 2 / 3, 1 / 2], dtype=torch.float64),
    )
    between = [(*hand, 11), (*hand, 101)]
    between += [(*random_curve(rng), points) for points in (11, 101, 101)]
    return envelopes, eleven, between


ENVELOPES, ELEVEN, BETWEEN = curve_inputs()


@pytest.fixture(scope="module")
def curve(submission):
    return {
        "envelopes": submission.run(probes.envelopes, ENVELOPES),
        "eleven": submission.run(probes.interpolated, ELEVEN),
        "between": submission.run(probes.interpolated, BETWEEN),
    }


@pytest.mark.points(2)
@pytest.mark.task("precision_envelope")
def test_precision_envelope(curve):
    """precision_envelope: the notebook's maximum precisions and random curves', never increasing"""
    for index, (precisions, got) in enumerate(zip(ENVELOPES, curve["envelopes"], strict=True)):
        which = _("the notebook's example") if index == 0 else _("random curve {index}").format(index=index)
        if isinstance(got, dict):
            pytest.fail(_("precision_envelope raised {error}").format(error=got["error"]))
        assert isinstance(got, torch.Tensor) and got.shape == precisions.shape, _(
            "precision_envelope returned {got!r} for {which}, expected {n_precisions} values"
        ).format(got=got, which=which, n_precisions=len(precisions))
        got = got.tolist()
        rises = [i for i in range(len(got) - 1) if got[i + 1] > got[i] + 1e-12]
        assert not rises, _(
            "the envelope of {which} rises from point {rises0} to {rises02}: it must never increase "
            "(take the best precision at this recall or a higher one)"
        ).format(which=which, rises0=rises[0], rises02=rises[0] + 1)
        expected = by_hand_envelope(precisions.tolist())  # the notebook's: [0.96, 0.96, 0.96, 0.95, 0.95, 0.92, ...]
        assert max(abs(g - e) for g, e in zip(got, expected, strict=True)) < 1e-9, _(
            "the envelope of {which} is {value}, expected {expected_value}"
        ).format(which=which, value=[round(v, 4) for v in got], expected_value=[round(v, 4) for v in expected])


@pytest.mark.points(2)
@pytest.mark.task("interpolated_ap", "precision_envelope")
def test_eleven_point_ap_of_the_notebook(curve):
    """interpolated_ap: the notebook's 11-point example is 7.85 / 11 = 0.7136, and random ones"""
    for index, ((_unused, precisions, _unused), got) in enumerate(zip(ELEVEN, curve["eleven"], strict=True)):
        which = (
            _("the notebook's example")
            if index == 0
            else _("a random 11-point curve {precisions}").format(precisions=precisions.tolist())
        )
        got = number(got, "interpolated_ap")
        expected = sum(by_hand_envelope(precisions.tolist())) / 11  # here every level is a point
        assert math.isclose(got, expected, abs_tol=1e-9), _(
            "AP of {which} is {got:.4f}, expected the mean of the smoothed precisions, {expected:.4f}"
        ).format(which=which, got=got, expected=expected)


@pytest.mark.points(3)
@pytest.mark.task("interpolated_ap", "precision_envelope")
def test_ap_at_recall_levels_between_points(curve):
    """interpolated_ap: levels between the curve's points, and recall never reaching 1"""
    for index, ((recalls, precisions, points), got) in enumerate(zip(BETWEEN, curve["between"], strict=True)):
        got = number(got, "interpolated_ap")
        expected = by_hand_ap(recalls.tolist(), precisions.tolist(), points)
        which = _("TP, FP, TP, FP over 3 objects") if index < 2 else _("random curve {index}").format(index=index - 1)
        fraction = {0: "6/11 = ", 1: "56/101 = "}.get(index, "")
        assert math.isclose(got, expected, abs_tol=1e-9), _(
            "{points}-point AP of {which} is {got:.4f}, expected {fraction}{expected:.4f}: each level "
            "r takes the envelope at the first point with recall >= r, and 0 past the last recall"
        ).format(points=points, which=which, got=got, fraction=fraction, expected=expected)


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


def move(boxes, scale, shift):
    """XYXY boxes (N, 4) stretched by `scale` (x, y) and moved by `shift` (x, y): exact in float32
    when the scale is a power of 2 and the shift a small integer; IoUs stay as they were."""
    return boxes * scale.repeat(2) + shift.repeat(2)


def grader_match(boxes, scores, gt_boxes, iou_threshold, match_again=False):
    """COCO's greedy matching, the grader's own: by decreasing score, the free object of highest IoU
    (`match_again`: a slip that leaves every object free)."""
    is_tp = [False] * len(boxes)
    if len(boxes) and len(gt_boxes):
        ious = box_iou(boxes.double(), gt_boxes.double())
        taken = [False] * len(gt_boxes)
        for d in sorted(range(len(boxes)), key=lambda i: -float(scores[i])):
            free = [(ious[d, g].item(), -g) for g in range(len(gt_boxes)) if not taken[g]]
            if free and max(free)[0] >= iou_threshold:
                taken[-max(free)[1]] = not match_again
                is_tp[d] = True
    return is_tp


def clear_of(threshold, *pairs):
    """Whether no IoU of the (boxes, boxes) pairs lies within 1e-3 of the threshold."""
    return all(
        not len(a) or not len(b) or bool(((box_iou(a.double(), b.double()) - threshold).abs() > 1e-3).all())
        for a, b in pairs
    )


def random_match_case(rng, threshold):
    """Objects, and detections: jittered copies of them (some twice), and false alarms."""
    while True:
        count = int(torch.randint(1, 6, (1,), generator=rng))
        corners = torch.rand(count, 2, generator=rng) * 60
        gt = torch.cat([corners, corners + 10 + torch.rand(count, 2, generator=rng) * 20], dim=1)
        copies = torch.cat([gt, gt[: count // 2 + 1]])
        copies = copies + torch.randn(copies.shape, generator=rng) * 3
        alarms = torch.rand(2, 2, generator=rng) * 60
        boxes = torch.cat([copies, torch.cat([alarms, alarms + 10 + torch.rand(2, 2, generator=rng) * 20], dim=1)])
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        order = torch.randperm(len(boxes), generator=rng)
        boxes, scores = boxes[order], torch.rand(len(boxes), generator=rng)
        if clear_of(threshold, (boxes, gt)):
            return boxes, scores, gt


def match_inputs():
    rng = generator("match detections")
    cases = []
    for _unused, boxes, scores, gt, _unused in MATCH_CASES:
        scale = 2.0 ** torch.randint(-1, 4, (2,), generator=rng).float()
        shift = torch.randint(0, 200, (2,), generator=rng).float()
        boxes, gt = torch.tensor(boxes, dtype=torch.float32), torch.tensor(gt, dtype=torch.float32).reshape(-1, 4)
        cases.append((move(boxes, scale, shift), torch.tensor(scores), move(gt, scale, shift)))
    return cases + [random_match_case(rng, 0.5) for _ in range(4)]


MATCH_INPUTS = match_inputs()


@pytest.mark.points(3)
@pytest.mark.task("match_detections")
def test_match_detections(submission):
    """match_detections: by decreasing score, each object matched at most once (COCO)"""
    results = submission.run(probes.matches, MATCH_INPUTS, 0.5)
    for index, ((boxes, scores, gt), got) in enumerate(zip(MATCH_INPUTS, results, strict=True)):
        name = (
            MATCH_CASES[index][0]
            if index < len(MATCH_CASES)
            else _("random image {index}").format(index=index - len(MATCH_CASES) + 1)
        )
        if isinstance(got, dict):
            pytest.fail(_("match_detections raised {error} ({name})").format(error=got["error"], name=name))
        assert isinstance(got, torch.Tensor), _("match_detections returned {got!r}, expected a bool tensor").format(
            got=got
        )
        got = [bool(v) for v in got.tolist()]
        expected = grader_match(boxes, scores, gt, 0.5)
        if index < len(MATCH_CASES):
            assert expected == MATCH_CASES[index][4]  # the grader's own consistency
        rows = lambda t: [[round(v, 2) for v in row] for row in t.tolist()]
        assert got == expected, _(
            "{name}: detections {rows} with scores {value} on objects {rows2} give true positives "
            "{got}, expected {expected} (by decreasing score, each takes the free object of highest "
            "IoU >= 0.5)"
        ).format(
            name=name,
            rows=rows(boxes),
            value=[round(s, 3) for s in scores.tolist()],
            rows2=rows(gt),
            got=got,
            expected=expected,
        )


# --- AP and mAP over a set of images -----------------------------------------------------------

# Two images. Class 1 has 3 objects; its detections, by decreasing score, are TP, FP, TP, FP (the
# hand-made curve above: AP 56/101). Class 2 has one object, found by its best detection: AP 1.
# Class 3 has a detection and no object: it has no AP and stays out of the mean.
# mAP = (56/101 + 1) / 2 = 157/202. The boxes are moved and stretched, the images and the
# detections of each image shuffled, for each grading: none of it changes an AP.
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


def hand_set(rng):
    scale = 2.0 ** torch.randint(-1, 4, (2,), generator=rng).float()
    shift = torch.randint(0, 200, (2,), generator=rng).float()
    preds, targets = [], []
    for pred, target in zip(HAND_PREDS, HAND_TARGETS, strict=True):
        order = torch.randperm(len(pred["scores"]), generator=rng)
        preds.append(
            {
                "boxes": move(torch.tensor(pred["boxes"], dtype=torch.float32), scale, shift)[order],
                "scores": torch.tensor(pred["scores"])[order],
                "labels": torch.tensor(pred["labels"])[order],
            }
        )
        targets.append(
            {
                "boxes": move(torch.tensor(target["boxes"], dtype=torch.float32), scale, shift),
                "labels": torch.tensor(target["labels"]),
            }
        )
    order = torch.randperm(2, generator=rng).tolist()
    return [preds[i] for i in order], [targets[i] for i in order]


def synthetic_set(rng, threshold, images=6, classes=3):
    """Random objects; detections that are jittered copies, duplicates, wrong labels and false alarms."""
    preds, targets = [], []
    while len(preds) < images:
        count = int(torch.randint(1, 6, (1,), generator=rng))
        corners = torch.rand(count, 2, generator=rng) * 80
        gt = torch.cat([corners, corners + 10 + torch.rand(count, 2, generator=rng) * 30], dim=1)
        labels = torch.randint(0, classes, (count,), generator=rng)
        copies = torch.cat([gt, gt[:2]]) + torch.randn(count + min(count, 2), 4, generator=rng) * 4
        alarms = torch.rand(2, 2, generator=rng) * 80
        boxes = torch.cat([copies, torch.cat([alarms, alarms + 10 + torch.rand(2, 2, generator=rng) * 30], dim=1)])
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        guess = torch.cat([labels, labels[:2], torch.randint(0, classes + 1, (2,), generator=rng)])
        wrong = torch.rand(len(guess), generator=rng) < 0.15
        guess = torch.where(wrong, (guess + 1) % (classes + 1), guess)
        if clear_of(threshold, (boxes, gt)):  # else this image is drawn again
            preds.append({"boxes": boxes, "scores": torch.rand(len(boxes), generator=rng), "labels": guess})
            targets.append({"boxes": gt, "labels": labels})
    return preds, targets


def coco(preds, targets, threshold, points):
    """torchmetrics' COCO AP per class and mAP at one IoU threshold and `points` recall levels:
    ({class: AP} for the classes that have objects, mAP)."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(
        iou_thresholds=[threshold], rec_thresholds=[i / (points - 1) for i in range(points)], class_metrics=True
    )
    metric.update(preds, targets)
    result = metric.compute()
    per_class = dict(zip(result["classes"].tolist(), result["map_per_class"].tolist(), strict=True))
    return {label: ap for label, ap in per_class.items() if ap >= 0}, result["map"].item()  # -1: no object


# Slips a random set can hide (on some draws, none of its detections would tell them from the right
# mAP): the sets are drawn again until each of them changes the mAP, so that every grading catches them.
SLIPS = ("given order", "match again", "raw precisions", "envelope from below", "classes without objects")


def slipped_map(preds, targets, threshold, points, slip):
    """The mAP that `slip` gives: detections matched in their `given order`, not by score; an object
    matched again; AP from the `raw precisions` or an envelope running up from the lowest recall,
    not down from the highest; the mean taken over the `classes without objects` too."""
    with_objects = torch.cat([t["labels"] for t in targets])
    labels = torch.cat([with_objects] + [p["labels"] for p in preds]) if slip == SLIPS[4] else with_objects
    levels = [i / (points - 1) for i in range(points)]
    total = 0.0
    for label in labels.unique().tolist():
        hits, scores, objects = [], [], 0
        for pred, target in zip(preds, targets, strict=True):
            mine, gt = pred["labels"] == label, target["boxes"][target["labels"] == label]
            order = -torch.arange(int(mine.sum())) if slip == SLIPS[0] else pred["scores"][mine]
            hits += grader_match(pred["boxes"][mine], order, gt, threshold, match_again=slip == SLIPS[1])
            scores, objects = scores + pred["scores"][mine].tolist(), objects + len(gt)
        if not objects:
            continue  # AP 0, counted in the mean
        ranked = [hits[i] for i in sorted(range(len(scores)), key=lambda i: -scores[i])]
        found = [sum(ranked[: k + 1]) for k in range(len(ranked))]
        curve = [(tp / objects, tp / (k + 1)) for k, tp in enumerate(found)]
        if slip == SLIPS[3]:
            curve = [(r, max(p for _r, p in curve[: k + 1])) for k, (r, _p) in enumerate(curve)]
        reached = [[p for r, p in curve if r >= level] for level in levels]
        pick = (lambda ps: ps[0]) if slip in SLIPS[2:4] else max  # the envelope, or the slip's value
        total += sum(pick(ps) if ps else 0.0 for ps in reached) / points
    return total / len(labels.unique())


def decisive(preds, targets, threshold, points):
    """Whether every slip changes the mAP of this set by more than the tests' tolerance, with room."""
    want = coco(preds, targets, threshold, points)[1]
    return all(abs(slipped_map(preds, targets, threshold, points, slip) - want) > 2e-3 for slip in SLIPS)


def set_inputs():
    rng = generator("average precision")
    u = torch.rand(2, generator=rng).tolist()
    threshold = round(0.5 + (1 if u[0] < 0.5 else -1) * (0.08 + 0.12 * u[1]), 2)  # 0.3-0.42 or 0.58-0.7: not 0.5
    hand = hand_set(rng)
    while not decisive(*(random := synthetic_set(rng, 0.5)), 0.5, 101):
        pass
    while True:  # a set on which the threshold and the number of levels both change the mAP, and every slip
        other = synthetic_set(rng, threshold)
        _unused, ap = coco(*other, threshold, 11)  # the other tests take 0.5 and 101 levels
        if (
            abs(ap - coco(*other, 0.5, 11)[1]) > 2e-3
            and abs(ap - coco(*other, threshold, 101)[1]) > 2e-3
            and decisive(*other, threshold, 11)
        ):
            break
    return {"hand": hand, "random": random, "other": other, "threshold": threshold, "points": 11}


SETS = set_inputs()


@pytest.fixture(scope="module")
def hand(submission):
    return submission.run(probes.average_precisions, *SETS["hand"], [1, 2], 0.5, 101)


@pytest.fixture(scope="module")
def random_set(submission):
    preds, targets = SETS["random"]
    expected = coco(preds, targets, 0.5, 101)
    return submission.run(probes.average_precisions, preds, targets, sorted(expected[0]), 0.5, 101), expected


def check_per_class(got, expected, what):
    for (label, want), value in zip(sorted(expected.items()), got["per_class"], strict=True):
        value = number(value, _("average_precision of class {label}").format(label=label))
        assert math.isclose(value, want, abs_tol=1e-4), _(
            "AP of class {label} on {what} is {value:.4f}, torchmetrics says {want:.4f}"
        ).format(label=label, what=what, value=value, want=want)


@pytest.mark.points(3)
@pytest.mark.task("average_precision", "match_detections", "interpolated_ap", "precision_envelope")
def test_average_precision_by_hand(hand, random_set):
    """average_precision: detections pooled over images, sorted by score"""
    for label, value, expected, fraction in zip(
        (1, 2), hand["per_class"], (56 / 101, 1.0), ("56/101", "1"), strict=True
    ):
        value = number(value, _("average_precision of class {label}").format(label=label))
        assert math.isclose(value, expected, abs_tol=1e-6), _(
            "AP of class {label} is {value:.4f}, expected {fraction} = {expected:.4f}"
        ).format(label=label, value=value, fraction=fraction, expected=expected)
    got, (per_class, _unused) = random_set
    check_per_class(got, per_class, _("a random set of boxes (IoU 0.5, 101 levels)"))


@pytest.mark.points(2)
@pytest.mark.task(
    "mean_average_precision", "average_precision", "match_detections", "interpolated_ap", "precision_envelope"
)
def test_mean_average_precision_by_hand(hand, random_set):
    """mean_average_precision: the mean over the classes that have objects"""
    got = number(hand["map"], "mean_average_precision")
    assert math.isclose(got, 157 / 202, abs_tol=1e-6), _(
        "mAP is {got:.4f}, expected (56/101 + 1) / 2 = {value:.4f}: class 3 has no object, so no AP"
    ).format(got=got, value=157 / 202)
    got, (_unused, want) = random_set
    value = number(got["map"], "mean_average_precision")
    assert math.isclose(value, want, abs_tol=1e-4), _(
        "mAP on a random set of boxes (IoU 0.5, 101 levels) is {value:.4f}, torchmetrics' map is {want:.4f}"
    ).format(value=value, want=want)


@pytest.mark.points(3)
@pytest.mark.task(
    "mean_average_precision", "average_precision", "match_detections", "interpolated_ap", "precision_envelope"
)
def test_map_agrees_with_torchmetrics(submission):
    """mean_average_precision: torchmetrics' COCO mAP on a random set of boxes, at a random IoU threshold"""
    preds, targets = SETS["other"]
    threshold, points = SETS["threshold"], SETS["points"]
    per_class, want = coco(preds, targets, threshold, points)
    got = submission.run(probes.average_precisions, preds, targets, sorted(per_class), threshold, points)
    what = _("a random set of boxes (IoU {threshold}, {points} levels)").format(threshold=threshold, points=points)
    check_per_class(got, per_class, what)
    value = number(got["map"], "mean_average_precision")
    assert math.isclose(value, want, abs_tol=1e-4), _(
        "mAP on {what} is {value:.4f}, torchmetrics' map is {want:.4f}"
    ).format(what=what, value=value, want=want)
