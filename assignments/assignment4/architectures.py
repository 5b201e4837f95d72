"""The grader's own copies of the models the statement fixes (tests only: no sandbox sees this module).

The structure checks fill a copy with the weights and BatchNorm statistics drawn for a grading, as
the probe fills the student's model, and recompute what each layer must give; the training checks
load the student's trained weights into a copy and score it themselves.
"""

import torch.nn.functional as F
from torch import nn


def fashion_cnn():
    """The notebook's Fashion-MNIST CNN: x (N, 1, 28, 28) -> logits (N, 10)."""
    return nn.Sequential(
        nn.Conv2d(1, 64, 7, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding="same"), nn.ReLU(),
        nn.Conv2d(128, 128, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 256, 3, padding="same"), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2304, 128), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(64, 10),
    )  # fmt: skip


class BatchNormCNN(nn.Module):
    """The slides' BatchNorm CNN: x (N, 1, 28, 28) -> logits (N, num_classes)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.cnn_layers = nn.Sequential(
            nn.Conv2d(1, 3, 5), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc_layers = nn.Sequential(nn.Linear(32, 20), nn.BatchNorm1d(20), nn.ReLU(), nn.Linear(20, num_classes))

    def forward(self, x):
        return self.fc_layers(self.cnn_layers(x).flatten(1))


class SeparableConv2d(nn.Module):
    """A depth-wise k x k convolution (one filter per input channel, with the stride and padding),
    then a point-wise 1x1 convolution across the channels, both with biases."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.depthwise_conv = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride=stride, padding=padding, groups=in_channels
        )
        self.pointwise_conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


class ResidualUnit(nn.Module):
    """ReLU(F(x) + skip(x)): F = Conv 3x3 (stride) -> BN -> ReLU -> Conv 3x3 -> BN, skip = the
    identity, or Conv 1x1 (stride) -> BN when the stride or the channels change. No conv has a bias."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.main_layers = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.skip_connection = nn.Identity()
        if stride > 1 or in_channels != out_channels:
            self.skip_connection = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        return F.relu(self.main_layers(x) + self.skip_connection(x))


STAGES = [(64, 3), (128, 4), (256, 6), (512, 3)]  # ResNet-34's stages: (channels, residual units)


def resnet34_units():
    """(in_channels, out_channels, stride) of each of ResNet-34's 16 residual units, in order: stride 2
    where a new stage starts (but the first)."""
    units, previous = [], 64
    for channels, count in STAGES:
        for index in range(count):
            units.append((previous, channels, 2 if index == 0 and channels != 64 else 1))
            previous = channels
    return units


class ResNet34(nn.Module):
    """ResNet-34 for x (N, 3, H, W) -> logits (N, num_classes): the stem (Conv 7x7 stride 2 -> BN ->
    ReLU -> MaxPool 3x3 stride 2), the 16 residual units, global average pooling, Flatten, Linear."""

    def __init__(self, num_classes=10):
        super().__init__()
        layers = [
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        layers += [ResidualUnit(*unit) for unit in resnet34_units()]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
        self.resnet = nn.Sequential(*layers)

    def forward(self, x):
        return self.resnet(x)
