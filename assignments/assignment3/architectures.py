"""The grader's own copies of the models the statement fixes (tests only: no sandbox sees this module).

The structure checks fill a copy with the weights drawn for a grading, as the probe fills the
student's model, and recompute what each layer must give; the trained-accuracy checks load the
student's trained weights into a copy and score it on images no sandbox sees.
"""

import torch
import torch.nn.functional as F
from torch import nn


class LessonCNN(nn.Module):
    """MnistCNN, or MnistCNN3 with `three`: [conv -> ReLU -> 2x2 max pool] x 2 (or 3) -> flatten -> fc1.
    x (N, 1, 28, 28) -> logits (N, 10)."""

    def __init__(self, three: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.fc1 = nn.Linear(64 if three else 800, 10)
        if three:  # after fc1, as MnistCNN3 adds it to MnistCNN's layers: trained weights load in this order
            self.conv3 = nn.Conv2d(32, 64, 3)
        self.convs = ["conv1", "conv2", "conv3"] if three else ["conv1", "conv2"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.max_pool2d(F.relu(getattr(self, conv)(x)), 2)
        return self.fc1(x.flatten(1))


class HighAccuracy(nn.Module):
    """HighAccuracyCNN without its dropout (evaluation mode): conv1 -> ReLU -> conv2 -> ReLU -> 2x2
    max pool -> flatten -> fc1 -> ReLU -> fc2, convolutions 3x3 with padding 1. x (N, 1, 28, 28) -> (N, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(12544, 128)
        self.fc2 = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What dropout1 gets: the pooled maps of conv2, flattened."""
        return F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self.features(x))))


MODELS = {"MnistCNN": LessonCNN, "MnistCNN3": lambda: LessonCNN(three=True), "HighAccuracyCNN": HighAccuracy}
