"""Practice 3, fine-tuning Mask R-CNN (detection.py): the replaced predictors, the model's outputs, its
training losses, and the targets built from an instance mask.

The model is built once (no weights, small images: min_size 128) on one random crop of the flower
photo, shrunk, with made-up objects on it, all drawn for this grading. The probe runs each new
predictor on random features, the model once in evaluation mode and once in training mode, and
returns all the weights as built. The grader loads them into its own Mask R-CNN with the
tutorial's two new predictors and recomputes every output and loss itself: a structure, an output or
a loss is only believed when the weights reproduce it. The instance masks are drawn for this grading
too, and their targets computed here (torchvision.ops.masks_to_boxes).
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops import masks_to_boxes

from grader.data import sample_photos
from grader.i18n import _
from grader.testing import derived_seed, generator, load_in_order, one_thread, probes_for

probes = probes_for(__file__)
NUM_CLASSES = 2  # the background and one class, as in the tutorial's pedestrians
DETECTIONS = 5
SMALL = {  # a small, fast model: small images, few proposals and detections
    "min_size": 128,
    "max_size": 192,
    "rpn_pre_nms_top_n_test": 200,
    "rpn_post_nms_top_n_test": 100,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "box_batch_size_per_image": 64,
    "box_detections_per_img": DETECTIONS,
    "box_score_thresh": 0.0,  # every detection, however unsure the untrained model is: 5 of them
}
LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
OUTPUTS = {"boxes": "float32", "labels": "int64", "scores": "float32", "masks": "float32"}


def photo_and_target():
    """A random crop of the flower photo shrunk to (3, 107, 160) in [0, 1], and a target with two
    random objects (rectangles) on it."""
    rng = generator("maskrcnn photo")
    height = int(torch.randint(300, 428, (1,), generator=rng))
    top, left = (
        int(torch.randint(0, 428 - height, (1,), generator=rng)),
        int(torch.randint(0, 641 - 3 * height // 2, (1,), generator=rng)),
    )
    crop = sample_photos()[1:, :, top : top + height, left : left + 3 * height // 2].float() / 255
    image = F.interpolate(crop, size=(107, 160), mode="bilinear", antialias=True)[0]
    masks = torch.zeros(2, 107, 160, dtype=torch.uint8)
    boxes = torch.zeros(2, 4)
    for k in range(2):
        x1, y1 = int(torch.randint(0, 110, (1,), generator=rng)), int(torch.randint(0, 70, (1,), generator=rng))
        x2, y2 = (
            x1 + int(torch.randint(15, 50, (1,), generator=rng)),
            y1 + int(torch.randint(12, 37, (1,), generator=rng)),
        )
        masks[k, y1:y2, x1:x2] = 1
        boxes[k] = torch.tensor([x1, y1, x2, y2])
    return image, {"boxes": boxes, "labels": torch.ones(2, dtype=torch.int64), "masks": masks}


IMAGE, TARGET = photo_and_target()
FEATURE_RNG = generator("predictor features")
BOX_FEATURES = torch.randn(6, 1024, generator=FEATURE_RNG)  # what the box head gives each region
MASK_FEATURES = torch.randn(3, 256, 14, 14, generator=FEATURE_RNG)  # what the mask head gives each region
TRAIN_SEED = derived_seed("maskrcnn training pass") % 2**31


@pytest.fixture(scope="module")
def model_run(submission):
    return submission.run(probes.maskrcnn, NUM_CLASSES, SMALL, IMAGE, TARGET, BOX_FEATURES, MASK_FEATURES, TRAIN_SEED)


def closest(got, expected):
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return math.inf
    return (got.double() - expected.double()).abs().nan_to_num(nan=math.inf).max().item()


def check_predictor(run, predictor, what):
    """The student's predictor, loaded into the grader's own, must reproduce what it computed."""
    if "error" in run:
        pytest.fail(_("the {what} fails on features of the right shape: {error}").format(what=what, error=run["error"]))
    problem = load_in_order(predictor, run["state"])
    assert not problem, _("the {what}: {problem}").format(what=what, problem=problem)
    predictor.eval()
    with torch.no_grad():
        expected = predictor(BOX_FEATURES if isinstance(predictor, FastRCNNPredictor) else MASK_FEATURES)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    got = run["output"] if isinstance(run["output"], list) else [run["output"]]
    assert len(got) == len(expected), _("the {what} returns {n_got} tensors, expected {n_expected}").format(
        what=what, n_got=len(got), n_expected=len(expected)
    )
    off = max(closest(g, e) for g, e in zip(got, expected, strict=True))
    assert off < 1e-4, _(
        "the {what} does not compute what the tutorial's does with its weights (off by {off:.3g})"
    ).format(what=what, off=off)


@pytest.mark.points(3)
@pytest.mark.task("build_maskrcnn")
def test_box_predictor_replaced(model_run):
    """build_maskrcnn: a new box predictor for 2 classes"""
    structure = model_run["structure"]
    assert structure["box_predictor"]["type"] == "FastRCNNPredictor", _(
        "roi_heads.box_predictor is a {type}, expected a FastRCNNPredictor"
    ).format(type=structure["box_predictor"]["type"])
    cls_score, bbox_pred = structure["cls_score"], structure["bbox_pred"]
    assert cls_score.get("in_features") == 1024, _(
        "the box predictor reads {in_features} features, expected 1024"
    ).format(in_features=cls_score.get("in_features"))
    assert cls_score.get("out_features") == NUM_CLASSES, _(
        "the box predictor scores {out_features} classes, expected {num_classes}: num_classes counts the background"
    ).format(out_features=cls_score.get("out_features"), num_classes=NUM_CLASSES)
    assert bbox_pred.get("out_features") == 4 * NUM_CLASSES, _(
        "the box predictor regresses {out_features} numbers, expected 4 per class: {value}"
    ).format(out_features=bbox_pred.get("out_features"), value=4 * NUM_CLASSES)
    check_predictor(model_run["predictors"]["box"], FastRCNNPredictor(1024, NUM_CLASSES), _("box predictor"))


@pytest.mark.points(3)
@pytest.mark.task("build_maskrcnn")
def test_mask_predictor_replaced(model_run):
    """build_maskrcnn: a new mask predictor for 2 classes"""
    structure = model_run["structure"]
    assert structure["mask_predictor"]["type"] == "MaskRCNNPredictor", _(
        "roi_heads.mask_predictor is a {type}, expected a MaskRCNNPredictor"
    ).format(type=structure["mask_predictor"]["type"])
    conv5, logits = structure["conv5_mask"], structure["mask_fcn_logits"]
    assert conv5.get("in_channels") == 256, _("the mask predictor reads {in_channels} channels, expected 256").format(
        in_channels=conv5.get("in_channels")
    )
    assert conv5.get("out_channels") == 256, _(
        "the mask predictor's hidden layer has {out_channels} channels, expected 256"
    ).format(out_channels=conv5.get("out_channels"))
    assert logits.get("out_channels") == NUM_CLASSES, _(
        "the mask predictor gives {out_channels} masks per object, expected one per class: {num_classes}"
    ).format(out_channels=logits.get("out_channels"), num_classes=NUM_CLASSES)
    check_predictor(model_run["predictors"]["mask"], MaskRCNNPredictor(256, 256, NUM_CLASSES), _("mask predictor"))


@pytest.fixture(scope="module")
def recomputed(model_run):
    """The grader's own Mask R-CNN with the tutorial's new predictors and the returned weights: its
    outputs on the image, and its losses on the image and target (the same seed); or a reason."""
    with torch.random.fork_rng(), one_thread():
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **SMALL)
        model.roi_heads.box_predictor = FastRCNNPredictor(1024, NUM_CLASSES)
        model.roi_heads.mask_predictor = MaskRCNNPredictor(256, 256, NUM_CLASSES)
        problem = load_in_order(model, model_run["state"])
        if problem:
            return _("the model is not Mask R-CNN with the two new predictors: {problem}").format(problem=problem)
        model.eval()
        with torch.no_grad():
            outputs = model([IMAGE])
        model.train()
        torch.manual_seed(TRAIN_SEED)
        losses = {name: value.detach() for name, value in model([IMAGE], [TARGET]).items()}
    return {"outputs": outputs, "losses": losses}


@pytest.mark.points(3)
@pytest.mark.task("build_maskrcnn")
def test_evaluation_outputs(model_run, recomputed):
    """build_maskrcnn: in evaluation mode, boxes, labels, scores and masks for each image"""
    outputs = model_run["outputs"]
    if isinstance(outputs, dict) and "error" in outputs:
        pytest.fail(_("the model failed on one image in evaluation mode: {error}").format(error=outputs["error"]))
    assert isinstance(outputs, list) and len(outputs) == 1, _("one image gave {outputs!r}, expected one output").format(
        outputs=outputs
    )
    output = outputs[0]
    assert isinstance(output, dict) and set(output) == set(OUTPUTS), _(
        "the output has the keys {value}, expected {outputs}"
    ).format(value=sorted(output) if isinstance(output, dict) else output, outputs=sorted(OUTPUTS))
    for key, dtype in OUTPUTS.items():
        assert isinstance(output[key], torch.Tensor), _("output[{key!r}] is {output}, not a tensor").format(
            key=key, output=output[key]
        )
        assert str(output[key].dtype) == f"torch.{dtype}", _(
            "output[{key!r}] is {dtype}, expected torch.{dtype2}"
        ).format(key=key, dtype=output[key].dtype, dtype2=dtype)
    count = len(output["scores"])
    _unused, height, width = IMAGE.shape
    assert count <= DETECTIONS, _("{count} detections, expected at most {detections} (box_detections_per_img)").format(
        count=count, detections=DETECTIONS
    )
    shapes = {key: list(output[key].shape) for key in OUTPUTS}
    expected = {"boxes": [count, 4], "labels": [count], "scores": [count], "masks": [count, 1, height, width]}
    assert shapes == expected, _("the outputs have shapes {shapes}, expected {expected}").format(
        shapes=shapes, expected=expected
    )
    labels = output["labels"].unique().tolist()
    assert set(labels) <= set(range(1, NUM_CLASSES)), _(
        "the labels are {labels}, expected classes 1 to {num_classes}"
    ).format(labels=labels, num_classes=NUM_CLASSES - 1)
    boxes, masks = output["boxes"], output["masks"]
    inside = (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all()
    inside = inside and (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all()
    assert inside, _("some boxes leave the {width} x {height} image: they must be in its own pixels").format(
        width=width, height=height
    )
    assert not masks.numel() or (masks.min() >= 0 and masks.max() <= 1), _("the masks are not probabilities in [0, 1]")
    assert not isinstance(recomputed, str), recomputed
    mine = recomputed["outputs"][0]
    assert len(mine["scores"]) == count, _(
        "{count} detections, where the model's weights give {n_scores}: were the options passed on?"
    ).format(count=count, n_scores=len(mine["scores"]))
    for key in OUTPUTS:
        off = closest(output[key], mine[key])
        assert off < 1e-3, _("output[{key!r}] is not what the model's weights compute (off by {off:.3g})").format(
            key=key, off=off
        )


@pytest.mark.points(2)
@pytest.mark.task("build_maskrcnn")
def test_training_losses(model_run, recomputed):
    """build_maskrcnn: in training mode, the five losses that fine-tuning adds up"""
    losses = model_run["losses"]
    if isinstance(losses, dict) and "error" in losses and len(losses) == 1:
        pytest.fail(
            _("the model failed on one image and its target in training mode: {error}").format(error=losses["error"])
        )
    assert isinstance(losses, dict) and set(losses) == LOSSES, _(
        "the training losses are {value}, expected {losses}"
    ).format(value=sorted(losses) if isinstance(losses, dict) else losses, losses=sorted(LOSSES))
    for name, value in losses.items():
        assert isinstance(value, torch.Tensor) and value.numel() == 1 and math.isfinite(value.item()), _(
            "{name} is {value}, expected a finite number"
        ).format(name=name, value=value)
    assert not isinstance(recomputed, str), recomputed
    for name, value in recomputed["losses"].items():
        got, want = losses[name].item(), value.item()
        assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6), _(
            "{name} is {got:.5g}, where the model's weights give {want:.5g}"
        ).format(name=name, got=got, want=want)


# --- targets from an instance mask ------------------------------------------------------------------


def hand_mask():
    """An 8 x 10 instance mask: object 1, object 4 (ids need not follow each other), object 2 (one pixel)."""
    mask = torch.zeros(8, 10, dtype=torch.uint8)
    mask[1:4, 2:6] = 1  # rows 1-3, columns 2-5
    mask[5:8, 0:3] = 4  # rows 5-7, columns 0-2
    mask[6, 8] = 2
    return mask


def random_mask(rng, background):
    """Rectangles of random ids (not consecutive), painted over one another, and a one-pixel object;
    with no background pixel at all when `background` is False (the first object covers it)."""
    height, width = torch.randint(8, 17, (2,), generator=rng).tolist()
    ids = (torch.randperm(30, generator=rng)[:4] + 1).tolist()
    mask = torch.full((height, width), 0 if background else ids[0], dtype=torch.uint8)
    for object_id in ids[int(not background) : 3]:
        top, left = (
            int(torch.randint(0, height - 2, (1,), generator=rng)),
            int(torch.randint(0, width - 2, (1,), generator=rng)),
        )
        bottom = top + int(torch.randint(2, height - top + 1, (1,), generator=rng))
        right = left + int(torch.randint(2, width - left + 1, (1,), generator=rng))
        mask[top:bottom, left:right] = object_id
    mask[int(torch.randint(0, height, (1,), generator=rng)), int(torch.randint(0, width, (1,), generator=rng))] = ids[3]
    return mask


MASKS = [
    hand_mask(),
    random_mask(generator("instance mask"), True),
    random_mask(generator("instance mask, no 0"), False),
]


def expected_target(mask):
    """The grader's own target: one binary mask, box and label 1 per id but 0, in increasing order."""
    ids = [i for i in mask.unique().tolist() if i != 0]
    masks = torch.stack([(mask == i).to(torch.uint8) for i in ids])
    return ids, masks, masks_to_boxes(masks).to(torch.float32)


@pytest.mark.points(3)
@pytest.mark.task("instance_target")
def test_instance_target(submission):
    """instance_target: one box, label and mask per object, the background left out"""
    for mask, target in zip(MASKS, submission.run(probes.targets_of, MASKS), strict=True):
        if isinstance(target, dict) and set(target) == {"error"}:
            pytest.fail(_("instance_target raised {error}").format(error=target["error"]))
        assert isinstance(target, dict), _("instance_target returned {target}, expected a dict").format(target=target)
        for key in ("boxes", "labels", "masks"):
            assert isinstance(target.get(key), torch.Tensor), _("the target has no tensor {key!r}").format(key=key)
        ids, want_masks, want_boxes = expected_target(mask)
        boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
        no_background = (
            "" if (mask == 0).any() else _(" (this mask has no background pixel: drop the id 0, not the first id)")
        )
        assert list(masks.shape) == list(want_masks.shape), _(
            "masks has shape {shape}, expected {expected_shape}: one mask per object, the background "
            "(0) left out{no_background}"
        ).format(shape=list(masks.shape), expected_shape=list(want_masks.shape), no_background=no_background)
        assert masks.dtype == torch.uint8, _("masks is {dtype}, expected torch.uint8").format(dtype=masks.dtype)
        for index, object_id in enumerate(ids):
            assert torch.equal(masks[index].bool(), mask == object_id), _(
                "mask {index} is not the pixels of object {object_id} (objects in increasing order of id: {ids})"
            ).format(index=index, object_id=object_id, ids=ids)
        assert boxes.dtype == torch.float32 and torch.equal(boxes, want_boxes), _(
            "boxes are {boxes} ({dtype}), expected {want_boxes} (float32, from masks_to_boxes)"
        ).format(boxes=boxes.tolist(), dtype=boxes.dtype, want_boxes=want_boxes.tolist())
        assert labels.dtype == torch.int64 and labels.tolist() == [1] * len(ids), _(
            "labels are {labels} ({dtype}), expected {value} (int64)"
        ).format(labels=labels.tolist(), dtype=labels.dtype, value=[1] * len(ids))
