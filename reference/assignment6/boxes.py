"""Bounding boxes: format conversion, area and IoU by hand, and boxes that follow their image through transforms.

A box is a row of 4 floats, in pixels; x runs along the width (to the right), y down the height.
XYXY: (x1, y1, x2, y2), the top-left and bottom-right corners. CXCYWH: (cx, cy, w, h), the centre,
the width and the height. A set of boxes is a tensor (N, 4).
"""

import torch
from torchvision import tv_tensors


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2). boxes: (N, 4) -> (N, 4)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) -> (cx, cy, w, h). boxes: (N, 4) -> (N, 4)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """The area of XYXY boxes: (N, 4) -> (N,)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair of XYXY boxes: (N, 4), (M, 4) -> (N, M)."""
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2): the intersection's top left
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2): its bottom right
    sides = (bottom_right - top_left).clamp(min=0)  # disjoint boxes overlap by 0, never by a negative side
    intersection = sides[..., 0] * sides[..., 1]  # (N, M)
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - intersection  # (N, M)
    return intersection / union


def make_boxes(boxes_cxcywh: torch.Tensor, height: int, width: int) -> tv_tensors.BoundingBoxes:
    """CXCYWH boxes (N, 4) on an image of height x width pixels, as a tv_tensor that v2 transforms move."""
    return tv_tensors.BoundingBoxes(boxes_cxcywh, format="CXCYWH", canvas_size=(height, width))


def transform_with_boxes(
    transform: torch.nn.Module, image: torch.Tensor, boxes: tv_tensors.BoundingBoxes
) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes]:
    """Apply a v2 transform to an image (3, H, W) and its boxes at once: one draw of its random parameters.

    Returns the transformed image (3, H', W') and boxes (N, 4), still CXCYWH, on the new canvas.
    """
    return transform(tv_tensors.Image(image), boxes)
