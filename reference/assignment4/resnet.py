"""Deeper building blocks: a depth-wise separable convolution (Xception), the residual unit and ResNet-34.

SeparableConv2d splits a convolution in two: a depth-wise step (one k x k filter per input channel,
`groups=in_channels`) for the spatial pattern, then a point-wise 1x1 step that mixes the channels.
Parameters: in*k*k + in (depth-wise) + in*out + out (point-wise), against out*in*k*k + out for a
regular convolution.

ResidualUnit computes ReLU(F(x) + skip(x)), where F is Conv 3x3 (stride) -> BN -> ReLU -> Conv 3x3
-> BN. The skip is the identity when F keeps the shape of x; when the stride or the number of
channels changes, it is a 1x1 convolution with the same stride followed by BN.

ResNet-34, for X: (N, 3, 224, 224): the stem (Conv 7x7 stride 2 -> BN -> ReLU -> MaxPool 3x3
stride 2) gives (N, 64, 56, 56); then 3, 4, 6 and 3 residual units with 64, 128, 256 and 512
channels, the first unit of each new stage with stride 2: (N, 64, 56, 56) -> (N, 128, 28, 28) ->
(N, 256, 14, 14) -> (N, 512, 7, 7); then global average pooling, Flatten and a Linear head.
Fill in the `None`s.
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


class SeparableConv2d(nn.Module):
    """x: (N, in_channels, H, W) -> (N, out_channels, H', W'), H' and W' as for one k x k convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        # Step 1, depth-wise: groups=in_channels gives every input channel its own filter
        self.depthwise_conv = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride=stride, padding=padding, groups=in_channels
        )
        # Step 2, point-wise: a 1x1 convolution mixes the channels
        self.pointwise_conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(inputs))


class ResidualUnit(nn.Module):
    """x: (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        # No bias: the BatchNorm that follows each convolution has its own shift
        DefaultConv2d = partial(nn.Conv2d, kernel_size=3, stride=1, padding=1, bias=False)
        self.main_layers = nn.Sequential(
            DefaultConv2d(in_channels, out_channels, stride=stride),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            DefaultConv2d(out_channels, out_channels),
            nn.BatchNorm2d(out_channels),
        )
        # F(x) and x must have the same shape to be added: a 1x1 convolution (and BN) reshapes x
        if stride > 1 or in_channels != out_channels:
            self.skip_connection = nn.Sequential(
                DefaultConv2d(in_channels, out_channels, kernel_size=1, stride=stride, padding=0),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.skip_connection = nn.Identity()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # F(x) + x first, the ReLU after
        return F.relu(self.main_layers(inputs) + self.skip_connection(inputs))


class ResNet34(nn.Module):
    """X (N, 3, H, W) -> logits (N, num_classes). `resnet` holds the stem, the 16 units and the head."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers = [  # the stem
            nn.Conv2d(in_channels=3, out_channels=64, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(num_features=64),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        ]
        prev_filters = 64
        # Four stages of 3, 4, 6 and 3 units, with 64, 128, 256 and 512 channels
        for filters in [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3:
            stride = 1 if filters == prev_filters else 2  # a new stage halves the height and width
            layers.append(ResidualUnit(prev_filters, filters, stride=stride))
            prev_filters = filters  # the next unit's input channels
        layers += [  # the head
            nn.AdaptiveAvgPool2d(output_size=1),
            nn.Flatten(),
            nn.Linear(512, num_classes),
        ]
        self.resnet = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.resnet(inputs)
