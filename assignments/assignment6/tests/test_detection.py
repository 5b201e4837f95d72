"""Practice 3, fine-tuning Mask R-CNN (detection.py): the replaced predictors, the model's outputs, its
training losses, and the targets built from an instance mask.

The model is built once (no weights, small images: min_size 128) and run once in evaluation mode on
the flower photo, shrunk to 107 x 160, and once in training mode on a made-up target.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from grader.data import sample_photos

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
}
LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
OUTPUTS = {"boxes": "float32", "labels": "int64", "scores": "float32", "masks": "float32"}


def described(layer):
    """The type and sizes of one layer, as data."""
    info = {"type": type(layer).__name__}
    for size in ("in_features", "out_features", "in_channels", "out_channels"):
        if hasattr(layer, size):
            info[size] = getattr(layer, size)
    return info


def maskrcnn(sub, image, target):
    """Probe: build_maskrcnn(2), its predictors, one evaluation pass and one training pass."""
    model = sub.detection.build_maskrcnn(NUM_CLASSES, **SMALL)
    heads = model.roi_heads
    structure = {
        "box_predictor": described(heads.box_predictor),
        "mask_predictor": described(heads.mask_predictor),
        "cls_score": described(getattr(heads.box_predictor, "cls_score", None)),
        "bbox_pred": described(getattr(heads.box_predictor, "bbox_pred", None)),
        "conv5_mask": described(getattr(heads.mask_predictor, "conv5_mask", None)),
        "mask_fcn_logits": described(getattr(heads.mask_predictor, "mask_fcn_logits", None)),
    }
    return {"structure": structure, "outputs": evaluate(model, image), "losses": train_losses(model, image, target)}


def evaluate(model, image):
    """One evaluation pass: the outputs as data, or the error it raised."""
    model.eval()
    try:
        with torch.no_grad():
            outputs = model([image])
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return [
        {key: value if isinstance(value, torch.Tensor) else repr(value) for key, value in output.items()}
        for output in outputs
    ]


def train_losses(model, image, target):
    """One training pass: the losses as data, or the error it raised."""
    model.train()
    try:
        losses = model([image], [target])
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return {name: value.detach() for name, value in losses.items()}


def photo_and_target():
    """The flower photo shrunk to (3, 107, 160) in [0, 1], and a target with two objects on it."""
    image = F.interpolate(sample_photos()[1:].float() / 255, size=(107, 160), mode="bilinear", antialias=True)[0]
    masks = torch.zeros(2, 107, 160, dtype=torch.uint8)
    masks[0, 20:90, 40:115] = 1  # the flower
    masks[1, 93:107, 70:115] = 1  # the bud below it
    boxes = torch.tensor([[40.0, 20.0, 115.0, 90.0], [70.0, 93.0, 115.0, 107.0]])
    return image, {"boxes": boxes, "labels": torch.ones(2, dtype=torch.int64), "masks": masks}


@pytest.fixture(scope="module")
def image_and_target():
    return photo_and_target()


@pytest.fixture(scope="module")
def model_run(submission, image_and_target):
    return submission.run(maskrcnn, *image_and_target)


@pytest.mark.points(3)
@pytest.mark.task("build_maskrcnn")
def test_box_predictor_replaced(model_run):
    """build_maskrcnn: a new box predictor for 2 classes"""
    structure = model_run["structure"]
    assert structure["box_predictor"]["type"] == "FastRCNNPredictor", (
        f"roi_heads.box_predictor is a {structure['box_predictor']['type']}, expected a FastRCNNPredictor"
    )
    cls_score, bbox_pred = structure["cls_score"], structure["bbox_pred"]
    assert cls_score.get("in_features") == 1024, (
        f"the box predictor reads {cls_score.get('in_features')} features, expected 1024"
    )
    assert cls_score.get("out_features") == NUM_CLASSES, (
        f"the box predictor scores {cls_score.get('out_features')} classes, expected {NUM_CLASSES}: "
        "num_classes counts the background"
    )
    assert bbox_pred.get("out_features") == 4 * NUM_CLASSES, (
        f"the box predictor regresses {bbox_pred.get('out_features')} numbers, expected 4 per class: {4 * NUM_CLASSES}"
    )


@pytest.mark.points(3)
@pytest.mark.task("build_maskrcnn")
def test_mask_predictor_replaced(model_run):
    """build_maskrcnn: a new mask predictor for 2 classes"""
    structure = model_run["structure"]
    assert structure["mask_predictor"]["type"] == "MaskRCNNPredictor", (
        f"roi_heads.mask_predictor is a {structure['mask_predictor']['type']}, expected a MaskRCNNPredictor"
    )
    conv5, logits = structure["conv5_mask"], structure["mask_fcn_logits"]
    assert conv5.get("in_channels") == 256, (
        f"the mask predictor reads {conv5.get('in_channels')} channels, expected 256"
    )
    assert conv5.get("out_channels") == 256, (
        f"the mask predictor's hidden layer has {conv5.get('out_channels')} channels, expected 256"
    )
    assert logits.get("out_channels") == NUM_CLASSES, (
        f"the mask predictor gives {logits.get('out_channels')} masks per object, expected one per class: {NUM_CLASSES}"
    )


@pytest.mark.points(3)
@pytest.mark.task("build_maskrcnn")
def test_evaluation_outputs(model_run, image_and_target):
    """build_maskrcnn: in evaluation mode, boxes, labels, scores and masks for each image"""
    outputs = model_run["outputs"]
    assert not isinstance(outputs, str), f"the model failed on one image in evaluation mode: {outputs}"
    assert len(outputs) == 1, f"one image gave {len(outputs)} outputs, expected 1"
    output = outputs[0]
    assert set(output) == set(OUTPUTS), f"the output has the keys {sorted(output)}, expected {sorted(OUTPUTS)}"
    for key, dtype in OUTPUTS.items():
        assert isinstance(output[key], torch.Tensor), f"output[{key!r}] is {output[key]}, not a tensor"
        assert str(output[key].dtype) == f"torch.{dtype}", (
            f"output[{key!r}] is {output[key].dtype}, expected torch.{dtype}"
        )
    count = len(output["scores"])
    _, height, width = image_and_target[0].shape
    assert count <= DETECTIONS, f"{count} detections, expected at most {DETECTIONS} (box_detections_per_img)"
    shapes = {key: list(output[key].shape) for key in OUTPUTS}
    expected = {"boxes": [count, 4], "labels": [count], "scores": [count], "masks": [count, 1, height, width]}
    assert shapes == expected, f"the outputs have shapes {shapes}, expected {expected}"
    labels = output["labels"].unique().tolist()
    assert set(labels) <= set(range(1, NUM_CLASSES)), (
        f"the labels are {labels}, expected classes 1 to {NUM_CLASSES - 1}"
    )
    boxes, masks = output["boxes"], output["masks"]
    inside = (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all()
    inside = inside and (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all()
    assert inside, f"some boxes leave the {width} x {height} image: they must be in its own pixels"
    assert masks.min() >= 0 and masks.max() <= 1, "the masks are not probabilities in [0, 1]"


@pytest.mark.points(2)
@pytest.mark.task("build_maskrcnn")
def test_training_losses(model_run):
    """build_maskrcnn: in training mode, the five losses that fine-tuning adds up"""
    losses = model_run["losses"]
    assert not isinstance(losses, str), f"the model failed on one image and its target in training mode: {losses}"
    assert set(losses) == LOSSES, f"the training losses are {sorted(losses)}, expected {sorted(LOSSES)}"
    for name, value in losses.items():
        assert value.numel() == 1 and math.isfinite(value.item()), f"{name} is {value}, expected a finite number"


# --- targets from an instance mask ------------------------------------------------------------------


def instance_mask():
    """An 8 x 10 instance mask: object 1, object 4 (ids need not follow each other), object 2 (one pixel)."""
    mask = torch.zeros(8, 10, dtype=torch.uint8)
    mask[1:4, 2:6] = 1  # rows 1-3, columns 2-5
    mask[5:8, 0:3] = 4  # rows 5-7, columns 0-2
    mask[6, 8] = 2
    return mask


# masks_to_boxes gives (first column, first row, last column, last row), in increasing order of id: 1, 2, 4.
EXPECTED_BOXES = [[2.0, 1.0, 5.0, 3.0], [8.0, 6.0, 8.0, 6.0], [0.0, 5.0, 2.0, 7.0]]


def target_of(sub, mask):
    """Probe: instance_target on the mask, as data."""
    target = sub.detection.instance_target(mask)
    if not isinstance(target, dict):
        return repr(type(target))
    return {key: value.detach() if isinstance(value, torch.Tensor) else repr(value) for key, value in target.items()}


@pytest.mark.points(3)
@pytest.mark.task("instance_target")
def test_instance_target(submission):
    """instance_target: one box, label and mask per object, the background left out"""
    mask = instance_mask()
    target = submission.run(target_of, mask)
    assert isinstance(target, dict), f"instance_target returned {target}, expected a dict"
    for key in ("boxes", "labels", "masks"):
        assert isinstance(target.get(key), torch.Tensor), f"the target has no tensor {key!r}"
    boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
    assert list(masks.shape) == [3, 8, 10], (
        f"masks has shape {list(masks.shape)}, expected [3, 8, 10]: one mask per object, the background (0) left out"
    )
    assert masks.dtype == torch.uint8, f"masks is {masks.dtype}, expected torch.uint8"
    for index, object_id in enumerate((1, 2, 4)):
        assert torch.equal(masks[index].bool(), mask == object_id), (
            f"mask {index} is not the pixels of object {object_id}"
        )
    assert boxes.dtype == torch.float32 and boxes.tolist() == EXPECTED_BOXES, (
        f"boxes are {boxes.tolist()} ({boxes.dtype}), expected {EXPECTED_BOXES} (float32, from masks_to_boxes)"
    )
    assert labels.dtype == torch.int64 and labels.tolist() == [1, 1, 1], (
        f"labels are {labels.tolist()} ({labels.dtype}), expected [1, 1, 1] (int64)"
    )
