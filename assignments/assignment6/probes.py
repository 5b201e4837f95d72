"""The probes of assignment6: they run in the sandbox, on inputs the grader chose, and return data.

No expected value lives here: the tests (tests/*.py) compare what comes back with their own
computation. `sub.boxes`, `sub.localization`, `sub.metrics` and `sub.detection` are the student's
modules, `sub.device` the device. A student's function that raises gives {"error": message}.
"""

import torch
import torchvision.transforms.v2 as T
from torch import nn
from torchvision import tv_tensors

from grader.probing import state_of, to_float


def data(value):
    """A student's result as plain data: tensor subclasses (tv_tensors) become plain tensors,
    tuples become lists, anything else that is not a number or a string its type's name."""
    if isinstance(value, torch.Tensor):
        return value.detach().as_subclass(torch.Tensor).cpu().clone()
    if isinstance(value, (tuple, list)):
        return [data(v) for v in value]
    if isinstance(value, dict):
        return {str(k): data(v) for k, v in value.items()}
    return value if isinstance(value, (int, float, str, bool, type(None))) else f"a {type(value).__name__}"


def error(exc):
    return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}


def attempt(function, *args):
    """Call a student's function; an exception comes back as {"error": ...} for the test to report."""
    try:
        return data(function(*args))
    except Exception as exc:
        return error(exc)


# --- boxes.py ----------------------------------------------------------------------------------


def box_functions(sub, cxcywh, xyxy_a, xyxy_b, pairs):
    """The conversions, areas and IoUs of the student's boxes.py on the given boxes; `pairs` are
    (box a, box b) rows (1, 4) whose IoU is asked alone."""
    boxes = sub.boxes
    return {
        "to_xyxy": attempt(boxes.box_cxcywh_to_xyxy, cxcywh),
        "to_cxcywh": attempt(boxes.box_xyxy_to_cxcywh, xyxy_a),
        "area": attempt(boxes.box_area, xyxy_a),
        "iou": attempt(boxes.box_iou, xyxy_a, xyxy_b),
        "pairs": [attempt(boxes.box_iou, a, b) for a, b in pairs],
    }


def made_boxes(sub, cases):
    """make_boxes on each (boxes (N, 4), height, width): its values, type, format and canvas size."""
    out = []
    for boxes, height, width in cases:
        try:
            made = sub.boxes.make_boxes(boxes, height, width)
        except Exception as exc:
            out.append(error(exc))
            continue
        form = getattr(made, "format", None)
        canvas = getattr(made, "canvas_size", None)
        out.append(
            {
                "value": data(made),
                "type": type(made).__name__,
                "is_bounding_boxes": isinstance(made, tv_tensors.BoundingBoxes),
                "format": str(getattr(form, "name", form)),
                "canvas_size": [int(v) for v in canvas] if isinstance(canvas, (tuple, list)) else None,
            }
        )
    return out


def build_transform(name, size=None):
    """The v2 transform of a run: `size` is the (height, width) of a resize or a centre crop."""
    if name == "horizontal flip":
        return T.RandomHorizontalFlip(p=1.0)
    if name == "resize":
        return T.Resize(size)
    if name == "centre crop":
        return T.CenterCrop(size)
    if name == "rotation by 90 degrees":  # counter-clockwise, the canvas expanded to (width, height)
        return T.RandomRotation(degrees=(90, 90), expand=True)
    if name == "notebook pipeline":  # the notebook's augmentation, less colour jitter and normalization
        return T.Compose(
            [
                T.RandomHorizontalFlip(p=0.5),
                T.RandomRotation(degrees=30),
                T.RandomResizedCrop(size=(224, 224), scale=(0.8, 1.0)),
            ]
        )
    raise KeyError(name)


def transform_photos(sub, photos, boxes, runs):
    """transform_with_boxes for each run (photo index, transform name, size, seed): the photo (3, H, W)
    and its CXCYWH boxes (made here, on the photo's canvas), torch's generator seeded just before."""
    out = []
    for index, name, size, seed in runs:
        photo = photos[index]
        made = tv_tensors.BoundingBoxes(boxes[index], format="CXCYWH", canvas_size=tuple(photo.shape[-2:]))
        transform = build_transform(name, size)
        torch.manual_seed(seed)
        out.append(attempt(sub.boxes.transform_with_boxes, transform, photo, made))
    return out


# --- localization.py ---------------------------------------------------------------------------


def stand_in_backbone(features):
    """x (N, 3, 8, 8) -> features (N, `features`): what LocalizationNet is checked on."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, features), nn.ReLU())


def reached(model, output, parts):
    """Which parts (modules) the gradient of output.sum() reaches."""
    model.zero_grad()
    output.sum().backward(retain_graph=True)
    return {
        name: any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in part.parameters())
        for name, part in parts.items()
    }


def heads(sub, features, classes, backbone_state, head_weights, x):
    """LocalizationNet on a stand-in backbone with the given weights. Each parameter outside the
    backbone takes the first of `head_weights` of its shape; what it computes on x comes back, with
    the weights it computed with, the backbone's calls, and where the gradients of each output go."""
    backbone = stand_in_backbone(features)
    backbone.load_state_dict(backbone_state)
    calls = []
    backbone.register_forward_hook(lambda module, args, output: calls.append(1))
    model = sub.localization.LocalizationNet(backbone, features, classes)
    own = {id(p) for p in backbone.parameters()}
    head = [(name, p) for name, p in model.named_parameters() if id(p) not in own]
    free, unloaded = list(head_weights), []
    with torch.no_grad():
        for name, p in head:
            match = next((i for i, w in enumerate(free) if w.shape == p.shape), None)
            if match is None:
                unloaded.append([name, list(p.shape)])
            else:
                p.copy_(free.pop(match))
    logits, boxes = model(x)
    parts = {"backbone": backbone}
    for name in ("classifier", "box_head"):
        part = getattr(model, name, None)
        if isinstance(part, nn.Module):
            parts[name] = part
    return {
        "logits": data(logits),
        "boxes": data(boxes),
        "backbone_calls": len(calls),
        "head_parameters": sum(p.numel() for _, p in head),
        "unloaded": unloaded,
        "backbone_after": state_of(backbone),
        "from_logits": reached(model, logits, parts),
        "from_boxes": reached(model, boxes, parts),
    }


def losses(sub, inputs, weights):
    """localization_loss for each box weight, and whether it can be backpropagated."""
    out = []
    for weight in weights:
        logits, boxes, labels, targets = (t.clone() for t in inputs)
        logits.requires_grad_(True)
        boxes.requires_grad_(True)
        try:
            loss = sub.localization.localization_loss(logits, boxes, labels, targets, weight)
        except Exception as exc:
            out.append(error(exc))
            continue
        if not isinstance(loss, torch.Tensor):
            out.append({"type": type(loss).__name__})
            continue
        out.append({"type": "Tensor", "value": data(loss), "grad": loss.requires_grad})
    return out


def train_localizer(sub, train_x, train_y, train_boxes, budget):
    """LocalizationNet on small_backbone, trained with localization_loss (Adam) on the grader's
    training canvases; its weights: the backbone's, and the heads' (the rest) by name.

    train_boxes: (N, 4) CXCYWH divided by the canvas size. No test image comes here: the grader
    evaluates the weights itself.
    """
    device = torch.device(sub.device)
    if device.type == "cpu":  # a tiny model: one thread is as fast, and does not stall when the cores are shared
        torch.set_num_threads(1)
    loc = sub.localization
    canvas, dim = budget["canvas"], budget["feature_dim"]
    backbone = loc.small_backbone(1, canvas, dim)
    model = loc.LocalizationNet(backbone, dim, 10).to(device)
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
    own = {id(p) for p in backbone.parameters()}
    return {
        "backbone": state_of(backbone),
        "heads": {name: p.detach().cpu().clone() for name, p in model.named_parameters() if id(p) not in own},
    }


# --- metrics.py --------------------------------------------------------------------------------


def envelopes(sub, curves):
    """precision_envelope of each precision curve."""
    return [attempt(sub.metrics.precision_envelope, precisions) for precisions in curves]


def interpolated(sub, cases):
    """interpolated_ap of each (recalls, precisions, num_points)."""
    return [attempt(sub.metrics.interpolated_ap, *case) for case in cases]


def matches(sub, cases, iou_threshold):
    """match_detections on each (boxes, scores, ground-truth boxes)."""
    return [attempt(sub.metrics.match_detections, *case, iou_threshold) for case in cases]


def average_precisions(sub, preds, targets, labels, iou_threshold, num_points):
    """average_precision of each class, and mean_average_precision."""
    metrics = sub.metrics
    return {
        "per_class": [
            attempt(metrics.average_precision, preds, targets, label, iou_threshold, num_points) for label in labels
        ],
        "map": attempt(metrics.mean_average_precision, preds, targets, iou_threshold, num_points),
    }


# --- detection.py ------------------------------------------------------------------------------


def described(layer):
    """The type and sizes of one layer, as data."""
    info = {"type": type(layer).__name__}
    for size in ("in_features", "out_features", "in_channels", "out_channels"):
        if isinstance(getattr(layer, size, None), int):
            info[size] = getattr(layer, size)
    return info


def run_module(module, x):
    """What a module computes on x, with its weights; or the error it raised."""
    if not isinstance(module, nn.Module):
        return {"error": f"it is a {type(module).__name__}, not a module"}
    try:
        with torch.no_grad():
            return {"output": data(module(x)), "state": state_of(module)}
    except Exception as exc:
        return error(exc)


def maskrcnn(sub, num_classes, options, image, target, box_features, mask_features, seed):
    """build_maskrcnn(num_classes, **options): its predictors (described, and run on the given
    features), all its weights as built, one evaluation pass on the image and one training pass on
    the image and its target, with torch's generator seeded just before (on one thread)."""
    torch.set_num_threads(1)  # as the grader recomputes it: the same sums in the same order
    model = sub.detection.build_maskrcnn(num_classes, **options)
    state = state_of(model)  # before the training pass, which moves batch norm's statistics
    heads = model.roi_heads
    box, mask = heads.box_predictor, heads.mask_predictor
    structure = {
        "box_predictor": described(box),
        "mask_predictor": described(mask),
        "cls_score": described(getattr(box, "cls_score", None)),
        "bbox_pred": described(getattr(box, "bbox_pred", None)),
        "conv5_mask": described(getattr(mask, "conv5_mask", None)),
        "mask_fcn_logits": described(getattr(mask, "mask_fcn_logits", None)),
    }
    predictors = {"box": run_module(box, box_features), "mask": run_module(mask, mask_features)}
    model.eval()
    try:
        with torch.no_grad():
            outputs = data(model([image]))
    except Exception as exc:
        outputs = error(exc)
    model.train()
    torch.manual_seed(seed)
    try:
        losses = data(model([image], [target]))
    except Exception as exc:
        losses = error(exc)
    return {"structure": structure, "predictors": predictors, "outputs": outputs, "losses": losses, "state": state}


def targets_of(sub, masks):
    """instance_target on each instance mask, as data."""
    return [attempt(sub.detection.instance_target, mask) for mask in masks]
