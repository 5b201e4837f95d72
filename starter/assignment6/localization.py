"""Classification and localization: one backbone, two heads, one loss.

The classification head maps the backbone's features to class logits; the localization head maps the
same features to one bounding box (cx, cy, w, h), each divided by the image's size so that it lies in
(0, 1). The loss adds the cross-entropy of the class and a weighted smooth L1 loss of the box.
"""

import torch
import torch.nn.functional as F
from torch import nn


def small_backbone(in_channels: int = 1, image_size: int = 32, feature_dim: int = 128) -> nn.Sequential:
    """A small CNN (given): x (N, in_channels, image_size, image_size) -> features (N, feature_dim).

    It flattens its last feature maps instead of averaging them: global average pooling would throw
    away where things are, and a box needs exactly that.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (image_size // 8) ** 2, feature_dim), nn.ReLU(),
    )  # fmt: skip


class LocalizationNet(nn.Module):
    """A classifier with a second head that regresses one bounding box.

    backbone: x (N, C, H, W) -> features (N, feature_dim).
    forward(x) -> (logits (N, num_classes), boxes (N, 4)): boxes are (cx, cy, w, h) / image size, in (0, 1).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = None  # class logits from the features
        self.box_head = None  # 4 numbers, kept in (0, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = None  # computed once, read by both heads
        return None, None  # (logits, boxes)


def localization_loss(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    target_boxes: torch.Tensor,
    box_weight: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy of the classes + box_weight * smooth L1 (beta 1) of the boxes, each a batch mean.

    logits: (N, num_classes), labels: (N,) int64; boxes, target_boxes: (N, 4). Returns a scalar.
    """
    return None
