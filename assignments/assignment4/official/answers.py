"""The grader's own SeparableConv2d, ResidualUnit and ResNet-34, as the statement fixes them and the
starter leaves them blank (answers: never released, grader.testing.official_for). The tests fill
them as the probes fill the student's and recompute what each layer must give; no sandbox sees
this module."""

import torch.nn.functional as F
from torch import nn


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


class ResNet34(nn.Module):
    """ResNet-34 for x (N, 3, H, W) -> logits (N, num_classes): the stem (Conv 7x7 stride 2 -> BN ->
    ReLU -> MaxPool 3x3 stride 2), the residual units (`units`: (in_channels, out_channels, stride)
    of each, as the tests derive them from the statement), global average pooling, Flatten, Linear."""

    def __init__(self, units, num_classes=10):
        super().__init__()
        layers = [
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        layers += [ResidualUnit(*unit) for unit in units]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
        self.resnet = nn.Sequential(*layers)

    def forward(self, x):
        return self.resnet(x)
