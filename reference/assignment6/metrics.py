"""Average precision (AP) and mean average precision (mAP) of a detector, from its boxes and scores.

A detection is a box, a class label and a confidence score; a ground-truth object is a box and a
label. Sorted by decreasing score, each detection is a true positive (it matches a ground-truth
object of its class) or a false positive, and each prefix of that list gives one (recall, precision)
point. AP summarizes the precision-recall curve of one class; mAP is the mean of AP over classes.
COCO's AP at IoU 0.5 uses 101 recall levels (0, 0.01, ..., 1); Pascal VOC 2007 used 11.
"""

import torch
from torchvision.ops import box_iou  # torchvision's, not yours: this file is graded on its own


def precision_envelope(precisions: torch.Tensor) -> torch.Tensor:
    """The smoothed precision: at each point, the best precision at this recall or any higher one.

    precisions: (K,), in order of increasing recall -> (K,), never increasing.
    """
    return precisions.flip(0).cummax(0).values.flip(0)  # a running maximum, from the highest recall down


def interpolated_ap(recalls: torch.Tensor, precisions: torch.Tensor, num_points: int = 11) -> float:
    """AP: the mean, over the recall levels r = linspace(0, 1, num_points), of the smoothed precision at r.

    recalls: (K,) float64, never decreasing; precisions: (K,). The smoothed precision at level r is the
    envelope at the first point whose recall is >= r, and 0 where no point reaches r.
    """
    # i / (num_points - 1) exactly, as a recall of 3/10 is: linspace would give 0.30000000000000004 > 3/10
    levels = torch.arange(num_points, dtype=torch.float64) / (num_points - 1)
    envelope = precision_envelope(precisions.double())  # (K,)
    first = torch.searchsorted(recalls.double().contiguous(), levels, side="left")  # first point with recall >= r
    envelope = torch.cat([envelope, envelope.new_zeros(1)])  # index K: no point reaches that recall
    return envelope[first].mean().item()


def match_detections(
    boxes: torch.Tensor, scores: torch.Tensor, gt_boxes: torch.Tensor, iou_threshold: float = 0.5
) -> torch.Tensor:
    """Which detections of one class on one image are true positives (COCO's greedy matching).

    boxes: (D, 4) XYXY, scores: (D,), gt_boxes: (G, 4) XYXY. In order of decreasing score, each detection
    takes the ground-truth box, among those not taken yet, with which its IoU is highest, if that IoU
    is >= iou_threshold. Returns a bool tensor (D,), in the order of `boxes`.
    """
    is_tp = torch.zeros(len(boxes), dtype=torch.bool)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return is_tp
    ious = box_iou(boxes.double(), gt_boxes.double())  # (D, G)
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    for d in torch.argsort(scores, descending=True, stable=True).tolist():  # by decreasing score
        candidates = ious[d].masked_fill(taken, -1.0)  # a box already taken cannot match again
        best = int(candidates.argmax())
        if candidates[best] >= iou_threshold:  # a match
            taken[best] = True  # no other detection can match this object
            is_tp[d] = True
    return is_tp


def average_precision(
    preds: list[dict[str, torch.Tensor]],
    targets: list[dict[str, torch.Tensor]],
    label: int,
    iou_threshold: float = 0.5,
    num_points: int = 101,
) -> float:
    """AP of one class over a set of images.

    preds[i]: the detections on image i, {"boxes": (D, 4) XYXY, "scores": (D,), "labels": (D,)};
    targets[i]: its ground truth, {"boxes": (G, 4) XYXY, "labels": (G,)}. Detections are matched image
    by image, then pooled and sorted by decreasing score; recall is divided by the number of
    ground-truth boxes of the class over all the images.
    """
    scores, hits, num_gt = [], [], 0
    for pred, target in zip(preds, targets, strict=True):
        mine, theirs = pred["labels"] == label, target["labels"] == label
        num_gt += int(theirs.sum())  # the objects of this class on this image
        scores.append(pred["scores"][mine])
        hits.append(match_detections(pred["boxes"][mine], pred["scores"][mine], target["boxes"][theirs], iou_threshold))
    order = torch.argsort(torch.cat(scores), descending=True, stable=True)  # all images' detections
    hits = torch.cat(hits)[order]
    tp = hits.cumsum(0).double()  # true positives among the first k detections, k = 1, 2, ...
    fp = (~hits).cumsum(0).double()  # false positives among them
    return interpolated_ap(tp / num_gt, tp / (tp + fp), num_points)  # (recall, precision) after each


def mean_average_precision(
    preds: list[dict[str, torch.Tensor]],
    targets: list[dict[str, torch.Tensor]],
    iou_threshold: float = 0.5,
    num_points: int = 101,
) -> float:
    """mAP: the mean of `average_precision` over the classes that have at least one ground-truth box.

    A class that only appears among the detections has no recall to speak of: it is left out.
    """
    labels = torch.cat([target["labels"] for target in targets]).unique().tolist()  # classes with objects
    return sum(average_precision(preds, targets, label, iou_threshold, num_points) for label in labels) / len(labels)
