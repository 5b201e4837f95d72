"""The grader's own copy of SimpleCNN, as the statement fixes it (tests only: no sandbox sees this module).

The structure checks fill a copy with the weights drawn for a grading, as the probe fills the
student's model, and recompute what each layer must give; the trained-accuracy check loads the
student's trained weights into a copy and scores it on images no sandbox sees.
"""

import torch
import torch.nn.functional as F
from torch import nn


class SimpleCNN(nn.Module):
    """conv1 (3 -> 16, 3x3, stride 1, padding 1) -> ReLU -> 2x2 max pooling -> flatten -> fc.
    x (N, 3, S, S) -> logits (N, num_classes)."""

    def __init__(self, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1)
        self.fc = nn.Linear(16 * (image_size // 2) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.max_pool2d(F.relu(self.conv1(x)), 2).flatten(1))
