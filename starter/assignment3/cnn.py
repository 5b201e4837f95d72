"""Convolutional networks for 1x28x28 MNIST digits.

MnistCNN, the lesson's network (ReLU after each convolution, 2x2 max pooling, no padding):

    input      [1, 1, 28, 28]
    conv1      [1, 16, 26, 26]     3x3, 1 -> 16 channels        160 parameters
    pool       [1, 16, 13, 13]
    conv2      [1, 32, 11, 11]     3x3, 16 -> 32 channels     4,640 parameters
    pool       [1, 32, 5, 5]       11 // 2 = 5: the last row and column are dropped
    fc1        [1, 10]             flattened maps -> 10       8,010 parameters

MnistCNN3 adds conv3 (3x3, 32 -> 64) and pools once more: 5 -> 3 -> 1, so fc1 takes 64 * 1 * 1.
HighAccuracyCNN is practice 1 of the chapter: padded convolutions, dropout, He initialization.
Fill in the `None`s.
"""

import torch
from torch import nn


class MnistCNN(nn.Module):
    """x: (N, 1, 28, 28) -> logits (N, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, None, kernel_size=None, stride=1, padding=0)
        self.conv2 = nn.Conv2d(None, None, kernel_size=3, stride=1, padding=0)
        self.pool = nn.MaxPool2d(kernel_size=None, stride=2)
        self.fc1 = nn.Linear(None, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 28, 28) -> (N, 32, 5, 5): [conv -> ReLU -> pool] twice."""
        x = self.pool(torch.relu(self.conv1(x)))
        return None  # conv2 -> ReLU -> pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = None  # flatten: (N, C, H, W) -> (N, C * H * W), the batch dimension kept
        return self.fc1(x)


class MnistCNN3(MnistCNN):
    """MnistCNN with a third convolution: x: (N, 1, 28, 28) -> logits (N, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(None, None, kernel_size=3, stride=1, padding=0)
        self.fc1 = nn.Linear(None, 10)  # replaces MnistCNN's fc1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 28, 28) -> (N, 64, 1, 1): MnistCNN's two blocks, then conv3 -> ReLU -> pool."""
        x = super().features(x)
        return None  # conv3 -> ReLU -> pool


def feature_maps(model: MnistCNN, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The feature maps of conv1 and conv2 (after their ReLU) for one image (1, 1, 28, 28).

    Returns (conv1 maps (1, 16, 26, 26), conv2 maps (1, 32, 11, 11)), without gradients.
    conv2 sees conv1's maps after ReLU and pooling, as in the forward pass.
    """
    model.eval()
    with torch.no_grad():
        conv1_maps = None
        conv2_maps = None
    return conv1_maps, conv2_maps


class HighAccuracyCNN(nn.Module):
    """Practice 1: x: (N, 1, 28, 28) -> logits (N, 10), about 99% on MNIST's test set.

    conv1 (3x3, 1 -> 32, padding 1) -> ReLU -> conv2 (3x3, 32 -> 64, padding 1) -> ReLU -> 2x2 max
    pool -> flatten -> dropout 0.25 -> fc1 (-> 128) -> ReLU -> dropout 0.5 -> fc2 (-> 10).
    Weights: He (Kaiming) normal, for ReLU; biases: zero.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=None)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=None)
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.dropout1 = nn.Dropout(None)
        self.fc1 = nn.Linear(None, 128)  # padding keeps 28x28; the pool halves it to 14x14
        self.dropout2 = nn.Dropout(None)
        self.fc2 = nn.Linear(128, 10)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                None  # He (Kaiming) normal, for ReLU
                None  # zero biases

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.flatten(self.pool(x))
        x = torch.relu(self.fc1(self.dropout1(x)))
        return self.fc2(self.dropout2(x))
