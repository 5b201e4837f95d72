"""Classification + localization (localization.py): the two heads, the combined loss, and a trained localizer.

The heads are checked on a stand-in backbone (flatten + linear) whose weights, like the heads'
weights and the images, are drawn for this grading: the probe loads them into the student's
LocalizationNet, and the grader recomputes the logits (a linear layer on the features) and the
boxes (a linear layer and a sigmoid on the same features) itself. The loss is compared with the
grader's own cross-entropy and smooth L1 on random inputs. The trained test pastes each digit of the
profile's dataset, enlarged, at a random place of a blank canvas (places drawn for this grading);
the probe trains the student's LocalizationNet with the student's loss and returns its weights, and
the grader loads them into its own copy and scores the test canvases, which never enter the
sandbox: a test digit counts when the class is right and its box overlaps the true one with an IoU
of at least 0.5 (the usual criterion for a correct localization).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, box_iou

from grader import figures
from grader.i18n import _, number
from grader.probing import to_float
from grader.testing import generator, load_in_order, probes_for

probes = probes_for(__file__)
FEATURES, CLASSES, BATCH = 12, 5, 8


def head_weights(features, classes, rng):
    """Random weights for Linear(features, classes) and Linear(features, 4): [W, b, W, b]."""
    bound = 1 / math.sqrt(features)
    shapes = [(classes, features), (classes,), (4, features), (4,)]
    return [(torch.rand(shape, generator=rng) * 2 - 1) * bound for shape in shapes]


def heads_inputs():
    rng = generator("heads")
    backbone = probes.stand_in_backbone(FEATURES)
    with torch.no_grad():
        for p in backbone.parameters():
            p.copy_((torch.rand(p.shape, generator=rng) * 2 - 1) / math.sqrt(3 * 8 * 8))
    return backbone.state_dict(), head_weights(FEATURES, CLASSES, rng), torch.randn(BATCH, 3, 8, 8, generator=rng)


BACKBONE_STATE, HEAD_WEIGHTS, IMAGES = heads_inputs()


def expected_heads():
    """The grader's own logits and boxes: both heads on the same features of the stand-in backbone."""
    backbone = probes.stand_in_backbone(FEATURES)
    backbone.load_state_dict(BACKBONE_STATE)
    classifier_w, classifier_b, box_w, box_b = HEAD_WEIGHTS
    with torch.no_grad():
        features = backbone(IMAGES)
        return F.linear(features, classifier_w, classifier_b), torch.sigmoid(F.linear(features, box_w, box_b))


@pytest.fixture(scope="module")
def net(submission):
    return submission.run(probes.heads, FEATURES, CLASSES, BACKBONE_STATE, HEAD_WEIGHTS, IMAGES)


def difference(got, expected):
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return math.inf
    return (got.double() - expected.double()).abs().nan_to_num(nan=math.inf).max().item()


def check_reproduced(net):
    """What the tests stand on: with the grader's weights, the student's LocalizationNet computes
    what the grader computes, the logits and the boxes."""
    unloaded = net["unloaded"]
    assert not unloaded, _(
        "the heads have parameters of shape {join}: expected Linear({features}, {classes}) for the "
        "classes and Linear({features}, 4) for the box, and nothing else"
    ).format(join=", ".join(str(shape) for _, shape in unloaded), features=FEATURES, classes=CLASSES)
    changed = max(difference(net["backbone_after"][k], v) for k, v in BACKBONE_STATE.items())
    assert changed == 0, _("LocalizationNet changed the backbone's weights: it is given, use it as it is")
    logits, boxes = expected_heads()
    off = difference(net["logits"], logits)
    assert off < 1e-5, _(
        "the class logits are not a linear layer of the backbone's features (off by {off:.3g})"
    ).format(off=off)
    off = difference(net["boxes"], boxes)
    assert off < 1e-5, _(
        "the boxes are not the sigmoid of a linear layer of the backbone's features (off by {off:.3g})"
    ).format(off=off)


@pytest.mark.points(2)
@pytest.mark.task("LocalizationNet")
def test_two_outputs(net):
    """LocalizationNet: class logits (N, classes) and one box (N, 4) per image"""
    for key, shape in (("logits", [BATCH, CLASSES]), ("boxes", [BATCH, 4])):
        got = net[key]
        assert isinstance(got, torch.Tensor), _("the model returned {got!r} for the {key}, not a tensor").format(
            got=got, key=key
        )
        assert list(got.shape) == shape, _("the {key} have shape {shape}, expected {expected_shape}").format(
            key=key, shape=list(got.shape), expected_shape=shape
        )
    check_reproduced(net)


@pytest.mark.points(1)
@pytest.mark.task("LocalizationNet")
def test_boxes_between_0_and_1(net):
    """LocalizationNet: boxes relative to the image size, in (0, 1)"""
    boxes = net["boxes"]
    assert isinstance(boxes, torch.Tensor) and boxes.numel(), _("the model returned {boxes!r} for the boxes").format(
        boxes=boxes
    )
    low, high = boxes.min().item(), boxes.max().item()
    assert low > 0 and high < 1, _(
        "the boxes range over [{low:.2f}, {high:.2f}]: end the box head with a sigmoid"
    ).format(low=low, high=high)
    check_reproduced(net)


@pytest.mark.points(1)
@pytest.mark.task("LocalizationNet")
def test_head_parameters(net):
    """LocalizationNet: two linear heads on the features"""
    expected = (FEATURES * CLASSES + CLASSES) + (FEATURES * 4 + 4)
    got = net["head_parameters"]
    assert got == expected, _(
        "the heads have {got} parameters, expected {expected}: Linear({features}, {classes}) for "
        "the classes and Linear({features}, 4) for the box"
    ).format(got=got, expected=expected, features=FEATURES, classes=CLASSES)
    check_reproduced(net)


@pytest.mark.points(2)
@pytest.mark.task("LocalizationNet")
def test_heads_share_one_backbone_pass(net):
    """LocalizationNet: both heads read the same features, computed once"""
    assert net["backbone_calls"] == 1, _(
        "one forward pass ran the backbone {backbone_calls} times, expected once"
    ).format(backbone_calls=net["backbone_calls"])
    from_logits, from_boxes = net["from_logits"], net["from_boxes"]
    assert from_logits["backbone"] and from_boxes["backbone"], _("the backbone must be trained by both heads")
    assert from_logits.get("classifier", True) and not from_logits.get("box_head", False), _(
        "the class logits must come from the classifier alone, not through the box head"
    )
    assert from_boxes.get("box_head", True) and not from_boxes.get("classifier", False), _(
        "the boxes must come from the box head on the features, not from the class logits"
    )
    check_reproduced(net)


# --- the loss ----------------------------------------------------------------------------------


def loss_inputs():
    rng = generator("localization loss")
    logits = torch.randn(8, CLASSES, generator=rng)
    labels = torch.randint(0, CLASSES, (8,), generator=rng)
    boxes = torch.rand(8, 4, generator=rng)
    targets = boxes + torch.randn(8, 4, generator=rng) * 1.5  # errors above 1: smooth L1 is linear there
    weight = round(1.5 + 2.5 * torch.rand(1, generator=rng).item(), 2)
    return (logits, boxes, labels, targets), (0.0, 1.0, weight)


LOSS_INPUTS, WEIGHTS = loss_inputs()


@pytest.mark.points(3)
@pytest.mark.task("localization_loss")
def test_combined_loss(submission):
    """localization_loss: cross-entropy + box_weight x smooth L1"""
    logits, boxes, labels, targets = LOSS_INPUTS
    cross_entropy = F.cross_entropy(logits, labels).item()
    smooth_l1 = F.smooth_l1_loss(boxes, targets).item()
    for weight, got in zip(WEIGHTS, submission.run(probes.losses, LOSS_INPUTS, WEIGHTS), strict=True):
        if "error" in got:
            pytest.fail(_("localization_loss raised {error}").format(error=got["error"]))
        assert got["type"] == "Tensor", _("the loss is a {type}, not a tensor: backward() needs a tensor").format(
            type=got["type"]
        )
        assert got["value"].numel() == 1, _("the loss has shape {shape}, expected a scalar").format(
            shape=list(got["value"].shape)
        )
        assert got["grad"], _("the loss does not depend on the logits and boxes through autograd: do not detach them")
        value, expected = got["value"].item(), cross_entropy + weight * smooth_l1
        if weight == 0:
            assert math.isclose(value, cross_entropy, rel_tol=1e-5), _(
                "with box_weight=0 the loss is {value:.4f}, expected the cross-entropy alone, {cross_entropy:.4f}"
            ).format(value=value, cross_entropy=cross_entropy)
        assert math.isclose(value, expected, rel_tol=1e-5), _(
            "with box_weight={weight} the loss is {value:.4f}, expected {cross_entropy:.4f} + {weight} "
            "x {smooth_l1:.4f} (smooth L1, beta 1, averaged over the boxes' coordinates) = "
            "{expected:.4f}"
        ).format(weight=weight, value=value, cross_entropy=cross_entropy, smooth_l1=smooth_l1, expected=expected)


# --- a trained localizer ------------------------------------------------------------------------


def paste_digits(x, canvas, sizes, rng):
    """Paste each digit x[i] (1, h, w), resized to s x s (s drawn in sizes), at a random place of a canvas.

    Returns uint8 images (N, 1, canvas, canvas) and XYXY boxes (N, 4): the tight box of the digit's
    non-zero pixels, in pixel edges (a pixel at column j spans [j, j + 1)).
    """
    n = len(x)
    side = torch.randint(sizes[0], sizes[1] + 1, (n,), generator=rng)
    corner = (torch.rand(n, 2, generator=rng) * (canvas - side + 1).unsqueeze(1)).long()  # (left, top)
    images = torch.zeros(n, 1, canvas, canvas, dtype=torch.uint8)
    boxes = torch.zeros(n, 4)
    for s in side.unique().tolist():
        chosen = (side == s).nonzero().flatten()
        digits = F.interpolate(x[chosen].float(), size=(s, s), mode="nearest").to(torch.uint8)
        for i, digit in zip(chosen.tolist(), digits, strict=True):
            left, top = corner[i].tolist()
            images[i, :, top : top + s, left : left + s] = digit
            rows, cols = digit[0].nonzero(as_tuple=True)
            boxes[i] = torch.tensor([left + cols.min(), top + rows.min(), left + cols.max() + 1, top + rows.max() + 1])
    return images, boxes


def small_backbone(image_size, feature_dim):
    """The grader's own copy of the given small_backbone (one input channel)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (image_size // 8) ** 2, feature_dim), nn.ReLU(),
    )  # fmt: skip


def heads_by_shape(heads, feature_dim, classes):
    """The two heads' weights among the returned ones, found by their shapes: (W, b) of the
    classifier and of the box head, or a one-line reason."""
    if not isinstance(heads, dict) or not all(isinstance(v, torch.Tensor) for v in heads.values()):
        return None, _("the heads' weights did not come back as tensors")
    wanted = {
        "classifier": [(classes, feature_dim), (classes,)],
        "box head": [(4, feature_dim), (4,)],
    }
    found = {}
    shapes = [tuple(v.shape) for v in heads.values()]
    for part, (w, b) in wanted.items():
        if shapes.count(w) != 1 or shapes.count(b) != 1:
            return None, (
                _(
                    "the heads' weights are {shapes}: expected Linear({feature_dim}, {classes}) for the "
                    "classes and Linear({feature_dim}, 4) for the box"
                ).format(shapes=sorted(shapes), feature_dim=feature_dim, classes=classes)
            )
        found[part] = (heads[list(heads)[shapes.index(w)]], heads[list(heads)[shapes.index(b)]])
    if len(shapes) != 4:
        return None, _("the heads have {n_shapes} weight tensors, expected 4 (two linear layers)").format(
            n_shapes=len(shapes)
        )
    return found, ""


def localize(backbone, found, x, batch_size=1000):
    """The grader's own LocalizationNet: (classes (N,), CXCYWH boxes (N, 4) relative to the image)."""
    backbone.eval()
    classes, boxes = [], []
    with torch.no_grad():
        for batch in x.split(batch_size):
            features = backbone(batch)
            classes.append(F.linear(features, *found["classifier"]).argmax(1))
            boxes.append(torch.sigmoid(F.linear(features, *found["box head"])))
    return torch.cat(classes), torch.cat(boxes)


@pytest.mark.points(8)
@pytest.mark.accuracy
@pytest.mark.task("LocalizationNet", "localization_loss")
def test_trained_localization_accuracy(submission, profile, dataset, record_property):
    """LocalizationNet + localization_loss: trained localization accuracy (right class and IoU >= 0.5)"""
    budget = profile.budget
    canvas, sizes, copies, dim = budget["canvas"], budget["sizes"], budget["copies"], budget["feature_dim"]
    train_x, train_boxes = paste_digits(
        dataset.train.x.repeat(copies, 1, 1, 1), canvas, sizes, generator("train canvases")
    )
    targets = box_convert(train_boxes, "xyxy", "cxcywh") / canvas
    state = submission.run(probes.train_localizer, train_x, dataset.train.y.repeat(copies), targets, budget)
    backbone = small_backbone(canvas, dim)  # the grader's own: no test canvas enters the sandbox
    problem = load_in_order(backbone, state["backbone"])
    assert not problem, _("small_backbone: {problem}").format(problem=problem)
    found, problem = heads_by_shape(state["heads"], dim, 10)
    assert not problem, problem
    test_x, test_boxes = paste_digits(dataset.test.x, canvas, sizes, generator("test canvases"))
    classes, boxes = localize(backbone, found, to_float(test_x))
    iou = box_iou(box_convert(boxes * canvas, "cxcywh", "xyxy"), test_boxes).diagonal()
    right_class = classes == dataset.test.y
    accuracy = (right_class & (iou >= 0.5)).float().mean().item()
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", profile.min_accuracy)
    record_property("class_accuracy", round(right_class.float().mean().item(), 4))
    record_property("mean_iou", round(iou.mean().item(), 4))
    predicted = box_convert(boxes * canvas, "cxcywh", "xyxy")
    title = _("the first test canvases: the true box (green) and the predicted one (red)")
    figure = figures.boxes(title, test_x[:6], test_boxes[:6], predicted[:6], dataset.test.y[:6], classes[:6])
    figures.record(record_property, "boxes", figure)
    assert accuracy >= profile.min_accuracy, _(
        "{accuracy:.1%} of the test digits are named and boxed (IoU >= 0.5), below the "
        "{min_accuracy:.0%} required (class accuracy {mean:.1%}, mean IoU {mean2:.2f}, {steps} "
        "steps on {name})"
    ).format(
        accuracy=accuracy,
        min_accuracy=profile.min_accuracy,
        mean=right_class.float().mean(),
        mean2=iou.mean(),
        steps=number(budget["steps"]),
        name=dataset.name,
    )
