"""Classification + localization (localization.py): the two heads, the combined loss, and a trained localizer.

The heads are checked on a stand-in backbone (flatten + linear); the trained test pastes each digit of
the profile's dataset, enlarged, at a random place of a blank canvas: the model must name the digit
and box it. It is right on an image when the class is right and its box overlaps the true one with an
IoU of at least 0.5 (the usual criterion for a correct localization).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, box_iou

from grader.data import to_float

FEATURES, CLASSES, BATCH = 12, 5, 6


def stand_in_backbone():
    """x (N, 3, 8, 8) -> features (N, 12)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, FEATURES), nn.ReLU())


def parameter_grads(model, output):
    """Which parts of the model the gradient of output.sum() reaches: {"backbone": bool, ...}."""
    model.zero_grad()
    output.sum().backward(retain_graph=True)
    reached = lambda module: any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    return {name: reached(getattr(model, name)) for name in ("backbone", "classifier", "box_head")}


def heads(sub):
    """Probe: LocalizationNet on the stand-in backbone: outputs, parameters, backbone calls, gradients."""
    torch.manual_seed(0)
    backbone = stand_in_backbone()
    calls = []
    backbone.register_forward_hook(lambda module, args, output: calls.append(1))
    model = sub.localization.LocalizationNet(backbone, FEATURES, CLASSES)
    own = {id(p) for p in backbone.parameters()}
    logits, boxes = model(torch.randn(BATCH, 3, 8, 8))
    return {
        "logits": logits.detach(),
        "boxes": boxes.detach(),
        "backbone_calls": len(calls),
        "head_parameters": sum(p.numel() for p in model.parameters() if id(p) not in own),
        "from_logits": parameter_grads(model, logits),
        "from_boxes": parameter_grads(model, boxes),
    }


@pytest.fixture(scope="module")
def net(submission):
    return submission.run(heads)


@pytest.mark.points(2)
@pytest.mark.task("LocalizationNet")
def test_two_outputs(net):
    """LocalizationNet: class logits (N, classes) and one box (N, 4) per image"""
    assert list(net["logits"].shape) == [BATCH, CLASSES], (
        f"the logits have shape {list(net['logits'].shape)}, expected {[BATCH, CLASSES]}"
    )
    assert list(net["boxes"].shape) == [BATCH, 4], (
        f"the boxes have shape {list(net['boxes'].shape)}, expected {[BATCH, 4]}"
    )


@pytest.mark.points(1)
@pytest.mark.task("LocalizationNet")
def test_boxes_between_0_and_1(net):
    """LocalizationNet: boxes relative to the image size, in (0, 1)"""
    low, high = net["boxes"].min().item(), net["boxes"].max().item()
    assert low > 0 and high < 1, f"the boxes range over [{low:.2f}, {high:.2f}]: end the box head with a sigmoid"


@pytest.mark.points(1)
@pytest.mark.task("LocalizationNet")
def test_head_parameters(net):
    """LocalizationNet: two linear heads on the features"""
    expected = (FEATURES * CLASSES + CLASSES) + (FEATURES * 4 + 4)
    got = net["head_parameters"]
    assert got == expected, (
        f"the heads have {got} parameters, expected {expected}: "
        f"Linear({FEATURES}, {CLASSES}) for the classes and Linear({FEATURES}, 4) for the box"
    )


@pytest.mark.points(2)
@pytest.mark.task("LocalizationNet")
def test_heads_share_one_backbone_pass(net):
    """LocalizationNet: both heads read the same features, computed once"""
    assert net["backbone_calls"] == 1, f"one forward pass ran the backbone {net['backbone_calls']} times, expected once"
    from_logits, from_boxes = net["from_logits"], net["from_boxes"]
    assert from_logits["backbone"] and from_boxes["backbone"], "the backbone must be trained by both heads"
    assert from_logits["classifier"] and not from_logits["box_head"], (
        "the class logits must come from the classifier alone, not through the box head"
    )
    assert from_boxes["box_head"] and not from_boxes["classifier"], (
        "the boxes must come from the box head on the features, not from the class logits"
    )


# --- the loss ----------------------------------------------------------------------------------

WEIGHTS = (0.0, 1.0, 2.5)


def loss_inputs():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(8, CLASSES, generator=generator)
    labels = torch.randint(0, CLASSES, (8,), generator=generator)
    boxes = torch.rand(8, 4, generator=generator)
    targets = boxes + torch.randn(8, 4, generator=generator) * 1.5  # errors above 1: smooth L1 is linear there
    return logits, boxes, labels, targets


def losses(sub, inputs):
    """Probe: localization_loss for each box weight, and whether it can be backpropagated."""
    out = []
    for weight in WEIGHTS:
        logits, boxes, labels, targets = (t.clone() for t in inputs)
        logits.requires_grad_(True)
        boxes.requires_grad_(True)
        loss = sub.localization.localization_loss(logits, boxes, labels, targets, weight)
        if not isinstance(loss, torch.Tensor):
            out.append({"type": type(loss).__name__})
            continue
        out.append({"type": "Tensor", "value": loss.detach(), "grad": loss.requires_grad})
    return out


@pytest.mark.points(3)
@pytest.mark.task("localization_loss")
def test_combined_loss(submission):
    """localization_loss: cross-entropy + box_weight x smooth L1"""
    inputs = loss_inputs()
    logits, boxes, labels, targets = inputs
    cross_entropy = F.cross_entropy(logits, labels).item()
    smooth_l1 = F.smooth_l1_loss(boxes, targets).item()
    for weight, got in zip(WEIGHTS, submission.run(losses, inputs), strict=True):
        assert got["type"] == "Tensor", f"the loss is a {got['type']}, not a tensor: backward() needs a tensor"
        assert got["value"].numel() == 1, f"the loss has shape {list(got['value'].shape)}, expected a scalar"
        assert got["grad"], "the loss does not depend on the logits and boxes through autograd: do not detach them"
        value, expected = got["value"].item(), cross_entropy + weight * smooth_l1
        if weight == 0:
            assert math.isclose(value, cross_entropy, rel_tol=1e-5), (
                f"with box_weight=0 the loss is {value:.4f}, expected the cross-entropy alone, {cross_entropy:.4f}"
            )
        assert math.isclose(value, expected, rel_tol=1e-5), (
            f"with box_weight={weight} the loss is {value:.4f}, expected {cross_entropy:.4f} + {weight} x "
            f"{smooth_l1:.4f} (smooth L1, beta 1, averaged over the boxes' coordinates) = {expected:.4f}"
        )


# --- a trained localizer ------------------------------------------------------------------------


def paste_digits(x, canvas, sizes, seed):
    """Paste each digit x[i] (1, h, w), resized to s x s (s drawn in sizes), at a random place of a canvas.

    Returns uint8 images (N, 1, canvas, canvas) and XYXY boxes (N, 4): the tight box of the digit's
    non-zero pixels, in pixel edges (a pixel at column j spans [j, j + 1)).
    """
    generator = torch.Generator().manual_seed(seed)
    n = len(x)
    side = torch.randint(sizes[0], sizes[1] + 1, (n,), generator=generator)
    corner = (torch.rand(n, 2, generator=generator) * (canvas - side + 1).unsqueeze(1)).long()  # (left, top)
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


def train_localizer_and_predict(sub, train_x, train_y, train_boxes, test_x, budget):
    """Probe: train LocalizationNet on small_backbone with localization_loss (Adam), then predict.

    train_boxes: (N, 4) CXCYWH divided by the canvas size. Returns the predicted classes (M,) and boxes
    (M, 4) of the test images; the test labels and boxes never come here.
    """
    device = torch.device(sub.device)
    if device.type == "cpu":  # a tiny model: one thread is as fast, and does not stall when the cores are shared
        torch.set_num_threads(1)
    loc = sub.localization
    canvas, dim = budget["canvas"], budget["feature_dim"]
    model = loc.LocalizationNet(loc.small_backbone(1, canvas, dim), dim, 10).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=budget["lr"])
    x, y, boxes = to_float(train_x).to(device), train_y.to(device), train_boxes.to(device)
    model.train()
    step = 0
    while step < budget["steps"]:
        for batch in torch.randperm(len(y), device=device).split(budget["batch_size"]):
            logits, predicted = model(x[batch])
            loss = loc.localization_loss(logits, predicted, y[batch], boxes[batch], budget["box_weight"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == budget["steps"]:
                break
    model.eval()
    with torch.no_grad():
        logits, predicted = model(to_float(test_x).to(device))
    return {"classes": logits.argmax(1).cpu(), "boxes": predicted.cpu()}


@pytest.mark.points(8)
@pytest.mark.accuracy
@pytest.mark.task("LocalizationNet", "localization_loss")
def test_trained_localization_accuracy(submission, profile, dataset, record_property):
    """LocalizationNet + localization_loss: trained localization accuracy (right class and IoU >= 0.5)"""
    budget = profile.budget
    canvas, sizes, copies = budget["canvas"], budget["sizes"], budget["copies"]
    train_x, train_boxes = paste_digits(dataset.train.x.repeat(copies, 1, 1, 1), canvas, sizes, seed=0)
    test_x, test_boxes = paste_digits(dataset.test.x, canvas, sizes, seed=1)
    targets = box_convert(train_boxes, "xyxy", "cxcywh") / canvas
    out = submission.run(train_localizer_and_predict, train_x, dataset.train.y.repeat(copies), targets, test_x, budget)
    classes, boxes = out["classes"], out["boxes"]
    assert isinstance(boxes, torch.Tensor) and list(boxes.shape) == [len(test_x), 4], "the model gave no box per image"
    predicted = box_convert(boxes.float() * canvas, "cxcywh", "xyxy")
    iou = box_iou(predicted, test_boxes).diagonal()
    right_class = classes == dataset.test.y
    accuracy = (right_class & (iou >= 0.5)).float().mean().item()
    record_property("accuracy", round(accuracy, 4))
    record_property("min_accuracy", profile.min_accuracy)
    record_property("class_accuracy", round(right_class.float().mean().item(), 4))
    record_property("mean_iou", round(iou.mean().item(), 4))
    assert accuracy >= profile.min_accuracy, (
        f"{accuracy:.1%} of the test digits are named and boxed (IoU >= 0.5), below the {profile.min_accuracy:.0%} "
        f"required (class accuracy {right_class.float().mean():.1%}, mean IoU {iou.mean():.2f}, "
        f"{budget['steps']:,} steps on {dataset.name})"
    )
